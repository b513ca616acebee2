"""The tf.Transform ``preprocessing_fn``: flux normalisation, noise and mask channels,
min-max label scaling with serving-time ranges, and the S/N and redshift slicing buckets.

Everything here runs inside the transform graph, so the exported model applies exactly
the same preprocessing to a serving request as training did. The numpy reference of the
normalisation is ``components.spectra.normalisation``; the tests hold the two together.

Outputs (``features.transformed_name`` of):

- ``flux``: flux / median of the unmasked, finite pixels in the normalisation window,
  shape (5100,). A spectrum whose window median is not finite and positive (ingest
  rejects those; see ``spectra.check_normalisable``) gets flux 0 and mask 1 everywhere
  rather than NaN or inf, so one bad record cannot poison a training batch.
- ``mask``: float 0/1, 1 where the pixel is masked or its flux is not finite.
- ``noise``: 1/sqrt(ivar) in the same normalised units, clipped to ``NOISE_CLIP``;
  pixels with ivar == 0 (no information) get ``NOISE_CLIP``.
- each of ``features.LABEL_KEYS``: the label min-max scaled to [0, 1] over the analysed
  data; the label source (pPXF labels or simulated truth) is a ``custom_config`` choice
  but the output is always named after ``LABEL_KEYS``. A label with max == min scales to 0.
- ``{label}_min`` and ``{label}_max``: the analyser min and max of each label, repeated
  per example. They depend on no label input, so the TFT layer still returns them for a
  serving request without labels, and the model can inverse-scale in-graph.
- ``snr_r`` bucket (``snr_bin_xf``): index into ``features.SNR_BIN_EDGES``:
  [5, 10) -> 0, ..., [25, 30) -> 4, >= 30 -> 5; below 5 (or NaN) -> -1.
- ``z`` bucket (``z_bin_xf``): index into ``features.Z_BIN_EDGES``:
  [0, 0.06) -> 0, ..., [0.15, 0.18) -> 5, [0.18, 0.30] -> 6 (closed: the paper's sample
  includes z = 0.3); z > 0.30 -> 7; z < 0 (or NaN) -> -1.
- ``z``: the catalogue redshift passed through (float32), which a model needs to build the
  rest-frame view of the spectrum inside its graph (``pipeline.rest_frame.RestFrame``).

Scalar outputs have shape (B,), whatever the raw schema says: scalars of shape [] or [1]
(SchemaGen's) and variable-length features (densified) are all accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from stellarpop.components import cache_key
from stellarpop.schema import config_codec
from stellarpop.schema import features as F
from stellarpop.transforms.config import PreprocessingConfig

# Not a raw feature, so not in features.py: the name of the noise channel.
NOISE = "noise"
SNR_BIN = F.SNR_BIN
Z_BIN = F.Z_BIN

FLUX_XF = F.transformed_name(F.FLUX)
MASK_XF = F.transformed_name(F.MASK)
NOISE_XF = F.transformed_name(NOISE)
SNR_BIN_XF = F.transformed_name(SNR_BIN)
Z_BIN_XF = F.transformed_name(Z_BIN)
Z_XF = F.transformed_name(F.Z)
LABEL_XF_KEYS = tuple(F.transformed_name(k) for k in F.LABEL_KEYS)

# Largest noise (normalised flux units) given to the network: S/N 1 per pixel at the
# continuum level carries almost nothing, and unbounded inputs destabilise training.
NOISE_CLIP = 1.0

# The raw features a serving request must carry (labels and everything else are optional).
RAW_INPUT_KEYS = (F.FLUX, F.IVAR, F.MASK, F.Z, F.SNR_R, F.BPT_CLASS)

# custom_config: the PreprocessingConfig (as a mapping) under this key, and bookkeeping that
# the pipeline adds for TFX's cache (read by nobody here); any other key is an error.
CONFIG_KEY = "preprocessing"
BOOKKEEPING_KEYS = (cache_key.CODE_FINGERPRINT,)


def range_keys(label_key: str) -> tuple[str, str]:
    """Names of the per-example analyser (min, max) outputs of a label, e.g.
    ``('log_age_min_xf', 'log_age_max_xf')``."""
    return F.transformed_name(label_key + "_min"), F.transformed_name(label_key + "_max")


def label_input_keys(label_source: str) -> tuple[str, ...]:
    """The raw features that feed ``LABEL_KEYS`` for a label source ('ppxf' or 'truth')."""
    try:
        return F.LABEL_SOURCES[label_source]
    except KeyError:
        raise ValueError(f"label_source {label_source!r}; expected one of {sorted(F.LABEL_SOURCES)}") from None


def resolve_config(custom_config: Mapping[str, Any] | None) -> PreprocessingConfig:
    """The :class:`PreprocessingConfig` in Transform's ``custom_config`` (under
    :data:`CONFIG_KEY`; absent: the defaults).

    Raises
    ------
    ValueError
        For a key that is neither the config nor bookkeeping, or unknown keys inside it.
    """
    raw = dict(custom_config or {})
    config_codec.check_keys_in(raw, (CONFIG_KEY,) + BOOKKEEPING_KEYS, "Transform custom_config")
    return config_codec.from_dict(PreprocessingConfig, raw.get(CONFIG_KEY), "Transform custom_config.preprocessing")


def window_slice(centre: float, half_width: float, grid: np.ndarray | None = None) -> slice:
    """Pixels of the grid inside [centre - half_width, centre + half_width] (inclusive, as
    ``spectra.normalisation``).

    Raises
    ------
    ValueError when no pixel centre lies in the window.
    """
    grid = F.model_grid() if grid is None else grid
    idx = np.flatnonzero((grid >= centre - half_width) & (grid <= centre + half_width))
    if idx.size == 0:
        raise ValueError(f"normalisation window {centre} +- {half_width} A holds no pixel of the grid")
    return slice(int(idx[0]), int(idx[-1]) + 1)


def masked_median(values: tf.Tensor, excluded: tf.Tensor) -> tf.Tensor:
    """Exact median along the last axis over the entries that are not excluded.

    The same definition as ``np.nanmedian`` with the excluded entries set to NaN: for an
    even count, the mean of the two middle values.

    Parameters
    ----------
    values : Tensor, shape (B, W), float32
    excluded : Tensor, shape (B, W), bool

    Returns
    -------
    Tensor, shape (B,), NaN where every entry of a row is excluded
    """
    count = tf.reduce_sum(tf.cast(~excluded, tf.int32), axis=-1)
    pushed_out = tf.where(excluded, tf.constant(np.inf, values.dtype), values)
    ordered = tf.sort(pushed_out, axis=-1)
    low = tf.gather(ordered, tf.maximum((count - 1) // 2, 0), axis=-1, batch_dims=1)
    high = tf.gather(ordered, count // 2, axis=-1, batch_dims=1)
    median = 0.5 * (low + high)
    return tf.where(count > 0, median, tf.constant(np.nan, values.dtype))


def normalise_spectrum(flux: tf.Tensor, ivar: tf.Tensor, mask: tf.Tensor, window: slice) -> dict[str, tf.Tensor]:
    """Flux, mask and noise channels, normalised by the window median.

    Parameters
    ----------
    flux, ivar : Tensor, shape (B, N), float32
    mask : Tensor, shape (B, N), nonzero where masked
    window : pixels of the normalisation window (:func:`window_slice`)

    Returns
    -------
    {FLUX_XF, MASK_XF, NOISE_XF}: float32, shape (B, N); and 'norm', shape (B,)
    """
    finite = tf.math.is_finite(flux)
    bad = tf.not_equal(mask, 0) | ~finite
    norm = masked_median(flux[:, window], bad[:, window])
    ok = tf.math.is_finite(norm) & (norm > 0)
    safe_norm = tf.where(ok, norm, tf.ones_like(norm))[:, None]
    usable = ok[:, None] & finite
    sigma = tf.where(ivar > 0, tf.math.rsqrt(tf.where(ivar > 0, ivar, tf.ones_like(ivar))), np.inf)
    noise = tf.minimum(sigma / safe_norm, NOISE_CLIP)
    return {
        FLUX_XF: tf.where(usable, flux / safe_norm, tf.zeros_like(flux)),
        MASK_XF: tf.cast(bad | ~ok[:, None], tf.float32),
        NOISE_XF: tf.where(ok[:, None], noise, tf.fill(tf.shape(noise), NOISE_CLIP)),
        "norm": norm,
    }


def bucketize(values: tf.Tensor, edges: tuple[float, ...], closed_last: bool = False) -> tf.Tensor:
    """Index of the bin ``edges[i] <= x < edges[i + 1]``; -1 below ``edges[0]`` or NaN.

    With ``closed_last`` the last bin includes its upper edge and values above it get
    ``len(edges) - 1``; otherwise the last bin is open (x >= edges[-1] -> len(edges) - 1).

    Returns
    -------
    Tensor, same shape as ``values``, int64
    """
    inner = edges[:-1] if closed_last else edges
    index = tf.cast(tf.raw_ops.Bucketize(input=values, boundaries=[float(e) for e in inner]), tf.int64) - 1
    if closed_last:
        index = tf.where(values > edges[-1], tf.cast(len(edges) - 1, tf.int64), index)
    return tf.where(tf.math.is_nan(values), tf.constant(-1, tf.int64), index)


def scale_labels(inputs: Mapping[str, tf.Tensor], label_source: str, like: tf.Tensor) -> dict[str, tf.Tensor]:
    """Min-max scaled labels and their per-example analyser ranges.

    Parameters
    ----------
    inputs : raw features holding the label source's keys, shape (B,)
    label_source : 'ppxf' (``LABEL_KEYS``) or 'truth' (``TRUTH_KEYS``)
    like : Tensor, shape (B,), float32, that every serving request has (for the ranges)

    Returns
    -------
    {transformed_name(k), k_min_xf, k_max_xf for k in LABEL_KEYS}, float32, shape (B,)
    """
    out = {}
    for key, raw_key in zip(F.LABEL_KEYS, label_input_keys(label_source)):
        if raw_key not in inputs:
            raise KeyError(f"label feature {raw_key!r} (label_source={label_source!r}) missing from the data")
        label = tf.cast(inputs[raw_key], tf.float32)
        low, high = tft.min(label), tft.max(label)
        out[F.transformed_name(key)] = tf.math.divide_no_nan(label - low, high - low)
        min_key, max_key = range_keys(key)
        out[min_key] = tf.zeros_like(like) + low
        out[max_key] = tf.zeros_like(like) + high
    return out


def dense(values: tf.Tensor | tf.SparseTensor, width: int | None = None) -> tf.Tensor:
    """A raw feature as a dense (B,) scalar (``width`` None) or (B, width) tensor.

    Accepts what different schemas give: shape [] or [1] (SchemaGen's scalars) and
    SparseTensors (features a schema left variable-length).
    """
    if isinstance(values, tf.SparseTensor):
        values = tf.sparse.to_dense(values)
    return tf.reshape(values, [-1] if width is None else [-1, width])


def preprocessing_fn(inputs: Mapping[str, tf.Tensor], custom_config: Mapping[str, Any] | None = None) -> dict:
    """tf.Transform entry point (TFX Transform passes ``custom_config``).

    Parameters
    ----------
    inputs : raw features of ``components.examples.feature_spec`` (batched)
    custom_config : optional {'preprocessing': a ``PreprocessingConfig`` as a mapping}, plus
        the pipeline's bookkeeping keys

    Returns
    -------
    dict of transformed features (see the module docstring)
    """
    config = resolve_config(custom_config)
    window = window_slice(*config.norm_window)
    flux, ivar, mask = (dense(inputs[k], F.N_PIXELS) for k in (F.FLUX, F.IVAR, F.MASK))
    outputs = normalise_spectrum(tf.cast(flux, tf.float32), tf.cast(ivar, tf.float32), mask, window)
    outputs.pop("norm")
    outputs[SNR_BIN_XF] = bucketize(tf.cast(dense(inputs[F.SNR_R]), tf.float32), F.SNR_BIN_EDGES)
    outputs[Z_BIN_XF] = bucketize(tf.cast(dense(inputs[F.Z]), tf.float32), F.Z_BIN_EDGES, closed_last=True)
    outputs[Z_XF] = tf.cast(dense(inputs[F.Z]), tf.float32)
    labels = {k: dense(v) for k, v in inputs.items() if k in F.LABEL_KEYS + F.TRUTH_KEYS}
    outputs.update(scale_labels(labels, config.label_source, like=outputs[FLUX_XF][:, 0]))
    return outputs
