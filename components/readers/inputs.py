"""User inputs -> spectrum files: files, directories, globs, list files (``@file``),
``bundled``, and catalogues of plate/mjd/fiber resolved against an SDSS-like tree. The one
resolution used by ingestion and prediction alike."""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from stellarpop.components.readers.sdss import bundled_spectra, sdss_spec_id
from stellarpop.components.readers.tables import read_parquet
from stellarpop.components.spectra import SpectrumError

SPECTRUM_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fts", ".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class Unresolved:
    """An input that names no readable file."""

    file: str
    message: str


def _is_spectrum_name(name: str) -> bool:
    return name.lower().endswith(SPECTRUM_SUFFIXES)


def resolve_inputs(inputs: Iterable[str]) -> tuple[list[str], list[Unresolved]]:
    """Expand user inputs to a sorted, de-duplicated list of files.

    Accepts files, directories (searched recursively for spectrum-like names), glob patterns
    (``**`` allowed), and list files written ``@paths.txt`` (one input per line, ``#``
    comments, paths relative to the list file). ``bundled`` names the SDSS spectra in ppxf.
    """
    files: list[str] = []
    missing: list[Unresolved] = []
    for item in inputs:
        item = str(item)
        if item == "bundled":
            files.extend(bundled_spectra())
        elif item.startswith("@"):
            listed, miss = resolve_inputs(_read_list_file(item[1:]))
            files.extend(listed)
            missing.extend(miss)
        elif any(ch in item for ch in "*?["):
            matched = [p for p in sorted(glob.glob(item, recursive=True)) if os.path.isfile(p)]
            if not matched:
                missing.append(Unresolved(item, "no file matches this pattern"))
            files.extend(matched)
        elif os.path.isdir(item):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(item)
                for name in names
                if _is_spectrum_name(name)
            )
            if not found:
                missing.append(Unresolved(item, "directory holds no spectrum files"))
            files.extend(found)
        elif os.path.isfile(item):
            files.append(item)
        else:
            missing.append(Unresolved(item, "file not found"))
    return sorted(set(os.path.abspath(f) for f in files)), missing


def _read_list_file(path: str) -> list[str]:
    base = os.path.dirname(os.path.abspath(path))
    with open(path) as fh:
        lines = [ln.split("#", 1)[0].strip() for ln in fh]
    return [ln if os.path.isabs(ln) or ln == "bundled" else os.path.join(base, ln) for ln in lines if ln]


def catalogue_paths(catalogue: str, root: str) -> tuple[list[str], list[Unresolved]]:
    """Resolve a catalogue of plate/mjd/fiber against a directory laid out like SDSS's.

    ``root/PLATE/spec-PLATE-MJD-FIBER.fits`` (PLATE and FIBER zero-padded to 4 digits, MJD
    to 5), as in SDSS's ``spectra/lite/`` and ``spectra/full/`` trees.
    """
    if catalogue.lower().endswith((".fits", ".fit", ".fits.gz")):
        with fits.open(catalogue) as hdul:
            hdu = next(h for h in hdul if isinstance(h, fits.BinTableHDU))
            cols = {c.lower(): np.asarray(hdu.data[c]) for c in hdu.columns.names}
    elif catalogue.lower().endswith((".parquet", ".pq")):
        cols = read_parquet(catalogue)
    else:
        with open(catalogue, newline="") as fh:
            rows = list(csv.DictReader(fh))
        cols = {k.strip().lower(): np.array([r[k] for r in rows]) for k in (rows[0] if rows else {})}
    fiber_key = "fiberid" if "fiberid" in cols else "fiber"
    for key in ("plate", "mjd", fiber_key):
        if key not in cols:
            raise SpectrumError("missing_column", f"catalogue {catalogue} has no {key} column")
    found, missing = [], []
    for plate, mjd, fiber in zip(cols["plate"], cols["mjd"], cols[fiber_key]):
        plate, mjd, fiber = int(plate), int(mjd), int(fiber)
        path = os.path.join(root, f"{plate:04d}", f"spec-{sdss_spec_id(plate, mjd, fiber)}.fits")
        if os.path.isfile(path):
            found.append(os.path.abspath(path))
        else:
            missing.append(Unresolved(path, f"catalogue row plate={plate} mjd={mjd} fiber={fiber}: file not found"))
    return found, missing


def resolve(inputs: Iterable[str], catalogue: str = "", sdss_root: str = "") -> tuple[list[str], list[Unresolved]]:
    """Every input of a job -> (sorted files, inputs that name no file): :func:`resolve_inputs`
    of ``inputs`` plus, with ``catalogue``, :func:`catalogue_paths` under ``sdss_root``."""
    files, missing = resolve_inputs(inputs)
    if catalogue:
        found, miss = catalogue_paths(catalogue, sdss_root)
        files = sorted(set(files) | set(found))
        missing += miss
    return files, missing
