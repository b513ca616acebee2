"""Readers of spectrum files -> :class:`Spectrum`, and resolution of user inputs to files.

The only module that touches spectrum files. Readers live in a registry and are chosen by
the file's content, never by its name:

- ``sdss_spec``: SDSS DR8+ ``spec-PLATE-MJD-FIBER.fits`` (full and lite; HDU ``COADD`` plus
  ``SPECOBJ``, or ``SPALL`` in BOSS files);
- ``sdss_spspec``: SDSS DR7 ``spSpec-MJD-PLATE-FIBER.fit`` (primary image rows flux,
  continuum-subtracted flux, error, mask; log-lambda from COEFF0/COEFF1);
- ``table``: generic CSV, Parquet or FITS tables of one spectrum, with wavelength, flux
  and ivar-or-error columns, optional mask, z and id.

A new survey is a new function decorated with :func:`register_reader`.
"""

from __future__ import annotations

import csv
import glob
import gzip
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from stellarpop.components.spectra import DEFAULT_BAD_BITS, Spectrum, SpectrumError, snr_in_band

log = logging.getLogger(__name__)

SPECTRUM_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fts", ".csv", ".parquet", ".pq")
FITS_MAGIC = b"SIMPLE  ="
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"

# DR7 SPEC_CLN codes (SDSS-I/II spectro pipeline).
DR7_SPEC_CLN = {0: "UNKNOWN", 1: "STAR", 2: "GALAXY", 3: "QSO", 4: "QSO", 5: "SKY", 6: "STAR", 7: "GALAXY"}
DR7_SUBCLASS = {4: "HIZ_QSO", 6: "STAR_LATE", 7: "GAL_EM"}


@dataclass(frozen=True)
class Reader:
    name: str
    kind: str  # "fits": sniff(HDUList), read(HDUList, path); "file": sniff(first bytes), read(path)
    sniff: Callable
    read: Callable


READERS: dict[str, Reader] = {}


def register_reader(name: str, kind: str, sniff: Callable):
    """Decorator: add a reader to the registry (tried in registration order)."""

    def wrap(read: Callable) -> Callable:
        READERS[name] = Reader(name, kind, sniff, read)
        return read

    return wrap


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip()


def _num(value, default=math.nan) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def bad_pixels(ivar: np.ndarray, and_mask: np.ndarray | None, bad_bits=DEFAULT_BAD_BITS) -> np.ndarray:
    """True where ivar <= 0, a value is non-finite, or any of ``bad_bits`` is set."""
    bad = ~(ivar > 0)
    if and_mask is not None and len(bad_bits):
        bits = np.bitwise_or.reduce([1 << b for b in bad_bits])
        bad |= (np.asarray(and_mask).astype(np.int64) & bits) != 0
    return bad


def sdss_spec_id(plate: int, mjd: int, fiber: int) -> str:
    return f"{plate:04d}-{mjd:05d}-{fiber:04d}"


def position_object_id(ra: float, dec: float) -> str:
    """An object key from the sky position (2-arcsec cells) when the file has no object id."""
    if not (math.isfinite(ra) and math.isfinite(dec)):
        return ""
    return f"radec:{round(ra * 1800)}:{round(dec * 1800)}"


# --------------------------------------------------------------------------------------------
# SDSS DR8+ spec / spec-lite (and BOSS, which carries SPALL instead of SPECOBJ)
# --------------------------------------------------------------------------------------------
def _hdu_named(hdul: fits.HDUList, names: Sequence[str], expected_index: int):
    """Index of the first HDU with one of ``names``, looked for where the data model puts it
    first (searching by name reads every header of a full spec file)."""
    if len(hdul) > expected_index and hdul[expected_index].name in names:
        return expected_index
    for i, hdu in enumerate(hdul):
        if hdu.name in names:
            return i
    return None


def _is_sdss_spec(hdul: fits.HDUList) -> bool:
    if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
        return False
    return hdul[1].name == "COADD" or {"loglam", "flux", "ivar"} <= {c.lower() for c in hdul[1].columns.names}


