"""The standalone run and the CLI command: resume, refusals, the command's output."""

from __future__ import annotations

import glob
import json
import os
import tempfile

from typer.testing import CliRunner

from stellarpop.components.mock_example_gen import job
from stellarpop.pipeline.cli import app


def test_resume_redoes_only_missing_shards(tmp_path, records, run):
    out = str(tmp_path)
    config = job.SimConfig(n=9, seed=1, shard_size=3)
    run(config, out)
    before = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "Split-*", "*.gz"))}
    reference = records(out)
    for path in glob.glob(os.path.join(out, "*", "shard-00001*")):  # a crash lost shard 1
        os.remove(path)
    run(config, out)
    after = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "Split-*", "*.gz"))}
    assert after.keys() == before.keys()
    assert all(after[p] == before[p] for p in after if "shard-00001" not in p)
    assert all(after[p] != before[p] for p in after if "shard-00001" in p)
    assert records(out) == reference


def test_cli_simulate_and_refuse_other_config(tmp_path, monkeypatch):
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    out = tmp_path / "run"
    args = [
        "simulate",
        "--n",
        "5",
        "--seed",
        "7",
        "--shard-size",
        "5",
        "-o",
        str(out),
        "--beam-arg=--runner=DirectRunner",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert list(system_tmp.iterdir()) == []  # not TFX's package of itself (components.scratch)
    assert json.loads((out / "sim_config.json").read_text())["seed"] == 7
    again = CliRunner().invoke(app, [*args[:4], "8", *args[5:]])
    assert again.exit_code == 2 and "another configuration" in again.output
    # A run recorded before the split scheme was (an old split hash) is not resumed either.
    recorded = json.loads((out / "sim_config.json").read_text())
    del recorded["split"]
    (out / "sim_config.json").write_text(json.dumps(recorded, sort_keys=True))
    old = CliRunner().invoke(app, args)
    assert old.exit_code == 2 and "another configuration" in old.output
