"""The labelling job: kill -9 and resume gives the uninterrupted labels; several Beam
workers give the one worker's labels; failed fits and the sigma cut are counted."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from tfx.types import standard_artifacts, artifact_utils

from stellarpop.components import examples, ppxf_fit
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.components.ppxf_labeler import component, job, run
from stellarpop.components.scratch import scratch_tempdir
from stellarpop.pipeline import configs
from stellarpop.transforms import features as F

N = 24
FAST = job.LabelConfig(fit=ppxf_fit.FitConfig(gas_components=0))


@pytest.fixture(scope="module")
def mocks(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("mocks"))
    with BeamTestPipeline() as p:
        sim_job.run(p, sim_job.SimConfig(n=N, seed=7, shard_size=8), out)
    return out


@pytest.fixture(scope="module")
def reference(mocks, tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("reference"))
    summary = run.run_standalone([mocks], out, FAST, ["--runner=DirectRunner"])
    return out, summary


def _labels(out: str) -> dict[str, str]:
    return {k: r.to_json() for k, r in job.read_checkpoints(os.path.join(out, job.CHECKPOINT_DIR)).items()}


def _records(examples_dir: str) -> dict[str, dict]:
    out = {}
    for path in glob.glob(os.path.join(examples_dir, "Split-*", "*.gz")):
        split = os.path.basename(os.path.dirname(path))
        for raw in tf.data.TFRecordDataset([path], compression_type="GZIP"):
            parsed = examples.parse(raw.numpy(), labels=True, truth=True)
            out[parsed[F.SPEC_ID]] = (split, raw.numpy())
    return out


def test_labels_every_split_and_counts_the_cut(mocks, reference):
    out, summary = reference
    labels = _labels(out)
    assert len(labels) == N and summary["fitted"] == N and summary["fitted_before"] == 0
    counts = summary["splits"]
    assert set(counts) == {"train", "eval", "test"}
    assert sum(sum(c.values()) for c in counts.values()) == N
    results = [ppxf_fit.LabelResult.from_json(v) for v in labels.values()]
    low = sum(r.ok and r.vd < 50 for r in results)
    assert sum(c[job.LOW_VD] for c in counts.values()) == low
    assert sum(c[job.FAILED] for c in counts.values()) == sum(not r.ok for r in results)
    written = _records(os.path.join(out, "examples"))
    assert len(written) == sum(c[job.LABELLED] for c in counts.values())
    d_age, d_vd = [], []
    for spec_id, (split, raw) in written.items():
        parsed = examples.parse(raw, labels=True, truth=True)
        r = ppxf_fit.LabelResult.from_json(labels[spec_id])
        assert parsed[F.VD] == pytest.approx(r.vd, rel=1e-6) and parsed[F.VD] >= 50
        d_age.append(abs(parsed[F.LOG_AGE] - parsed[F.TRUTH_PREFIX + F.LOG_AGE]))
        d_vd.append(abs(parsed[F.VD] - parsed[F.TRUTH_PREFIX + F.VD]))
    # pPXF on S/N ~ 7-36 mocks, stars only: near the truth (the benchmark measures the scatter).
    assert np.median(d_age) < 0.25 and np.median(d_vd) < 25


@pytest.mark.slow
@pytest.mark.e2e
def test_several_workers_give_the_same_labels(mocks, reference, tmp_path):
    out, _ = reference
    run.run_standalone([mocks], str(tmp_path), FAST, configs.local_beam_args(2))
    assert _labels(str(tmp_path)) == _labels(out)


@pytest.mark.slow
@pytest.mark.e2e
def test_kill_9_and_resume_gives_the_uninterrupted_labels(mocks, reference, tmp_path):
    out, _ = reference
    cmd = [sys.executable, "-m", "stellarpop.pipeline.cli", "label", mocks, "-o", str(tmp_path),
           "--gas-components", "0", "--beam-arg=--runner=DirectRunner"]
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
    assert 4 <= len(partial) < N, "the job must be killed part-way"
    before = {p: p.read_text() for p in ckpt.glob("*.jsonl")}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = job.read_summary(str(tmp_path / "examples"))
    assert summary["fitted_before"] == len(partial)
    for path, text in before.items():  # finished fits were kept, not redone
        assert path.read_text() == text
    assert _labels(str(tmp_path)) == _labels(out)
    assert {k: v[1] for k, v in _records(str(tmp_path / "examples")).items()} == {
        k: v[1] for k, v in _records(os.path.join(out, "examples")).items()
    }


def test_resume_with_another_configuration_is_refused(mocks, reference):
    out, _ = reference
    other = job.LabelConfig(fit=ppxf_fit.FitConfig(gas_components=1))
    with pytest.raises(Exception, match="another configuration"):
        run.run_standalone([mocks], out, other, ["--runner=DirectRunner"])


def test_executor_labels_an_examples_artefact(mocks, tmp_path):
    source = standard_artifacts.Examples()
    source.uri = mocks
    source.split_names = artifact_utils.encode_split_names(["train", "eval", "test"])
    labelled = standard_artifacts.Examples()
    labelled.uri = str(tmp_path / "labelled")
    ckpt = str(tmp_path / "ckpt")
    with scratch_tempdir():  # TFX builds a 42 MB package of itself there
        ex = component.Executor(component.base_beam_executor.BaseBeamExecutor.Context(
            beam_pipeline_args=["--runner=DirectRunner"], tmp_dir=str(tmp_path / "tmp")))
        ex.Do({component.EXAMPLES_KEY: [source]}, {component.LABELLED_KEY: [labelled]},
              {component.LABEL_CONFIG_KEY: FAST.to_json(), component.CHECKPOINT_DIR_KEY: ckpt})
    assert artifact_utils.decode_split_names(labelled.split_names) == ["train", "eval", "test"]
    n = labelled.get_int_custom_property("num_examples")
    assert n + labelled.get_int_custom_property("num_below_min_vd") + labelled.get_int_custom_property("num_failed_fits") == N
    assert len(job.read_checkpoints(ckpt)) == N


def test_dofns_read_the_checkpoints_instead_of_carrying_them(reference):
    """The job graph does not grow with the sample: the fits are read in setup, not pickled."""
    import pickle

    ckpt = os.path.join(reference[0], job.CHECKPOINT_DIR)
    results = job.read_checkpoints(ckpt)
    assert len(results) >= N // 2
    for dofn in (job.FitSpectra(FAST, ckpt), job.WriteLabels("train", ckpt, 50.0)):
        blob = pickle.dumps(dofn)
        assert not any(spec_id.encode() in blob for spec_id in results)
    writer = job.WriteLabels("train", ckpt, 50.0)
    writer.setup()
    assert set(writer._results) == set(results)
