"""A local development and test stand-in for TF Serving, on CPU: NOT a replacement for it.

Production serving is TensorFlow Serving on a GPU (``serving/deploy/``: C++, server-side
batching, metrics). This answers the same gRPC API (``tensorflow_serving.apis``: Predict,
GetModelMetadata, GetModelStatus; other methods UNIMPLEMENTED) and TF Serving's REST status
endpoint, so the client, the CLI and the tests run where TF Serving is not installed:

* versions: numbered folders under the base path, as the Pusher writes them, complete once
  they hold ``saved_model.pb``. The base path is polled every ``poll_s`` s; a new version is
  loaded in the background, no restart. Served: the latest version plus the labelled ones;
  older ones are unloaded once a newer one is AVAILABLE. A failed load is reported (state END
  with the error) and retried when the folder changes.
* warmup: ``assets.extra/tf_serving_warmup_requests`` is replayed before a version is
  AVAILABLE (counted in ``server.store.warmup_replayed``); a failing warmup fails the load.
* labels: ``{"stable": 2, "canary": 3}`` or ``"stable=2,canary=3"``, as ``version_labels`` in
  ``serving/deploy/models.config`` for TF Serving.
* status codes: unknown model or version NOT_FOUND; unknown label, signature or input name,
  wrong dtype or rank, bytes that are not an Example, Examples missing a required feature
  INVALID_ARGUMENT; a message over ``max_message_mb`` or a batch over ``max_batch``
  RESOURCE_EXHAUSTED. The server answers and stays up.

Requests for the default signature that arrive while the model is busy are merged into one
call (``warmup.Batcher``, like TF Serving's ``--enable_batching``); the rest run on their gRPC
worker thread (TensorFlow releases the GIL). No metrics, no model config file, no GPU.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import signal
import threading
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from stellarpop.pipeline.training.warmup import read_warmup
from stellarpop.schema import model_contract as contract
from stellarpop.serving.client import channel_options, set_model_spec
from stellarpop.serving.requests import Batcher, RequestError, one_line, run_request

log = logging.getLogger("stellarpop.serving")
_State = get_model_status_pb2.ModelVersionStatus.State
LOADING, AVAILABLE, END = _State.Value("LOADING"), _State.Value("AVAILABLE"), _State.Value("END")
_HTTP_CODES = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400}
_REST_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?/?$")


def parse_labels(text: str) -> dict[str, int]:
    """``"stable=2,canary=3"`` -> ``{"stable": 2, "canary": 3}`` (ValueError for anything else)."""
    pairs = [[part.strip() for part in item.split("=")] for item in text.split(",") if item.strip()]
    if any(len(p) != 2 or not p[0] or not p[1].isdigit() for p in pairs):
        raise ValueError(f"version labels {text!r}: expected NAME=VERSION pairs, e.g. stable=2,canary=3")
    return {name: int(version) for name, version in pairs}


def folder_stamp(path: str) -> tuple:
    """Names, sizes and modification times of a folder's files: a failed load is retried when
    this changes (e.g. the copy that was under way when it was read has ended)."""
    stamp = []
    for file in (os.path.join(root, name) for root, _, names in os.walk(path) for name in names):
        try:
            stamp.append((file, os.stat(file).st_size, os.stat(file).st_mtime_ns))
        except OSError:  # removed while being scanned
            continue
    return tuple(sorted(stamp))


def signature_defs(path: str) -> dict:
    """The SignatureDef protos of a SavedModel folder (for GetModelMetadata)."""
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(path, contract.SAVED_MODEL_FILE), "rb") as f:
        saved = saved_model_pb2.SavedModel.FromString(f.read())
    return {k: v for k, v in saved.meta_graphs[0].signature_def.items() if not k.startswith("__")}


@dataclass
class Version:
    """One numbered version folder and what the server made of it."""

    number: int
    path: str
    state: int = LOADING
    error: str = ""
    model: Any = None
    batcher: Batcher | None = None
    signature_defs: dict = field(default_factory=dict)
    stamp: tuple = ()


def replay_warmup(model, export_dir: str) -> int:
    """Run an export's warmup requests on its loaded SavedModel through the server's own
    request path, as TF Serving does before it reports the version AVAILABLE; returns how
    many ran (a failing one raises :class:`RequestError`)."""
    requests = read_warmup(export_dir)
    for request in requests:
        run_request(model, request)
    return len(requests)


class ModelStore:
    """The versions of one model under a base path: which to serve, loading (with warmup) and
    unloading them, resolving a ModelSpec, answering requests. Thread-safe."""

    def __init__(
        self,
        base_path: str,
        model_name: str = contract.MODEL_NAME,
        labels: Mapping[str, int] | str | None = None,
        max_batch: int = 1024,
        batch_wait_ms: float | None = 0.0,
    ):
        self.base_path, self.name, self.max_batch = base_path, model_name, int(max_batch)
        self.batch_wait_ms = batch_wait_ms
        self.labels = parse_labels(labels) if isinstance(labels, str) else dict(labels or {})  # replace to move them
        self.versions: dict[int, Version] = {}
        self.warmup_replayed: dict[int, int] = {}  # {version: warmup requests replayed at its load}
        self._lock = threading.Lock()

    def present(self) -> dict[int, str]:
        """``{version: folder}`` of the complete versions (:func:`model_contract.versions`)."""
        return contract.versions(self.base_path)

    def wanted(self, present: Mapping[int, str]) -> set[int]:
        """The versions to serve: the latest plus the labelled ones."""
        return set(sorted(present)[-1:]) | (set(self.labels.values()) & set(present))

    def poll(self) -> None:
        """One pass: load wanted versions (newest first), then unload the others if a wanted
        one is AVAILABLE (the model never goes without a version)."""
        present = self.present()
        wanted = self.wanted(present)
        for number in sorted(wanted, reverse=True):
            old = self.versions.get(number)
            if old is None or old.state == END and (not old.error or old.stamp != folder_stamp(present[number])):
                self._load(number, present[number])
        if any(self.versions[n].state == AVAILABLE for n in wanted if n in self.versions):
            for number, version in list(self.versions.items()):
                if number not in wanted and version.state == AVAILABLE:
                    self.unload(version)

    def unload(self, version: Version) -> None:
        """Stop serving a version (in-flight requests keep their reference to its model)."""
        log.info("unloading %s version %d", self.name, version.number)
        with self._lock:
            self.versions[version.number] = Version(version.number, version.path, END)
        if version.batcher is not None:
            version.batcher.close()

    def _load(self, number: int, path: str) -> None:
        import tensorflow as tf

        version = Version(number, path)
        with self._lock:
            self.versions[number] = version
        log.info("loading %s version %d from %s", self.name, number, path)
        try:
            model = tf.saved_model.load(path)
            version.signature_defs = signature_defs(path)
            replayed = replay_warmup(model, path)
        except Exception as err:  # reported in the version's status; the server goes on
            version.error, version.stamp = f"{type(err).__name__}: {one_line(err)}", folder_stamp(path)
            version.state = END
            log.error("%s version %d failed to load: %s", self.name, number, version.error)
            return
        version.model, self.warmup_replayed[number] = model, replayed
        if self.batch_wait_ms is not None and contract.SERVING_SIGNATURE in model.signatures:
            version.batcher = Batcher(
                model.signatures[contract.SERVING_SIGNATURE], self.max_batch, self.batch_wait_ms / 1000
            )
        version.state = AVAILABLE
        log.info("%s version %d AVAILABLE (%d warmup requests replayed)", self.name, number, replayed)

    def _label_version(self, label: str) -> int:
        if label not in self.labels:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        return self.labels[label]

    def resolve(self, spec: model_pb2.ModelSpec) -> Version:
        """The AVAILABLE version a ModelSpec asks for (latest when it names none)."""
        with self._lock:
            available = {n: v for n, v in self.versions.items() if v.state == AVAILABLE}
        number = (
            spec.version.value
            if spec.HasField("version")
            else self._label_version(spec.version_label)
            if spec.version_label
            else max(available, default=None)
        )
        if spec.name != self.name or number not in available:
            which = f"Latest({spec.name})" if number is None else f"Specific({spec.name}, {number})"
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {which}")
        return available[number]

    def predict(
        self, request: predict_pb2.PredictRequest, timeout_s: float | None = None
    ) -> predict_pb2.PredictResponse:
        """Answer a Predict request; ``timeout_s``: its remaining deadline (for the batch queue)."""
        import tensorflow as tf

        version = self.resolve(request.model_spec)
        outputs = run_request(version.model, request, self.max_batch, version.batcher, timeout_s)
        response = predict_pb2.PredictResponse()
        set_model_spec(
            response.model_spec,
            self.name,
            version.number,
            signature=request.model_spec.signature_name or contract.SERVING_SIGNATURE,
        )
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest):
        version = self.resolve(request.model_spec)
        if list(request.metadata_field) != ["signature_def"]:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata_field must be ['signature_def'], not {list(request.metadata_field)}",
            )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        set_model_spec(response.model_spec, self.name, version.number)
        response.metadata["signature_def"].Pack(
            get_model_metadata_pb2.SignatureDefMap(signature_def=version.signature_defs)
        )
        return response

    def status(self, spec: model_pb2.ModelSpec) -> get_model_status_pb2.GetModelStatusResponse:
        """Every version this server has known (or the one asked for) with its state."""
        with self._lock:
            versions = dict(self.versions) if spec.name == self.name else {}
        if not versions:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        if spec.HasField("version") or spec.version_label:
            number = spec.version.value if spec.HasField("version") else self._label_version(spec.version_label)
            if number not in versions:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find version {number} of model {spec.name}")
            versions = {number: versions[number]}
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, version in sorted(versions.items()):
            entry = response.model_version_status.add(version=number, state=version.state)
            entry.status.SetInParent()  # TF Serving always sends it, error_code OK when all is well
            if version.error:
                entry.status.error_code, entry.status.error_message = grpc.StatusCode.UNKNOWN.value[0], version.error
        return response

    def answer(self, context, method, request, *args):
        """Run a store method for a gRPC call; refusals become the call's status."""
        try:
            return method(request, *args)
        except RequestError as err:
            code, message = err.code, err.message
        except Exception as err:  # a bug: logged, answered INTERNAL, the server goes on
            log.exception("request failed")
            code, message = grpc.StatusCode.INTERNAL, one_line(err)
        context.abort(code, message)

    def rest(self, path: str) -> tuple[int, str]:
        """(HTTP status, JSON body) of a GET /v1/models/<name>[/versions/<v>|/labels/<l>]."""
        match = _REST_PATH.match(path)
        try:
            if not match:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Malformed request: GET {path}")
            spec = model_pb2.ModelSpec(name=match[1], version_label=match[3] or "")
            if match[2]:
                spec.version.value = int(match[2])
            return 200, json_format.MessageToJson(
                self.status(spec), preserving_proto_field_name=True, including_default_value_fields=True
            )
        except RequestError as err:
            return _HTTP_CODES.get(err.code, 500), json.dumps({"error": err.message})


