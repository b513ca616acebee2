"""`stellarpop ingest`: outputs, records, and an exit status that says whether anything failed."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from stellarpop.components.fits_example_gen import job as ingest_job
from stellarpop.pipeline.cli import app

IN_PROCESS = "--beam-arg=--runner=DirectRunner"


def test_ingest_bundled_succeeds(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["ingest", "bundled", "-o", str(out), IN_PROCESS])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["examples"] == 1 and run["summary"]["rejected_by_selection"] == 1
    assert run["beam_args"] == ["--runner=DirectRunner"]
    assert len((out / "inputs.txt").read_text().split()) == 2
    # each failure is one line of output, however long its path (rich wraps at 80 columns in CI)
    lines = result.output.splitlines()
    assert any(
        line.endswith("NGC3073_SDSS_DR18.fits: outside the paper's sample: CLASS=STAR not in GALAXY") for line in lines
    )


def test_ingest_with_bad_files_reports_and_exits_1(tmp_path, broken):
    folder, expected = broken
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["ingest", str(folder), "-o", str(out), IN_PROCESS])
    assert result.exit_code == 1, result.output
    records = ingest_job.read_failures(str(out / "examples"))
    assert len(records) == len(expected)
    assert any("nan_flux.fits: flux has 10 non-finite values" in line for line in result.output.splitlines())


def test_ingest_needs_inputs(tmp_path):
    result = CliRunner().invoke(app, ["ingest", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "give INPUTS or --catalogue" in result.output
