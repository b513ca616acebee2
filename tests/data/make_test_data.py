"""Generate the small FITS/CSV fixtures the tests use (run by the tests into a temp folder).

Everything is derived from the real SDSS spectrum NGC3522_SDSS_DR18.fits that ships inside
the installed ppxf package, so nothing copied from SDSS is committed:

- ``dr7_spspec``: an SDSS-I/II DR7 ``spSpec-MJD-PLATE-FIBER.fit`` following the DR7 data
  model (primary image rows: flux, continuum-subtracted flux, error, mask; log10 wavelength
  = COEFF0 + COEFF1 * i; header Z, Z_ERR, Z_WARNIN, SPEC_CLN, PLATEID, MJD, FIBERID, RAOBJ,
  DECOBJ, SN_R). No real DR7 file is available here; this one is built to the data model.
- ``boss_spall``: a DR8+ spec file whose metadata HDU is ``SPALL`` (as in BOSS files).
- ``broken_corpus``: one file per kind of bad input, with the failure each must produce.

Usage: ``python tests/data/make_test_data.py OUTDIR``
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

from stellarpop.components import readers

# The real SDSS galaxies of the workspace (../shared/real-sdss beside the checkout; read in
# place, never copied into the repo). Tests that need them skip where it is absent.
REAL_SDSS = Path(__file__).resolve().parents[2].parent / "shared" / "real-sdss"

SOURCE = "NGC3522_SDSS_DR18.fits"

# Tolerances for "the same prediction" whatever path it took (in process, gRPC, streaming,
# warmup): float32 round-off differs between batch sizes (oneDNN picks other kernels), by up
# to ~3e-5 of ood_score (~1, a quadratic form over 225 features), ~2e-5 dex in [M/H] and
# ~0.002 km/s in VD (~1.5e-5 of its value) as measured on the shipped model.
SAME_PREDICTION = dict(rtol=3e-5, atol=1e-4)


def source_file() -> Path:
    return Path(next(p for p in readers.bundled_spectra() if p.endswith(SOURCE)))


def sdist_galaxy() -> Path:
    """NGC4636 (SDSS DR12 spec file) from the ppxf 8.2.6 source distribution, which the
    project fetches from the package registry into its cache: a third real galaxy that every
    clone has, ../shared or not."""
    from stellarpop.components import reference_data

    return reference_data.ppxf_sdist_members("spectra/NGC4636_SDSS_DR12.fits")[0]


def refibered(source: Path, out: Path, fiber: int, scale: float) -> Path:
    """A copy of a real spec file as another fibre of its plate: its own spectrum id and
    object id, the flux (and its errors) scaled by ``scale``. A distinct, readable, predictable
    file for tests that need more files than the real ones a clone has."""

    def edit(hdul):
        row = hdul["SPECOBJ"].data
        row["FIBERID"] = fiber
        if "BESTOBJID" in row.columns.names:
            row["BESTOBJID"] = f"9{fiber:017d}"
        coadd = hdul["COADD"].data
        coadd["flux"] = coadd["flux"] * scale
        coadd["ivar"] = coadd["ivar"] / scale**2

    with fits.open(source) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul[:4]])
    edit(hdul)
    hdul.writeto(out, overwrite=True)
    return out


def real_spectrum_files(outdir: Path, at_least: int) -> list[Path]:
    """Real SDSS spectrum files: the 2 inside ppxf, NGC4636 of its source distribution and the
    plate-266 files of ../shared/real-sdss where it is beside the checkout; topped up to
    ``at_least`` with :func:`refibered` copies of those (written to ``outdir``) on a clone
    without ../shared."""
    files = [Path(p) for p in readers.bundled_spectra()] + [sdist_galaxy()] + sorted(REAL_SDSS.glob("*.fits"))
    real = list(files)
    for i in range(max(0, at_least - len(files))):
        source = real[i % len(real)]
        files.append(refibered(source, outdir / f"refibered-{i}-{source.name}", fiber=900 + i, scale=1.5 + i))
    return files


def _modified(out: Path, edit) -> Path:
    """Copy the source spectrum with ``edit(hdul)`` applied."""
    with fits.open(source_file()) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul[:4]])  # COADD, SPECOBJ, SPZLINE: a spec-lite
    edit(hdul)
    hdul.writeto(out, overwrite=True)
    return out


DR7 = {
    "PLATEID": 266,
    "MJD": 51630,
    "FIBERID": 12,
    "Z": 0.0731,
    "Z_ERR": 1.2e-4,
    "Z_WARNIN": 0,
    "SPEC_CLN": 2,
    "RAOBJ": 146.71421,
    "DECOBJ": -1.04128,
    "VEL_DIS": 182.5,
    "VEL_DISE": 6.1,
    "OBJID": "587722982278086712",
}


def dr7_spspec(outdir: Path) -> Path:
    """A DR7 spSpec file; its spectrum is NGC3522's, shifted to z = 0.0731."""
    with fits.open(source_file()) as hdul:
        c = hdul["COADD"].data
        wave0 = 10.0 ** c["loglam"].astype(float) / (1 + 0.0040)
        flux0, ivar0, mask0 = c["flux"].astype(float), c["ivar"].astype(float), c["and_mask"]
    coeff0, coeff1, npix = 3.5800, 1e-4, 3850
    wave = 10.0 ** (coeff0 + coeff1 * np.arange(npix))
    rest = wave / (1 + DR7["Z"])
    flux = np.interp(rest, wave0, flux0, left=flux0[0], right=flux0[-1])
    ivar = np.interp(rest, wave0, ivar0, left=0, right=0)
    err = np.where(ivar > 0, 1 / np.sqrt(np.maximum(ivar, 1e-30)), 0.0)
    mask = np.interp(rest, wave0, mask0.astype(float), left=1 << 24, right=1 << 24).astype(np.int64)
    cont = np.convolve(flux, np.ones(101) / 101, mode="same")
    data = np.vstack([flux, flux - cont, err, mask]).astype(np.float32)
    header = fits.Header()
    header["COEFF0"] = (coeff0, "center wavelength (log10) of first pixel")
    header["COEFF1"] = (coeff1, "log10 dispersion per pixel")
    header["TELESCOP"] = "SDSS 2.5-M"
    header["BUNIT"] = "1e-17 erg/cm/s/Ang"
    for key, value in DR7.items():
        header[key] = value
    header["SN_R"] = (15.3, "median S/N per pixel in r")
    out = outdir / f"spSpec-{DR7['MJD']:05d}-{DR7['PLATEID']:04d}-{DR7['FIBERID']:03d}.fit"
    fits.PrimaryHDU(data=data, header=header).writeto(out, overwrite=True)
    return out


