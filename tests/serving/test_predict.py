"""Batch prediction prepares spectra as ingest does, with the settings the model recorded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stellarpop.components import examples, readers, resolution
from stellarpop.components.spectra import prepare
from stellarpop.schema import features as F
from stellarpop.schema.preparation import Preparation, Selection
from stellarpop.serving import predict as pred


class _Recorder:
    """A model that returns each Example's z as every output (wiring, not accuracy)."""

    def __init__(self, preparation: Preparation):
        self.preparation = preparation
        self.calls: list[list[bytes]] = []

    def predict(self, serialized: list[bytes]) -> dict[str, np.ndarray]:
        self.calls.append(serialized)
        z = examples.parse(serialized)[F.Z].reshape(-1)
        return {k: z for k in F.LABEL_KEYS + F.LABEL_ERR_KEYS}


def test_the_shipped_model_records_its_window():
    predictor = pred.Predictor(None)
    assert predictor.preparation == Preparation(norm_centre=F.NORM_CENTRE, norm_half_width=F.NORM_HALF_WIDTH)
    assert pred.preparation_of(
        {"preparation": {"norm_centre": 5500.0, "selection": {"snr_r_min": 2.0}}}
    ) == Preparation(norm_centre=5500.0, selection=Selection(snr_r_min=2.0))
    with pytest.raises(ValueError, match="model_info.preparation: unknown keys"):
        pred.preparation_of({"preparation": {"norm_center": 5500.0}})


def test_rows_use_the_models_preparation_and_its_selection(bundled, tmp_path):
    files = sorted(str(p) for p in bundled.values())
    strict = Preparation(selection=Selection(snr_r_min=1e6))  # every real spectrum fails the S/N cut
    model = _Recorder(strict)
    missing = str(tmp_path / "nope.fits")
    rows = pred.predict_files(files + [missing], model, batch_size=1)
    assert all("snr_r" in r["quality"].split(",") for r in rows[:2]) and rows[2]["error"].startswith(missing)
    assert math.isnan(rows[2][F.VD]) and len(model.calls) == 2
    for path, row, sent in zip(files, rows, model.calls):
        # The bytes sent are those ingest writes for the same preparation: one path.
        want = examples.to_example(prepare(readers.read_spectrum(path), strict)).SerializeToString(deterministic=True)
        # every output is z: a vd far below any resolution, reported as the upper limit
        assert sent == [want] and row[F.LOG_AGE] == pytest.approx(row["z"]) and 0.9 < row["coverage"] <= 1.0
        assert row[pred.VD_UNRESOLVED] and row[F.VD] == resolution.vd_limit(row["snr_r"]) == row[pred.VD_LIMIT]
    # Another window changes the normalisability check the model was trained with.
    masked_window = Preparation(norm_centre=9500.0)  # beyond the model grid: nothing to normalise
    rows = pred.predict_files(files, _Recorder(masked_window))
    assert all("normalisation window" in r["error"] for r in rows)


def test_rows_carry_the_out_of_domain_score_and_flag(bundled):
    files = sorted(str(p) for p in bundled.values())
    rows = pred.predict_files(files, pred.Predictor(None))
    for row in rows:
        # Real SDSS galaxies like the training mocks: a finite score under the flag's threshold.
        assert math.isfinite(row[F.OOD_SCORE]) and 0 < row[F.OOD_SCORE] and row[F.OOD_FLAG] is False, row["file"]
    # A model without the outputs (an older export) leaves them empty, not made up.
    row = pred.predict_files(files[:1], _Recorder(Preparation()))[0]
    assert math.isnan(row[F.OOD_SCORE]) and row[F.OOD_FLAG] is None
    assert list(pred.TABLE_COLUMNS).index(F.OOD_FLAG) == list(pred.TABLE_COLUMNS).index(F.OOD_SCORE) + 1
