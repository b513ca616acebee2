"""gRPC serving throughput and latency on loopback, beside in-process prediction.

Targets: batch 512 over gRPC >= 70% of in-process ``Predictor.predict`` throughput; batch 1 at
concurrency 8 p99 latency <= 50 ms. The server is the CPU stand-in (``serving/server.py``)
in a subprocess, so that it and the clients have their own interpreter and GIL as a real TF
Serving and its clients would; the clients are threads with a channel each (one process,
so the client side's protobuf work shares one GIL: that is charged to serving here). The
server merges the requests that queue while the model is busy (as TF Serving's batching,
without a batching timeout). Each cell
(concurrency x batch size) runs for ``--seconds`` and then lets its in-flight requests
finish; in-process prediction is timed, while the server is idle, just before and after the
cells of its batch size, and averaged (the machine's load drifts):

    python benchmarks/serving.py --seconds 5 --out runs/bench/serving.json
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Annotated

import numpy as np
import typer
from ppxf_vs_truth import SHARED_REAL_SDSS, machine, write_result  # benchmarks/, beside this script

from stellarpop.schema import model_contract as contract
from stellarpop.serving import predict
from stellarpop.serving.client import Client

DEFAULT_BASE = os.path.join(predict.REPO_MODELS, predict.DEFAULT_MODEL)


def spectra_examples(model_path: str) -> list[bytes]:
    """Serialized Examples of the real SDSS spectra at hand (the ones shipped in ppxf, plus
    ``../shared/real-sdss`` when present), prepared as ``stellarpop predict`` does."""
    from stellarpop.components import readers

    files = [str(p) for p in readers.bundled_spectra()] + sorted(glob.glob(os.path.join(SHARED_REAL_SDSS, "*.fits")))
    with open(os.path.join(model_path, contract.MODEL_INFO_FILE)) as fh:
        preparation = predict.preparation_of(json.load(fh))
    return [s for _, s in (predict.prepare_file(f, preparation) for f in files) if s is not None]


def batch_of(pool: list[bytes], size: int) -> list[bytes]:
    return [pool[i % len(pool)] for i in range(size)]


def start_server(base_path: str) -> tuple[subprocess.Popen, str]:
    """The stand-in in a subprocess on a free port; returns it and its target once AVAILABLE."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    code = f"from stellarpop.serving.server import serve; serve({base_path!r}, port={port}, rest_port=None)"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"localhost:{port}"
    with Client(target) as client:
        client.wait_until_available(timeout_s=120)
    return proc, target


def summarize(latencies_s: list[float], spectra: int, elapsed_s: float) -> dict:
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "spectra_per_s": spectra / elapsed_s,
        "requests": len(ms),
        "elapsed_s": elapsed_s,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def in_process(predictor: predict.Predictor, pool: list[bytes], batch: int, seconds: float) -> dict:
    """One thread calling ``Predictor.predict`` (TensorFlow uses every core inside a call)."""
    examples = batch_of(pool, batch)
    predictor.predict(examples)
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        predictor.predict(examples)
        latencies.append(time.perf_counter() - t0)
    return summarize(latencies, batch * len(latencies), time.perf_counter() - start)


def mean_of(first: dict, second: dict) -> dict:
    """In-process figures of two runs (before and after the gRPC cells): the shared machine's
    load drifts, so each gRPC cell is compared with in-process runs around it."""
    both = {key: (first[key] + second[key]) / 2 for key in ("spectra_per_s", "p50_ms", "p99_ms")}
    return {**both, "requests": first["requests"] + second["requests"], "runs": [first, second]}


def grpc_cell(target: str, pool: list[bytes], concurrency: int, batch: int, seconds: float) -> dict:
    """``concurrency`` threads, a channel each, sending ``batch`` Examples per request."""
    examples = batch_of(pool, batch)
    clients = [Client(target, timeout_s=120) for _ in range(concurrency)]
    for client in clients:
        client.predict(examples[:1])  # connect before timing
    latencies: list[float] = []
    lock, start = threading.Lock(), time.perf_counter()

    def work(client: Client):
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            client.predict(examples, batch_size=batch)
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for client in clients:
        client.close()
    return {"concurrency": concurrency, "batch": batch, **summarize(latencies, batch * len(latencies), elapsed)}


def table(local: dict, cells: list[dict]) -> str:
    def row(path, conc, b, r):
        return (
            f"{path:<10}{conc:>5}{b:>6}{r['spectra_per_s']:>11.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['requests']:>9}"
        )

    lines = [f"{'path':<10}{'conc':>5}{'batch':>6}{'spectra/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'requests':>9}"]
    lines += [row("in-proc", 1, b, r) for b, r in local.items()]
    lines += [row("gRPC", r["concurrency"], r["batch"], r) for r in cells]
    return "\n".join(lines)


def targets(local: dict, cells: list[dict]) -> dict:
    best_512 = max(r["spectra_per_s"] for r in cells if r["batch"] == 512)  # the best concurrency
    p99_1_8 = next(r["p99_ms"] for r in cells if r["batch"] == 1 and r["concurrency"] == 8)
    ratio = best_512 / local[512]["spectra_per_s"]
    return {
        "batch512_grpc_over_in_process": ratio,
        "batch512_ok": ratio >= 0.7,
        "batch1_conc8_p99_ms": p99_1_8,
        "batch1_conc8_ok": p99_1_8 <= 50.0,
    }


def main(
    out: Annotated[str, typer.Option(help="JSON results")] = "runs/bench/serving.json",
    seconds: Annotated[float, typer.Option(help="duration of each cell")] = 5.0,
    model: Annotated[str, typer.Option(help="base path of numbered versions")] = DEFAULT_BASE,
    concurrency: Annotated[str, typer.Option(help="comma-separated")] = "1,8,32",
    batch: Annotated[str, typer.Option(help="comma-separated")] = "1,64,512",
):
    batches, concs = [int(b) for b in batch.split(",")], [int(c) for c in concurrency.split(",")]
    before = machine()
    pool = spectra_examples(predict.model_dir(model))
    proc, target = start_server(model)
    try:
        predictor = predict.Predictor(model)
        local, cells = {}, []
        for b in batches:  # in-process just before and after the gRPC cells of the same batch size
            first = in_process(predictor, pool, b, seconds)
            cells += [grpc_cell(target, pool, c, b, seconds) for c in concs]
            local[b] = mean_of(first, in_process(predictor, pool, b, seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    checked = {1, 512} <= set(batches) and 8 in concs
    result = {
        "machine_before": before,
        "machine_after": machine(),
        "seconds_per_cell": seconds,
        "examples": len(pool),
        "in_process": local,
        "grpc": cells,
        "targets": targets(local, cells) if checked else {},
    }
    print(table(local, cells))
    print(json.dumps(result["targets"], indent=1))
    write_result(out, result, before)


if __name__ == "__main__":
    typer.run(main)
