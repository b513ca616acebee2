"""The residual statistics and TFMA metrics: sigma clipping against astropy, the combiners
fed TFMA's per-example inputs, Coverage68, and the metric names in the results."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from astropy.stats import sigma_clipped_stats

from stellarpop.pipeline.evaluation import metrics as M


def _residuals_with_outliers(rng: np.random.Generator, n: int) -> np.ndarray:
    r = rng.normal(0.0, 1.0, n)
    idx = rng.choice(n, size=max(3, n // 10), replace=False)
    r[idx] += rng.choice([-1.0, 1.0], idx.size) * rng.uniform(5.0, 12.0, idx.size)
    return r


# --- the statistics and the combiners -----------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("maxiters", [None, 1, 5])
def test_sigma_clipped_mean_std_matches_astropy(seed, maxiters):
    r = _residuals_with_outliers(np.random.default_rng(seed), 2000) * 0.1 + 0.05
    r[:3] = np.nan  # dropped, as astropy does
    mean, std, n = M.sigma_clipped_mean_std(r, sigma=3, maxiters=maxiters)
    with pytest.warns(Warning):  # astropy warns about the NaNs
        a_mean, _, a_std = sigma_clipped_stats(r, sigma=3, maxiters=maxiters)
    assert mean == pytest.approx(a_mean, rel=1e-12, abs=1e-15)
    assert std == pytest.approx(a_std, rel=1e-12)
    assert n < 2000 - 3  # the outliers went


def _inputs(labels, predictions) -> tfma.metrics.StandardMetricInputs:
    return tfma.metrics.StandardMetricInputs({"labels": labels, "predictions": predictions, "example_weights": None})


def _run_combiner(combiner, elements):
    """Two accumulators merged, as Beam does across bundles."""
    half = len(elements) // 2
    accs = []
    for part in (elements[:half], elements[half:]):
        acc = combiner.create_accumulator()
        for e in part:
            acc = combiner.add_input(acc, e)
        accs.append(acc)
    return combiner.extract_output(combiner.merge_accumulators(accs))


def test_clipped_combiners_match_astropy_per_output():
    rng = np.random.default_rng(3)
    label = rng.uniform(8, 10, 500)
    resid = _residuals_with_outliers(rng, 500) * 0.1 + 0.02
    # Multi-output dicts, [1]- and scalar-shaped values as TFMA hands them over per example.
    elements = [
        _inputs(
            {"log_age": np.array([lab]), "mh": np.array([0.0])},
            {"log_age": np.float32(lab + r), "mh": np.array([1.0])},
        )
        for lab, r in zip(label, resid)
    ]
    expected = np.asarray([np.float32(lab + r) - lab for lab, r in zip(label, resid)])
    a_mean, _, a_std = sigma_clipped_stats(expected, sigma=3, maxiters=None)
    for metric, want in ((M.ClippedMeanResidual(), a_mean), (M.ClippedStdResidual(), a_std)):
        (computation,) = metric.computations(eval_config=tfma.EvalConfig(), output_names=["log_age"])
        (key,) = computation.keys
        assert key.output_name == "log_age"
        assert _run_combiner(computation.combiner, elements)[key] == pytest.approx(want, rel=1e-12)


def test_coverage68_reads_the_error_output():
    rng = np.random.default_rng(4)
    resid, err = rng.normal(0, 20, 300), rng.uniform(5, 40, 300)
    elements = [
        _inputs({"vd": np.array([150.0])}, {"vd": np.array([[150.0 + r]]), "vd_err": np.array([[e]])})
        for r, e in zip(resid, err)
    ]
    (computation,) = M.Coverage68().computations(eval_config=tfma.EvalConfig(), output_names=["vd"])
    got = _run_combiner(computation.combiner, elements)[computation.keys[0]]
    assert got == pytest.approx(np.mean(np.abs(resid) <= err), abs=1e-12)
    (renamed,) = M.Coverage68(error_output="vd_sigma").computations(output_names=["vd"])
    with pytest.raises(ValueError, match="vd_sigma"):
        renamed.combiner.add_input(renamed.combiner.create_accumulator(), elements[0])


def test_metric_names():
    assert M.metric_name("clipped_std") == "clipped_std_residual"
    assert M.metric_name("clipped_mean", "log_age") == "log_age/clipped_mean_residual"
    assert M.metric_name("rmse", "vd") == "vd/root_mean_squared_error"
    assert M.metric_key("clipped_std", "vd", "candidate", is_diff=True) == tfma.metrics.MetricKey(
        name="clipped_std_residual", model_name="candidate", output_name="vd", is_diff=True
    )
    with pytest.raises(KeyError):
        M.metric_name("median")
