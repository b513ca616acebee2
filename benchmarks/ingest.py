"""FITS -> TFRecord throughput of the ingest job (target: >= 100 SDSS files/s on 2 cores).

Builds N SDSS spec-lite files from the real spectra inside ppxf (fiber numbers patched so
every file is a distinct spectrum), runs the same job as ``stellarpop ingest`` at two sizes
and separates the steady-state rate from Beam's fixed start-up cost:

    python benchmarks/ingest.py --small 500 --large 3000 --workers 2
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from astropy.io import fits

from stellarpop.components import examples, sdss_io
from stellarpop.components.fits_example_gen import executor, ingest
from stellarpop.components.spectra import to_model_grid
from stellarpop.pipeline import configs


def make_files(folder: Path, n: int) -> list[Path]:
    """n spec-lite files: the bundled spectra with FIBERID patched in place (bytes)."""
    templates = []
    for i, src in enumerate(sdss_io.bundled_spectra()):
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
        spec = sdss_io.read_spectrum(path)
    t1 = time.perf_counter()
    for _ in range(repeat):
        grid = to_model_grid(spec)
    t2 = time.perf_counter()
    for _ in range(repeat):
        examples.to_example(grid).SerializeToString()
    t3 = time.perf_counter()
    return {"read": 1e3 * (t1 - t0) / repeat, "resample": 1e3 * (t2 - t1) / repeat, "to_example": 1e3 * (t3 - t2) / repeat}


def timed_run(files: list[Path], out: Path, workers: int) -> float:
    listing = out / "inputs.txt"
    out.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{f}\n" for f in files))
    cfg = ingest.IngestConfig(inputs=(f"@{listing}",))
    start = time.perf_counter()
    summary = executor.run_standalone(str(out), cfg, configs.local_beam_args(workers))
    elapsed = time.perf_counter() - start
    assert summary["examples"] + summary["rejected_by_selection"] == len(files), summary
    return elapsed


def main(
    small: Annotated[int, typer.Option(help="Files in the small run.")] = 500,
    large: Annotated[int, typer.Option(help="Files in the large run.")] = 3000,
    workers: Annotated[int, typer.Option(help="DirectRunner worker processes.")] = 2,
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    try:
        (tmp / "data").mkdir()
        files = make_files(tmp / "data", large)
        steps = per_file_ms(str(files[0]))
        t_small = timed_run(files[:small], tmp / "small", workers)
        t_large = timed_run(files, tmp / "large", workers)
        rate = (large - small) / (t_large - t_small)
        result = {
            "cpus": os.cpu_count(),
            "workers": workers,
            "file_kind": "SDSS DR18 spec-lite (COADD, SPECOBJ, SPZLINE)",
            "per_file_ms_one_core": {k: round(v, 2) for k, v in steps.items()},
            "seconds": {str(small): round(t_small, 1), str(large): round(t_large, 1)},
            "steady_state_files_per_s": round(rate, 1),
            "startup_s": round(t_small - small / rate, 1),
            "overall_files_per_s_large_run": round(large / t_large, 1),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
