"""Streaming prediction: files per second through the streaming job and latency from a file
landing to its row being written, beside batch prediction (``predict.predict_files``).

Targets: streaming throughput >= 70% of batch throughput on the same files; median latency
<= one window + 5 s. Copies of the real SDSS spectra at hand (the two shipped in ppxf and
``../shared/real-sdss``) land in a watched temporary folder the way a producer should land
them (written under a hidden name, then renamed). The job is ``stream.run_stream`` on the
local DirectRunner in this process, as ``stellarpop stream`` runs it:

* **burst** (throughput): ``--n`` files land at once while the job runs; throughput =
  n / (time of the last prediction - time of the listing that found the first file), from
  the ledger's ``seen`` and the rows' ``predicted``. Batch: ``predict_files`` over the same
  files with the model loaded, timed just before and after the burst, and averaged (the
  machine's load drifts).
* **steady** (latency): one file every 1/``--rate`` s for ``--duration`` s; latency per file =
  the ledger's ``written`` (its pane's CSV in place) - ``landed`` (the file's mtime).

    python benchmarks/stream.py --n 400 --out runs/bench/stream.json
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from ppxf_vs_truth import SHARED_REAL_SDSS, machine, write_result  # benchmarks/, beside this script

from stellarpop.serving import predict, stream_io, stream_run

DEFAULT_BASE = os.path.join(predict.REPO_MODELS, predict.DEFAULT_MODEL)


def sources() -> list[Path]:
    from stellarpop.components import readers

    return [Path(p) for p in readers.bundled_spectra()] + sorted(Path(SHARED_REAL_SDSS).glob("*.fits"))


def land(source: Path, watch: Path, name: str) -> None:
    """Write under a hidden name (skipped by the job), then rename: the file appears whole."""
    hidden = watch / f".{name}"
    shutil.copyfile(source, hidden)
    os.rename(hidden, watch / name)


def batch_rate(files: list[str], predictor: predict.Predictor) -> float:
    started = time.perf_counter()
    rows = predict.predict_files(files, predictor)
    elapsed = time.perf_counter() - started
    assert not any(r["error"] for r in rows), [r["error"] for r in rows if r["error"]][:3]
    return len(files) / elapsed


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def run_job(
    work: Path, base: str, stop_after_s: float, window_s: float, poll_s: float, steps
) -> tuple[dict, list, object]:
    """Run the job on ``work/in`` while ``steps()`` lands files from a thread started 3 s in
    (the job has loaded its model); returns its summary, ledger entries and rows."""
    watch, out = work / "in", work / "out"
    watch.mkdir(parents=True)
    thread = threading.Thread(target=lambda: (time.sleep(3.0), steps(watch)), daemon=True)
    thread.start()
    summary = stream_run.run_stream(
        str(watch), base, str(out), window_s=window_s, stop_after_s=stop_after_s, poll_s=poll_s
    )
    thread.join()
    return summary, stream_io.read_ledger(str(out)), stream_io.read_predictions(str(out))


def burst(work: Path, base: str, files: list[Path], window_s: float, poll_s: float) -> dict:
    staging = work / "staging"
    staging.mkdir(parents=True)
    staged = [staging / f"b{i:05d}-{f.name}" for i, f in enumerate(files)]
    for source, target in zip(files, staged):
        shutil.copyfile(source, target)
        os.utime(target, (time.time() - 2 * stream_io.SETTLE_S,) * 2)  # settled: one listing finds them all

    def steps(watch: Path):
        for f in staged:
            os.rename(f, watch / f.name)

    budget = 3.0 + stream_io.SETTLE_S + 2 * poll_s + len(files) / 20.0 + window_s  # >= 20 files/s, then a window
    summary, ledger, rows = run_job(work, base, budget, window_s, poll_s, steps)
    assert len(rows) == len(files), f"{len(rows)} rows for {len(files)} files (a budget of {budget:.0f} s too short?)"
    first_seen, last_predicted = min(e["seen"] for e in ledger), max(_epoch(p) for p in rows["predicted"])
    return {
        "files": len(files),
        "files_per_s": len(files) / (last_predicted - first_seen),
        "processing_s": last_predicted - first_seen,
        "job_wall_s": summary["wall_s"],
        "panes": summary["panes"],
    }


def steady(
    work: Path, base: str, pool: list[Path], rate: float, duration: float, window_s: float, poll_s: float
) -> dict:
    n = int(rate * duration)

    def steps(watch: Path):
        start = time.time()
        for i in range(n):
            time.sleep(max(0.0, start + i / rate - time.time()))
            f = pool[i % len(pool)]
            land(f, watch, f"s{i:05d}-{f.name}")

    summary, ledger, rows = run_job(
        work, base, 3.0 + duration + window_s + 2 * poll_s + stream_io.SETTLE_S + 3.0, window_s, poll_s, steps
    )
    latency = np.array([e["written"] - e["mtime"] for e in ledger])
    return {
        "files": n,
        "rows": len(rows),
        "rate_per_s": rate,
        "window_s": window_s,
        "poll_s": poll_s,
        "latency_s": {
            "median": float(np.median(latency)),
            "p95": float(np.percentile(latency, 95)),
            "max": float(latency.max()),
        },
        "panes": summary["panes"],
    }


def main(
    out: Annotated[str, typer.Option(help="JSON results")] = "runs/bench/stream.json",
    n: Annotated[int, typer.Option(help="files of the burst (throughput)")] = 400,
    rate: Annotated[float, typer.Option(help="files per second of the steady run (latency)")] = 10.0,
    duration: Annotated[float, typer.Option(help="seconds of the steady run")] = 30.0,
    window: Annotated[float, typer.Option(help="window of the job, s")] = 10.0,
    poll: Annotated[float, typer.Option(help="poll interval of the job, s")] = 1.0,
    model: Annotated[str, typer.Option(help="base path of numbered versions")] = DEFAULT_BASE,
):
    before = machine()
    pool = sources()
    predictor = predict.Predictor(model)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copies = [pool[i % len(pool)] for i in range(n)]
        batch_files = [str(work / "batch" / f"{i:05d}-{f.name}") for i, f in enumerate(copies)]
        os.makedirs(work / "batch")
        for source, target in zip(copies, batch_files):
            shutil.copyfile(source, target)
        batch_rate(batch_files[:20], predictor)  # warm-up: TF's first calls
        batch_before = batch_rate(batch_files, predictor)
        bursted = burst(work / "burst", model, copies, window, poll)
        batch_after = batch_rate(batch_files, predictor)
        steadied = steady(work / "steady", model, pool, rate, duration, window, poll)
    batch = {"files": n, "files_per_s": (batch_before + batch_after) / 2, "before": batch_before, "after": batch_after}
    result = {
        "machine_before": before,
        "machine_after": machine(),
        "batch": batch,
        "stream_burst": bursted,
        "stream_steady": steadied,
        "targets": {
            "throughput_ratio": bursted["files_per_s"] / batch["files_per_s"],
            "throughput_ok": bursted["files_per_s"] >= 0.7 * batch["files_per_s"],
            "median_latency_ok": steadied["latency_s"]["median"] <= window + 5.0,
        },
    }
    print(json.dumps({k: result[k] for k in ("batch", "stream_burst", "stream_steady", "targets")}, indent=1))
    write_result(out, result, before)


if __name__ == "__main__":
    typer.run(main)
