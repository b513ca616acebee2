"""The rest-frame view of a spectrum, built inside the graph from the catalogue z: a Keras
layer that resamples the observed-frame channels onto a log-lambda grid at SDSS's velocity
step, where a line of dispersion sigma is the same number of pixels at every wavelength and
every redshift."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from stellarpop.components import instrument
from stellarpop.schema import features as F

# Rest-frame step: SDSS's log10-lambda step (1e-4, 69 km/s per pixel). A line of dispersion
# sigma is sigma / 69 pixels wide at every wavelength and every redshift, which a
# convolution can measure. Rest pixel k is at 10 ** (REST_LOGLAM_ZERO + k * step); a
# spectrum's window is ``n_rest`` of them starting at a multiple of ``align``.
REST_LOGLAM_ZERO = math.log10(2920.0)
REST_LOGLAM_STEP = instrument.SDSS_DLOGLAM
# The observed range (3800-8899 A) spans 3697 rest pixels at every z.
OBSERVED_SPAN = (
    int(
        math.ceil(
            math.log10(F.GRID_START + (F.N_PIXELS - 1) * F.GRID_STEP) / REST_LOGLAM_STEP
            - math.log10(F.GRID_START) / REST_LOGLAM_STEP
        )
    )
    + 1
)
ALIGN = 64
N_REST = 3776  # window_length(ALIGN)


def window_length(align: int) -> int:
    """Rest pixels a window needs to hold the whole observed range from any start that is a
    multiple of ``align`` (up to ``align - 1`` pixels below the first observed one), rounded
    up to a multiple of ``align``."""
    return -(-(OBSERVED_SPAN + align - 1) // align) * align


def window_start(z: np.ndarray | float, align: int = ALIGN) -> np.ndarray:
    """Index (from REST_LOGLAM_ZERO; float, a whole number) of a spectrum's first rest pixel:
    the rest-frame pixel of the first observed one, rounded down to a multiple of ``align``.
    The layer computes it in float32: for z whose first pixel lies within ~0.003 pixel of a
    multiple of ``align`` the two may differ by one ``align``."""
    first = (math.log10(F.GRID_START) - np.log10(1.0 + np.asarray(z, np.float64)) - REST_LOGLAM_ZERO) / REST_LOGLAM_STEP
    return np.floor(first / align) * align


def rest_grid(z: float, n: int = N_REST, align: int = ALIGN) -> np.ndarray:
    """Rest-frame wavelengths (Angstrom, vacuum) of the rest-frame view of a spectrum at z."""
    return 10.0 ** (REST_LOGLAM_ZERO + REST_LOGLAM_STEP * (window_start(z, align) + np.arange(n)))


class RestFrame(keras.layers.Layer):
    """Observed-frame channels on the 1-A model grid -> the rest frame on a log-lambda grid.

    Inside the graph, from the catalogue z, so a serving request stays a raw observed-frame
    tf.Example. Each spectrum gets a window of ``n_rest`` rest pixels that starts at the
    rest-frame pixel of its first observed pixel, rounded down to a multiple of ``align``
    (:func:`rest_grid`). Windows of different z are whole multiples of ``align`` apart on one
    grid, so a network whose total stride divides ``align`` sees a line at the same phase of
    its stride whatever z is; a fixed grid wide enough for z 0-0.3 would be 29% longer (part
    of it zeros for every z) and cost as much more. Each rest pixel takes the linear
    interpolation of the two model-grid pixels around ``lambda_rest * (1 + z)``; rest pixels
    outside the observed range are 0 in every channel (no flux, no weight). The model-grid
    pixel (1 A) is 0.5-1.1 of a rest pixel (0.9-2.0 A at 3800-8900 A), so linear
    interpolation loses little resolution.

    Call with ``(channel_1, ..., channel_C, z)``, each channel (B, N_PIXELS) and z (B,);
    returns (B, n_rest, C).
    """

    def __init__(self, n_rest: int = N_REST, align: int = ALIGN, **kwargs):
        super().__init__(**kwargs)
        if n_rest < window_length(align):
            raise ValueError(
                f"n_rest {n_rest} cannot hold the observed range (needs {window_length(align)} at align {align})"
            )
        self.n_rest, self.align = n_rest, align

    def call(self, inputs):
        *channels, z = inputs
        z = tf.reshape(tf.cast(z, tf.float32), (-1, 1))
        first = (math.log10(F.GRID_START) - tf.math.log(1.0 + z) / math.log(10.0) - REST_LOGLAM_ZERO) / REST_LOGLAM_STEP
        start = tf.floor(first / self.align) * self.align
        # lambda_k (1 + z) = 10 ** (ZERO + step * start) (1 + z) * 10 ** (step * k): a per-spectrum
        # scale times a constant ramp, rather than a power per pixel.
        scale = tf.pow(10.0, REST_LOGLAM_ZERO + REST_LOGLAM_STEP * start) * (1.0 + z) / F.GRID_STEP
        ramp = tf.constant(10.0 ** (REST_LOGLAM_STEP * np.arange(self.n_rest)), tf.float32)
        pos = scale * ramp[None, :] - F.GRID_START / F.GRID_STEP
        left = tf.floor(pos)
        weight = pos - left
        inside = (left >= 0) & (left <= F.N_PIXELS - 2)
        # Scalar gathers from the flattened batch (row offsets added to the indices): ~40%
        # less time on CPU than gathering rows with batch_dims (22 against 35 ms per 512).
        index = tf.cast(tf.clip_by_value(left, 0, F.N_PIXELS - 2), tf.int32)
        index += F.N_PIXELS * tf.range(tf.shape(z)[0])[:, None]
        views = []
        for channel in channels:
            flat = tf.reshape(tf.cast(channel, tf.float32), (-1,))
            low, high = tf.gather(flat, index), tf.gather(flat, index + 1)
            views.append(tf.where(inside, low + weight * (high - low), 0.0))
        return tf.stack(views, axis=-1)

    def get_config(self):
        return {**super().get_config(), "n_rest": self.n_rest, "align": self.align}
