"""Predict, ingest and label throughput on the DirectRunner (2 processes) and on a local
2-worker Dask cluster, side by side in one run (the same pipelines: ``components.engines``).

Predict is ``stellarpop predict``'s loop (one process: read, prepare, encode, the shipped
model) on the same files as ingest. Reading alone is timed both ways in the same run: the
fast path (``readers.raw_fits``) and astropy's, whose ratio the machine's load cancels in.

Ingest reads N SDSS spec-lite files built from ppxf's real spectra (``benchmarks/ingest.py``);
label fits M simulated mocks with pPXF (stars only, as the labeller's fast tests). Each rate
is inputs / wall time of the whole ``run_standalone`` call, start-up included (the
DirectRunner starts worker processes for each pass; the Dask workers are started once, before
timing, and import TensorFlow on their first task). The load average is recorded before and
after: the machine may be shared.

    python benchmarks/engines.py --ingest 2000 --label 40 --out runs/bench/engines.json
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from ingest import make_files  # benchmarks/, beside this script
from ppxf_vs_truth import machine, write_result

from stellarpop.components import engines, ppxf_fit
from stellarpop.components.fits_example_gen import job as ingest_job
from stellarpop.components.fits_example_gen import run as ingest_run
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.components.mock_example_gen import run as sim_run
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.components.ppxf_labeler import run as label_run
from stellarpop.pipeline import configs

log = logging.getLogger(__name__)
FAST = label_job.LabelConfig(fit=ppxf_fit.FitConfig(gas_components=0))


def timed(fn, *args) -> tuple[float, dict]:
    start = time.perf_counter()
    summary = fn(*args)
    return time.perf_counter() - start, summary


def bench_ingest(files: list[Path], out: Path, args: list[str]) -> dict:
    config = ingest_job.IngestConfig(inputs=tuple(map(str, files)))
    wall, summary = timed(ingest_run.run_standalone, str(out), config, args)
    return {
        "files": len(files),
        "wall_s": round(wall, 2),
        "files_per_s": round(len(files) / wall, 2),
        "examples": summary["examples"],
    }


def bench_read(files: list[Path]) -> dict:
    """Files/s of read_spectrum alone, fast path and astropy's (interleaved rounds: the same load)."""
    import dataclasses

    from stellarpop.components import readers
    from stellarpop.components.readers import registry

    first = next(k for k, r in registry.READERS.items() if r.kind == "fits")
    fast = registry.READERS[first]
    walls = {"fast": 0.0, "astropy": 0.0}
    chunks = [files[i : i + 100] for i in range(0, len(files), 100)]
    for chunk in chunks:
        for name, reader in (("fast", fast), ("astropy", dataclasses.replace(fast, fast=None))):
            registry.READERS[first] = reader
            start = time.perf_counter()
            for path in chunk:
                readers.read_spectrum(path)
            walls[name] += time.perf_counter() - start
    registry.READERS[first] = fast
    rates = {f"{k}_files_per_s": round(len(files) / v, 1) for k, v in walls.items()}
    return {**rates, "speedup": round(walls["astropy"] / walls["fast"], 2)}


def bench_predict(files: list[Path]) -> dict:
    """``stellarpop predict``'s loop with the shipped model; the model's loading not timed."""
    from stellarpop.serving import predict as pred

    model = pred.Predictor(None)
    pred.predict_files(list(map(str, files[:64])), model)  # the first call traces the graph
    wall, rows = timed(pred.predict_files, list(map(str, files)), model)
    return {
        "files": len(files),
        "wall_s": round(wall, 2),
        "files_per_s": round(len(files) / wall, 2),
        "predicted": sum(1 for r in rows if not r["error"]),
    }


def bench_label(mocks: str, out: Path, args: list[str]) -> dict:
    wall, summary = timed(label_run.run_standalone, [mocks], str(out), FAST, args)
    return {
        "spectra": summary["fitted"],
        "wall_s": round(wall, 2),
        "spectra_per_s": round(summary["fitted"] / wall, 3),
        "labelled": sum(s[label_job.LABELLED] for s in summary["splits"].values()),
    }


def main(
    ingest: Annotated[int, typer.Option(help="Files to ingest.")] = 200,
    label: Annotated[int, typer.Option(help="Mocks to label.")] = 40,
    workers: Annotated[int, typer.Option(help="DirectRunner processes and Dask workers.")] = 2,
    out: Annotated[str, typer.Option(help="Result JSON.")] = "runs/bench/engines.json",
):
    import distributed

    logging.basicConfig(level=logging.WARNING)
    before = machine()
    with tempfile.TemporaryDirectory(prefix="engines-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "data").mkdir()
        files = make_files(tmp / "data", ingest)
        sim_run.run_standalone(
            str(tmp / "mocks"),
            sim_job.SimConfig(n=label, seed=17, shard_size=max(1, label // 4)),
            configs.local_beam_args(workers),
        )
        mocks = str(tmp / "mocks" / "examples")
        direct = configs.local_beam_args(workers)
        result = {"direct": {}, "dask": {}}
        result["read"] = bench_read(files)
        result["predict"] = bench_predict(files)
        result["direct"]["ingest"] = bench_ingest(files, tmp / "ingest-direct", direct)
        result["direct"]["label"] = bench_label(mocks, tmp / "label-direct", direct)
        start = time.perf_counter()
        with distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster:
            result["dask"]["cluster_start_s"] = round(time.perf_counter() - start, 2)
            dask = engines.beam_args(cluster.scheduler_address, direct)
            result["dask"]["ingest"] = bench_ingest(files, tmp / "ingest-dask", dask)
            result["dask"]["label"] = bench_label(mocks, tmp / "label-dask", dask)
    result.update(workers=workers, machine_before=before, machine_after=machine())
    write_result(out, result, before)
    r = result["read"]
    print(
        f"read    {r['fast_files_per_s']:8.1f} files/s (astropy's path {r['astropy_files_per_s']:.1f}: x{r['speedup']})"
    )
    print(f"predict {result['predict']['files_per_s']:8.2f} files/s (one process)")
    for engine in ("direct", "dask"):
        r = result[engine]
        ingest_rate, label_rate = r["ingest"]["files_per_s"], r["label"]["spectra_per_s"]
        print(f"{engine:7s} ingest {ingest_rate:8.2f} files/s   label {label_rate:7.3f} spectra/s")


if __name__ == "__main__":
    typer.run(main)
