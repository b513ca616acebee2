"""One Predict request against a loaded SavedModel, with TF Serving's checks and status
codes, and the merging of concurrent requests into one signature call (as TF Serving's
``--enable_batching``). Used by the local server and by the warmup replay."""

from __future__ import annotations

import queue
import threading
import time
from concurrent import futures

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2

from stellarpop.schema import model_contract as contract

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}  # TensorFlow's error codes are gRPC's


class RequestError(Exception):
    """A Predict request refused with a gRPC status (by the server, or at warmup replay)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def one_line(err: BaseException | str) -> str:
    """The first line of an error message (TensorFlow's carry a long graph trace)."""
    lines = str(err).strip().splitlines()
    return lines[0].strip() if lines else type(err).__name__


def _input_tensor(name: str, proto, spec, max_batch: int | None):
    """A request's TensorProto as the tensor the signature takes (TypeError, ValueError: it
    cannot be; RequestError RESOURCE_EXHAUSTED: too many Examples)."""
    import tensorflow as tf

    if proto.dtype != spec.dtype.as_datatype_enum:
        raise TypeError(f"input {name} must be {spec.dtype.name}, not {tf.as_dtype(proto.dtype).name}")
    array = tf.make_ndarray(proto)
    if max_batch is not None and array.ndim and array.shape[0] > max_batch:
        raise RequestError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"batch of {array.shape[0]} is over this server's limit of {max_batch}; send smaller batches",
        )
    return tf.constant(array, dtype=spec.dtype)


def run_request(
    model, request: predict_pb2.PredictRequest, max_batch: int | None = None, call=None, timeout_s: float | None = None
) -> dict[str, np.ndarray]:
    """Run a PredictRequest on a loaded SavedModel (``tf.saved_model.load``).

    ``call``, if given, runs the default signature in its place with the same inputs (the
    server's :class:`Batcher`, which waits at most ``timeout_s`` seconds).

    Returns
    -------
    dict output name -> ndarray (the ``output_filter`` ones, or all)

    Raises
    ------
    RequestError
        With TF Serving's status: INVALID_ARGUMENT for an unknown signature or input name, a
        wrong dtype or rank, bytes that are not an Example, an Example missing a required
        feature; RESOURCE_EXHAUSTED for more than ``max_batch`` Examples (None: no limit);
        other errors of the graph keep their TensorFlow code.
    """
    import tensorflow as tf

    name = request.model_spec.signature_name or contract.SERVING_SIGNATURE
    if name not in model.signatures:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f'Serving signature name: "{name}" not found in signature def'
        )
    fn = model.signatures[name]
    specs = fn.structured_input_signature[1]
    sent, wanted = set(request.inputs), set(specs)
    if sent != wanted:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input names do not match signature {name}: "
            f"sent extra {sorted(sent - wanted)}, missing but required {sorted(wanted - sent)}",
        )
    try:
        inputs = {key: _input_tensor(key, request.inputs[key], spec, max_batch) for key, spec in specs.items()}
        if call is not None and name == contract.SERVING_SIGNATURE:
            outputs = call(timeout_s=timeout_s, **inputs)
        else:
            outputs = fn(**inputs)
    except tf.errors.OpError as err:
        raise RequestError(_GRPC_CODES.get(err.error_code, grpc.StatusCode.UNKNOWN), one_line(err.message)) from None
    except (TypeError, ValueError) as err:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, one_line(err)) from None
    unknown = set(request.output_filter) - set(outputs)
    if unknown:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f"output tensor alias not found in signature: {sorted(unknown)}"
        )
    keep = set(request.output_filter) or set(outputs)
    return {key: value.numpy() for key, value in outputs.items() if key in keep}


class Batcher:
    """Merges concurrent calls of a signature into one, as TF Serving's ``--enable_batching``:
    a batch runs when it would pass ``max_batch`` Examples or its first call has waited
    ``wait_s``. A merged call that fails (one bad Example fails them all) is rerun call by
    call, so only the bad one gets the error. ``batches``: signature calls made."""

    def __init__(self, fn, max_batch: int, wait_s: float = 0.0):
        self.fn, self.max_batch, self.wait_s, self.batches = fn, max_batch, wait_s, 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock, self._closed = threading.Lock(), False
        threading.Thread(target=self._loop, name="stellarpop-batcher", daemon=True).start()

    def __call__(self, timeout_s: float | None = None, **inputs):
        """The signature's outputs for ``inputs``, run in a merged call; ``timeout_s``: the
        request's remaining deadline (a wait past it is DEADLINE_EXCEEDED, the worker freed)."""
        done: futures.Future = futures.Future()
        with self._lock:
            if self._closed:  # unloaded while this request was under way
                return self.fn(**inputs)
            self._queue.put((inputs, done))
        try:
            return done.result(timeout=timeout_s)
        except futures.TimeoutError:
            raise RequestError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the request's deadline passed in the batch queue"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.put(None)

    def _loop(self) -> None:
        carry = None
        while True:
            items = [carry or self._queue.get()]
            carry, size, deadline = None, _rows(items[0]), time.monotonic() + self.wait_s
            while items[-1] is not None and size < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is not None and size + _rows(item) > self.max_batch:
                    carry = item
                    break
                items.append(item)
                size += _rows(item)
            self._run([item for item in items if item is not None])
            if items[-1] is None:
                return

    def _run(self, items: list) -> None:
        import tensorflow as tf

        if len(items) > 1:
            try:
                merged = self.fn(**{k: tf.concat([inputs[k] for inputs, _ in items], 0) for k in items[0][0]})
                ends = np.cumsum([_rows(item) for item in items]).tolist()
                parts = [{k: v[end - _rows(item) : end] for k, v in merged.items()} for item, end in zip(items, ends)]
            except Exception:  # noqa: BLE001 - one request's bad input fails them all: rerun each alone
                parts = None
            if parts is not None:
                self.batches += 1
                for (_, done), part in zip(items, parts):
                    done.set_result(part)
                return
        for inputs, done in items:
            try:
                self.batches += 1
                done.set_result(self.fn(**inputs))
            except Exception as err:  # noqa: BLE001 - the request's own error, raised in its thread
                done.set_exception(err)


def _rows(item) -> int:
    """Examples in a queued call (rank-0 inputs count 1; the signature call refuses them)."""
    if item is None:
        return 0
    shape = next(iter(item[0].values())).shape
    return int(shape[0]) if shape.rank else 1
