"""The model registry: the paper's Table 1 exactly, the rest-frame default, the patch model, their losses."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from stellarpop.components.instrument import SDSS_VELSCALE
from stellarpop.pipeline.training import models as M
from stellarpop.pipeline.training import rest_frame
from stellarpop.schema import features as F
from stellarpop.transforms import preprocessing as P

# Table 1 of the paper: (layer, output shape without the batch axis, parameters).
TABLE_1 = [
    ("conv1_1", (5098, 16), 64),
    ("conv1_2", (5096, 16), 784),
    ("pool1", (2548, 16), 0),
    ("conv2_1", (2546, 32), 1568),
    ("conv2_2", (2544, 32), 3104),
    ("pool2", (1272, 32), 0),
    ("conv3_1", (1270, 64), 6208),
    ("conv3_2", (1268, 64), 12352),
    ("pool3", (634, 64), 0),
    ("conv4_1", (632, 128), 24704),
    ("conv4_2", (630, 128), 49280),
    ("pool4", (315, 128), 0),
    ("flatten", (40320,), 0),
    ("dense", (5184,), 209024064),
    ("labels", (4,), 20740),
]


def random_inputs(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        P.FLUX_XF: (1 + 0.1 * rng.standard_normal((n, F.N_PIXELS))).astype(np.float32),
        P.MASK_XF: (rng.uniform(size=(n, F.N_PIXELS)) < 0.02).astype(np.float32),
        P.NOISE_XF: rng.uniform(0.01, 0.3, (n, F.N_PIXELS)).astype(np.float32),
        P.Z_XF: rng.uniform(F.Z_MIN, F.Z_MAX, n).astype(np.float32),
    }


def numpy_nll(y, pred, beta=0.0):
    mean, logvar = pred[:, :4], np.clip(pred[:, 4:], M.LOGVAR_MIN, M.LOGVAR_MAX)
    nll = 0.5 * np.log(2 * np.pi) + 0.5 * logvar + 0.5 * (y - mean) ** 2 / np.exp(logvar)
    return np.mean(nll * np.exp(beta * logvar))


def test_registry_lists_and_describes_models():
    assert {"paper", "default", "patch"} <= set(M.names())
    paper, default = M.get("paper"), M.get("default")
    assert not paper.predicts_variance and paper.loss is M.mse and paper.inputs == (P.FLUX_XF,)
    assert paper.learning_rate == 1e-4  # the paper's choice
    assert default.predicts_variance and default.loss is M.gaussian_nll
    assert set(default.inputs) == {P.FLUX_XF, P.MASK_XF, P.NOISE_XF, P.Z_XF}
    assert set(M.get("patch").inputs) == {P.FLUX_XF, P.MASK_XF, P.NOISE_XF}
    with pytest.raises(KeyError, match="unknown model"):
        M.get("resnet")
    with pytest.raises(ValueError, match="already registered"):
        M.register("paper", M.mse, False, (P.FLUX_XF,), 1e-3)(lambda: None)


def test_paper_model_is_table_1():
    keras.backend.clear_session()
    model = M.build("paper")
    try:
        assert model.count_params() == 209_142_868
        assert model.input_shape == {P.FLUX_XF: (None, F.N_PIXELS)}
        for name, shape, params in TABLE_1:
            layer = model.get_layer(name)
            assert layer.output_shape[1:] == shape, name
            assert layer.count_params() == params, name
        convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
        assert len(convs) == 8 and all(
            c.kernel_size == (3,)
            and c.strides == (1,)
            and c.padding == "valid"
            and c.activation is keras.activations.relu
            for c in convs
        )
        assert model.get_layer("labels").activation is keras.activations.linear
        assert len(model.losses) == 10  # L2 on every weight layer
        out = model({P.FLUX_XF: tf.ones((2, F.N_PIXELS))})
        assert out.shape == (2, 4)
    finally:
        del model
        keras.backend.clear_session()
        gc.collect()


@pytest.mark.parametrize("name", ["default", "patch"])
def test_variance_models_are_small_and_output_mean_and_logvar(name):
    keras.utils.set_random_seed(0)
    model = M.build(name)
    assert model.count_params() < 1_000_000
    x = {k: v for k, v in random_inputs(np.random.default_rng(0), 3).items() if k in M.get(name).inputs}
    out = model(x, training=False).numpy()
    assert out.shape == (3, 8) and np.all(np.isfinite(out))
    # At initialisation: means near the middle of the range, variance near a uniform's.
    np.testing.assert_allclose(out[:, :4], 0.5, atol=0.5)
    np.testing.assert_allclose(out[:, 4:], math.log(1 / 12), atol=1.0)
    mean, logvar = M.split_outputs(tf.constant([[0.1] * 4 + [-50.0, 0.0, 1.0, 50.0]]))
    assert mean.shape == (1, 4) and logvar.numpy().tolist() == [[M.LOGVAR_MIN, 0.0, 1.0, M.LOGVAR_MAX]]


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_gaussian_nll_equals_numpy_reference(beta):
    rng = np.random.default_rng(1)
    y = rng.uniform(size=(16, 4)).astype(np.float32)
    pred = np.concatenate([rng.uniform(size=(16, 4)), rng.uniform(-15, 5, (16, 4))], axis=1).astype(np.float32)
    got = M.gaussian_nll(tf.constant(y), tf.constant(pred), beta=beta).numpy()
    assert got == pytest.approx(numpy_nll(y, pred, beta), rel=1e-5)
    # A standard normal at its mean: 0.5 log(2 pi).
    zero = M.gaussian_nll(tf.zeros((1, 4)), tf.zeros((1, 8))).numpy()
    assert zero == pytest.approx(0.5 * math.log(2 * math.pi), rel=1e-6)
    assert M.mean_mse(tf.constant(y), tf.constant(pred)).numpy() == pytest.approx(np.mean((y - pred[:, :4]) ** 2))
    assert M.mse(tf.constant(y), tf.constant(pred[:, :4])).numpy() == pytest.approx(np.mean((y - pred[:, :4]) ** 2))


def test_default_model_trains_down_the_nll():
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    x = random_inputs(rng, 64)
    # Labels a simple function of the input, so that there is something to learn.
    level = x[P.FLUX_XF][:, :2000].mean(axis=1, keepdims=True)
    y = np.clip(0.5 + 20 * (level - 1) + 0.05 * rng.standard_normal((64, 4)), 0, 1).astype(np.float32)
    spec = M.get("default")
    model = M.build("default")
    optimizer = keras.optimizers.Adam(spec.learning_rate)

    def nll(training: bool = False) -> tf.Tensor:
        return spec.loss(tf.constant(y), model(x, training=training))

    before = float(nll())
    assert before == pytest.approx(numpy_nll(y, model(x).numpy()), rel=1e-5)
    for _ in range(20):  # eager steps: tracing model.fit costs ~10 s of autograph (trainer tests fit)
        with tf.GradientTape() as tape:
            loss = nll(training=True)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    assert float(nll()) < before - 0.2


@pytest.mark.parametrize("z", [0.002, 0.05, 0.17, 0.29])
def test_rest_frame_view_puts_a_line_at_its_rest_wavelength_with_the_same_width_in_pixels(z):
    """A Gaussian line of sigma 150 km/s at 5175 A rest lands on the rest pixel of 5175 A
    and is 150 / 69.03 pixels wide at every redshift; rest pixels outside the observed range
    are 0 in every channel."""
    grid, rest = F.model_grid(), rest_frame.rest_grid(z)
    centre, sigma_kms = 5175.0 * (1 + z), 150.0
    sigma_a = centre * sigma_kms / 299792.458
    line = np.exp(-0.5 * ((grid - centre) / sigma_a) ** 2).astype(np.float32)
    out = rest_frame.RestFrame()((line[None], np.ones_like(line)[None], tf.constant([z], tf.float32))).numpy()[0]
    assert out.shape == (rest_frame.N_REST, 2)
    flux = out[:, 0]
    peak = np.argmax(flux)
    assert abs(rest[peak] - 5175.0) < 1.2  # within one rest pixel
    moments = np.arange(peak - 15, peak + 16)
    w = flux[moments] / flux[moments].sum()
    mu = (w * moments).sum()
    width_pix = np.sqrt((w * (moments - mu) ** 2).sum())
    # Linear interpolation of 1-A samples adds ~(1/sqrt(12)) A of width in quadrature.
    expected = np.hypot(sigma_kms / SDSS_VELSCALE, (1 / np.sqrt(12)) / (5175.0 * 1e-4 * np.log(10)))
    assert width_pix == pytest.approx(expected, rel=0.06)
    covered = (rest * (1 + z) >= grid[0]) & (rest * (1 + z) < grid[-1])
    assert np.all(out[~covered] == 0) and np.all(out[covered][:, 1] == pytest.approx(1.0))


@pytest.mark.parametrize("z", [0.0, 0.0123, 0.1, 0.3, 0.45])
def test_rest_frame_window_holds_the_observed_range_and_is_aligned(z):
    """The window starts on a multiple of ALIGN rest pixels below the first observed pixel
    and reaches past the last: the whole spectrum is seen at any z, each line at the same
    phase of the network's total stride."""
    start = rest_frame.window_start(z)
    assert start % rest_frame.ALIGN == 0
    rest = rest_frame.rest_grid(z) * (1 + z)
    assert rest[0] <= F.GRID_START and rest[-1] >= F.model_grid()[-1]
    assert rest_frame.window_length(rest_frame.ALIGN) == rest_frame.N_REST
    assert M.build("default").get_layer("rest_frame").output_shape[1] == rest_frame.N_REST
    with pytest.raises(ValueError, match="cannot hold"):
        rest_frame.RestFrame(n_rest=3000)


def test_rest_frame_view_is_differentiable_and_batched():
    rng = np.random.default_rng(3)
    x = [tf.constant(rng.random((2, F.N_PIXELS)), tf.float32) for _ in range(2)]
    z = tf.constant([0.01, 0.2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = rest_frame.RestFrame()((*x, z))
        total = tf.reduce_sum(out)
    assert out.shape == (2, rest_frame.N_REST, 2)
    grad = tape.gradient(total, x[0]).numpy()
    # Every observed pixel inside the window's reach contributes (weights sum ~ pixel ratio).
    assert np.all(np.isfinite(grad)) and grad[0].sum() > 0
    single = rest_frame.RestFrame()((x[0][1:], x[1][1:], z[1:])).numpy()
    np.testing.assert_allclose(single[0], out.numpy()[1], rtol=1e-6)
