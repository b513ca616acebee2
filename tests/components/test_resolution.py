"""The unresolved-dispersion rule and the prediction rows that carry it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stellarpop.components import resolution
from stellarpop.schema import features as F
from stellarpop.schema.preparation import Preparation
from stellarpop.serving import predict as pred


def test_the_limit_grows_as_the_snr_falls_within_its_bounds():
    snrs = [2.0, 5.0, 10.0, 20.0, 40.0, 200.0]
    limits = [resolution.vd_limit(s) for s in snrs]
    assert limits == sorted(limits, reverse=True)
    assert resolution.vd_limit(10.0) == pytest.approx(resolution.LIMIT_AT_SNR10)
    assert resolution.LIMIT_MIN <= min(limits) and max(limits) <= resolution.LIMIT_MAX
    assert resolution.vd_limit(math.nan) == resolution.LIMIT_MAX == resolution.vd_limit(0.0)


def test_a_value_below_the_limit_is_an_upper_limit():
    limit = resolution.vd_limit(10.0)
    assert resolution.mark(30.0, 20.0, 10.0) == (limit, True, limit)  # 30 + 20 < limit: the limit
    assert resolution.mark(limit - 5, 40.0, 10.0) == (limit + 35, True, limit)  # the 1-sigma bound
    assert resolution.mark(200.0, 20.0, 10.0) == (200.0, False, limit)
    vd, flag, _ = resolution.mark(math.nan, math.nan, 10.0)
    assert math.isnan(vd) and not flag


class _Fixed:
    """A model that answers the same values for every spectrum."""

    preparation = Preparation()

    def __init__(self, vd: float):
        self.vd = vd

    def predict(self, serialized):
        n = len(serialized)
        out = {k: np.full(n, 0.1) for k in F.LABEL_KEYS + F.LABEL_ERR_KEYS + (F.OOD_SCORE,)}
        out[F.VD], out[F.VD + F.ERR_SUFFIX] = np.full(n, self.vd), np.full(n, 5.0)
        out[F.OOD_FLAG] = np.zeros(n, bool)
        return out


def test_prediction_rows_flag_unresolved_dispersions(bundled):
    files = [str(p) for p in bundled.values()]
    low = [r for r in pred.predict_files(files, _Fixed(20.0)) if not r["error"]]
    high = [r for r in pred.predict_files(files, _Fixed(250.0)) if not r["error"]]
    assert low and len(low) == len(high)
    for row in low:
        assert row[pred.VD_UNRESOLVED] is True and row[F.VD] == row[pred.VD_LIMIT] == resolution.vd_limit(row["snr_r"])
    assert all(r[pred.VD_UNRESOLVED] is False and r[F.VD] == 250.0 for r in high)
    assert pred.VD_UNRESOLVED in pred.TABLE_COLUMNS and pred.VD_LIMIT in pred.TABLE_COLUMNS