_TFORM = re.compile(r"^\s*(\d*)([LBIJKAED])\s*$")
_NUMPY = {"L": "i1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


def table_columns(hdul: fits.HDUList, key, path: str) -> dict[str, np.ndarray]:
    """All columns of a binary-table HDU, lower-cased names -> arrays.

    Reads the rows with one numpy call from the header's TFORMs: astropy's table layer
    costs ~40 ms for SDSS's 126-column SPECOBJ row, which would cap ingest at ~20 files/s.
    Falls back to astropy for what the fast path does not cover (gzip, bit or
    variable-length columns).
    """
    hdu = hdul[key]
    h = hdu.header
    ncol, width, nrow = h["TFIELDS"], h["NAXIS1"], h["NAXIS2"]
    # The data offset astropy found while parsing (HDUList.fileinfo() gives the same but
    # re-serialises every header); column keywords are parsed from the raw 80-byte cards.
    start, offset = getattr(hdu, "_header_offset", None), getattr(hdu, "_data_offset", None)
    if start is None or offset is None or path.endswith(".gz"):
        return _astropy_columns(hdu)
    with open(path, "rb") as fh:
        fh.seek(start)
        raw_header = fh.read(offset - start)
    cards = {}
    for i in range(0, len(raw_header), 80):
        card = raw_header[i : i + 80]
        if card[:5] in (b"TTYPE", b"TFORM", b"TSCAL", b"TZERO") and card[8:10] == b"= ":
            cards[card[:8].strip().decode()] = card[10:].split(b"/")[0].strip().strip(b"'").strip().decode()
    fields = []
    for i in range(1, ncol + 1):
        m = _TFORM.match(cards.get(f"TFORM{i}", ""))
        if m is None:
            return _astropy_columns(hdu)
        repeat = int(m.group(1) or 1)
        code = m.group(2)
        dt = np.dtype(f"S{repeat}") if code == "A" else np.dtype((_NUMPY[code], (repeat,) if repeat > 1 else ()))
        fields.append((cards.get(f"TTYPE{i}", f"col{i}").lower(), dt))
    if np.dtype(fields).itemsize != width:
        return _astropy_columns(hdu)
    dtype = np.dtype(fields)
    with open(path, "rb") as fh:
        fh.seek(offset)
        raw = fh.read(width * nrow)
    if len(raw) < width * nrow:
        raise SpectrumError("truncated", f"HDU {hdu.name or key} is truncated ({len(raw)} of {width * nrow} bytes)")
    rows = np.frombuffer(raw, dtype=dtype, count=nrow)
    cols = {}
    for i, (name, _) in enumerate(fields, start=1):
        col = rows[name]
        if col.dtype.kind == "S":  # str, as astropy gives (the fallback must not differ)
            col = col.astype(f"U{col.dtype.itemsize}")
        scale, zero = float(cards.get(f"TSCAL{i}", 1)), float(cards.get(f"TZERO{i}", 0))
        cols[name] = col * scale + zero if (scale != 1 or zero != 0) else col
    return cols


def _astropy_columns(hdu) -> dict[str, np.ndarray]:
    return {c.lower(): np.asarray(hdu.data[c]) for c in hdu.columns.names}


def _need(cols: dict, names: Sequence[str], hdu_name: str) -> None:
    missing = [n for n in names if n not in cols]
    if missing:
        raise SpectrumError("missing_column", f"HDU {hdu_name} has no column {', '.join(missing)}")


@register_reader("sdss_spec", "fits", _is_sdss_spec)
def read_sdss_spec(hdul: fits.HDUList, path: str, bad_bits=DEFAULT_BAD_BITS) -> Spectrum:
    cols = table_columns(hdul, 1, path)
    _need(cols, ("loglam", "flux", "ivar"), "COADD")
    meta_key = _hdu_named(hdul, ("SPECOBJ", "SPALL"), 2)
    if meta_key is None:
        raise SpectrumError("missing_hdu", "no SPECOBJ or SPALL HDU with the redshift and identifiers")
    meta = table_columns(hdul, meta_key, path)
    meta_name = hdul[meta_key].name
    if not meta or len(next(iter(meta.values()))) < 1:
        raise SpectrumError("missing_hdu", f"{meta_name} HDU is empty")
    _need(meta, ("plate", "mjd", "fiberid", "z"), meta_name)

    def get(key, default=math.nan):
        key = key.lower()
        return meta[key][0] if key in meta else default

    plate, mjd, fiber = int(get("PLATE")), int(get("MJD")), int(get("FIBERID"))
    ra, dec = _num(get("PLUG_RA")), _num(get("PLUG_DEC"))
    objid = _text(get("BESTOBJID", "")) or _text(get("OBJID", ""))
    if objid.strip("0 ") == "" or objid.startswith("-"):
        objid = ""
    sn = get("SN_MEDIAN", None)
    snr_r = _num(np.ravel(sn)[2]) if sn is not None and np.size(sn) == 5 else math.nan
    wave = 10.0 ** cols["loglam"].astype(np.float64)
    ivar = cols["ivar"].astype(np.float64)
    spec = Spectrum(
        wave=wave,
        flux=cols["flux"].astype(np.float64),
        ivar=ivar,
        bad=bad_pixels(ivar, cols.get("and_mask"), bad_bits),
        spec_id=sdss_spec_id(plate, mjd, fiber),
        source_file=path,
        object_id=objid or position_object_id(ra, dec),
        plate=plate,
        mjd=mjd,
        fiber=fiber,
        ra=ra,
        dec=dec,
        z=_num(get("Z")),
        z_err=_num(get("Z_ERR")),
        zwarning=int(_num(get("ZWARNING", 0), 0)),
        spec_class=_text(get("CLASS", "")),
        subclass=_text(get("SUBCLASS", "")),
        sdss_vdisp=_num(get("VDISP", 0.0), 0.0),
        sdss_vdisp_err=_num(get("VDISP_ERR", 0.0), 0.0),
        snr_r=snr_r,
    )
    return spec if math.isfinite(snr_r) and snr_r > 0 else spec.replace(snr_r=_computed_snr(spec))


def _computed_snr(spec: Spectrum) -> float:
    with np.errstate(all="ignore"):
        return snr_in_band(spec)


# --------------------------------------------------------------------------------------------
# SDSS DR7 spSpec
# --------------------------------------------------------------------------------------------
def _is_spspec(hdul: fits.HDUList) -> bool:
    h = hdul[0].header
    return h.get("NAXIS") == 2 and h.get("NAXIS2", 0) >= 4 and "COEFF0" in h and "COEFF1" in h


@register_reader("sdss_spspec", "fits", _is_spspec)
def read_sdss_spspec(hdul: fits.HDUList, path: str, bad_bits=DEFAULT_BAD_BITS) -> Spectrum:
    h = hdul[0].header
    data = hdul[0].data
    if data is None or data.ndim != 2 or data.shape[0] < 4:
        raise SpectrumError("missing_data", "primary image is not the 4+ rows of a spSpec file")
    for key in ("PLATEID", "MJD", "FIBERID", "Z"):
        if key not in h:
            raise SpectrumError("missing_keyword", f"primary header has no {key}")
    npix = data.shape[1]
    wave = 10.0 ** (h["COEFF0"] + h["COEFF1"] * np.arange(npix))
    flux = data[0].astype(np.float64)
    err = data[2].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ivar = np.where(err > 0, 1.0 / err**2, 0.0)
    ivar[~np.isfinite(err)] = np.nan  # let validation name it
    plate, mjd, fiber = int(h["PLATEID"]), int(h["MJD"]), int(h["FIBERID"])
    ra, dec = _num(h.get("RAOBJ")), _num(h.get("DECOBJ"))
    cln = int(h.get("SPEC_CLN", 0))
    objid = _text(h.get("OBJID", ""))
    snr_r = _num(h.get("SN_R"))
    spec = Spectrum(
        wave=wave,
        flux=flux,
        ivar=ivar,
        bad=bad_pixels(np.nan_to_num(ivar), data[3], bad_bits),
        spec_id=sdss_spec_id(plate, mjd, fiber),
        source_file=path,
        object_id=objid or position_object_id(ra, dec),
        plate=plate,
        mjd=mjd,
        fiber=fiber,
        ra=ra,
        dec=dec,
        z=_num(h.get("Z")),
        z_err=_num(h.get("Z_ERR")),
        zwarning=int(_num(h.get("Z_WARNIN", 0), 0)),
        spec_class=DR7_SPEC_CLN.get(cln, "UNKNOWN"),
        subclass=DR7_SUBCLASS.get(cln, ""),
        sdss_vdisp=_num(h.get("VEL_DIS", 0.0), 0.0),
        sdss_vdisp_err=_num(h.get("VEL_DISE", 0.0), 0.0),
        snr_r=snr_r,
    )
    return spec if math.isfinite(snr_r) and snr_r > 0 else spec.replace(snr_r=_computed_snr(spec))


# --------------------------------------------------------------------------------------------
# Generic tables: CSV, Parquet, FITS binary table
# --------------------------------------------------------------------------------------------
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
        raise SpectrumError("missing_column", f"no ivar or error column (one of {', '.join(IVAR_COLUMNS + ERROR_COLUMNS)})")
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

    ra, dec = _num(scalar("ra")), _num(scalar("dec"))
    spec_id = _text(scalar("spec_id", "id", "specobjid", default="")) or Path(path).name.split(".")[0]
    spec = Spectrum(
        wave=wave,
        flux=flux,
        ivar=ivar,
        bad=bad,
        spec_id=spec_id,
        source_file=path,
        object_id=_text(scalar("object_id", "objid", default="")) or position_object_id(ra, dec) or spec_id,
        ra=ra,
        dec=dec,
        z=_num(scalar("z", "redshift")),
        z_err=_num(scalar("z_err")),
        zwarning=int(_num(scalar("zwarning", default=0), 0)),
        spec_class=_text(scalar("class", default="")),
        subclass=_text(scalar("subclass", default="")),
        bpt_class=_text(scalar("bpt_class", default="")),
        sdss_vdisp=_num(scalar("vdisp", default=0.0), 0.0),
    )
    return spec.replace(snr_r=_computed_snr(spec))


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


def _read_parquet(path: str) -> dict[str, np.ndarray]:
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


register_reader("parquet", "file", lambda head: head.startswith(PARQUET_MAGIC))(_table_reader(_read_parquet))
register_reader("csv", "file", _looks_like_csv)(_table_reader(_read_csv))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def _head(path: str, n: int = 2880) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(n)
    if head.startswith(GZIP_MAGIC):
        with gzip.open(path, "rb") as fh:
            head = fh.read(n)
    return head


def read_spectrum(path: str | os.PathLike, bad_bits=DEFAULT_BAD_BITS) -> Spectrum:
    """Read one spectrum file of any registered format, detected from its content.

    Raises
    ------
    SpectrumError
        With a reason code and a message that names the problem (the caller adds the file).
    """
    path = str(path)
    try:
        head = _head(path)
    except FileNotFoundError:
        raise SpectrumError("not_found", "file not found") from None
    except OSError as exc:
        raise SpectrumError("unreadable", f"cannot read file: {exc}") from None
    if not head:
        raise SpectrumError("empty_file", "file is empty")
    if head.startswith(FITS_MAGIC):
        return _read_fits(path, bad_bits)
    for reader in READERS.values():
        if reader.kind == "file" and reader.sniff(head):
            return reader.read(path, bad_bits)
    raise SpectrumError("unknown_format", "not a FITS, Parquet or CSV file")


FITS_BLOCK = 2880


def _read_fits(path: str, bad_bits) -> Spectrum:
    size = os.path.getsize(path)
    if not path.endswith(".gz") and size % FITS_BLOCK:
        # A FITS file is whole 2880-byte blocks; a cut-off download almost never is. Cheaper
        # than walking every HDU of a full spec file (which costs a third of the read time).
        raise SpectrumError("truncated", f"size {size} bytes is not a whole number of 2880-byte FITS blocks: truncated")
    try:
        with warnings.catch_warnings():
            # astropy warns and carries on past damaged headers and data (non-ASCII bytes,
            # truncation); for a spectrum that is a corrupt file.
            warnings.simplefilter("error", AstropyUserWarning)
            with fits.open(path, memmap=False) as hdul:
                for reader in READERS.values():
                    if reader.kind == "fits" and reader.sniff(hdul):
                        return reader.read(hdul, path, bad_bits)
    except SpectrumError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError, fits.verify.VerifyError, Warning) as exc:
        reason = "truncated" if "truncated" in str(exc) else "corrupt_fits"
        raise SpectrumError(reason, f"corrupt or truncated FITS: {exc}") from None
    raise SpectrumError(
        "missing_hdu", "FITS file has no COADD table, spSpec image or table with wavelength and flux columns"
    )


