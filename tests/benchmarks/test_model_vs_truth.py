"""benchmarks/model_vs_truth.py: the comparison with pPXF on mocks, per group."""

import sys
from pathlib import Path

import numpy as np
import pytest

from stellarpop.components import bpt
from stellarpop.schema import features as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import model_vs_truth  # noqa: E402  (a script folder, not a package)


def _mocks(n=900, seed=3):
    rng = np.random.default_rng(seed)
    parsed = {F.SNR_R: rng.uniform(5, 45, n), F.BPT_CLASS: rng.choice(np.array(bpt.CLASSES), n)}
    for k in F.LABEL_KEYS:
        parsed[F.TRUTH_PREFIX + k] = rng.uniform(0, 1, n)
    return rng, parsed


def test_a_model_at_the_truth_scores_ppxfs_own_scatter_against_ppxf():
    rng, parsed = _mocks()
    truth = {k: parsed[F.TRUTH_PREFIX + k] for k in F.LABEL_KEYS}
    fits = {k: v + rng.normal(0.02, 0.1, v.size) for k, v in truth.items()}
    res = model_vs_truth.compare_with_ppxf(parsed, truth, fits)
    assert res["n"] == 900 and res["groups"]["all"]["n"] == 900
    for name, row in res["groups"].items():
        if not row["n"]:  # S/N < 5: no spectra here
            continue
        for k in F.LABEL_KEYS:
            mean, std = row[k]["model_minus_ppxf"]
            assert std == pytest.approx(row[k]["ppxf"][1]) and mean == pytest.approx(-row[k]["ppxf"][0]), (name, k)
            assert row[k]["model"][1] == pytest.approx(0.0, abs=1e-12)
    high = parsed[F.SNR_R] >= 30
    assert res["groups"]["S/N 30-inf"]["n"] == high.sum()
    assert sum(res["groups"][c]["n"] for c in bpt.CLASSES) == 900
    assert res[F.MH] == res["groups"]["all"][F.MH]  # the top level is the whole set, as before groups


def test_independent_errors_add_in_quadrature_against_ppxf():
    rng, parsed = _mocks(n=20_000)
    truth = {k: parsed[F.TRUTH_PREFIX + k] for k in F.LABEL_KEYS}
    model = {k: v + rng.normal(0, 0.03, v.size) for k, v in truth.items()}
    fits = {k: v + rng.normal(0, 0.04, v.size) for k, v in truth.items()}
    row = model_vs_truth.compare_with_ppxf(parsed, model, fits)["groups"]["all"]
    for k in F.LABEL_KEYS:
        assert row[k]["model"][1] == pytest.approx(0.03, rel=0.05)
        assert row[k]["ppxf"][1] == pytest.approx(0.04, rel=0.05)
        assert row[k]["model_minus_ppxf"][1] == pytest.approx(0.05, rel=0.05)
