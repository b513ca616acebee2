"""Calibrate an existing export without retraining (``stellarpop calibrate``).

The Trainer calibrates every model it exports (``trainer.calibrate``). An export made before
that, or one to be calibrated on other held-out mocks, is rebuilt here: the same weights
(``export.restore_weights``) behind the transform graph it was trained with, calibrated on
training and held-out Examples, exported with the same signatures to a new folder (a new
version number: TF Serving versions are immutable). The means of the new export are checked
against the old one's on held-out Examples, so a transform graph that is not the model's is
refused rather than silently giving other predictions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from stellarpop.pipeline.training import calibration, export, inputs, models, trainer
from stellarpop.schema import features as F
from stellarpop.schema import model_contract as contract

CHECK_EXAMPLES = 256
MEAN_RTOL = 1e-4  # the same graph and weights give the same means up to float32 reordering


def check_same_means(old_dir: str, new_dir: str, eval_files: Sequence[str]) -> float:
    """Largest |difference| of the four means between two exports on held-out Examples,
    relative to the label's range; raises ``CalibrationError`` above :data:`MEAN_RTOL`."""
    records = tf.data.TFRecordDataset(list(eval_files), compression_type="GZIP").take(CHECK_EXAMPLES)
    examples = tf.constant([bytes(r) for r in records.as_numpy_iterator()])
    old, new = (
        tf.saved_model.load(d).signatures[contract.SERVING_SIGNATURE](examples=examples) for d in (old_dir, new_dir)
    )
    old, new = ({k: v.numpy() for k, v in out.items()} for out in (old, new))
    ranges = export.read_model_info(old_dir)["labels"]
    worst = max(float(np.max(np.abs(old[k] - new[k]))) / (ranges[k]["max"] - ranges[k]["min"]) for k in F.LABEL_KEYS)
    if not worst <= MEAN_RTOL:
        raise calibration.CalibrationError(
            f"{new_dir}: means differ from {old_dir} by {worst:.2g} of the label range: the transform graph "
            "is not the model's"
        )
    return worst


def check_arguments(model, transform_graph, train: Sequence[str], eval_: Sequence[str], output) -> tuple:
    """The command's arguments as :func:`recalibrate` takes them, or a one-line error naming
    the option: ``model`` an export or a folder of numbered versions (the newest)."""
    try:
        source = contract.export_dir(os.path.abspath(model))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"--model {exc}") from exc
    if not tf.io.gfile.exists(os.path.join(str(transform_graph), "transform_fn")):
        raise FileNotFoundError(f"--transform-graph {transform_graph}: not a Transform output (no transform_fn/)")
    for option, patterns in (("--train", train), ("--eval", eval_)):
        try:
            inputs.matching_files(patterns)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{option} {exc}") from exc
    if os.path.exists(output):
        raise FileExistsError(f"--output {output}: exists (exports are immutable: choose a new version folder)")
    return source, os.path.abspath(transform_graph), list(train), list(eval_), os.path.abspath(output)


def recalibrate(model_dir: str, transform_graph: str, train: Sequence[str], eval_: Sequence[str], out_dir: str) -> dict:
    """Export ``model_dir``'s weights, calibrated, to ``out_dir``; returns the new model_info.

    Parameters
    ----------
    model_dir : an export of ``export.export_model``
    transform_graph : the Transform output it was trained behind (``transform_graph/<id>``)
    train, eval_ : globs of raw gzipped Examples: the training split (the score's Gaussian)
        and a split the model never trained on (flag threshold, interval scales, warmup)
    out_dir : a new, absent folder
    """
    if tf.io.gfile.exists(out_dir):
        raise FileExistsError(f"{out_dir}: exists (exports are immutable: choose a new version folder)")
    info = export.read_model_info(model_dir)
    spec = models.get(info["architecture"])
    model = models.build(info["architecture"], **(info.get("hparams") or {}))
    digest = export.restore_weights(model, model_dir, info["architecture"], info.get("hparams"))
    tto = tft.TFTransformOutput(transform_graph)
    train_files, eval_files = inputs.matching_files(train), inputs.matching_files(eval_)
    seed = (info.get("training") or {}).get("seed") or 0
    batches = [
        inputs.input_fn(f, tto, trainer.CALIBRATION_BATCH, feature_keys=spec.inputs, file_seed=seed)
        for f in (train_files, eval_files)
    ]
    calib = calibration.fit(model, *batches)
    info = {
        **info,
        "calibration": calib.info(),
        "recalibrated_from": {
            "export": os.path.abspath(model_dir),
            "weights_sha256": digest,
            "train": list(train),
            "eval": list(eval_),
        },
    }
    info["serving"] = {**info["serving"], "outputs": list(export.OUTPUT_KEYS)}
    try:
        export.export_model(model, tto, out_dir, spec.predicts_variance, info, calib)
        check_same_means(model_dir, out_dir, eval_files)
        export.add_warmup(out_dir, eval_files)
    except Exception:
        if tf.io.gfile.exists(out_dir):
            tf.io.gfile.rmtree(out_dir)
        raise
    return info
