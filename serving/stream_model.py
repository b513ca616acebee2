"""The streaming job's model: TFX's RunInference handler on the newest complete version under a
model base path, swapped in without a restart (tfx-bsl's handler ignores Beam's model
watching, so this module does the watching)."""

from __future__ import annotations

import json
import logging
import posixpath
import threading
import time
from typing import Any, NamedTuple

from apache_beam.io.filesystems import FileSystems

from stellarpop.schema import model_contract as contract
from stellarpop.schema.preparation import Preparation
from stellarpop.serving import predict

log = logging.getLogger("stellarpop.serving.stream")


def complete_versions(base_path: str) -> dict[int, str]:
    """``{version: folder}`` of the complete versions under ``base_path``
    (:func:`model_contract.versions`, listed with Beam's file systems: local or ``gs://``)."""
    return contract.versions(
        base_path, glob=lambda pattern: [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    )


def folder_stamp(folder: str) -> tuple:
    """Names and sizes of a folder's files (a version is loaded once this stops changing)."""
    return tuple(
        sorted((m.path, m.size_in_bytes) for m in FileSystems.match([posixpath.join(folder, "**")])[0].metadata_list)
    )


class LoadedVersion(NamedTuple):
    """A loaded version: tfx-bsl's RunInference handler, the model it loaded, its preparation."""

    number: int
    path: str
    preparation: Preparation
    handler: Any
    model: Any

    def predict(self, serialized: list[bytes]) -> list[dict[str, float]]:
        """Serialized Examples -> one {output: value} per Example (physical units)."""
        import tensorflow as tf

        logs = self.handler.run_inference(serialized, self.model)
        return [
            {k: float(tf.make_ndarray(v).reshape(-1)[0]) for k, v in p.predict_log.response.outputs.items()}
            for p in logs
        ]


def load_version(number: int, path: str) -> LoadedVersion:
    """Load a version with tfx-bsl's in-process handler (signature ``serving_default``)."""
    from tfx_bsl.public.beam.run_inference import CreateModelHandler
    from tfx_bsl.public.proto import model_spec_pb2

    handler = CreateModelHandler(
        model_spec_pb2.InferenceSpecType(
            saved_model_spec=model_spec_pb2.SavedModelSpec(model_path=path, signature_name=[contract.SERVING_SIGNATURE])
        )
    )
    with FileSystems.open(posixpath.join(path, contract.MODEL_INFO_FILE)) as fh:
        preparation = predict.preparation_of(json.loads(fh.read().decode("utf-8")))
    return LoadedVersion(number, path, preparation, handler, handler.load_model())


class ModelVersions:
    """The newest complete version under a base path (TF Serving layout), polled at most every
    ``poll_s``. tfx-bsl's handler cannot swap its model (no ``update_model_path``), so a newer
    version gets a handler of its own, loaded once its folder holds a saved_model.pb and has
    not changed since the previous poll (a copy has ended), and replaces the one in use in one
    assignment. A version that fails to load is retried when its folder changes."""

    def __init__(self, base_path: str, poll_s: float):
        self.base_path, self.poll_s = base_path, poll_s
        self._current: LoadedVersion | None = None
        self._lock = threading.Lock()
        self._next_poll = 0.0
        self._stamps: dict[int, tuple] = {}
        self._failed: dict[int, tuple] = {}

    def current(self) -> LoadedVersion:
        if time.monotonic() >= self._next_poll:
            with self._lock:
                if time.monotonic() >= self._next_poll:
                    self._refresh()
                    self._next_poll = time.monotonic() + self.poll_s
        if self._current is None:
            raise RuntimeError(f"{self.base_path}: no model version could be loaded")
        return self._current

    def _refresh(self) -> None:
        present = complete_versions(self.base_path)
        for number in sorted((n for n in present if self._current is None or n > self._current.number), reverse=True):
            stamp = folder_stamp(present[number])
            settled = self._current is None or self._stamps.get(number) == stamp
            self._stamps[number] = stamp
            if not settled or self._failed.get(number) == stamp:
                continue
            try:
                loaded = load_version(number, present[number])
            except Exception as err:  # noqa: BLE001 - keep predicting with the version in use
                self._failed[number] = stamp
                log.error("model version %d (%s) failed to load: %s", number, present[number], err)
                continue
            log.info("model version %s -> %d", self._current.number if self._current else None, number)
            self._current = loaded
            return


_VERSIONS: dict[str, ModelVersions] = {}
_VERSIONS_LOCK = threading.Lock()


def model_versions(base_path: str, poll_s: float) -> ModelVersions:
    """The process's one :class:`ModelVersions` of ``base_path`` (shared by DoFn instances)."""
    with _VERSIONS_LOCK:
        if base_path not in _VERSIONS:
            _VERSIONS[base_path] = ModelVersions(base_path, poll_s)
        return _VERSIONS[base_path]
