"""Simulation throughput (target: 100,000 spectra in <= 10 minutes on the 2-core machine).

Runs the same job as ``stellarpop simulate`` (Beam DirectRunner, one process per core) and
reports the wall time, the steady-state rate (slope between 10% and 90% done, from the
workers' progress counters) and the output size:

    .venv/bin/python benchmarks/simulate.py --n 100000 --workers 2
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from stellarpop.components import progress
from stellarpop.components.mock_example_gen import job, run
from stellarpop.pipeline import configs


def main(
    n: Annotated[int, typer.Option(help="Spectra to simulate.")] = 100_000,
    workers: Annotated[int, typer.Option(help="DirectRunner worker processes.")] = 2,
    shard_size: Annotated[int, typer.Option(help="Spectra per shard.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="simulate-bench-"))
    prog = tmp / "progress"
    prog.mkdir()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            samples.append((time.perf_counter(), progress.count(str(prog))))

    try:
        config = job.SimConfig(n=n, seed=seed, shard_size=shard_size, progress_dir=str(prog))
        watcher = threading.Thread(target=sample, daemon=True)
        start = time.perf_counter()
        watcher.start()
        summary = run.run_standalone(str(tmp / "out"), config, configs.local_beam_args(workers))
        wall = time.perf_counter() - start
        stop.set()
        watcher.join()
        t10 = next(t for t, d in samples if d >= 0.1 * n)
        t90 = next(t for t, d in samples if d >= 0.9 * n)
        size = sum(p.stat().st_size for p in (tmp / "out" / "examples").rglob("*.gz"))
        print(
            json.dumps(
                {
                    "cpus": os.cpu_count(),
                    "workers": workers,
                    "n": n,
                    "written": sum(summary["splits"].values()),
                    "classes": summary["classes"],
                    "wall_s": round(wall, 1),
                    "steady_state_spectra_per_s": round(0.8 * n / (t90 - t10), 1),
                    "startup_s": round(next(t for t, d in samples if d > 0) - start, 1),
                    "tfrecord_gb": round(size / 1e9, 2),
                },
                indent=2,
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