def boss_spall(outdir: Path) -> Path:
    def edit(hdul):
        hdul[2].name = "SPALL"

    return _modified(outdir / "spec-boss-style.fits", edit)


def _set_column(hdul, hdu, column, values):
    hdul[hdu].data[column] = values


def broken_corpus(outdir: Path) -> dict[str, tuple[str, str]]:
    """Write one file per kind of bad input; returns {file name: (stage, reason)}.

    The corpus also holds one good file (``good.fits``) and its duplicate.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    src = source_file()
    raw = src.read_bytes()
    expected: dict[str, tuple[str, str]] = {}

    shutil.copy(src, outdir / "good.fits")
    shutil.copy(src, outdir / "good_copy.fits")
    expected["good_copy.fits"] = ("duplicate", "duplicate_id")

    (outdir / "truncated.fits").write_bytes(raw[:100_001])  # a cut-off download
    expected["truncated.fits"] = ("read", "truncated")
    (outdir / "truncated_in_coadd.fits").write_bytes(raw[: 20 * 2880])  # whole blocks, data cut
    expected["truncated_in_coadd.fits"] = ("read", "truncated")

    with fits.open(src) as hdul:  # the COADD header overwritten by a block of zeros
        start = len(hdul[0].header.tostring())
    (outdir / "zeroed_header.fits").write_bytes(raw[:start] + bytes(2880) + raw[start + 2880 :])
    expected["zeroed_header.fits"] = ("read", "corrupt_fits")

    (outdir / "empty.fits").write_bytes(b"")
    expected["empty.fits"] = ("read", "empty_file")

    (outdir / "garbage.fits").write_bytes(np.random.default_rng(0).bytes(8000))
    expected["garbage.fits"] = ("read", "unknown_format")

    def drop_specobj(hdul):
        del hdul[2]

    _modified(outdir / "no_specobj.fits", drop_specobj)
    expected["no_specobj.fits"] = ("read", "missing_hdu")

    def drop_ivar(hdul):
        cols = [c for c in hdul[1].columns if c.name != "ivar"]
        hdul[1] = fits.BinTableHDU.from_columns(cols, name="COADD")

    _modified(outdir / "no_ivar.fits", drop_ivar)
    expected["no_ivar.fits"] = ("read", "missing_column")

    def nan_flux(hdul):
        flux = hdul[1].data["flux"].copy()
        flux[100:110] = np.nan
        _set_column(hdul, 1, "flux", flux)

    _modified(outdir / "nan_flux.fits", nan_flux)
    expected["nan_flux.fits"] = ("validate", "nonfinite_flux")

    def zero_ivar(hdul):
        _set_column(hdul, 1, "ivar", np.zeros_like(hdul[1].data["ivar"]))

    _modified(outdir / "zero_ivar.fits", zero_ivar)
    expected["zero_ivar.fits"] = ("validate", "zero_ivar")

    def negative_norm(hdul):
        wave = 10.0 ** hdul[1].data["loglam"]
        flux = hdul[1].data["flux"].copy()
        flux[(wave > 4900) & (wave < 5100)] *= -1
        _set_column(hdul, 1, "flux", flux)

    _modified(outdir / "negative_norm.fits", negative_norm)
    expected["negative_norm.fits"] = ("validate", "norm_flux_not_positive")

    def high_z(hdul):
        _set_column(hdul, 2, "Z", np.array([0.45], np.float32))
        _set_column(hdul, 2, "FIBERID", np.array([2], np.int32))  # its own spectrum id

    _modified(outdir / "high_z.fits", high_z)
    expected["high_z.fits"] = ("select", "z_range")

    wave = np.linspace(10000, 20000, 2000)
    table = "wavelength,flux,ivar,z\n" + "".join(f"{w:.2f},1.0,1.0,0.1\n" for w in wave)
    (outdir / "infrared.csv").write_text(table)
    expected["infrared.csv"] = ("validate", "wavelength_coverage")
    return expected


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "test-data")
    out.mkdir(parents=True, exist_ok=True)
    print(dr7_spspec(out), boss_spall(out))
    for name, (stage, reason) in broken_corpus(out / "broken").items():
        print(f"{name}: {stage}/{reason}")
