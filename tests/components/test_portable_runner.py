"""Ingest and label through Beam's portable runner (how Flink, Spark and Dataflow receive a
job): a local job service and an EXTERNAL worker pool as subprocesses; the outputs equal
the DirectRunner's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from test_dask import _direct, _labels, _records  # same folder (rootdir-relative imports)

from stellarpop.components import ppxf_fit
from stellarpop.components.fits_example_gen import job as ingest_job
from stellarpop.components.fits_example_gen import run as ingest_run
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.components.mock_example_gen import run as sim_run
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.components.ppxf_labeler import run as label_run

pytestmark = pytest.mark.slow

DIRECT = ["--runner=DirectRunner"]
FAST = label_job.LabelConfig(fit=ppxf_fit.FitConfig(gas_components=0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args}: exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"port {port}: nothing listening after {timeout} s")


@pytest.fixture(scope="module")
def portable_args(tmp_path_factory):
    """A job service and a worker pool (the venv's python first on PATH: the pool starts
    whatever ``python`` PATH names); stopped, with their process groups, afterwards."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    job_port, pool_port = _free_port(), _free_port()
    logs = tmp_path_factory.mktemp("portable-logs")
    cmds = [
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"],
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
    ]
    procs = [
        subprocess.Popen(
            c, env=env, stdout=open(logs / f"{i}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        for i, c in enumerate(cmds)
    ]
    try:
        _wait_for(job_port, procs[0])
        _wait_for(pool_port, procs[1])
        yield [
            "--runner=PortableRunner",
            f"--job_endpoint=localhost:{job_port}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}",
        ]
    finally:
        for proc in procs:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)


def test_ingest_on_the_portable_runner_equals_direct(portable_args, broken, dr7_file, tmp_path):
    folder, _ = broken
    config = ingest_job.IngestConfig(inputs=(str(folder), str(dr7_file), str(tmp_path / "missing.fits")))
    direct = _direct(ingest_run.run_standalone, str(tmp_path / "direct"), config, DIRECT)
    portable = ingest_run.run_standalone(str(tmp_path / "portable"), config, portable_args)
    assert portable == direct
    assert _records(str(tmp_path / "portable" / "examples")) == _records(str(tmp_path / "direct" / "examples"))
    assert sorted(map(str, ingest_job.read_failures(str(tmp_path / "portable" / "examples")))) == sorted(
        map(str, ingest_job.read_failures(str(tmp_path / "direct" / "examples")))
    )


def test_label_on_the_portable_runner_equals_direct(portable_args, tmp_path):
    mocks = str(tmp_path / "mocks")
    _direct(sim_run.run_standalone, mocks, sim_job.SimConfig(n=6, seed=5, shard_size=3), DIRECT)
    inputs = [os.path.join(mocks, "examples")]
    direct = _direct(label_run.run_standalone, inputs, str(tmp_path / "direct"), FAST, DIRECT)
    portable = label_run.run_standalone(inputs, str(tmp_path / "portable"), FAST, portable_args)
    assert portable == direct
    assert _labels(tmp_path / "portable") == _labels(tmp_path / "direct")
    assert _records(str(tmp_path / "portable" / "examples")) == _records(str(tmp_path / "direct" / "examples"))
