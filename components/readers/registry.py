"""The reader registry and the one entry point, :func:`read_spectrum`.

Readers are chosen by a file's content, never by its name: FITS files are opened once and
offered to every ``"fits"`` reader's sniffer in registration order; other files are offered
their first bytes. A new format is a new function decorated with :func:`register_reader`
(see :mod:`.sdss` and :mod:`.tables`).
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from stellarpop.components.instrument import DEFAULT_BAD_BITS
from stellarpop.components.spectra import Spectrum, SpectrumError, snr_in_band

FITS_MAGIC = b"SIMPLE  ="
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
FITS_BLOCK = 2880


@dataclass(frozen=True)
class Reader:
    name: str
    kind: str  # "fits": sniff(HDUList), read(HDUList, path); "file": sniff(first bytes), read(path)
    sniff: Callable
    read: Callable
    # "fits" readers: read(path, bad_bits) of the plain files the reader would take, without
    # astropy (raw_fits.NotPlain for any other file: the file is then opened with astropy)
    fast: Callable | None = None


READERS: dict[str, Reader] = {}


def register_reader(name: str, kind: str, sniff: Callable, fast: Callable | None = None):
    """Decorator: add a reader to the registry (tried in registration order)."""

    def wrap(read: Callable) -> Callable:
        READERS[name] = Reader(name, kind, sniff, read, fast)
        return read

    return wrap


def text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip()


def num(value, default=math.nan) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def position_object_id(ra: float, dec: float) -> str:
    """An object key from the sky position (2-arcsec cells) when the file has no object id."""
    if not (math.isfinite(ra) and math.isfinite(dec)):
        return ""
    return f"radec:{round(ra * 1800)}:{round(dec * 1800)}"


def computed_snr(spec: Spectrum) -> float:
    """Median S/N per pixel in the r band, for files that do not record it."""
    with np.errstate(all="ignore"):
        return snr_in_band(spec)


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


def _read_fits(path: str, bad_bits) -> Spectrum:
    size = os.path.getsize(path)
    if not path.endswith(".gz") and size % FITS_BLOCK:
        # A FITS file is whole 2880-byte blocks; a cut-off download almost never is. Cheaper
        # than walking every HDU of a full spec file (which costs a third of the read time).
        raise SpectrumError("truncated", f"size {size} bytes is not a whole number of 2880-byte FITS blocks: truncated")
    first = next(r for r in READERS.values() if r.kind == "fits")
    if first.fast is not None:  # the first reader's own files without astropy's header parser
        try:
            return first.fast(path, bad_bits)
        except Exception:  # noqa: BLE001 - astropy reads it again and names what is wrong
            pass
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
