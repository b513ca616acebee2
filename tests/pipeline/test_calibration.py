"""Calibration: split-conformal interval scales and the Mahalanobis out-of-domain score,
on a toy model with known errors, in the graph as in numpy, and on the shipped model with
spectra it should not trust."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from stellarpop.components import examples, priors, readers, spectra, templates
from stellarpop.components import nuisances as N
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.pipeline.training import calibration as C
from stellarpop.pipeline.training import models
from stellarpop.schema import features as F
from stellarpop.serving import predict as pred

DIM = 3
SIGMA, TRUE_SIGMA = 0.1, 0.05  # the toy model claims twice the true error


def toy_model() -> keras.Model:
    """Embedding = the input; means 0.5 + 0.1 x0, log-variance log(SIGMA^2) for every label."""
    x = keras.Input(shape=(DIM,), name="x")
    head = keras.layers.Dense(2 * models.N_LABELS, name=C.HEAD_LAYER)
    model = keras.Model({"x": x}, head(x))
    kernel = np.zeros((DIM, 2 * models.N_LABELS), np.float32)
    kernel[0, : models.N_LABELS] = 0.1
    bias = np.r_[np.full(models.N_LABELS, 0.5), np.full(models.N_LABELS, math.log(SIGMA**2))].astype(np.float32)
    head.set_weights([kernel, bias])
    return model


def batches(rng: np.random.Generator, n: int, shift: float = 0.0, batch: int = 100):
    x = rng.standard_normal((n, DIM)).astype(np.float32) + shift
    y = 0.5 + 0.1 * x[:, :1] + TRUE_SIGMA * rng.standard_normal((n, models.N_LABELS)).astype(np.float32)
    return [({"x": x[i : i + batch]}, y[i : i + batch]) for i in range(0, n, batch)]


def test_conformal_quantile_is_the_finite_sample_rank():
    values = np.arange(1.0, 101.0)  # 1..100
    assert C.conformal_quantile(values) == 69.0  # ceil(101 x 0.6827) = 69th smallest
    assert C.conformal_quantile(np.array([3.0, np.nan, 1.0])) == 3.0  # ceil(4 x 0.6827) = 3 > n finite: the largest
    with pytest.raises(C.CalibrationError, match="no finite values"):
        C.conformal_quantile(np.array([np.nan]))


def test_fit_scales_the_intervals_and_scores_the_distance():
    rng = np.random.default_rng(0)
    model = toy_model()
    calib = C.fit(model, batches(rng, 4000), batches(rng, 2000))
    assert calib.summary["n_train"] == 4000 and calib.summary["n_eval"] == 2000
    for key in F.LABEL_KEYS:
        # Claimed sigma 0.1, true 0.05: before, ~95% covered; after, 68.3% (ties aside).
        assert calib.summary["eval_coverage_before"][key] > 0.9
        assert 0.6827 <= calib.summary["eval_coverage_after"][key] < 0.70
        assert 0.3 < calib.interval_scale[key] < 0.5
    assert calib.summary["eval_flagged"] == pytest.approx(0.01, abs=0.002)
    # In the graph as in numpy; far from the training inputs the score, the flag and the
    # errors grow.
    applied = C.Applied(calib)
    for shift in (0.0, 6.0):
        ((x, _),) = batches(rng, 50, shift=shift, batch=50)
        physical = {k: tf.fill([50], 1.0) for k in F.LABEL_KEYS} | {
            k + "_err": tf.fill([50], 2.0) for k in F.LABEL_KEYS
        }
        out = {k: v.numpy() for k, v in applied(physical, tf.constant(x["x"])).items()}
        score = C.squared_distance(x["x"], calib.mean, calib.whitener) / calib.median_d2
        np.testing.assert_allclose(out[F.OOD_SCORE], score, rtol=1e-4)
        np.testing.assert_array_equal(out[F.OOD_FLAG], score > calib.threshold)
        for key in F.LABEL_KEYS:
            np.testing.assert_allclose(
                out[key + "_err"], 2.0 * np.sqrt(np.maximum(score, 1)) * calib.interval_scale[key], rtol=1e-4
            )
            np.testing.assert_array_equal(out[key], 1.0)
        if shift:
            assert np.median(score) > 5 * calib.threshold and out[F.OOD_FLAG].all()
        else:
            assert 0.5 < np.median(score) < 2 and out[F.OOD_FLAG].mean() < 0.1


def test_a_model_without_variance_head_or_embedding_is_not_calibrated():
    paper = models.build("paper", dense_units=8)
    assert C.embedding_model(paper) is None
    with pytest.raises(C.CalibrationError, match="no variance head or no embedding"):
        C.fit(paper, [], [])
    physical = {k: tf.zeros([3]) for k in F.LABEL_KEYS + F.LABEL_ERR_KEYS}
    out = C.uncalibrated(physical)
    assert np.isnan(out[F.OOD_SCORE].numpy()).all() and out[F.OOD_FLAG].numpy().all()


def test_no_data_is_an_error():
    with pytest.raises(C.CalibrationError, match="no examples"):
        C.fit(toy_model(), [], [])


# --- the shipped model on spectra it should not trust -------------------------------------------


@pytest.fixture(scope="module")
def stressed() -> dict[str, dict[str, np.ndarray]]:
    """The shipped model's outputs for 60 SDSS-like mocks per set (the same galaxies)."""
    inst = readers.instrument_from_files()
    prep = templates.prepare(templates.load_library(), inst)
    predictor = pred.Predictor(None)
    out = {}
    for name, nuisances in N.STRESS.items():
        config = sim_job.SimConfig(n=60, seed=5, priors=priors.Priors(mode="sdss"), nuisances=nuisances)
        raws = []
        for i in range(config.n):
            try:
                prepared = spectra.prepare(sim_job.one_spectrum(i, config, prep, inst).spectrum, predictor.preparation)
            except spectra.SpectrumError:
                continue
            raws.append(examples.to_example(prepared).SerializeToString())
        out[name] = predictor.predict(raws)
    return out


def test_the_shipped_model_is_calibrated():
    info = pred.Predictor(None).info
    assert info["calibration"]["n_eval"] > 1000 and set(info["calibration"]["interval_scale"]) == set(F.LABEL_KEYS)
    assert info["serving"]["outputs"][-2:] == [F.OOD_SCORE, F.OOD_FLAG]


def test_ood_score_rises_on_spectra_the_model_should_not_trust(stressed):
    base = stressed["in domain (realistic)"]
    assert np.median(base[F.OOD_SCORE]) < 1.5 and base[F.OOD_FLAG].mean() <= 0.05
    for name in ("calibration errors 25%+15%", "sky-dominated"):
        out = stressed[name]
        assert np.median(out[F.OOD_SCORE]) > 2 * np.median(base[F.OOD_SCORE]), name
        # The flag fires at least five times as often as on in-domain spectra (1% by construction).
        assert out[F.OOD_FLAG].mean() >= 5 * max(base[F.OOD_FLAG].mean(), 0.01), name
        # ... and the intervals widen with it.
        assert np.median(out[F.VD + "_err"]) > 1.1 * np.median(base[F.VD + "_err"]), name
