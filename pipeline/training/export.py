"""The exported serving model of the Trainer (:func:`export_model`, called by ``trainer.run_fn``).

The SavedModel in ``serving_model_dir`` (a generic SavedModel, not a Keras one) has:

- ``serving_default``: input ``examples``, string (B,), serialized raw tf.Examples that
  need only ``preprocessing.RAW_INPUT_KEYS`` (labels optional, ignored); outputs
  ``log_age``, ``mh``, ``ebv``, ``vd`` and ``log_age_err``, ``mh_err``, ``ebv_err``,
  ``vd_err``, float32 (B,), physical units (``features.py``). The errors are the predicted
  1-sigma, sqrt(var) times the label range, calibrated (``calibration.py``); a model
  without variance (``paper``) returns NaN errors, so that every model has the same
  outputs. ``ood_score`` float32 and ``ood_flag`` bool (B,): how far the spectrum lies
  from the training spectra (``calibration.py``; NaN and true for an uncalibrated model).
- ``transform_features``: input ``examples`` (raw, with labels, as the Evaluator reads
  them); outputs every transformed feature (for TFMA's slicing: ``snr_bin_xf``,
  ``z_bin_xf``; the raw ``bpt_class`` is sliced on directly).
- ``metadata``: input ``examples`` (ignored, may be empty: TF Serving refuses signatures
  without inputs); output ``model_info``, a JSON string (also written as
  ``assets.extra/model_info.json``): wavelength grid, normalisation window, label source,
  keys, units and ranges, architecture and hyperparameters, stellarpop version, training
  summary.

The Keras weights are the SavedModel's ``model_weights`` variables, in ``model.weights``
order: :func:`restore_weights` puts them into a freshly built model of the same
architecture (the Trainer's warm start from a blessed model, ``trainer.run_fn``).

:func:`skip_autograph_for_tf_keras` lives here because both the export and the training
(``trainer.train``) trace tf_keras functions, and this module cannot import the trainer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from stellarpop.pipeline.training import calibration as C
from stellarpop.pipeline.training import models
from stellarpop.schema import features as F
from stellarpop.schema import model_contract as contract
from stellarpop.transforms import preprocessing as P

ERR_SUFFIX = F.ERR_SUFFIX
OUTPUT_KEYS = F.PREDICTION_KEYS
# Warmup: 16 Examples (about 46 kB each) in requests of 4, so the first user request does not
# pay for the graph's first run; each record is replayed at every load.
WARMUP_EXAMPLES, WARMUP_BATCH = 16, 4
WEIGHTS_ATTR = "model_weights"  # the tf.Module attribute holding the Keras weights


def skip_autograph_for_tf_keras() -> None:
    """Let AutoGraph treat ``tf_keras`` as it treats ``keras``: not converted.

    TF 2.16's AutoGraph skips the modules ``tensorflow`` and ``keras`` but not
    ``tf_keras``, so every trace of a tf_keras train/test/predict function re-writes the
    Keras internals (about 1,300 functions): ~25 s of the first ``fit`` on two cores,
    against ~4 s with the rule. Keras code is written not to need AutoGraph, and the
    ``call`` of a user-defined layer is still converted. A private TF setting (guarded):
    without it, everything still works, only slower.
    """
    try:
        from tensorflow.python.autograph.core import config as autograph_config
    except ImportError:  # pragma: no cover - a TF without this module
        return
    rules = autograph_config.CONVERSION_RULES
    if not any(isinstance(r, autograph_config.DoNotConvert) and r.matches("tf_keras") for r in rules):
        autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert("tf_keras"),) + tuple(rules)


def to_physical(
    y_pred: tf.Tensor, transformed: Mapping[str, tf.Tensor], predicts_variance: bool
) -> dict[str, tf.Tensor]:
    """Inverse min-max scaling with the TFT layer's per-example label ranges.

    Parameters
    ----------
    y_pred : Tensor, (B, 4) scaled means, or (B, 8) means then log-variances
    transformed : TFT outputs holding ``preprocessing.range_keys`` of every label, (B,)
    predicts_variance : whether ``y_pred`` carries log-variances

    Returns
    -------
    {label: (B,), label_err: (B,)} float32, physical units; errors NaN without variance
    """
    mean = y_pred[:, : models.N_LABELS]
    sigma = tf.exp(0.5 * models.split_outputs(y_pred)[1]) if predicts_variance else None
    out = {}
    for i, key in enumerate(F.LABEL_KEYS):
        low, high = (transformed[k] for k in P.range_keys(key))
        span = high - low
        out[key] = low + mean[:, i] * span
        out[key + ERR_SUFFIX] = sigma[:, i] * span if predicts_variance else tf.fill(tf.shape(low), math.nan)
    return out


def package_version() -> str:
    try:
        return importlib_metadata.version("stellarpop")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def model_info(
    config: Any,
    label_ranges: Mapping[str, Sequence[float]],
    record: Mapping | None,
    calibration: C.Calibration | None = None,
) -> dict:
    """The self-description carried by the exported model (prediction prepares spectra with
    its ``preparation``); ``config`` is a ``trainer.TrainConfig``."""
    prep = config.preprocessing.preparation
    return {
        "stellarpop_version": package_version(),
        "architecture": config.model,
        "hparams": config.hparams,
        "predicts_variance": config.spec.predicts_variance,
        "wavelength_grid": {
            "start": F.GRID_START,
            "step": F.GRID_STEP,
            "n_pixels": F.N_PIXELS,
            "unit": "Angstrom",
            "frame": "observed, vacuum",
        },
        "normalisation_window": {"centre": prep.norm_centre, "half_width": prep.norm_half_width},
        "preparation": dataclasses.asdict(prep),
        "label_source": config.preprocessing.label_source,
        "labels": {
            k: {"unit": F.LABEL_UNITS[k], "min": float(label_ranges[k][0]), "max": float(label_ranges[k][1])}
            for k in F.LABEL_KEYS
        },
        "serving": {
            "input": contract.INPUT_KEY,
            "required_features": list(P.RAW_INPUT_KEYS),
            "outputs": list(OUTPUT_KEYS),
        },
        "training": None if record is None else training_summary(config, record),
        "calibration": None if calibration is None else calibration.info(),
        # The export whose weights training started from (a blessed model), or None.
        "warm_start_from": None if record is None else record.get("warm_start_from"),
    }


def training_summary(config: Any, record: Mapping[str, Any]) -> dict:
    summary = {
        k: record.get(k)
        for k in ("best_epoch", "best_val_loss", "monitor", "seconds", "initial_weights_sha256", "warm_start_skipped")
    }
    summary.update(seed=config.seed, epochs_run=len(record["history"].get("loss", [])))
    return summary


def metadata_signature(info_json: str):
    """The ``metadata`` signature: the model's self-description, one copy per input Example.

    The input is ignored (TF Serving refuses signatures without one), but the output has its
    batch dimension: TF Serving's batching (``--enable_batching``) batches every signature
    and refuses outputs without one. Clients send one empty Example.
    """
    spec = tf.TensorSpec([None], tf.string, name=contract.INPUT_KEY)

    @tf.function(input_signature=[spec])
    def metadata(examples):
        return {contract.METADATA_OUTPUT: tf.fill(tf.shape(examples)[:1], tf.constant(info_json))}

    return metadata


def export_model(
    model: keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    export_dir: str,
    predicts_variance: bool,
    info: Mapping[str, Any],
    calibration: C.Calibration | None = None,
) -> str:
    """Save ``model`` behind the TFT layer as a generic SavedModel with the signatures of
    the module docstring, plus ``assets.extra/model_info.json``.

    Parameters
    ----------
    model : a ``pipeline.models`` model (inputs named after transformed features)
    tf_transform_output : the transform graph the model was trained behind
    export_dir : destination (TFX ``serving_model_dir``)
    predicts_variance : whether the model outputs log-variances
    info : JSON-serialisable metadata (:func:`model_info`)
    calibration : intervals and out-of-domain score (``calibration.fit``); None: the errors
        as the network predicts them, ``ood_score`` NaN and ``ood_flag`` true
    """
    skip_autograph_for_tf_keras()
    module = tf.Module()
    # Only the weights are tracked, not the Keras model, so that saving does not trace the
    # Keras-specific functions of every layer. One TFT layer per input key set: a TFT
    # layer is finalised for the inputs it is first called with.
    setattr(module, WEIGHTS_ATTR, list(model.weights))
    module.tft_layer = tf_transform_output.transform_features_layer()
    module.tft_layer_eval = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    serving_spec = {k: raw_spec[k] for k in P.RAW_INPUT_KEYS}
    input_keys = list(model.input_names)
    embedding = C.embedding_model(model) if calibration is not None else None
    if calibration is not None:
        if embedding is None:
            raise C.CalibrationError(f"model {model.name!r} has no embedding for its calibration")
        module.calibration = C.Applied(calibration)
    info_json = json.dumps(info, sort_keys=True)
    examples_spec = tf.TensorSpec([None], tf.string, name=contract.INPUT_KEY)

    @tf.function(input_signature=[examples_spec])
    def serve(examples):
        transformed = module.tft_layer(tf.io.parse_example(examples, serving_spec))
        inputs = {k: transformed[k] for k in input_keys}
        if embedding is None:
            return C.uncalibrated(to_physical(model(inputs, training=False), transformed, predicts_variance))
        y_pred, features = embedding(inputs, training=False)
        return module.calibration(to_physical(y_pred, transformed, predicts_variance), features)

    @tf.function(input_signature=[examples_spec])
    def transform_features(examples):
        return module.tft_layer_eval(tf.io.parse_example(examples, raw_spec))

    metadata = metadata_signature(info_json)

    signatures = {
        contract.SERVING_SIGNATURE: serve,
        contract.TRANSFORM_SIGNATURE: transform_features,
        contract.METADATA_SIGNATURE: metadata,
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    tf.io.gfile.makedirs(os.path.join(export_dir, "assets.extra"))
    with tf.io.gfile.GFile(os.path.join(export_dir, contract.MODEL_INFO_FILE), "w") as f:
        f.write(json.dumps(info, indent=1, sort_keys=True))
    return export_dir


def exported_weights(export_dir: str) -> list[np.ndarray]:
    """The Keras model's weights in an export of :func:`export_model`, in ``model.weights``
    order (read from the SavedModel's variables; nothing is loaded or run)."""
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    names = reader.get_variable_to_shape_map()
    out = []
    while (key := f"{WEIGHTS_ATTR}/{len(out)}/.ATTRIBUTES/VARIABLE_VALUE") in names:
        out.append(reader.get_tensor(key))
    return out


def weights_digest(weights: Sequence[Any]) -> str:
    """SHA-256 of weight arrays (shapes, dtypes and values, in order): which weights a
    training started from or ended with, comparable across executions."""
    digest = hashlib.sha256()
    for w in weights:
        a = np.ascontiguousarray(np.asarray(w))
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def read_model_info(export_dir: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(export_dir, contract.MODEL_INFO_FILE)) as f:
        return json.load(f)


def restore_weights(model: keras.Model, export_dir: str, architecture: str | None = None, hparams=None) -> str:
    """Set ``model``'s weights to those exported in ``export_dir``; returns their digest.

    Raises
    ------
    ValueError
        The export is of another architecture or hyperparameters (as its model_info says),
        or its weights do not have the model's number and shapes; ``model`` is unchanged.
    """
    info = read_model_info(export_dir)
    if architecture is not None and (info.get("architecture"), info.get("hparams") or {}) != (
        architecture,
        hparams or {},
    ):
        raise ValueError(
            f"{export_dir} is a {info.get('architecture')!r} model with hparams {info.get('hparams')}, "
            f"not {architecture!r} with {hparams or {}}"
        )
    saved = exported_weights(export_dir)
    want = [tuple(v.shape) for v in model.weights]
    if [tuple(w.shape) for w in saved] != want:
        raise ValueError(
            f"{export_dir}: {len(saved)} exported weights do not fit the model's {len(want)} (shapes differ)"
        )
    for variable, value in zip(model.weights, saved):
        variable.assign(value)
    return weights_digest(saved)


def add_warmup(export_dir: str, files: Sequence[str], n_examples: int = WARMUP_EXAMPLES) -> str:
    """TF Serving's warmup requests for an export (``assets.extra/tf_serving_warmup_requests``),
    made of the first ``n_examples`` raw Examples of ``files`` (gzipped TFRecords), replayed
    once here so that a record the model refuses fails the export, not the server's load.
    Returns the path written."""
    from stellarpop.pipeline.training import warmup  # gRPC protos: only when exporting

    dataset = tf.data.TFRecordDataset(list(files), compression_type="GZIP").take(n_examples)
    serialized = [bytes(r) for r in dataset.as_numpy_iterator()]
    path = warmup.write_warmup(export_dir, serialized, batch_size=WARMUP_BATCH)
    warmup.check_warmup(export_dir)
    return path
