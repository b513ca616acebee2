"""Resumable ingest: chunks give the single-run result; a SIGKILLed run resumes."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

from stellarpop.components import examples as ex_lib
from stellarpop.components.fits_example_gen import job, run
from stellarpop.components.progress import ResumeError
from stellarpop.schema import features as F

IN_PROCESS = ["--runner=DirectRunner"]


def _outputs(out: Path):
    """(ids per split, failure records, summary without config) of an ingest folder."""
    examples = out / "examples"
    ids = {}
    for split in ("train", "eval", "test"):
        files = glob.glob(str(examples / f"Split-{split}" / "*.gz"))
        recs = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")] if files else []
        ids[split] = sorted(ex_lib.parse(r)[F.SPEC_ID] for r in recs)
    fails = sorted((os.path.basename(r["file"]), r["stage"], r["reason"]) for r in job.read_failures(str(examples)))
    summary = job.read_summary(str(examples))
    summary = {k: v for k, v in summary.items() if k not in ("config", "chunks")}
    return ids, fails, summary


@pytest.fixture(scope="module")
def inputs(broken, dr7_file):
    folder, _ = broken
    files, _ = job.resolve(job.IngestConfig(inputs=(str(folder), str(dr7_file))))
    return files + [str(folder / "missing.fits")]


@pytest.fixture(scope="module")
def single_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    run.run_chunked(inputs, str(out), job.IngestConfig(), IN_PROCESS, chunk_size=0)
    return _outputs(out)


@pytest.mark.slow
@pytest.mark.e2e
def test_chunks_equal_one_run_and_catch_duplicates_across_chunks(inputs, single_run, tmp_path):
    # good.fits and good_copy.fits (same spectrum id) sit in different chunks of 3.
    names = [os.path.basename(f) for f in inputs]
    assert names.index("good.fits") // 3 != names.index("good_copy.fits") // 3
    summary = run.run_chunked(inputs, str(tmp_path), job.IngestConfig(), IN_PROCESS, chunk_size=3)
    assert summary["chunks"] == -(-len(inputs) // 3)
    assert _outputs(tmp_path) == single_run
    assert ("good_copy.fits", "duplicate", "duplicate_id") in single_run[1]


def test_other_inputs_in_the_same_folder_are_refused(inputs, tmp_path):
    run.run_chunked(inputs[:2], str(tmp_path), job.IngestConfig(), IN_PROCESS, chunk_size=0)
    with pytest.raises(ResumeError, match="other inputs"):
        run.run_chunked(inputs[:3], str(tmp_path), job.IngestConfig(), IN_PROCESS, chunk_size=0)
    run.run_chunked(inputs[:3], str(tmp_path), job.IngestConfig(), IN_PROCESS, chunk_size=0, restart=True)


@pytest.mark.slow
@pytest.mark.e2e
def test_sigkill_then_rerun_resumes_without_redoing_chunks(inputs, single_run, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "stellarpop.pipeline.cli",
        "ingest",
        *inputs,
        "-o",
        str(tmp_path),
        "--chunk-size",
        "2",
        "--beam-arg=--runner=DirectRunner",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_done = tmp_path / run.CHUNKS_DIR / "00000" / run.DONE_FILE
    deadline = time.time() + 300
    while not first_done.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.parent.name for p in (tmp_path / run.CHUNKS_DIR).glob(f"*/{run.DONE_FILE}"))
    n_chunks = -(-len(inputs) // 2)
    assert 1 <= len(done) < n_chunks, "the kill must land part-way"
    stamps = {d: (tmp_path / run.CHUNKS_DIR / d / run.DONE_FILE).stat().st_mtime_ns for d in done}
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 1, rerun.stderr[-2000:]  # the corpus has bad files
    for d, stamp in stamps.items():  # finished chunks were not redone
        assert (tmp_path / run.CHUNKS_DIR / d / run.DONE_FILE).stat().st_mtime_ns == stamp
    assert _outputs(tmp_path) == single_run
