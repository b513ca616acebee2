"""Keras architectures in a registry: the paper's Table 1 and the fast default.

Every model is a tf_keras functional model whose inputs are named after the transformed
features it reads (``preprocessing.FLUX_XF`` ...), so it can be called with the dict the
TFT layer returns. Targets are the four min-max scaled labels in ``features.LABEL_KEYS``
order, shape (batch, 4).

A registered builder comes with its :class:`ModelSpec`: the loss it trains with, whether it
predicts a variance, the inputs it reads and its default learning rate. A new architecture
is one function plus ``@register(...)``.

Output conventions
------------------
``predicts_variance=False`` (``paper``): (batch, 4) scaled label means.
``predicts_variance=True`` (``default``): (batch, 8): columns 0-3 the scaled means, 4-7 the
log-variances of a Gaussian in the scaled space (see :func:`split_outputs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from stellarpop.pipeline.training import rest_frame
from stellarpop.schema import features as F
from stellarpop.transforms import preprocessing as P

N_LABELS = len(F.LABEL_KEYS)

# Log-variance bounds (scaled space, labels in [0, 1]): sigma from ~0.0025 to ~4.5 label
# ranges. The lower bound keeps a confidently wrong prediction from blowing up the loss.
LOGVAR_MIN = -12.0
LOGVAR_MAX = 3.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    Attributes
    ----------
    name : registry name
    build : ``build(**hparams) -> keras.Model``
    loss : Keras loss ``loss(y_true (B, 4), y_pred) -> scalar``
    predicts_variance : True if ``y_pred`` is (B, 8): means then log-variances
    inputs : transformed feature names the model reads
    learning_rate : default Adam learning rate
    """

    name: str
    build: Callable[..., keras.Model]
    loss: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
    predicts_variance: bool
    inputs: tuple[str, ...]
    learning_rate: float


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str,
    loss: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    predicts_variance: bool,
    inputs: tuple[str, ...],
    learning_rate: float,
) -> Callable:
    """Decorator: register a builder under ``name`` with its training conventions."""

    def decorator(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, fn, loss, predicts_variance, tuple(inputs), learning_rate)
        return fn

    return decorator


def get(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered model."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {names()}") from None


def build(name: str, **hparams) -> keras.Model:
    """Build a registered model (uncompiled) with builder keyword arguments."""
    return get(name).build(**hparams)


def names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


# --- losses and metrics (scaled label space) -------------------------------------------------


