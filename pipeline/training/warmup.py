"""TF Serving's warmup records of an export: written at export, read and replayed.

TF Serving replays ``<export>/assets.extra/tf_serving_warmup_requests`` (a TFRecord file of
``PredictionLog`` protos) when it loads a version and reports the version AVAILABLE only
afterwards, so the first real requests do not pay for lazy initialisation (on a GPU: cuDNN
and cuBLAS autotuning, memory pools, kernel loading). The Trainer writes it at export time
from a few real serialized Examples with :func:`write_warmup` (TF Serving refuses more than
1000 records) and can check it with :func:`check_warmup`: a warmup request that fails makes
TF Serving refuse the version. The check calls each request's signature on the loaded
export; the local server (``stellarpop.serving.server``) replays them through its own request
path before a version is AVAILABLE.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from stellarpop.schema import model_contract as contract


def warmup_path(export_dir: str) -> str:
    """``<export_dir>/assets.extra/tf_serving_warmup_requests``, where TF Serving looks."""
    return os.path.join(export_dir, contract.WARMUP_FILE)


def write_warmup(
    export_dir: str,
    serialized_examples: Sequence[bytes],
    model_name: str = contract.MODEL_NAME,
    max_records: int = contract.MAX_WARMUP_RECORDS,
    batch_size: int = 4,
) -> str:
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

    if not 1 <= max_records <= contract.MAX_WARMUP_RECORDS:
        raise ValueError(
            f"max_records must be 1 to {contract.MAX_WARMUP_RECORDS} (TF Serving's limit), not {max_records}"
        )
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
            batch = serialized_examples[i * batch_size : (i + 1) * batch_size]
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(_request(batch, model_name))
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


def _request(serialized: Sequence[bytes], model_name: str) -> predict_pb2.PredictRequest:
    """A Predict request of ``serialized`` Examples for the export's serving signature."""
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model_name, contract.SERVING_SIGNATURE
    request.inputs[contract.INPUT_KEY].CopyFrom(tf.make_tensor_proto(list(serialized), dtype=tf.string))
    return request


def check_warmup(export_dir: str) -> int:
    """Load an export and call its signature on each warmup request (e.g. right after
    :func:`write_warmup`, so a bad record fails the export, not the server); returns how many
    ran.

    Raises
    ------
    ValueError
        A request the export refuses (one line: the record and TensorFlow's message).
    """
    import tensorflow as tf

    model = tf.saved_model.load(export_dir)
    requests = read_warmup(export_dir)
    for i, request in enumerate(requests):
        signature = model.signatures[request.model_spec.signature_name or contract.SERVING_SIGNATURE]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        try:
            signature(**inputs)
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{warmup_path(export_dir)}: record {i} is refused by the export: {first}") from None
    return len(requests)
