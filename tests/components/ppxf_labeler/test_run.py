"""The standalone run and the CLI command: resume, refusals, the command's output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from stellarpop.components import ppxf_fit
from stellarpop.components.ppxf_labeler import job, run
from stellarpop.pipeline import configs


@pytest.mark.slow
@pytest.mark.e2e
def test_several_workers_give_the_same_labels(mocks, reference, tmp_path, labels, fast_config):
    out, _ = reference
    run.run_standalone([mocks], str(tmp_path), fast_config, configs.local_beam_args(2))
    assert labels(str(tmp_path)) == labels(out)


@pytest.mark.slow
@pytest.mark.e2e
def test_kill_9_and_resume_gives_the_uninterrupted_labels(mocks, reference, tmp_path, labels, records, n_mocks):
    out, _ = reference
    cmd = [
        sys.executable,
        "-m",
        "stellarpop.pipeline.cli",
        "label",
        mocks,
        "-o",
        str(tmp_path),
        "--gas-components",
        "0",
        "--beam-arg=--runner=DirectRunner",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = tmp_path / job.CHECKPOINT_DIR
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if sum(p.read_text().count("\n") for p in ckpt.glob("*.jsonl")) >= 4:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = job.read_checkpoints(str(ckpt))
    assert 4 <= len(partial) < n_mocks, "the job must be killed part-way"
    before = {p: p.read_text() for p in ckpt.glob("*.jsonl")}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = job.read_summary(str(tmp_path / "examples"))
    assert summary["fitted_before"] == len(partial)
    for path, text in before.items():  # finished fits were kept, not redone
        assert path.read_text() == text
    assert labels(str(tmp_path)) == labels(out)
    assert {k: v[1] for k, v in records(str(tmp_path / "examples")).items()} == {
        k: v[1] for k, v in records(os.path.join(out, "examples")).items()
    }


def test_resume_with_another_configuration_is_refused(mocks, reference):
    out, _ = reference
    other = job.LabelConfig(fit=ppxf_fit.FitConfig(gas_components=1))
    with pytest.raises(Exception, match="another configuration"):
        run.run_standalone([mocks], out, other, ["--runner=DirectRunner"])
