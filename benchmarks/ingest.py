"""FITS -> TFRecord throughput of the ingest job (target: >= 100 SDSS files/s on 2 cores).

Builds N SDSS spec-lite files from the real spectra inside ppxf (fiber numbers patched so
every file is a distinct spectrum) and runs the same job as ``stellarpop ingest`` on them.
The workers' progress counters are sampled during the run: the steady-state rate is the
slope between 10% and 90% of the files done; start-up (Beam launching worker processes that
import TensorFlow) and the final writes are reported apart:

    python benchmarks/ingest.py --n 5000 --workers 2
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

import numpy as np
import typer
from astropy.io import fits

from stellarpop.components import examples, readers
from stellarpop.components.fits_example_gen import job, run
from stellarpop.components.spectra import to_model_grid
from stellarpop.pipeline import configs


def make_files(folder: Path, n: int) -> list[Path]:
    """n spec-lite files: the bundled spectra with FIBERID patched in place (bytes)."""
    templates = []
    for i, src in enumerate(readers.bundled_spectra()):
        lite = folder / f"template{i}.fits"
        with fits.open(src) as hdul:
            fits.HDUList([h.copy() for h in hdul[:4]]).writeto(lite)
        with fits.open(lite) as hdul:
            hdu = hdul["SPECOBJ"]
            names = [c.lower() for c in hdu.columns.names]
            offset = hdu._data_offset + hdu.data.dtype.fields[hdu.columns.names[names.index("fiberid")]][1]
        templates.append((bytearray(lite.read_bytes()), offset))
        lite.unlink()
    out = []
    for k in range(n):
        raw, offset = templates[k % len(templates)]
        raw[offset : offset + 4] = np.array([k + 1], ">i4").tobytes()
        path = folder / f"spec-{k:06d}.fits"
        path.write_bytes(raw)
        out.append(path)
    return out


def per_file_ms(path: str, repeat: int = 50) -> dict[str, float]:
    """Single-core cost of each step for one file, in ms."""
    t0 = time.perf_counter()
    for _ in range(repeat):
        spec = readers.read_spectrum(path)
    t1 = time.perf_counter()
    for _ in range(repeat):
        grid = to_model_grid(spec)
    t2 = time.perf_counter()
    for _ in range(repeat):
        examples.to_example(grid).SerializeToString()
    t3 = time.perf_counter()
    return {
        "read": 1e3 * (t1 - t0) / repeat,
        "resample": 1e3 * (t2 - t1) / repeat,
        "to_example": 1e3 * (t3 - t2) / repeat,
    }


def timed_run(files: list[Path], out: Path, workers: int) -> dict:
    listing = out / "inputs.txt"
    progress = out / "progress"
    progress.mkdir(parents=True)
    listing.write_text("".join(f"{f}\n" for f in files))
    cfg = job.IngestConfig(inputs=(f"@{listing}",), progress_dir=str(progress))
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.2):
            done = sum(int(p.read_text() or 0) for p in progress.glob("*.count"))
            samples.append((time.perf_counter(), done))

    watcher = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    watcher.start()
    summary = run.run_standalone(str(out), cfg, configs.local_beam_args(workers))
    elapsed = time.perf_counter() - start
    stop.set()
    watcher.join()
    assert summary["examples"] + summary["rejected_by_selection"] == len(files), summary
    n = len(files)
    t10 = next(t for t, d in samples if d >= 0.1 * n)
    t90 = next(t for t, d in samples if d >= 0.9 * n)
    first = next(t for t, d in samples if d > 0)
    return {
        "files": n,
        "wall_s": round(elapsed, 1),
        "startup_s": round(first - start, 1),
        "steady_state_files_per_s": round(0.8 * n / (t90 - t10), 1),
        "overall_files_per_s": round(n / elapsed, 1),
    }


def main(
    n: Annotated[int, typer.Option(help="Files to ingest.")] = 5000,
    workers: Annotated[int, typer.Option(help="DirectRunner worker processes.")] = 2,
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    try:
        (tmp / "data").mkdir()
        files = make_files(tmp / "data", n)
        steps = per_file_ms(str(files[0]))
        result = {
            "cpus": os.cpu_count(),
            "workers": workers,
            "file_kind": "SDSS DR18 spec-lite (COADD, SPECOBJ, SPZLINE)",
            "per_file_ms_one_core": {k: round(v, 2) for k, v in steps.items()},
            **timed_run(files, tmp / "run", workers),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
