"""The three jobs on a real dask.distributed cluster (a scheduler and two worker processes on
127.0.0.1) give the DirectRunner's records, counts and failure records; a partial label run
resumes on Dask; a dead scheduler address is a one-line error within seconds."""

from __future__ import annotations

import glob
import json
import os
import socket
import time
from pathlib import Path

import psutil
import pytest
import tensorflow as tf

from stellarpop.components import engines, examples, ppxf_fit
from stellarpop.components.fits_example_gen import job as ingest_job
from stellarpop.components.fits_example_gen import run as ingest_run
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.components.mock_example_gen import run as sim_run
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.components.ppxf_labeler import run as label_run
from stellarpop.pipeline import configs
from stellarpop.schema import features as F

pytestmark = pytest.mark.slow  # a cluster of two worker processes importing TensorFlow: about 50 s

DIRECT = ["--runner=DirectRunner"]


def _direct(run, *args):
    """A run on the in-process DirectRunner with one BLAS thread, as every Dask worker (its
    nanny sets OMP_NUM_THREADS=1) and every worker of ``local_beam_args`` has: with two BLAS
    threads a few simulated pixels differ in their last bit (measured), whatever the runner."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return run(*args)


SIM = sim_job.SimConfig(n=30, seed=11, shard_size=6)
FAST = label_job.LabelConfig(fit=ppxf_fit.FitConfig(gas_components=0))


@pytest.fixture(scope="module")
def scheduler():
    """The address of a 2-worker LocalCluster of processes; checks that it leaves no process."""
    import distributed

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
    deadline = time.time() + 30
    while time.time() < deadline:
        new = [" ".join(_cmdline(p)) for p in psutil.Process().children(recursive=True) if p.pid not in before]
        # multiprocessing's resource tracker lives as long as this process (it is no worker)
        left = [c for c in new if c and "resource_tracker" not in c]
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"processes left by the cluster: {left}"


@pytest.fixture(scope="module")
def dask_args(scheduler):
    """The jobs' Beam arguments for that cluster, as the CLI's ``--dask`` makes them."""
    return engines.beam_args(scheduler, configs.local_beam_args(2))


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return [] if process.status() == psutil.STATUS_ZOMBIE else process.cmdline()
    except psutil.NoSuchProcess:
        return []


def _records(examples_dir: str) -> dict[str, list[bytes]]:
    """{split: serialized records sorted by spec_id} of an Examples folder."""
    out = {}
    for split_dir in sorted(glob.glob(os.path.join(examples_dir, "Split-*"))):
        files = sorted(glob.glob(os.path.join(split_dir, "*.gz")))
        recs = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")] if files else []
        out[os.path.basename(split_dir)] = sorted(recs, key=lambda r: examples.parse(r)[F.SPEC_ID])
    return out


def _no_temp_files(folder: str) -> None:
    left = [
        p
        for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
        if "beam-temp" in p or ".tmp-" in os.path.basename(p)
    ]
    assert not left, left


def test_beam_args_select_the_fixed_dask_runner(dask_args):
    assert f"--runner={engines.DASK_RUNNER}" in dask_args
    assert not any(a.startswith(("--runner=DirectRunner", "--direct_")) for a in dask_args)
    assert engines.is_dask(dask_args)


def test_simulate_on_dask_equals_direct_and_resumes_by_shard(dask_args, tmp_path):
    direct = _direct(sim_run.run_standalone, str(tmp_path / "direct"), SIM, DIRECT)
    dask = sim_run.run_standalone(str(tmp_path / "dask"), SIM, dask_args)
    assert dask == direct and dask["shards"] == 5
    uri = str(tmp_path / "dask" / "examples")
    reference = _records(str(tmp_path / "direct" / "examples"))
    assert _records(uri) == reference and sum(map(len, reference.values())) == SIM.n
    _no_temp_files(uri)
    # a lost shard: the rerun on Dask redoes it alone
    before = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(uri, "Split-*", "*.gz"))}
    for path in glob.glob(os.path.join(uri, "*", "shard-00002*")):
        os.remove(path)
    assert sim_run.run_standalone(str(tmp_path / "dask"), SIM, dask_args) == direct
    after = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(uri, "Split-*", "*.gz"))}
    assert after.keys() == before.keys()
    assert {p for p in after if after[p] != before[p]} == {p for p in after if "shard-00002" in p}
    assert _records(uri) == reference


def _ingest(inputs: list[str], out: Path, args: list[str]):
    summary = ingest_run.run_standalone(str(out), ingest_job.IngestConfig(inputs=tuple(inputs)), args)
    uri = str(out / "examples")
    fails = sorted(json.dumps(r, sort_keys=True) for r in ingest_job.read_failures(uri))
    ids = sorted(Path(p).read_text() for p in glob.glob(os.path.join(uri, ingest_job.IDS_DIR, "*.tsv")))
    return _records(uri), fails, ids, summary


def test_ingest_on_dask_equals_direct_with_the_broken_corpus(dask_args, broken, dr7_file, bundled, tmp_path):
    folder, expected = broken
    inputs = [str(folder), str(dr7_file), *map(str, bundled.values()), str(tmp_path / "missing.fits")]
    direct = _direct(_ingest, inputs, tmp_path / "direct", DIRECT)
    dask = _ingest(inputs, tmp_path / "dask", dask_args)
    assert dask == direct
    records, fails, _, summary = dask
    assert sum(map(len, records.values())) == summary["examples"] >= 2
    reasons = {(json.loads(f)["stage"], json.loads(f)["reason"]) for f in fails}
    assert set(expected.values()) <= reasons and ("resolve", "not_found") in reasons
    _no_temp_files(str(tmp_path / "dask"))


@pytest.fixture(scope="module")
def mocks(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("mocks")
    _direct(sim_run.run_standalone, str(out), sim_job.SimConfig(n=8, seed=3, shard_size=4), DIRECT)
    return str(out / "examples")


def _labels(out: Path) -> dict[str, str]:
    return {k: r.to_json() for k, r in label_job.read_checkpoints(str(out / label_job.CHECKPOINT_DIR)).items()}


def test_label_on_dask_equals_direct_and_resumes_from_checkpoints(dask_args, mocks, tmp_path):
    direct = _direct(label_run.run_standalone, [mocks], str(tmp_path / "direct"), FAST, DIRECT)
    # a run killed after three fits: its checkpoints hold their lines
    ckpt = tmp_path / "dask" / label_job.CHECKPOINT_DIR
    label_job.prepare_checkpoints(str(ckpt), FAST)
    lines = [r + "\n" for r in _labels(tmp_path / "direct").values()]
    (ckpt / "fits-killed.jsonl").write_text("".join(lines[:3]) + lines[3][:20])  # a torn last line
    dask = label_run.run_standalone([mocks], str(tmp_path / "dask"), FAST, dask_args)
    assert dask["fitted_before"] == 3 and direct["fitted_before"] == 0
    assert {k: v for k, v in dask.items() if k != "fitted_before"} == {
        k: v for k, v in direct.items() if k != "fitted_before"
    }
    assert (ckpt / "fits-killed.jsonl").read_text().startswith("".join(lines[:3]))  # kept, not redone
    n_lines = sum(p.read_text().count("\n") for p in ckpt.glob("*.jsonl"))
    assert n_lines == 8, "each spectrum fitted once: 3 resumed + 5 new"
    assert _labels(tmp_path / "dask") == _labels(tmp_path / "direct")
    assert _records(str(tmp_path / "dask" / "examples")) == _records(str(tmp_path / "direct" / "examples"))
    _no_temp_files(str(tmp_path / "dask"))


def test_the_cli_runs_ingest_on_dask_by_flag_and_by_beams_own_arguments(scheduler, bundled, tmp_path):
    from typer.testing import CliRunner

    from stellarpop.pipeline.cli import app

    inputs = list(map(str, bundled.values()))
    direct = _direct(_ingest, inputs, tmp_path / "direct", DIRECT)[:3]
    stock = "apache_beam.runners.dask.dask_runner.DaskRunner"
    for name, how in (
        ("flag", ["--dask", scheduler]),
        ("beam", [f"--beam-arg=--runner={stock}", f"--beam-arg=--dask_client_address={scheduler}"]),
    ):
        out = tmp_path / name
        result = CliRunner().invoke(app, ["ingest", *inputs, "-o", str(out), *how])
        assert result.exit_code == 0, result.output
        run = json.loads((out / "run.json").read_text())
        assert f"--runner={engines.DASK_RUNNER}" in run["beam_args"]
        uri = str(out / "examples")
        fails = sorted(json.dumps(r, sort_keys=True) for r in ingest_job.read_failures(uri))
        ids = sorted(Path(p).read_text() for p in glob.glob(os.path.join(uri, ingest_job.IDS_DIR, "*.tsv")))
        assert (_records(uri), fails, ids) == direct


def test_the_cli_names_a_dead_scheduler_in_one_line(bundled, tmp_path):
    from typer.testing import CliRunner

    from stellarpop.pipeline.cli import app

    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    result = CliRunner().invoke(app, ["ingest", *map(str, bundled.values()), "-o", str(tmp_path), "--dask", address])
    assert time.monotonic() - start < 10
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and address in lines[0], result.output
    assert "no Dask scheduler reachable" in lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_scheduler_address_is_a_one_line_error_within_seconds():
    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(engines.SchedulerError) as info:
        engines.beam_args(address, [])
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "\n" not in message and address in message and "no Dask scheduler reachable" in message
    with pytest.raises(engines.SchedulerError, match="not a scheduler address"):
        engines.beam_args("localhost", [])


def test_a_server_that_is_no_scheduler_is_a_one_line_error():
    """A port that accepts connections but never speaks Dask's protocol (a silent server)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(engines.SchedulerError, match="did not answer as a Dask scheduler") as info:
            engines.check_scheduler(address, timeout_s=2)
        assert time.monotonic() - start < 10 and "\n" not in str(info.value)


def test_the_runner_refuses_to_start_a_local_cluster():
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    with pytest.raises(engines.SchedulerError, match="--dask_client_address"):
        with beam.Pipeline(options=PipelineOptions([f"--runner={engines.DASK_RUNNER}"])) as p:
            _ = p | beam.Create([1])
