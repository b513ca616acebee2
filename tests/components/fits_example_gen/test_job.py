"""The ingest Beam job: per-file function, the PTransform with assert_that, failure records."""

from __future__ import annotations

import os

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from stellarpop.components.fits_example_gen import job
from stellarpop.schema import features as F
from stellarpop.schema.preparation import Preparation, Selection


def test_process_file_names_each_problem(broken):
    folder, expected = broken
    cfg = job.IngestConfig()
    for name, (stage, reason) in expected.items():
        if stage in ("duplicate", "select"):
            continue  # decided across files / by the selection, not per file
        spec, fail = job.process_file(str(folder / name), cfg)
        assert spec is None and (fail["stage"], fail["reason"]) == (stage, reason), name
        assert fail["message"].startswith(str(folder / name))
    spec, fail = job.process_file(str(folder / "high_z.fits"), cfg)
    assert fail is None and spec.selection == ("z_range",)


def test_config_json_round_trip():
    preparation = Preparation(norm_centre=5500, norm_half_width=1, selection=Selection(classes=("GALAXY", "QSO")))
    cfg = job.IngestConfig(select=False, preparation=preparation, inputs=("a", "b"))
    assert job.IngestConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="IngestConfig.preparation: unknown keys \\['norm_center'\\]"):
        job.IngestConfig.from_json('{"preparation": {"norm_center": 5500}}')


def _spec_id(example: tf.train.Example) -> str:
    return example.features.feature[F.SPEC_ID].bytes_list.value[0].decode()


def test_beam_job_on_broken_corpus(broken, tmp_path, dr7_file):
    """Exactly the expected examples and failure records, and a summary that counts them."""
    folder, expected = broken
    missing = str(tmp_path / "missing.fits")
    cfg = job.IngestConfig(inputs=(str(folder), str(dr7_file), missing))
    with BeamTestPipeline() as p:
        out = p | job.IngestSpectra(cfg, str(tmp_path))  # pylint: disable=no-value-for-parameter
        assert_that(out | beam.Map(_spec_id), equal_to(["2488-54149-0001", "0266-51630-0012"]))
    records = job.read_failures(str(tmp_path))
    got = {os.path.basename(r["file"]): (r["stage"], r["reason"]) for r in records}
    assert got == {**expected, "missing.fits": ("resolve", "not_found")}
    assert len(records) == len(got)
    summary = job.read_summary(str(tmp_path))
    n_select = sum(1 for s, _ in expected.values() if s == "select")
    assert summary["examples"] == 2
    assert summary["rejected_by_selection"] == n_select
    assert summary["errors"] == len(expected) + 1 - n_select
    assert summary["inputs"] == len(expected) + 3  # the corpus, good.fits, the DR7 file, missing
    assert summary["selection_cuts_failed"] == {"z_range": 1}
    assert summary["config"]["preparation"]["norm_centre"] == 5000.0


def test_beam_job_without_selection_keeps_flagged_spectra(broken, tmp_path):
    folder, _ = broken
    cfg = job.IngestConfig(select=False, inputs=(str(folder / "high_z.fits"), str(folder / "good.fits")))
    with BeamTestPipeline() as p:
        out = p | job.IngestSpectra(cfg, str(tmp_path))  # pylint: disable=no-value-for-parameter
        flags = out | beam.Map(lambda e: (_spec_id(e), e.features.feature[F.SELECTION].bytes_list.value[0].decode()))
        assert_that(flags, equal_to([("2488-54149-0002", "z_range"), ("2488-54149-0001", "")]))
    assert job.read_summary(str(tmp_path))["rejected_by_selection"] == 0
