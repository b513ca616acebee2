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
from stellarpop.transforms import features as F

# Rest-frame grid: SDSS's log10-lambda step (1e-4, 69 km/s per pixel), from 2920 A (3800 A
# observed at z = 0.3) over 4864 pixels (to 8929 A, past 8899 A at z = 0; 4864 = 19 x 2^8,
# so eight stages can halve it). A line of dispersion sigma is sigma / 69 pixels wide at
# every wavelength and every redshift, which a convolution can measure.
REST_LOGLAM_START = math.log10(2920.0)
REST_LOGLAM_STEP = instrument.SDSS_DLOGLAM
N_REST = 4864


def rest_grid(n: int = N_REST) -> np.ndarray:
    """Rest-frame wavelengths (Angstrom, vacuum) of the default model's rest-frame view."""
    return 10.0 ** (REST_LOGLAM_START + REST_LOGLAM_STEP * np.arange(n))


class RestFrame(keras.layers.Layer):
    """Observed-frame channels on the 1-A model grid -> the rest frame on a log-lambda grid.

    Inside the graph, from the catalogue z, so a serving request stays a raw observed-frame
    tf.Example. Each rest pixel takes the linear interpolation of the two model-grid pixels
    around ``lambda_rest * (1 + z)``; rest pixels outside the observed range are 0 in every
    channel (no flux, not good, no precision), as the observed view's padding is. The
    model-grid pixel (1 A) is 55-90% of a rest pixel (1.0-1.4 A at 3800-8900 A), so linear
    interpolation loses little resolution.

    Call with ``(channels (B, N_PIXELS, C), z (B,))``; returns (B, n_rest, C).
    """

    def __init__(self, n_rest: int = N_REST, **kwargs):
        super().__init__(**kwargs)
        self.n_rest = n_rest

    def call(self, inputs):
        channels, z = inputs
        lam = tf.constant(rest_grid(self.n_rest), tf.float32)
        pos = (lam[None, :] * (1.0 + tf.reshape(tf.cast(z, tf.float32), (-1, 1))) - F.GRID_START) / F.GRID_STEP
        left = tf.floor(pos)
        weight = (pos - left)[..., None]
        valid = ((left >= 0) & (left <= F.N_PIXELS - 2))[..., None]
        index = tf.cast(tf.clip_by_value(left, 0, F.N_PIXELS - 2), tf.int32)
        low = tf.gather(channels, index, batch_dims=1)
        high = tf.gather(channels, index + 1, batch_dims=1)
        return tf.where(valid, low * (1.0 - weight) + high * weight, tf.zeros_like(low))

    def get_config(self):
        return {**super().get_config(), "n_rest": self.n_rest}