def split_outputs(y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Means (B, 4) and clipped log-variances (B, 4) of a variance model's (B, 8) output."""
    mean, logvar = y_pred[:, :N_LABELS], y_pred[:, N_LABELS:]
    return mean, tf.clip_by_value(logvar, LOGVAR_MIN, LOGVAR_MAX)


def gaussian_nll(y_true: tf.Tensor, y_pred: tf.Tensor, beta: float = 0.0) -> tf.Tensor:
    """Gaussian negative log-likelihood per label, averaged over labels and batch.

    ``0.5 * log(2 pi) + 0.5 * logvar + 0.5 * (y - mu)^2 / exp(logvar)``, with the
    log-variance clipped to [LOGVAR_MIN, LOGVAR_MAX]. With ``beta > 0`` each term is
    weighted by ``stop_gradient(var ** beta)`` (beta-NLL, Seitzer et al. 2022), which keeps
    the mean from being neglected where the predicted variance is large.

    Parameters
    ----------
    y_true : Tensor, shape (B, 4), scaled labels
    y_pred : Tensor, shape (B, 8), means then log-variances

    Returns
    -------
    Tensor, scalar
    """
    y_true = tf.cast(y_true, y_pred.dtype)
    mean, logvar = split_outputs(y_pred)
    nll = _HALF_LOG_2PI + 0.5 * logvar + 0.5 * tf.square(y_true - mean) * tf.exp(-logvar)
    if beta:
        nll = nll * tf.stop_gradient(tf.exp(beta * logvar))
    return tf.reduce_mean(nll)


def mean_mse(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """MSE of the predicted means alone (comparable between ``paper`` and ``default``)."""
    y_true = tf.cast(y_true, y_pred.dtype)
    return tf.reduce_mean(tf.square(y_true - y_pred[:, :N_LABELS]))


def mse(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """The paper's loss: mean squared error of the four scaled labels (equation 1)."""
    return tf.reduce_mean(tf.square(tf.cast(y_true, y_pred.dtype) - y_pred))


# --- the paper's Table 1 ---------------------------------------------------------------------


@register("paper", loss=mse, predicts_variance=False, inputs=(P.FLUX_XF,), learning_rate=1e-4)
def paper(l2: float = 1e-5, dense_units: int = 5184) -> keras.Model:
    """The paper's CNN (Table 1): 209,142,868 parameters.

    Input flux (5100,), four blocks of two Conv1D (k=3, stride 1, 'valid', ReLU; 16, 32, 64,
    128 channels) each followed by MaxPooling1D(2), Flatten (40,320), Dense(5184, ReLU),
    Dense(4). The paper gives no output activation: linear (min-max scaled targets;
    a linear head can still extrapolate slightly beyond the training range). It uses L2
    regularisation without a coefficient; ``l2`` (on every kernel, default 1e-5) adds ~0.1
    to the initial loss of this network, the order of the MSE it trains to.

    Parameters
    ----------
    l2 : L2 coefficient on every kernel (0 disables)
    dense_units : width of the hidden dense layer (the paper's 5184)
    """
    reg = keras.regularizers.L2(l2) if l2 else None
    flux = keras.Input(shape=(F.N_PIXELS,), name=P.FLUX_XF)
    x = keras.layers.Reshape((F.N_PIXELS, 1), name="channels")(flux)
    for block, channels in enumerate((16, 32, 64, 128), start=1):
        for i in (1, 2):
            x = keras.layers.Conv1D(
                channels,
                3,
                strides=1,
                padding="valid",
                activation="relu",
                kernel_regularizer=reg,
                name=f"conv{block}_{i}",
            )(x)
        x = keras.layers.MaxPooling1D(2, name=f"pool{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", kernel_regularizer=reg, name="dense")(x)
    out = keras.layers.Dense(N_LABELS, kernel_regularizer=reg, name="labels")(x)
    return keras.Model({P.FLUX_XF: flux}, out, name="paper")


# --- the fast default ------------------------------------------------------------------------


def _residual_block(x: tf.Tensor, channels: int, kernel: int, name: str) -> tf.Tensor:
    """Pre-activation residual block; the last conv starts at zero, so the block starts as
    the identity and no normalisation layer is needed (nothing differs between training and
    inference)."""
    h = keras.layers.ReLU(name=f"{name}_relu1")(x)
    h = keras.layers.Conv1D(channels, kernel, padding="same", name=f"{name}_conv1")(h)
    h = keras.layers.ReLU(name=f"{name}_relu2")(h)
    h = keras.layers.Conv1D(channels, kernel, padding="same", kernel_initializer="zeros", name=f"{name}_conv2")(h)
    return keras.layers.Add(name=f"{name}_add")([x, h])


def padded_length(n_pixels: int, unit: int) -> int:
    """The smallest multiple of ``unit`` that holds ``n_pixels``."""
    return -(-n_pixels // unit) * unit


@register(
    "patch",
    loss=gaussian_nll,
    predicts_variance=True,
    inputs=(P.FLUX_XF, P.MASK_XF, P.NOISE_XF),
    learning_rate=1e-3,
)
def patch(
    patch: int = 16,
    embed: int = 48,
    stage_channels: tuple[int, ...] = (32, 48, 64, 128),
    kernel: int = 3,
    head_units: int = 128,
    dropout: float = 0.1,
) -> keras.Model:
    """Patch-embedded residual 1D CNN with a Gaussian head (~0.2M parameters): the first
    default (shipped until ``serving/models/default/2`` replaced it), kept for comparison. Its 16-pixel
    linear patch stem on the observed frame cannot resolve a line's width (~2-3 pixels).

    Three channels per pixel: flux, good = 1 - mask, and precision = 1 - noise/NOISE_CLIP
    (so that zero padding reads as "no data" in all three). The spectrum is zero-padded to
    a multiple of ``patch * 2**(stages - 1)`` pixels (5120 by default) and cut into
    patches of ``patch`` pixels, each linearly embedded to ``embed`` channels (the same as a
    kernel-16, stride-16 convolution, without the slow CPU backward pass of strided
    convolutions: ~2 ms per spectrum per training step on the busy 2-core machine, against
    ~7 ms for a strided-conv design of the same size). Each stage merges neighbouring
    positions in pairs (halving the length, except the first), projects to its channels
    and applies one residual block; global average and max pooling; a dense layer; two
    linear heads, the means (bias 0.5, the middle of the scaled range) and the
    log-variances (bias log(1/12), the variance of a uniform label), concatenated to (B, 8).

    Parameters
    ----------
    patch : pixels per patch
    embed : channels of the patch embedding
    stage_channels : channels of each stage (positions 320, 160, 80, 40 by default)
    kernel : kernel size of the residual convolutions
    head_units : width of the dense layer
    dropout : dropout before the heads
    """
    inputs = {k: keras.Input(shape=(F.N_PIXELS,), name=k) for k in (P.FLUX_XF, P.MASK_XF, P.NOISE_XF)}
    x = _observed_channels(inputs)
    x = _patch_stages(x, patch, embed, stage_channels, kernel, prefix="")
    pooled = _pool(x, prefix="")
    return keras.Model(inputs, _gaussian_heads(pooled, head_units, dropout), name="patch")


def _observed_channels(inputs: dict) -> tf.Tensor:
    """(B, N_PIXELS, 3): flux, good = 1 - mask, precision = 1 - noise / NOISE_CLIP, so that
    zero padding reads as "no data" in all three channels."""
    channels = {"flux": inputs[P.FLUX_XF], **_good_and_precision(inputs)}
    return keras.layers.Concatenate(name="stack")(
        [keras.layers.Reshape((F.N_PIXELS, 1), name=f"{k}_channel")(v) for k, v in channels.items()]
    )


def _good_and_precision(inputs: dict) -> dict[str, tf.Tensor]:
    """good = 1 - mask and precision = 1 - noise / NOISE_CLIP: 0 where a pixel is masked or
    has no information, as zero padding reads."""
    return {
        "good": keras.layers.Rescaling(-1.0, offset=1.0, name="good")(inputs[P.MASK_XF]),
        "precision": keras.layers.Rescaling(-1.0 / P.NOISE_CLIP, offset=1.0, name="precision")(inputs[P.NOISE_XF]),
    }


def _stages(x: tf.Tensor, stage_channels: tuple[int, ...], kernel: int, prefix: str, merge_first: bool) -> tf.Tensor:
    """Residual stages; each but (optionally) the first merges neighbouring positions in
    pairs (a lossless reshape that halves the length), projects and applies one block."""
    for i, width in enumerate(stage_channels, start=1):
        x = keras.layers.ReLU(name=f"{prefix}stage{i}_relu")(x)
        if i > 1 or merge_first:
            x = keras.layers.Reshape((x.shape[1] // 2, 2 * x.shape[2]), name=f"{prefix}stage{i}_merge")(x)
        x = keras.layers.Conv1D(width, 1, name=f"{prefix}stage{i}_proj")(x)
        x = _residual_block(x, width, kernel, name=f"{prefix}stage{i}_res")
    return keras.layers.ReLU(name=f"{prefix}final_relu")(x)


def _patch_stages(x, patch: int, embed: int, stage_channels, kernel: int, prefix: str) -> tf.Tensor:
    """Zero-pad to a multiple of ``patch * 2**(stages - 1)``, embed patches linearly, stages."""
    length = padded_length(x.shape[1], patch * 2 ** (len(stage_channels) - 1))
    pad = length - x.shape[1]
    x = keras.layers.ZeroPadding1D((pad // 2, pad - pad // 2), name=f"{prefix}pad")(x)
    x = keras.layers.Reshape((length // patch, x.shape[2] * patch), name=f"{prefix}patches")(x)
    x = keras.layers.Conv1D(embed, 1, name=f"{prefix}embed")(x)
    return _stages(x, stage_channels, kernel, prefix, merge_first=False)


def _pool(x: tf.Tensor, prefix: str) -> tf.Tensor:
    return keras.layers.Concatenate(name=f"{prefix}pool")(
        [
            keras.layers.GlobalAveragePooling1D(name=f"{prefix}avg")(x),
            keras.layers.GlobalMaxPooling1D(name=f"{prefix}max")(x),
        ]
    )


def _gaussian_heads(features: tf.Tensor, head_units: int, dropout: float, head_scale: float = 1.0) -> tf.Tensor:
    """A dense layer, then the means (bias 0.5, the middle of the scaled range) and the
    log-variances (bias log(1/12), the variance of a uniform label), as (B, 8). The heads'
    kernels start at ``head_scale`` times Glorot's variance, so that with unit-scale
    features the first predictions are the biases."""

    def init():  # a new instance per layer: one shared instance would give both the same values
        return keras.initializers.VarianceScaling(head_scale, "fan_avg", "uniform")

    h = keras.layers.Dense(head_units, activation="relu", name="head")(features)
    h = keras.layers.Dropout(dropout, name="dropout")(h)
    mean = keras.layers.Dense(
        N_LABELS, kernel_initializer=init(), bias_initializer=keras.initializers.Constant(0.5), name="mean"
    )(h)
    logvar = keras.layers.Dense(
        N_LABELS,
        kernel_initializer=init(),
        bias_initializer=keras.initializers.Constant(math.log(1 / 12)),
        name="logvar",
    )(h)
    return keras.layers.Concatenate(name="mean_logvar")([mean, logvar])


# --- the default: a rest-frame view at SDSS's velocity step beside the observed frame --------
@register(
    "default",
    loss=gaussian_nll,
    predicts_variance=True,
    inputs=(P.FLUX_XF, P.MASK_XF, P.NOISE_XF, P.Z_XF),
    learning_rate=1e-3,
)
def default(
    merge: int = 4,
    stem: int = 24,
    stage_channels: tuple[int, ...] = (24, 32, 48, 64),
    kernel: int = 3,
    obs_patch: int = 32,
    obs_embed: int = 24,
    obs_stage_channels: tuple[int, ...] = (24, 48),
    head_units: int = 128,
    dropout: float = 0.1,
) -> keras.Model:
    """Rest-frame view at full resolution for the kinematics and populations, observed view
    for what lives in the observed frame (sky, instrument), and z; Gaussian heads.

    Two channels per pixel: flux and weight = (1 - mask) (1 - noise / NOISE_CLIP), which is
    0 where a pixel is masked, has no information or is padding.

    - Rest view (:class:`~stellarpop.pipeline.training.rest_frame.RestFrame`: a window of 3776 pixels
      of 69 km/s that holds the observed range at any z): groups of ``merge`` pixels side by
      side (a lossless reshape), then a convolution over three groups (``stem`` channels; 12
      pixels, +-414 km/s, each pixel with its own weights, so a line of sigma 50-300 km/s,
      1.2-4.5 pixels wide after SDSS's LSF, keeps its width), then residual stages that
      each halve the length by merging pairs of positions before projecting (944 -> 472 ...
      -> 59 positions with the default four stages). The total stride, ``merge * 2 **
      stages`` (64), is the window's alignment.
    - Observed view: patches of ``obs_patch`` pixels of both channels, embedded linearly,
      then ``obs_stage_channels`` stages, for sky residuals, the instrument's throughput and masks.
    - Head: both views pooled (average and max) with z, layer-normalised, a dense layer,
      the means and the log-variances (Gaussian NLL, as :func:`patch`).

    This replaced (version 4) a rest view with a 7-pixel stem at every rest pixel of a fixed
    4864-pixel grid and six stages (16-96 channels), three input channels: 2.4x the time per
    spectrum (docs/model_card.md has both).

    Parameters
    ----------
    merge : rest pixels per position of the stem
    stem : channels of the stem convolution
    stage_channels : channels of the rest-frame stages
    kernel : kernel size of the residual convolutions
    obs_patch, obs_embed, obs_stage_channels : the observed view
    head_units : width of the dense layer
    dropout : dropout before the heads
    """
    inputs = {k: keras.Input(shape=(F.N_PIXELS,), name=k) for k in (P.FLUX_XF, P.MASK_XF, P.NOISE_XF)}
    inputs[P.Z_XF] = keras.Input(shape=(), name=P.Z_XF)
    channels = (inputs[P.FLUX_XF], keras.layers.Multiply(name="weight")(list(_good_and_precision(inputs).values())))
    align = merge * 2 ** len(stage_channels)
    n_rest = rest_frame.window_length(align)
    rest = rest_frame.RestFrame(n_rest, align, name="rest_frame")((*channels, inputs[P.Z_XF]))
    rest = keras.layers.Reshape((n_rest // merge, 2 * merge), name="rest_groups")(rest)
    rest = keras.layers.Conv1D(stem, 3, padding="same", name="rest_stem")(rest)
    rest = _stages(rest, stage_channels, kernel, prefix="rest_", merge_first=True)
    obs = _observed_patches(channels, obs_patch, obs_embed, len(obs_stage_channels))
    obs = _stages(obs, obs_stage_channels, kernel, prefix="obs_", merge_first=False)
    z = keras.layers.Reshape((1,), name="z_feature")(inputs[P.Z_XF])
    features = keras.layers.Concatenate(name="features")([_pool(rest, "rest_"), _pool(obs, "obs_"), z])
    # The two views' pooled activations differ in scale by the depth of their stacks; layer
    # normalisation (the same in training and inference) puts them on one footing.
    features = keras.layers.LayerNormalization(name="features_norm")(features)
    return keras.Model(inputs, _gaussian_heads(features, head_units, dropout, head_scale=0.01), name="default")


def _observed_patches(channels, patch: int, embed: int, stages: int) -> tf.Tensor:
    """Each (B, N_PIXELS) channel zero-padded to a multiple of ``patch * 2**(stages - 1)``
    (so that every stage after the first can halve the length) and cut into patches of
    ``patch`` pixels, the patches of all channels side by side, embedded linearly:
    (B, positions, embed)."""
    length = padded_length(F.N_PIXELS, patch * 2 ** (stages - 1))
    pad = length - F.N_PIXELS
    pieces = []
    for i, channel in enumerate(channels):
        x = keras.layers.Reshape((F.N_PIXELS, 1), name=f"obs_channel{i}")(channel)
        x = keras.layers.ZeroPadding1D((pad // 2, pad - pad // 2), name=f"obs_pad{i}")(x)
        pieces.append(keras.layers.Reshape((length // patch, patch), name=f"obs_patches{i}")(x))
    return keras.layers.Conv1D(embed, 1, name="obs_embed")(keras.layers.Concatenate(name="obs_stack")(pieces))
