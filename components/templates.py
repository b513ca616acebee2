"""The SSP templates: obtain the E-MILES library (Vazdekis et al. 2016) as a ppxf ``sps_lib``
.npz, load it, and prepare it for SDSS spectra (:func:`prepare`, for the simulator and the
pPXF labeller alike).

Source: the 150 ``Eun1.30Z*T*_iPp0.00_baseFe_linear_FWHM_variable.fits`` files (25 ages x
6 [M/H], unimodal IMF slope 1.30, base [alpha/Fe], Padova+00 isochrones; 1680-50000 A in
0.9 A steps, air wavelengths, L_sun/A per M_sun formed) and the Vazdekis mass table, from
the ppxf 8.2.6 source distribution (fetched by ``reference_data`` with a pinned SHA-256).
They are converted once into ``$STELLARPOP_CACHE/emiles_un1.30_baseFe.npz`` with the keys
ppxf 9.x's ``sps_util.sps_lib`` reads (templates, lam, fwhm, ages, metals, masses); a
sidecar JSON records the build settings and the file's SHA-256, checked on every load.
Concurrent callers are safe: one builds under the cache's lock, both files are renamed into
place whole, and the others find the finished library (``reference_data.locked``).
Any other ``sps_lib`` file can be used instead (``--library``).

E-MILES gives no flux redward of 8950 A for its youngest SSPs (no infrared stellar library
there): those pixels are 0. The model grid never reaches them (rest < 8899 A for z >= 0);
mocks on SDSS's native grid at z < 0.028 do, beyond 8950 A rest.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from ppxf import ppxf_util

from stellarpop.components import reference_data
from stellarpop.components.dust import calzetti_k
from stellarpop.components.instrument import C_KMS, FWHM_PER_SIGMA, SDSS_VELSCALE, Instrument
from stellarpop.components.spectra import pixel_edges

log = logging.getLogger(__name__)

EMILES_GLOB = "miles_models/Eun1.30Z*T*_iPp0.00_baseFe_linear_FWHM_variable.fits"
MASS_TABLE = "miles_models/Vazdekis2012_ssp_mass_Padova00_UN_baseFe_v10.0.txt"
IMF_SLOPE = 1.30
LIBRARY_FILE = "emiles_un1.30_baseFe.npz"
# Rest-frame range kept: observed 3800-8900 A for 0.002 <= z <= 0.3 is rest 2920-8880 A,
# plus room for the LOSVD and LSF kernels. The full 1680-50000 A would be 6x larger.
DEFAULT_LAM_RANGE = (2500.0, 10000.0)
# Rest frame, A: the V band, where the light weights of the truth and the labeller's
# templates are measured (ppxf's norm_range).
LIGHT_WINDOW = (5070.0, 5950.0)


class TemplateError(RuntimeError):
    """The template library cannot be obtained or is not in sps_lib format."""


@dataclass(frozen=True)
class Library:
    """An SSP library in ppxf's sps_lib layout.

    Attributes
    ----------
    templates : ndarray, shape (L, n_ages, n_metals), L_sun/A per M_sun formed
    lam : ndarray, shape (L,), Angstrom (air for E-MILES)
    fwhm : ndarray, shape (L,), Angstrom, the library's line-spread function
    ages : ndarray, shape (n_ages,), Gyr
    metals : ndarray, shape (n_metals,), [M/H] dex
    masses : ndarray, shape (n_ages, n_metals), M_sun in stars + remnants per M_sun formed
    """

    templates: np.ndarray
    lam: np.ndarray
    fwhm: np.ndarray
    ages: np.ndarray
    metals: np.ndarray
    masses: np.ndarray


def emiles_fwhm(lam: np.ndarray) -> np.ndarray:
    """E-MILES line-spread FWHM (Angstrom) at air wavelengths ``lam``.

    2.51 A over the MILES range 3540.5-8950 A (the file headers give 2.51 A as the minimum);
    beyond 8950 A sigma = 60 km/s (which gives the headers' maximum, 23.57 A, at 50000 A).
    Below 3540.5 A the models use the NGSL library; its resolution is not in the headers,
    and 3.0 A FWHM is assumed there. Only observed spectra at z > 0.07 reach that range.
    """
    lam = np.asarray(lam, float)
    fwhm = np.full(lam.shape, 2.51)
    fwhm[lam < 3540.5] = 3.0
    red = lam > 8950.0
    fwhm[red] = np.maximum(2.51, FWHM_PER_SIGMA * 60.0 / C_KMS * lam[red])
    return fwhm


_NAME = re.compile(r"Z([mp])(\d+\.\d+)T(\d+\.\d+)_")


def age_metal(name: str) -> tuple[float, float]:
    """(age in Gyr, [M/H]) from an E-MILES file name such as ``...Zm0.40T00.0794_...``."""
    m = _NAME.search(name)
    if m is None:
        raise TemplateError(f"{name}: not an E-MILES SSP file name (Z[mp]X.XXTXX.XXXX_)")
    sign = -1.0 if m.group(1) == "m" else 1.0
    return float(m.group(3)), sign * float(m.group(2))


def read_mass_table(path: Path, slope: float = IMF_SLOPE) -> dict[tuple[float, float], float]:
    """{([M/H], age Gyr): M(*+remn)} for one IMF slope of the Vazdekis mass table."""
    out = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#") or len(parts) < 6:
            continue
        if abs(float(parts[1]) - slope) > 1e-6:
            continue
        out[(float(parts[2]), float(parts[3]))] = float(parts[5])
    if not out:
        raise TemplateError(f"{path}: no rows for IMF slope {slope}")
    return out


def _mass_for(table: dict, metal: float, age: float) -> float:
    # The table's [M/H] are exact (-0.3965); file names round them (m0.40).
    key = min(table, key=lambda k: (abs(k[0] - metal), abs(k[1] - age)))
    if abs(key[0] - metal) > 0.01 or abs(key[1] - age) > 1e-3:
        raise TemplateError(f"mass table has no row for [M/H]={metal}, age={age} Gyr")
    return table[key]


def build_emiles(out: Path, lam_range=DEFAULT_LAM_RANGE) -> Path:
    """Convert the E-MILES FITS files into an sps_lib .npz at ``out`` (+ sidecar JSON)."""
    files = reference_data.ppxf_sdist_members(EMILES_GLOB)
    tables = reference_data.ppxf_sdist_members(MASS_TABLE)
    if len(files) != 150 or len(tables) != 1:
        raise TemplateError(
            f"expected 150 E-MILES files and the mass table in {reference_data.PPXF_SDIST}, found {len(files)}"
        )
    masses_table = read_mass_table(tables[0])
    grid = sorted({age_metal(f.name) for f in files})
    ages = np.array(sorted({a for a, _ in grid}))
    metals = np.array(sorted({m for _, m in grid}))
    with fits.open(files[0]) as hdul:
        h = hdul[0].header
        lam_all = h["CRVAL1"] + h["CDELT1"] * (np.arange(h["NAXIS1"]) + 1 - h["CRPIX1"])
    keep = (lam_all >= lam_range[0]) & (lam_all <= lam_range[1])
    templates = np.zeros((keep.sum(), ages.size, metals.size), np.float32)
    masses = np.zeros((ages.size, metals.size))
    for f in files:
        age, metal = age_metal(f.name)
        i, j = np.searchsorted(ages, age), np.searchsorted(metals, metal)
        templates[:, i, j] = fits.getdata(f)[keep]
        masses[i, j] = _mass_for(masses_table, metal, age)
    lam = lam_all[keep]
    settings = {
        "source": reference_data.PPXF_SDIST,
        "source_sha256": reference_data.PPXF_SDIST_SHA256,
        "files": EMILES_GLOB,
        "imf_slope": IMF_SLOPE,
        "lam_range": list(lam_range),
    }
    return write_library(out, Library(templates, lam, emiles_fwhm(lam), ages, metals, masses), settings)


def write_library(out: Path, lib: Library, settings: dict) -> Path:
    """Write ``lib`` as an sps_lib .npz at ``out`` and its sidecar JSON (``settings`` plus the
    file's SHA-256), each renamed into place whole; see :func:`verified`."""

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy would otherwise append ".npz" to the name
            np.savez_compressed(fh, **{f.name: getattr(lib, f.name) for f in dataclasses.fields(lib)})

    reference_data.write_atomic(out, write_npz)
    meta = {**settings, "sha256": reference_data.sha256(out)}
    reference_data.write_atomic(_sidecar(out), lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    log.info("built %s: %d ages x %d metals, %d pixels", out, lib.ages.size, lib.metals.size, lib.lam.size)
    return out


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def library_path(path: str | Path | None = None) -> Path:
    """The library to use: ``path`` if given, else the cached E-MILES build (made if needed)."""
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise TemplateError(f"{path}: no such template library")
        return path
    out = reference_data.cache_dir() / LIBRARY_FILE
    if verified(out):
        return out
    # One process builds; the others wait for the lock and then find the finished library.
    with reference_data.locked("templates"):
        if verified(out):
            return out
        if out.exists():
            log.warning("%s does not match its recorded SHA-256: rebuilding", out)
        log.info("building the E-MILES template library into %s (once per cache)", out)
        try:
            return build_emiles(out)
        except reference_data.ReferenceDataError as exc:
            raise TemplateError(f"no template library: {exc}") from None


def verified(out: Path, settings: dict | None = None) -> bool:
    """The library and its sidecar exist and agree (both are renamed into place whole), and
    the sidecar records ``settings`` (those of the build wanted now), if given."""
    side = _sidecar(out)
    if not (out.exists() and side.exists()):
        return False
    try:
        meta = json.loads(side.read_text())
    except (ValueError, OSError):
        return False
    return all(meta.get(k) == v for k, v in (settings or {}).items()) and meta.get("sha256") == reference_data.sha256(
        out
    )


def load_library(path: str | Path | None = None) -> Library:
    """Load an sps_lib .npz (default: the E-MILES build) and check its layout."""
    path = library_path(path)
    try:
        with np.load(path) as npz:
            lib = Library(**{f.name: np.asarray(npz[f.name]) for f in dataclasses.fields(Library)})
    except (KeyError, ValueError, OSError) as exc:
        raise TemplateError(
            f"{path}: not an sps_lib file (templates, lam, fwhm, ages, metals, masses): {exc}"
        ) from None
    if not (
        lib.templates.shape == (lib.lam.size, lib.ages.size, lib.metals.size)
        and lib.masses.shape == lib.templates.shape[1:]
    ):
        raise TemplateError(f"{path}: inconsistent shapes templates {lib.templates.shape}, masses {lib.masses.shape}")
    fwhm = np.broadcast_to(lib.fwhm, lib.lam.shape).astype(float)
    return dataclasses.replace(lib, fwhm=fwhm)


def select_library(lib: Library, ages: tuple[float, ...], metals: tuple[float, ...]) -> Library:
    """The sub-grid of the SSPs nearest to ``ages`` (Gyr) and ``metals`` (dex)."""
    ia = [int(np.argmin(np.abs(np.log(lib.ages / a)))) for a in ages]
    im = [int(np.argmin(np.abs(lib.metals - m))) for m in metals]
    if len(set(ia)) != len(ia) or len(set(im)) != len(im):
        raise ValueError(f"ages {ages} or metals {metals} map twice onto one library SSP")
    return dataclasses.replace(
        lib,
        templates=lib.templates[:, ia][:, :, im],
        ages=lib.ages[ia],
        metals=lib.metals[im],
        masses=lib.masses[ia][:, im],
    )


# --------------------------------------------------------------------------------------------
# Template preparation: the library at SDSS's resolution on a log grid (simulator, labeller)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prepared:
    """Templates ready for mixing: vacuum, at SDSS resolution, on a log grid.

    ``templates`` has shape (n_pix, n_ages * n_metals) in L_sun/A per M_sun formed, on
    ``ln_lam`` (natural log of vacuum rest wavelength) with ``velscale`` km/s per pixel.
    ``light`` is each template's mean flux in :data:`LIGHT_WINDOW` (light per M_sun).
    """

    ln_lam: np.ndarray
    templates: np.ndarray
    light: np.ndarray
    ages: np.ndarray  # (n_ages,) Gyr
    metals: np.ndarray  # (n_metals,)
    masses: np.ndarray  # (n_ages, n_metals)
    velscale: float
    lsf_kms: float  # SDSS's median instrumental sigma (for the emission lines)
    k_dust: np.ndarray  # Calzetti k(lambda) on the grid (computed once, used per spectrum)
    edges: np.ndarray  # pixel edges (Angstrom) of the grid

    @functools.cached_property
    def templates_t(self) -> np.ndarray:
        """``templates`` as (n_templates, n_pix), contiguous: the SSPs of one mixture are then
        rows, cheap to gather (for the template-mismatch nuisance; made on first use)."""
        return np.ascontiguousarray(self.templates.T)


def prepare(
    lib: Library,
    instrument: Instrument,
    oversample: int = 2,
    z_ref: float = 0.1,
    extra_sigma_kms: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Prepared:
    """Bring the library to vacuum and to SDSS's line-spread function, on a log grid.

    The LSF difference (quadratic, in Angstrom) is taken with SDSS's sigma at the observed
    wavelength lambda_rest * (1 + z_ref); SDSS's LSF is nearly constant in velocity, so the
    error of using one z_ref for 0 < z < 0.3 is a few km/s in quadrature. Where the library
    is broader than SDSS it is left as it is. ``extra_sigma_kms(observed wavelength)`` adds
    a broadening in quadrature on top (the pPXF labeller's pixel boxes).
    """
    lam_vac = ppxf_util.air_to_vac(lib.lam)
    sig_sdss_kms = np.interp(np.log10(lam_vac * (1 + z_ref)), instrument.loglam, instrument.sigma_kms)
    sig_sdss = sig_sdss_kms / C_KMS * lam_vac  # rest-frame Angstrom
    sig_tem = lib.fwhm / FWHM_PER_SIGMA
    sig_target2 = np.maximum(sig_sdss, sig_tem) ** 2
    if extra_sigma_kms is not None:
        sig_target2 = sig_target2 + (extra_sigma_kms(lam_vac * (1 + z_ref)) / C_KMS * lam_vac) ** 2
    sig_diff = np.sqrt(np.clip(sig_target2 - sig_tem**2, 0, None))
    flat = lib.templates.reshape(lib.lam.size, -1)
    smooth = ppxf_util.varsmooth(lam_vac, flat, sig_diff)
    velscale = SDSS_VELSCALE / oversample
    templates, ln_lam, velscale = ppxf_util.log_rebin(lam_vac, smooth, velscale=velscale)
    lam = np.exp(ln_lam)
    win = (lam >= LIGHT_WINDOW[0]) & (lam <= LIGHT_WINDOW[1])
    if lam[0] > LIGHT_WINDOW[0] or lam[-1] < LIGHT_WINDOW[1]:
        raise ValueError(f"the library ({lam[0]:.0f}-{lam[-1]:.0f} A) does not cover the light window {LIGHT_WINDOW} A")
    return Prepared(
        ln_lam=ln_lam,
        # float32: the mixing reads the whole library per spectrum (memory bound), and the
        # noise of any mock is far above float32 precision.
        templates=np.ascontiguousarray(templates, dtype=np.float32),
        light=templates[win].mean(axis=0),
        ages=lib.ages,
        metals=lib.metals,
        masses=lib.masses,
        velscale=float(velscale),
        lsf_kms=float(np.median(instrument.sigma_kms)),
        k_dust=calzetti_k(lam),
        edges=pixel_edges(lam),
    )