def bundled_spectra() -> list[str]:
    """The real SDSS spectra that ship inside the installed ppxf package (DR8+ format)."""
    import ppxf

    return sorted(glob.glob(os.path.join(os.path.dirname(ppxf.__file__), "spectra", "*SDSS_DR*.fits")))


# --------------------------------------------------------------------------------------------
# Inputs: files, directories, globs, list files (@file), catalogues of plate/mjd/fiber
# --------------------------------------------------------------------------------------------
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
        cols = _read_parquet(catalogue)
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


# --------------------------------------------------------------------------------------------
# The instrument as real SDSS files record it (for the simulator)
# --------------------------------------------------------------------------------------------
SDSS_LOGLAM0 = 3.5800  # log10(Angstrom) of the first pixel of SDSS's coadd grid
SDSS_DLOGLAM = 1e-4
SDSS_NPIX = 3841  # 3801.9-9203.9 A


def sdss_loglam() -> np.ndarray:
    """SDSS's native coadd grid: log10(lambda / A) = 3.5800 + 1e-4 i (vacuum)."""
    return SDSS_LOGLAM0 + SDSS_DLOGLAM * np.arange(SDSS_NPIX)


def instrument_from_files(paths: Sequence[str] | None = None) -> tuple[np.ndarray, ...]:
    """Sky, line-spread width and relative throughput of real SDSS spec files, on SDSS's grid.

    The throughput follows from the noise: counts are flux times throughput T, so the
    variance is (flux + sky) / T up to a constant, and T ~ (flux + sky) * ivar. Its median
    over files, smoothed over 51 pixels and normalised to 1 in the r band, carries the blue
    fall-off and the dichroic step near 5900 A.

    Returns
    -------
    loglam : ndarray, shape (3841,)
    sky : ndarray, shape (3841,), 1e-17 erg/s/cm^2/A (the pipeline's sky model per fibre)
    wdisp : ndarray, shape (3841,), instrumental dispersion in units of pixels (sigma)
    throughput : ndarray, shape (3841,), relative (median 1 over 5600-6800 A)
    """
    paths = list(paths) if paths else bundled_spectra()
    grid = sdss_loglam()
    skies, wdisps, thrus = [], [], []
    for path in paths:
        with fits.open(path, memmap=False) as hdul:
            cols = table_columns(hdul, 1, str(path))
        _need(cols, ("loglam", "sky", "wdisp"), "COADD")
        good = (cols["wdisp"] > 0) & (cols["ivar"] > 0)
        loglam = cols["loglam"].astype(float)[good]
        skies.append(np.interp(grid, loglam, cols["sky"][good]))
        wdisps.append(np.interp(grid, loglam, cols["wdisp"][good]))
        counts = (cols["flux"] + cols["sky"])[good] * cols["ivar"][good]
        thru = np.interp(grid, loglam, counts)
        thru = np.convolve(thru, np.ones(51) / 51, mode="same")
        wave = 10.0**grid
        thrus.append(thru / np.median(thru[(wave > 5600) & (wave < 6800)]))
    thru = np.median(thrus, axis=0)
    thru[:25], thru[-25:] = thru[25], thru[-26]  # the running mean's edges
    return grid, np.median(skies, axis=0), np.median(wdisps, axis=0), np.clip(thru, 0.05, None)


