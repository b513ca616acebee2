"""Calibrated intervals and an out-of-domain score, fitted after training on held-out mocks
and built into the exported graph (``export.export_model``).

**Out-of-domain score.** The network's penultimate features (the input of its ``head``
layer: for ``default``, the layer-normalised pooled rest-frame and observed views and z,
225 values) are modelled as one Gaussian fitted to up to ``max_train`` training spectra
(a seeded sample of the files; covariance shrunk towards a scaled identity by the
Ledoit-Wolf formula, which matters when there are few spectra per dimension).
A spectrum's squared Mahalanobis distance from it, divided by the median of the held-out
(eval) spectra's, is its ``ood_score``: about 1 for a spectrum like the training mocks,
larger the farther its features lie from everything the network was trained on (Lee et
al. 2018, "A simple unified framework for detecting out-of-distribution samples").
``ood_flag`` is true where the score exceeds its ``flag_quantile`` (0.99) over the held-out
mocks: a spectrum farther from the training set than 99% of unseen training-like mocks,
so 1% of in-domain spectra are flagged by construction.

**Intervals.** Each predicted sigma is multiplied by ``sqrt(max(1, ood_score))`` (variance
grows with the distance beyond the typical one) and then by one factor per label, the
split-conformal 68.27% quantile of ``|prediction - label| / sigma`` over the held-out mocks
(Lei et al. 2018): at least 68.27% of those intervals hold the label (the truth, or pPXF's
value with ``label_source: ppxf``), and about as many on new spectra like them; intervals
widen where the network is out of its depth. The choice was measured (docs/model_card.md,
"Calibration"): for the shipped model (version 7), with the scale alone SDSS-like mocks
were covered 0.71-0.79; with the widening 0.64-0.73, and sky-dominated spectra 0.78-0.83
instead of 0.54-0.57.

The score and flag are fitted on the training split, the flag and scales on the eval split
(which only early stopping has seen); non-finite rows are left out and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from stellarpop.pipeline.training import models
from stellarpop.schema import features as F

HEAD_LAYER = "head"  # the dense layer whose input is the embedding (``models._gaussian_heads``)
COVERAGE = 0.6827  # a 1-sigma interval
FLAG_QUANTILE = 0.99
MAX_TRAIN, MAX_EVAL = 20_000, 50_000
MAX_DIM = 1024  # embeddings wider than this (``paper``'s 5184) get no score
EIG_FLOOR = 1e-6  # covariance eigenvalues below this fraction of the largest are raised to it
METHOD = "split-conformal scale of sigma * sqrt(max(1, ood_score)); Mahalanobis ood_score on the head's input"


class CalibrationError(ValueError):
    """The model or the data cannot be calibrated (no embedding, no held-out examples)."""


@dataclass(frozen=True)
class Calibration:
    """What the export applies (arrays) and records in ``model_info['calibration']`` (the rest).

    Attributes
    ----------
    mean, whitener : the training features' mean (D,) and W (D, D) with
        ``||(x - mean) W||^2`` the squared Mahalanobis distance
    median_d2 : median squared distance of the held-out mocks (the score's unit)
    threshold : ``ood_score`` above which ``ood_flag`` is set
    interval_scale : {label: factor on the widened sigma}
    summary : counts and the held-out coverage before and after, for the model card
    """

    mean: np.ndarray
    whitener: np.ndarray
    median_d2: float
    threshold: float
    interval_scale: dict[str, float]
    summary: dict[str, Any]

    def info(self) -> dict[str, Any]:
        """The JSON-serialisable part (model_info): everything but the two arrays."""
        return {
            "method": METHOD,
            "embedding_dim": int(self.mean.shape[0]),
            "median_d2": self.median_d2,
            "ood_threshold": self.threshold,
            "flag_quantile": FLAG_QUANTILE,
            "interval_scale": dict(self.interval_scale),
            **self.summary,
        }


def embedding_model(model: keras.Model) -> keras.Model | None:
    """A model sharing ``model``'s layers with outputs [model output, embedding], or None when
    the model has no ``head`` layer (``paper``) or its input is wider than :data:`MAX_DIM`."""
    names = {layer.name for layer in model.layers}
    if HEAD_LAYER not in names:
        return None
    embedding = model.get_layer(HEAD_LAYER).input
    if embedding.shape[-1] > MAX_DIM:
        return None
    return keras.Model(model.inputs, [model.output, embedding], name=f"{model.name}_embedding")


def collect(fm: keras.Model, batches: Iterable, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(outputs (N, 8), scaled labels (N, 4), embeddings (N, D), rows dropped) of up to
    ``limit`` examples of ``batches`` ((inputs, labels) as ``inputs.input_fn`` gives), the
    rows with a non-finite value left out."""
    outs, labels, embs, n = [], [], [], 0
    predict = tf.function(lambda x: fm(x, training=False))
    for inputs, y in batches:
        out, emb = predict(inputs)
        outs.append(np.asarray(out)), labels.append(np.asarray(y)), embs.append(np.asarray(emb))
        n += len(y)
        if n >= limit:
            break
    if not outs:
        raise CalibrationError("no examples to calibrate on")
    out, label, emb = (np.concatenate(a)[:limit] for a in (outs, labels, embs))
    finite = np.isfinite(out).all(axis=1) & np.isfinite(label).all(axis=1) & np.isfinite(emb).all(axis=1)
    if not finite.any():
        raise CalibrationError("no examples with finite outputs to calibrate on")
    return out[finite], label[finite], emb[finite], int((~finite).sum())


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """The Ledoit-Wolf (2004) shrunk covariance of centred rows ``x`` (N, D): the sample
    covariance pulled towards ``mu I`` (mu its mean variance) by the analytic optimal weight."""
    n, dim = x.shape
    sample = x.T @ x / n
    mu = np.trace(sample) / dim
    target_dist = np.sum((sample - mu * np.eye(dim)) ** 2)
    spread = np.sum((x**2).T @ (x**2)) / n - np.sum(sample**2)  # n x the variance of x_i x_i^T
    shrink = 0.0 if target_dist == 0 else min(1.0, max(0.0, spread / n) / target_dist)
    return (1.0 - shrink) * sample + shrink * mu * np.eye(dim)


def gaussian(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and whitening matrix of the embeddings (float64; Ledoit-Wolf covariance, tiny
    eigenvalues floored)."""
    x = embeddings.astype(np.float64)
    mean = x.mean(axis=0)
    cov = np.atleast_2d(ledoit_wolf(x - mean))
    eigval, eigvec = np.linalg.eigh(cov)
    eigval = np.maximum(eigval, max(float(eigval.max()), 1e-12) * EIG_FLOOR)
    return mean, eigvec / np.sqrt(eigval)


def squared_distance(embeddings: np.ndarray, mean: np.ndarray, whitener: np.ndarray) -> np.ndarray:
    return np.sum(((embeddings.astype(np.float64) - mean) @ whitener) ** 2, axis=1)


def conformal_quantile(values: np.ndarray, q: float = COVERAGE) -> float:
    """The split-conformal ``q`` quantile: the ceil((n + 1) q)-th smallest of n values."""
    v = np.sort(values[np.isfinite(values)])
    if not len(v):
        raise CalibrationError("no finite values to calibrate on")
    return float(v[min(len(v), math.ceil((len(v) + 1) * q)) - 1])


def widening(score: np.ndarray | tf.Tensor):
    """The factor on sigma for an ``ood_score`` (numpy or TF)."""
    if isinstance(score, np.ndarray):
        return np.sqrt(np.maximum(score, 1.0))
    return tf.sqrt(tf.maximum(score, 1.0))


def interval_scales(z: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """{label: conformal factor} for ``z`` = |label - mean| / sigma (N, 4) and the spectra's
    ``ood_score`` (N,): the factor on the widened sigma."""
    widened = z / widening(score)[:, None]
    return {k: conformal_quantile(widened[:, i]) for i, k in enumerate(F.LABEL_KEYS)}


def fit(
    model: keras.Model,
    train_batches: Iterable,
    eval_batches: Iterable,
    max_train: int = MAX_TRAIN,
    max_eval: int = MAX_EVAL,
) -> Calibration:
    """Fit the score on training examples and the flag and interval scales on held-out ones.

    Raises
    ------
    CalibrationError
        The model has no usable embedding or predicts no variance, or there is no data.
    """
    fm = embedding_model(model)
    if fm is None or model.output.shape[-1] != 2 * models.N_LABELS:
        raise CalibrationError(f"model {model.name!r} has no variance head or no embedding of <= {MAX_DIM} values")
    _, _, train_emb, train_dropped = collect(fm, train_batches, max_train)
    mean, whitener = gaussian(train_emb)
    out, labels, emb, eval_dropped = collect(fm, eval_batches, max_eval)
    d2 = squared_distance(emb, mean, whitener)
    median_d2 = float(np.median(d2))
    score = d2 / median_d2
    threshold = float(np.quantile(score, FLAG_QUANTILE))
    mu, logvar = out[:, : models.N_LABELS], out[:, models.N_LABELS :]
    z = np.abs(labels - mu) / np.exp(0.5 * logvar)
    scale = interval_scales(z, score)
    widened = z / widening(score)[:, None]
    summary = {
        "n_train": len(train_emb),
        "n_eval": len(emb),
        "non_finite_dropped": train_dropped + eval_dropped,
        "eval_coverage_before": {k: float(np.mean(z[:, i] <= 1)) for i, k in enumerate(F.LABEL_KEYS)},
        "eval_coverage_after": {k: float(np.mean(widened[:, i] <= scale[k])) for i, k in enumerate(F.LABEL_KEYS)},
        "eval_flagged": float(np.mean(score > threshold)),
    }
    return Calibration(mean, whitener, median_d2, threshold, scale, summary)


class Applied(tf.Module):
    """The calibration as TF constants (saved with the export): :meth:`__call__` turns the
    network's physical outputs and its embedding into the calibrated outputs."""

    def __init__(self, calibration: Calibration):
        super().__init__(name="calibration")
        self.mean = tf.constant(calibration.mean, tf.float32)
        self.whitener = tf.constant(calibration.whitener, tf.float32)
        self.median_d2 = float(calibration.median_d2)
        self.threshold = float(calibration.threshold)
        self.scale = dict(calibration.interval_scale)

    def __call__(self, physical: Mapping[str, tf.Tensor], embedding: tf.Tensor) -> dict[str, tf.Tensor]:
        centred = tf.matmul(tf.cast(embedding, tf.float32) - self.mean, self.whitener)
        score = tf.reduce_sum(tf.square(centred), axis=-1) / self.median_d2
        widen = widening(score)
        out = dict(physical)
        for key in F.LABEL_KEYS:
            out[key + F.ERR_SUFFIX] = physical[key + F.ERR_SUFFIX] * widen * self.scale[key]
        out[F.OOD_SCORE] = score
        out[F.OOD_FLAG] = tf.logical_not(score <= self.threshold)  # a NaN score is flagged
        return out


def uncalibrated(physical: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The outputs of a model without calibration: score NaN, flag true (nothing vouches for
    the spectrum), so that every export has the same outputs."""
    like = physical[F.LABEL_KEYS[0]]
    return {**physical, F.OOD_SCORE: tf.fill(tf.shape(like), math.nan), F.OOD_FLAG: tf.fill(tf.shape(like), True)}
