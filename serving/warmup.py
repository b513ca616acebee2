"""TF Serving's warmup records of an export: written at export, read and replayed.

TF Serving replays ``<export>/assets.extra/tf_serving_warmup_requests`` (a TFRecord file of
``PredictionLog`` protos) when it loads a version and reports the version AVAILABLE only
afterwards, so the first real requests do not pay for lazy initialisation (on a GPU: cuDNN
and cuBLAS autotuning, memory pools, kernel loading). The Trainer writes it at export time
from a few real serialized Examples with :func:`write_warmup` (TF Serving refuses more than
1000 records) and can check it with :func:`check_warmup`: a warmup request that fails makes
TF Serving refuse the version. The replay runs each request through
:func:`~stellarpop.serving.requests.run_request`, as the local stand-in does.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

from google.protobuf.message import DecodeError
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from stellarpop.serving.client import MODEL_NAME, predict_request
from stellarpop.serving.requests import run_request

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's limit (servables/tensorflow/saved_model_warmup_util.cc)


def warmup_path(export_dir: str) -> str:
    """``<export_dir>/assets.extra/tf_serving_warmup_requests``, where TF Serving looks."""
    return os.path.join(export_dir, "assets.extra", WARMUP_FILE)


def write_warmup(export_dir: str, serialized_examples: Sequence[bytes], model_name: str = MODEL_NAME,
                 max_records: int = MAX_RECORDS, batch_size: int = 4) -> str:
    """Write the warmup requests of an export: Predict requests of ``batch_size`` Examples each.

    Parameters
    ----------
    export_dir : a SavedModel folder (one version: ``<base>/<version>/``)
    serialized_examples : serialized tf.train.Examples of real spectra (about 46 KB each, so
        a few dozen are plenty: every record is read and run at each load)
    model_name : written into each request's model spec (TF Serving ignores it at warmup)
    max_records : at most this many records (1 to 1000); surplus Examples are left out
    batch_size : Examples per request

    Returns
    -------
    str, the path written (atomically: a temporary file renamed into place)

    Raises
    ------
    ValueError
        No Examples, ``max_records`` outside 1..1000, ``batch_size`` < 1, or an Example that is
        not bytes.
    FileNotFoundError
        ``export_dir`` is not a folder.
    """
    import tensorflow as tf

    if not 1 <= max_records <= MAX_RECORDS:
        raise ValueError(f"max_records must be 1 to {MAX_RECORDS} (TF Serving's limit), not {max_records}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if not serialized_examples:
        raise ValueError("no serialized Examples to write warmup requests from")
    if not all(isinstance(s, bytes) for s in serialized_examples):
        raise ValueError("warmup Examples must be serialized tf.train.Examples (bytes)")
    if not tf.io.gfile.isdir(export_dir):  # gfile: a Trainer on Kubeflow exports to gs://
        raise FileNotFoundError(f"{export_dir}: no such export folder")
    path = warmup_path(export_dir)
    tf.io.gfile.makedirs(os.path.dirname(path))
    n_records = min(max_records, math.ceil(len(serialized_examples) / batch_size))
    with tf.io.TFRecordWriter(path + ".tmp") as writer:
        for i in range(n_records):
            batch = serialized_examples[i * batch_size:(i + 1) * batch_size]
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(predict_request(batch, model_name))
            writer.write(log.SerializeToString())
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return path


def read_warmup(export_dir: str) -> list[predict_pb2.PredictRequest]:
    """The warmup Predict requests of an export, in file order ([] when it has none).

    Raises
    ------
    ValueError
        A record that is not a ``PredictionLog`` with a ``predict_log`` (this project writes
        only Predict warmups; TF Serving would also accept classify/regress logs).
    """
    import tensorflow as tf

    path = warmup_path(export_dir)
    if not tf.io.gfile.exists(path):
        return []
    requests = []
    for i, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        try:
            log = prediction_log_pb2.PredictionLog.FromString(record)
        except DecodeError:
            raise ValueError(f"{path}: record {i} is not a PredictionLog") from None
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"{path}: record {i} is not a predict log ({log.WhichOneof('log_type')})")
        requests.append(log.predict_log.request)
    return requests


def replay_warmup(model, export_dir: str) -> int:
    """Run an export's warmup requests on its loaded SavedModel, as TF Serving does before it
    reports the version AVAILABLE; returns how many ran (a failing one raises RequestError)."""
    requests = read_warmup(export_dir)
    for request in requests:
        run_request(model, request)
    return len(requests)


def check_warmup(export_dir: str) -> int:
    """Load an export and replay its warmup requests (e.g. right after :func:`write_warmup`, so
    a bad record fails the export, not the server); returns how many ran."""
    import tensorflow as tf

    return replay_warmup(tf.saved_model.load(export_dir), export_dir)
