"""Generic tables of one spectrum: CSV, Parquet or a FITS binary table, with wavelength,
flux and ivar-or-error columns, optional mask, z and id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits

from stellarpop.components.instrument import DEFAULT_BAD_BITS, bad_pixels
from stellarpop.components.readers.registry import (
    PARQUET_MAGIC,
    computed_snr,
    num,
    position_object_id,
    register_reader,
    text,
)
from stellarpop.components.spectra import Spectrum, SpectrumError

WAVE_COLUMNS = ("wave", "wavelength", "lambda", "lam")
IVAR_COLUMNS = ("ivar", "inverse_variance")
ERROR_COLUMNS = ("error", "err", "sigma", "flux_err", "noise")


def _is_table_hdul(hdul: fits.HDUList) -> bool:
    return _table_hdu(hdul) is not None


def _table_hdu(hdul: fits.HDUList):
    """The first extension, if it is a table of one spectrum (never a later HDU: in SDSS
    files those are single exposures)."""
    if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
        return None
    names = {c.lower() for c in hdul[1].columns.names}
    if "flux" in names and (names & set(WAVE_COLUMNS) or "loglam" in names):
        return hdul[1]
    return None


def spectrum_from_columns(cols: dict[str, np.ndarray], meta: dict, path: str, bad_bits=DEFAULT_BAD_BITS) -> Spectrum:
    """Build a Spectrum from lower-cased table columns and scalar metadata."""
    if "loglam" in cols:
        wave = 10.0 ** np.asarray(cols["loglam"], np.float64)
    else:
        key = next((k for k in WAVE_COLUMNS if k in cols), None)
        if key is None:
            raise SpectrumError("missing_column", f"no wavelength column (one of {', '.join(WAVE_COLUMNS)}, loglam)")
        wave = np.asarray(cols[key], np.float64)
    if "flux" not in cols:
        raise SpectrumError("missing_column", "no flux column")
    flux = np.asarray(cols["flux"], np.float64)
    ikey = next((k for k in IVAR_COLUMNS if k in cols), None)
    ekey = next((k for k in ERROR_COLUMNS if k in cols), None)
    if ikey:
        ivar = np.asarray(cols[ikey], np.float64)
    elif ekey:
        err = np.asarray(cols[ekey], np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ivar = np.where(err > 0, 1.0 / err**2, 0.0)
        ivar[~np.isfinite(err)] = np.nan
    else:
        raise SpectrumError(
            "missing_column", f"no ivar or error column (one of {', '.join(IVAR_COLUMNS + ERROR_COLUMNS)})"
        )
    bad = bad_pixels(np.nan_to_num(ivar), cols.get("and_mask"), bad_bits)
    if "mask" in cols:
        bad |= np.asarray(cols["mask"]).astype(bool)

    def scalar(*keys, default=None):
        for k in keys:
            if k in meta:
                return meta[k]
            if k in cols and len(cols[k]):
                return np.asarray(cols[k])[0]
        return default

    ra, dec = num(scalar("ra")), num(scalar("dec"))
    spec_id = text(scalar("spec_id", "id", "specobjid", default="")) or Path(path).name.split(".")[0]
    spec = Spectrum(
        wave=wave,
        flux=flux,
        ivar=ivar,
        bad=bad,
        spec_id=spec_id,
        source_file=path,
        object_id=text(scalar("object_id", "objid", default="")) or position_object_id(ra, dec) or spec_id,
        ra=ra,
        dec=dec,
        z=num(scalar("z", "redshift")),
        z_err=num(scalar("z_err")),
        zwarning=int(num(scalar("zwarning", default=0), 0)),
        spec_class=text(scalar("class", default="")),
        subclass=text(scalar("subclass", default="")),
        bpt_class=text(scalar("bpt_class", default="")),
        sdss_vdisp=num(scalar("vdisp", default=0.0), 0.0),
    )
    return spec.replace(snr_r=computed_snr(spec))


@register_reader("fits_table", "fits", _is_table_hdul)
def read_fits_table(hdul: fits.HDUList, path: str, bad_bits=DEFAULT_BAD_BITS) -> Spectrum:
    hdu = _table_hdu(hdul)
    cols = {c.lower(): np.asarray(hdu.data[c]) for c in hdu.columns.names}
    meta = {}
    for header in (hdul[0].header, hdu.header):
        for key in ("Z", "REDSHIFT", "Z_ERR", "ID", "SPEC_ID", "RA", "DEC", "CLASS", "BPT_CLASS"):
            if key in header:
                meta[key.lower()] = header[key]
    return spectrum_from_columns(cols, meta, path, bad_bits)


def _read_csv(path: str) -> dict[str, np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(path, comment="#")
    return {str(c).strip().lower(): frame[c].to_numpy() for c in frame.columns}


def read_parquet(path: str) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {c.lower(): table.column(c).to_numpy() for c in table.column_names}


def _looks_like_csv(head: bytes) -> bool:
    try:
        first = head.decode("utf-8").splitlines()[0].lower()
    except (UnicodeDecodeError, IndexError):
        return False
    return "flux" in first and ("," in first or "\t" in first)


def _table_reader(loader: Callable) -> Callable:
    def read(path: str, bad_bits=DEFAULT_BAD_BITS) -> Spectrum:
        try:
            cols = loader(path)
        except Exception as exc:  # noqa: BLE001 - any parser failure is a per-file error
            raise SpectrumError("unreadable", f"cannot parse table: {exc}") from None
        return spectrum_from_columns(cols, {}, path, bad_bits)

    return read


register_reader("parquet", "file", lambda head: head.startswith(PARQUET_MAGIC))(_table_reader(read_parquet))
register_reader("csv", "file", _looks_like_csv)(_table_reader(_read_csv))