def write_spec_lite(path: str | os.PathLike, spec: Spectrum, and_mask: np.ndarray, sky: np.ndarray,
                    wdisp: np.ndarray, model: np.ndarray) -> None:
    """Write a spectrum on SDSS's grid as an SDSS spec-lite file (COADD, SPECOBJ), readable
    by :func:`read_spectrum` like a real one (used for simulated spectra)."""
    coadd = fits.BinTableHDU.from_columns(
        [
            fits.Column("flux", "E", array=spec.flux.astype(np.float32)),
            fits.Column("loglam", "E", array=np.log10(spec.wave).astype(np.float32)),
            fits.Column("ivar", "E", array=spec.ivar.astype(np.float32)),
            fits.Column("and_mask", "J", array=and_mask.astype(np.int32)),
            fits.Column("or_mask", "J", array=and_mask.astype(np.int32)),
            fits.Column("wdisp", "E", array=wdisp.astype(np.float32)),
            fits.Column("sky", "E", array=sky.astype(np.float32)),
            fits.Column("model", "E", array=model.astype(np.float32)),
        ],
        name="COADD",
    )
    sn = np.full(5, np.nan, np.float32)  # u g r i z: only r is known for a mock
    sn[2] = spec.snr_r
    specobj = fits.BinTableHDU.from_columns(
        [
            fits.Column("PLATE", "J", array=[spec.plate]),
            fits.Column("MJD", "J", array=[spec.mjd]),
            fits.Column("FIBERID", "J", array=[spec.fiber]),
            fits.Column("PLUG_RA", "D", array=[spec.ra]),
            fits.Column("PLUG_DEC", "D", array=[spec.dec]),
            fits.Column("CLASS", "6A", array=[spec.spec_class]),
            fits.Column("SUBCLASS", "21A", array=[spec.subclass]),
            fits.Column("Z", "E", array=[spec.z]),
            fits.Column("Z_ERR", "E", array=[spec.z_err]),
            fits.Column("ZWARNING", "J", array=[spec.zwarning]),
            fits.Column("VDISP", "E", array=[spec.sdss_vdisp]),
            fits.Column("VDISP_ERR", "E", array=[spec.sdss_vdisp_err]),
            fits.Column("SN_MEDIAN", "5E", array=[sn]),
        ],
        name="SPECOBJ",
    )
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "SDSS 2.5-M"
    primary.header["COMMENT"] = "simulated by stellarpop"
    fits.HDUList([primary, coadd, specobj]).writeto(path, overwrite=True)
