"""A gRPC client for the model behind TF Serving (or the local stand-in, ``serving/server.py``).

It speaks TF Serving's public API (``tensorflow_serving.apis``): ``Predict`` with the
``serving_default`` signature, whose one input ``examples`` is a 1-D string tensor of
serialized tf.train.Examples (built by ``components/examples.py``), and ``GetModelStatus``.
:meth:`Client.predict` returns the same ``{output: 1-D ndarray}`` as the in-process
``serving.predict.Predictor.predict``, so the CLI can use either.

Every failure is a :class:`ServingError` with a one-line message naming the server and the
gRPC status. Only ``UNAVAILABLE`` (server starting, restarting or briefly unreachable) is
retried, with exponential backoff: the other codes are answers, and a retry after
``DEADLINE_EXCEEDED`` would add a second copy of a request to a server that is already too
slow (raise ``timeout_s`` or lower ``batch_size`` instead).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from stellarpop.schema import model_contract as contract


class ServingError(OSError):
    """A request the server refused or could not answer (an OSError: like a file that cannot
    be read, it is the environment's or the user's problem, reported in one line).

    Attributes
    ----------
    target : str, the server's ``host:port``
    code : grpc.StatusCode, or None when no gRPC status applies (e.g. a wait that timed out)
    """

    def __init__(self, target: str, code: grpc.StatusCode | None, details: str):
        self.target, self.code = target, code
        text = " ".join(str(details).split())
        text = text if len(text) <= 300 else text[:297] + "..."
        self.message = f"{target}: {code.name if code else 'ERROR'}: {text}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def channel_options(max_message_mb: int) -> list[tuple[str, int]]:
    """gRPC channel/server options that allow messages up to ``max_message_mb`` MiB.

    One serialized spectrum is about 46 KB (3 x 5100 values), so a batch of 256 is about
    12 MB: well over gRPC's default 4 MiB limit.
    """
    size = int(max_message_mb) * 2**20
    return [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)]


def set_model_spec(
    spec, model_name: str, version: int | None = None, label: str | None = None, signature: str | None = None
) -> None:
    """Fill a ``ModelSpec`` in place: the name, then a version number or a version label."""
    spec.name = model_name
    if version is not None:
        spec.version.value = int(version)
    elif label:
        spec.version_label = label
    if signature is not None:
        spec.signature_name = signature


def predict_request(
    serialized: Sequence[bytes],
    model_name: str = contract.MODEL_NAME,
    version: int | None = None,
    label: str | None = None,
    signature: str = contract.SERVING_SIGNATURE,
) -> predict_pb2.PredictRequest:
    """A ``PredictRequest`` for the ``serving_default`` signature (or ``signature``).

    Parameters
    ----------
    serialized : serialized tf.train.Examples (bytes), one per spectrum
    model_name, version, label : which model and which version of it (version or label, or
        neither for the server's latest)

    Returns
    -------
    PredictRequest whose input ``examples`` is a DT_STRING tensor of shape [len(serialized)]
    """
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    set_model_spec(request.model_spec, model_name, version, label, signature)
    request.inputs[contract.INPUT_KEY].CopyFrom(tf.make_tensor_proto(list(serialized), dtype=tf.string))
    return request


def outputs_to_arrays(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    """``{output: 1-D ndarray}`` from a PredictResponse (outputs of shape [batch] or [batch, 1])."""
    import tensorflow as tf

    arrays = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    return {k: a.reshape(a.shape[0] if a.ndim else 1, -1)[:, 0] for k, a in arrays.items()}


class Client:
    """The model behind one TF Serving (or stand-in) gRPC endpoint.

    Parameters
    ----------
    target : ``host:port`` of the gRPC endpoint (TF Serving's default port is 8500)
    model_name : the model's name in the server's config
    version, label : ask for this version number or this version label (``stable``,
        ``canary``); neither: the latest version the server has loaded
    timeout_s : deadline of each RPC, seconds (one batch of ``batch_size`` spectra)
    retries : extra tries of an RPC answered ``UNAVAILABLE``, with backoff 0.2 s x 2^k
    max_message_mb : largest request and response, MiB (see :func:`channel_options`)
    """

    def __init__(
        self,
        target: str,
        model_name: str = contract.MODEL_NAME,
        version: int | None = None,
        label: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        max_message_mb: int = 256,
    ):
        if version is not None and label:
            raise ValueError(f"ask for version {version} or label {label!r}, not both")
        self.target, self.model_name, self.version, self.label = target, model_name, version, label
        self.timeout_s, self.retries = float(timeout_s), int(retries)
        self.last_versions: list[int] = []  # the versions that answered the last predict()
        self._channel = grpc.insecure_channel(target, options=channel_options(max_message_mb))
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout_s: float | None = None):
        """One RPC with a deadline; ``UNAVAILABLE`` is retried ``retries`` times with backoff."""
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=timeout_s or self.timeout_s)
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
                if code != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    details = err.details() if hasattr(err, "details") else str(err)
                    raise ServingError(self.target, code, details) from None
                time.sleep(min(5.0, 0.2 * 2**attempt) * (0.5 + random.random()))

    def status(self, timeout_s: float | None = None) -> dict[int, str]:
        """``{version: state name}`` of the model's versions, as GetModelStatus reports them."""
        request = get_model_status_pb2.GetModelStatusRequest()
        set_model_spec(request.model_spec, self.model_name, self.version)
        response = self._call(self._model_stub.GetModelStatus, request, timeout_s)
        names = get_model_status_pb2.ModelVersionStatus.State.Name
        return {int(s.version): names(s.state) for s in response.model_version_status}

    def wait_until_available(self, timeout_s: float = 60.0) -> int:
        """Block until the version this client asks for is AVAILABLE; returns its number.

        An unknown model fails at once (a server knows its models from the start); an unknown
        version or label is waited for, since it may still be being pushed or loaded.

        Raises
        ------
        ServingError
            The model is unknown, or the version is not AVAILABLE within ``timeout_s`` seconds
            (the message gives the last status seen).
        """
        deadline, last = time.monotonic() + timeout_s, "no answer yet"
        while True:
            try:
                states = self.status(timeout_s=max(1.0, min(5.0, deadline - time.monotonic())))
                if "AVAILABLE" in states.values():
                    return self.model_version()
                last = "versions " + ", ".join(f"{v} {s}" for v, s in sorted(states.items()))
            except ServingError as err:
                if err.code == grpc.StatusCode.NOT_FOUND and self.version is None and not self.label:
                    raise
                last = f"{err.code.name if err.code else 'ERROR'}: {str(err).split(': ', 2)[-1]}"
            if time.monotonic() >= deadline:
                raise ServingError(self.target, None, f"{self._wanted()} not AVAILABLE after {timeout_s:g} s ({last})")
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _wanted(self) -> str:
        which = (
            f"version {self.version}" if self.version is not None else f"label {self.label}" if self.label else "latest"
        )
        return f"model {self.model_name} ({which})"

    def model_version(self) -> int:
        """The version number that answers this client's requests now (resolves labels)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        set_model_spec(request.model_spec, self.model_name, self.version, self.label)
        return int(self._call(self._predict_stub.GetModelMetadata, request).model_spec.version.value)

    def model_info(self) -> dict:
        """The served model's self-description (``model_info.json``: preparation, labels,
        architecture...), from its ``metadata`` signature: TF Serving serves every signature
        of a SavedModel, while files beside it (``assets.extra``) never reach a client."""
        # One (empty) Example: TF Serving's batching refuses empty batches and needs a batch
        # dimension; the signature ignores its input.
        request = predict_request(
            [b""], self.model_name, self.version, self.label, signature=contract.METADATA_SIGNATURE
        )
        response = self._call(self._predict_stub.Predict, request)
        value = outputs_to_arrays(response)[contract.METADATA_OUTPUT][0]
        return json.loads(value.decode() if isinstance(value, bytes) else value)

    def predict(self, serialized: Sequence[bytes], batch_size: int = 256) -> dict[str, np.ndarray]:
        """The model's outputs for serialized tf.train.Examples, sent ``batch_size`` at a time.

        Returns
        -------
        dict output name -> ndarray, shape (len(serialized),), in the model's physical units
        (empty dict for no input). ``self.last_versions`` lists the versions that answered:
        more than one if a new version was pushed during the call; then only the outputs every
        answering version has are returned (an older export lacks ``ood_score``).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        parts: dict[str, list[np.ndarray]] = {}
        versions: set[int] = set()
        batches = range(0, len(serialized), batch_size)
        for start in batches:
            request = predict_request(serialized[start : start + batch_size], self.model_name, self.version, self.label)
            response = self._call(self._predict_stub.Predict, request)
            versions.add(int(response.model_spec.version.value))
            for key, values in outputs_to_arrays(response).items():
                parts.setdefault(key, []).append(values)
        self.last_versions = sorted(versions)
        return {key: np.concatenate(values) for key, values in parts.items() if len(values) == len(batches)}