class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer):
    """Both services on one store; Classify, Regress, MultiInference and
    HandleReloadConfigRequest keep the generated UNIMPLEMENTED answer."""

    def __init__(self, store: ModelStore):
        self.store = store

    def Predict(self, request, context):
        return self.store.answer(context, self.store.predict, request, context.time_remaining())

    def GetModelMetadata(self, request, context):
        return self.store.answer(context, self.store.metadata, request)

    def GetModelStatus(self, request, context):
        return self.store.answer(context, self.store.status, request.model_spec)


def _rest_handler(store: ModelStore):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = store.rest(self.path)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # no line per request on stderr
            pass

    return Handler


class LocalServer:
    """The stand-in, started and stopped in-process (tests, ``stellarpop serve``); the versions,
    labels (``server.store.labels = {...}`` moves them) and warmup counts are in ``server.store``.

    Parameters
    ----------
    model_base_path : folder of numbered SavedModel versions (``<base>/<version>/``)
    port, rest_port : gRPC and REST ports (0: any free one; ``rest_port=None``: no REST)
    host : interface to bind (``0.0.0.0`` to accept other machines)
    poll_s : seconds between scans of the base path
    max_batch : most Examples in one request; max_message_mb : largest gRPC message, MiB (one
        spectrum is about 46 KB); both answered RESOURCE_EXHAUSTED above
    labels : version labels, ``{"stable": 2}`` or ``"stable=2,canary=3"``
    workers : gRPC worker threads (concurrent requests)
    batch_wait_ms : how long a request may wait for others to be merged with: 0 merges only the
        requests queued while the model was busy (no added latency); None: no merging
    """

    def __init__(
        self,
        model_base_path: str,
        model_name: str = contract.MODEL_NAME,
        port: int = 8500,
        rest_port: int | None = 8501,
        host: str = "localhost",
        poll_s: float = 2.0,
        max_batch: int = 1024,
        max_message_mb: int = 128,
        labels: Mapping[str, int] | str | None = None,
        workers: int = 16,
        batch_wait_ms: float | None = 0.0,
    ):
        self.store = ModelStore(model_base_path, model_name, labels, max_batch, batch_wait_ms)
        self.port, self.rest_port, self.host, self.poll_s = port, rest_port, host, float(poll_s)
        self.max_message_mb, self.workers = max_message_mb, workers
        self._grpc = self._http = self._poller = None
        self._stop = threading.Event()

    @property
    def target(self) -> str:
        """``host:port`` for a client."""
        host = "localhost" if self.host in ("0.0.0.0", "::", "[::]", "") else self.host
        return f"{host}:{self.port}"

    def start(self) -> tuple[int, int | None]:
        """Load the versions already there (before the ports open, as TF Serving does), then
        serve and poll in background threads; returns the bound (gRPC, REST or None) ports."""
        self.store.poll()
        if not self.store.versions:
            log.warning("no versions under %s yet; waiting for one", self.store.base_path)
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="stellarpop-grpc"),
            options=channel_options(self.max_message_mb),
        )
        servicer = _Servicer(self.store)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, self._grpc)
        try:
            self.port = self._grpc.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:  # grpc's way of saying the port is taken
            raise OSError(f"gRPC port {self.host}:{self.port}: cannot listen ({exc})") from None
        self._grpc.start()
        if self.rest_port is not None:
            try:
                self._http = http.server.ThreadingHTTPServer((self.host, self.rest_port), _rest_handler(self.store))
            except OSError as exc:
                self._grpc.stop(0)
                raise OSError(
                    f"REST port {self.host}:{self.rest_port}: cannot listen ({exc.strerror or exc})"
                ) from None
            self._http.daemon_threads = True
            self.rest_port = self._http.server_address[1]
            threading.Thread(target=self._http.serve_forever, name="stellarpop-rest", daemon=True).start()
        self._poller = threading.Thread(target=self._poll_loop, name="stellarpop-poll", daemon=True)
        self._poller.start()
        return self.port, self.rest_port

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.store.poll()
            except Exception:  # a bad scan must not end polling
                log.exception("polling %s failed", self.store.base_path)

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop serving (in-flight requests get ``grace_s`` seconds) and polling."""
        self._stop.set()
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._poller is not None:
            self._poller.join(timeout=30)
        for version in list(self.store.versions.values()):
            if version.batcher is not None:
                version.batcher.close()

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(
    model_base_path: str,
    model_name: str = contract.MODEL_NAME,
    port: int = 8500,
    rest_port: int | None = 8501,
    poll_s: float = 2.0,
    max_batch: int = 1024,
    labels: Mapping[str, int] | str | None = None,
    host: str = "localhost",
    max_message_mb: int = 128,
) -> None:
    """Run the stand-in until SIGINT or SIGTERM (parameters: :class:`LocalServer`); prints one
    line when it is ready, with the gRPC target and the REST status URL."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():  # before the ready line: a stop may follow it at once
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    server = LocalServer(model_base_path, model_name, port, rest_port, host, poll_s, max_batch, max_message_mb, labels)
    grpc_port, http_port = server.start()
    rest = (
        f", REST status http://{server.target.rsplit(':', 1)[0]}:{http_port}/v1/models/{model_name}"
        if http_port
        else ""
    )
    print(f"serving {model_name} from {model_base_path}: gRPC {server.target}{rest}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
