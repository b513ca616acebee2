"""SDSS spectrum files: DR8+ ``spec``/``spec-lite`` (and BOSS), DR7 ``spSpec``; the spectra
that ship inside ppxf; a spec-lite writer for simulated spectra.

- ``sdss_spec``: ``spec-PLATE-MJD-FIBER.fits`` (HDU ``COADD`` plus ``SPECOBJ``, or ``SPALL``
  in BOSS files; full files also carry ``SPZLINE``, the emission-line fits, from which the
  BPT class is set);
- ``sdss_spspec``: DR7 ``spSpec-MJD-PLATE-FIBER.fit`` (primary image rows flux,
  continuum-subtracted flux, error, mask; log-lambda from COEFF0/COEFF1).
"""

from __future__ import annotations

import functools
import glob
import math
import os
import re
from collections.abc import Sequence

import numpy as np
from astropy.io import fits

from stellarpop.components import bpt
from stellarpop.components.instrument import DEFAULT_BAD_BITS, R_BAND, Instrument, bad_pixels, sdss_loglam
from stellarpop.components.readers import raw_fits
from stellarpop.components.readers.registry import computed_snr, num, position_object_id, register_reader, text
from stellarpop.components.spectra import Spectrum, SpectrumError

# DR7 SPEC_CLN codes (SDSS-I/II spectro pipeline).
DR7_SPEC_CLN = {0: "UNKNOWN", 1: "STAR", 2: "GALAXY", 3: "QSO", 4: "QSO", 5: "SKY", 6: "STAR", 7: "GALAXY"}
DR7_SUBCLASS = {4: "HIZ_QSO", 6: "STAR_LATE", 7: "GAL_EM"}


def _object_id(value) -> str:
    """SPECOBJ's object id as text: DR12 files hold BESTOBJID as five integers (run, rerun,
    camcol, field, id), written ``run-rerun-camcol-field-id``; later releases one integer."""
    if np.ndim(value) > 0:
        return "-".join(str(int(v)) for v in np.ravel(value))
    return text(value)


def sdss_spec_id(plate: int, mjd: int, fiber: int) -> str:
    return f"{plate:04d}-{mjd:05d}-{fiber:04d}"


def _identity(path: str, plate: int, mjd: int, fiber: int, ra: float, dec: float, objid: str) -> dict:
    """The Spectrum fields that identify an SDSS spectrum and its object."""
    return {
        "spec_id": sdss_spec_id(plate, mjd, fiber),
        "source_file": path,
        "object_id": objid or position_object_id(ra, dec),
        "plate": plate,
        "mjd": mjd,
        "fiber": fiber,
        "ra": ra,
        "dec": dec,
    }


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


def table_columns(hdul: fits.HDUList, key, path: str, only: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The columns of a binary-table HDU (all, or those of ``only``), lower-cased names -> arrays.

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
        return _astropy_columns(hdu, only)
    if isinstance(hdu, raw_fits.RawHDU):  # its header's bytes are at hand
        cards = _header_column_cards(hdu.raw_header)
    else:
        cards = _column_cards(path, start, offset)
    forms = tuple((cards.get(f"TTYPE{i}", f"col{i}").lower(), cards.get(f"TFORM{i}", "")) for i in range(1, ncol + 1))
    dtype = _row_dtype(forms)
    if dtype is None or dtype.itemsize != width:
        return _astropy_columns(hdu, only)
    with open(path, "rb") as fh:
        fh.seek(offset)
        raw = fh.read(width * nrow)
    if len(raw) < width * nrow:
        raise SpectrumError("truncated", f"HDU {hdu.name or key} is truncated ({len(raw)} of {width * nrow} bytes)")
    rows = np.frombuffer(raw, dtype=dtype, count=nrow)
    wanted = None if only is None else {n.lower() for n in only}
    cols = {}
    for i, (name, _) in enumerate(forms, start=1):
        if wanted is not None and name not in wanted:
            continue
        col = rows[name]
        if col.dtype.kind == "S":  # str, as astropy gives (the fallback must not differ)
            col = col.astype(f"U{col.dtype.itemsize}")
        scale, zero = float(cards.get(f"TSCAL{i}", 1)), float(cards.get(f"TZERO{i}", 0))
        cols[name] = col * scale + zero if (scale != 1 or zero != 0) else col
    return cols


@functools.lru_cache(maxsize=64)
def _row_dtype(forms: tuple[tuple[str, str], ...]) -> np.dtype | None:
    """The numpy row type of (name, TFORM) columns; None for a TFORM it does not cover. The
    files of one data release share their table layouts: built once per layout."""
    fields = []
    for name, form in forms:
        m = _TFORM.match(form)
        if m is None:
            return None
        repeat = int(m.group(1) or 1)
        code = m.group(2)
        dt = np.dtype(f"S{repeat}") if code == "A" else np.dtype((_NUMPY[code], (repeat,) if repeat > 1 else ()))
        fields.append((name, dt))
    try:
        return np.dtype(fields)
    except ValueError:  # duplicate column names
        return None


def _column_cards(path: str, start: int, offset: int) -> dict[str, str]:
    """The column keywords of the header at ``start`` (data at ``offset``), from its raw cards."""
    with open(path, "rb") as fh:
        fh.seek(start)
        return _header_column_cards(fh.read(offset - start))


@functools.lru_cache(maxsize=64)
def _header_column_cards(raw_header: bytes) -> dict[str, str]:
    """The column keywords of a table header's bytes; a table header holds no more than its
    layout, so the files of one data release share it: parsed once per layout (do not
    modify the dict returned)."""
    cards = {}
    for i in range(0, len(raw_header), 80):
        card = raw_header[i : i + 80]
        if card[:5].decode("ascii", "replace") in _COLUMN_KEYS and card[8:10] == b"= ":
            cards[card[:8].strip().decode()] = _card_text(card[10:])
    return cards


_COLUMN_KEYS = ("TTYPE", "TFORM", "TSCAL", "TZERO")


def _card_text(value: bytes) -> str:
    """A column keyword's value field as text (names, formats and numbers carry no '/')."""
    return value.split(b"/")[0].strip().strip(b"'").strip().decode()


def _astropy_columns(hdu, only: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    if isinstance(hdu, raw_fits.RawHDU):
        raise raw_fits.NotPlain("a table for astropy")
    wanted = None if only is None else {n.lower() for n in only}
    return {c.lower(): np.asarray(hdu.data[c]) for c in hdu.columns.names if wanted is None or c.lower() in wanted}


def _need(cols: dict, names: Sequence[str], hdu_name: str) -> None:
    missing = [n for n in names if n not in cols]
    if missing:
        raise SpectrumError("missing_column", f"HDU {hdu_name} has no column {', '.join(missing)}")


SIMULATED_BPT_KEY = "BPT_CLS"  # a mock's BPT class in its spec-lite primary header (no SPZLINE)


def spzline_bpt_class(hdul: fits.HDUList, path: str) -> str:
    """The BPT class of a DR8+ spec file from its ``SPZLINE`` HDU; "" when it has none.

    SPZLINE (SDSS's spZline emission-line fits, after subtraction of the best stellar
    template) has one row per line: ``LINENAME`` ("H_alpha", "[N_II] 6583", ...),
    ``LINEAREA`` (1e-17 erg/s/cm^2) and ``LINEAREA_ERR`` (negative for an invalid fit).
    DR8+ spec-lite files keep SPZLINE (HDU 3) too; a file without it (BOSS files cut down,
    DR7) has an unknown class (""), except a simulated spec-lite file, whose primary header
    records the simulator's class (``BPT_CLS``). A SPZLINE without those columns is
    treated as absent. The class is
    :func:`stellarpop.components.bpt.classify` of the four lines (S/N > 3 in each, else
    "passive"). Read with :func:`table_columns` (29 rows of 100 bytes).
    """
    key = _hdu_named(hdul, ("SPZLINE",), 3)
    if key is None:
        return text(hdul[0].header.get(SIMULATED_BPT_KEY, ""))
    lines = table_columns(hdul, key, path)
    if not {"linename", "linearea", "linearea_err"} <= set(lines):
        return ""
    names = [str(n).strip() for n in lines["linename"]]
    fluxes = {n: float(v) for n, v in zip(names, lines["linearea"]) if n in bpt.BPT_LINES}
    errors = {n: float(v) for n, v in zip(names, lines["linearea_err"]) if n in bpt.BPT_LINES}
    return bpt.classify(fluxes, errors)


def _is_plain_sdss_spec(hdus: list[raw_fits.RawHDU]) -> bool:
    """:func:`_is_sdss_spec` of a scanned file."""
    if len(hdus) < 2 or hdus[1].header.get("XTENSION") != "BINTABLE":
        return False
    h = hdus[1].header
    names = {str(h.get(f"TTYPE{i}", "")).strip().lower() for i in range(1, int(h.get("TFIELDS", 0)) + 1)}
    return hdus[1].name == "COADD" or {"loglam", "flux", "ivar"} <= names


def read_plain_sdss_spec(path: str, bad_bits=DEFAULT_BAD_BITS) -> Spectrum:
    """:func:`read_sdss_spec` of an uncompressed file, its HDUs found by
    :func:`~stellarpop.components.readers.raw_fits.scan` instead of astropy (the same
    Spectrum, several times faster); ``NotPlain`` for a file that is not one."""
    hdus = raw_fits.scan(path)
    if not _is_plain_sdss_spec(hdus):
        raise raw_fits.NotPlain("not an SDSS spec file")
    return read_sdss_spec(hdus, path, bad_bits)


# What read_sdss_spec takes of SPECOBJ's 126 columns (SPALL's 200+)
META_COLUMNS = (
    "plate", "mjd", "fiberid", "plug_ra", "plug_dec", "bestobjid", "objid", "sn_median", "z", "z_err",
    "zwarning", "class", "subclass", "vdisp", "vdisp_err",
)  # fmt: skip


@register_reader("sdss_spec", "fits", _is_sdss_spec, fast=read_plain_sdss_spec)
def read_sdss_spec(hdul: fits.HDUList, path: str, bad_bits=DEFAULT_BAD_BITS) -> Spectrum:
    """A DR8+ ``spec`` or ``spec-lite`` file (or a BOSS one) as a :class:`Spectrum`.

    Flux and ivar from COADD (pixels flagged in ``and_mask`` by ``bad_bits`` are bad),
    identifiers, redshift, class, VDISP and S/N_r from SPECOBJ (SPALL in BOSS files), the
    BPT class from SPZLINE when the file has one (:func:`spzline_bpt_class`, "" otherwise).
    """
    cols = table_columns(hdul, 1, path)
    _need(cols, ("loglam", "flux", "ivar"), "COADD")
    meta_key = _hdu_named(hdul, ("SPECOBJ", "SPALL"), 2)
    if meta_key is None:
        raise SpectrumError("missing_hdu", "no SPECOBJ or SPALL HDU with the redshift and identifiers")
    meta = table_columns(hdul, meta_key, path, only=META_COLUMNS)
    meta_name = hdul[meta_key].name
    if not meta or len(next(iter(meta.values()))) < 1:
        raise SpectrumError("missing_hdu", f"{meta_name} HDU is empty")
    _need(meta, ("plate", "mjd", "fiberid", "z"), meta_name)

    def get(key, default=math.nan):
        key = key.lower()
        return meta[key][0] if key in meta else default

    plate, mjd, fiber = int(get("PLATE")), int(get("MJD")), int(get("FIBERID"))
    ra, dec = num(get("PLUG_RA")), num(get("PLUG_DEC"))
    objid = _object_id(get("BESTOBJID", "")) or _object_id(get("OBJID", ""))
    if objid.strip("0 ") == "" or objid.startswith("-"):
        objid = ""
    sn = get("SN_MEDIAN", None)
    snr_r = num(np.ravel(sn)[2]) if sn is not None and np.size(sn) == 5 else math.nan
    wave = 10.0 ** cols["loglam"].astype(np.float64)
    ivar = cols["ivar"].astype(np.float64)
    spec = Spectrum(
        wave=wave,
        flux=cols["flux"].astype(np.float64),
        ivar=ivar,
        bad=bad_pixels(ivar, cols.get("and_mask"), bad_bits),
        **_identity(path, plate, mjd, fiber, ra, dec, objid),
        z=num(get("Z")),
        z_err=num(get("Z_ERR")),
        zwarning=int(num(get("ZWARNING", 0), 0)),
        spec_class=text(get("CLASS", "")),
        subclass=text(get("SUBCLASS", "")),
        sdss_vdisp=num(get("VDISP", 0.0), 0.0),
        sdss_vdisp_err=num(get("VDISP_ERR", 0.0), 0.0),
        snr_r=snr_r,
        bpt_class=spzline_bpt_class(hdul, path),
    )
    return spec if math.isfinite(snr_r) and snr_r > 0 else spec.replace(snr_r=computed_snr(spec))


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
    ra, dec = num(h.get("RAOBJ")), num(h.get("DECOBJ"))
    cln = int(h.get("SPEC_CLN", 0))
    objid = text(h.get("OBJID", ""))
    snr_r = num(h.get("SN_R"))
    spec = Spectrum(
        wave=wave,
        flux=flux,
        ivar=ivar,
        bad=bad_pixels(np.nan_to_num(ivar), data[3], bad_bits),
        **_identity(path, plate, mjd, fiber, ra, dec, objid),
        z=num(h.get("Z")),
        z_err=num(h.get("Z_ERR")),
        zwarning=int(num(h.get("Z_WARNIN", 0), 0)),
        spec_class=DR7_SPEC_CLN.get(cln, "UNKNOWN"),
        subclass=DR7_SUBCLASS.get(cln, ""),
        sdss_vdisp=num(h.get("VEL_DIS", 0.0), 0.0),
        sdss_vdisp_err=num(h.get("VEL_DISE", 0.0), 0.0),
        snr_r=snr_r,
    )
    return spec if math.isfinite(snr_r) and snr_r > 0 else spec.replace(snr_r=computed_snr(spec))


def bundled_spectra() -> list[str]:
    """The real SDSS spectra that ship inside the installed ppxf package (DR8+ format)."""
    import ppxf

    return sorted(glob.glob(os.path.join(os.path.dirname(ppxf.__file__), "spectra", "*SDSS_DR*.fits")))


# SPECOBJ columns a simulated spec-lite file carries: (name, FITS format, Spectrum attribute).
_SPECOBJ_COLUMNS = (
    ("PLATE", "J", "plate"),
    ("MJD", "J", "mjd"),
    ("FIBERID", "J", "fiber"),
    ("PLUG_RA", "D", "ra"),
    ("PLUG_DEC", "D", "dec"),
    ("CLASS", "6A", "spec_class"),
    ("SUBCLASS", "21A", "subclass"),
    ("Z", "E", "z"),
    ("Z_ERR", "E", "z_err"),
    ("ZWARNING", "J", "zwarning"),
    ("VDISP", "E", "sdss_vdisp"),
    ("VDISP_ERR", "E", "sdss_vdisp_err"),
)


def write_spec_lite(
    path: str | os.PathLike, spec: Spectrum, and_mask: np.ndarray, sky: np.ndarray, wdisp: np.ndarray, model: np.ndarray
) -> None:
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
        [fits.Column(name, fmt, array=[getattr(spec, attr)]) for name, fmt, attr in _SPECOBJ_COLUMNS]
        + [fits.Column("SN_MEDIAN", "5E", array=[sn])],
        name="SPECOBJ",
    )
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "SDSS 2.5-M"
    primary.header["COMMENT"] = "simulated by stellarpop"
    primary.header[SIMULATED_BPT_KEY] = (spec.bpt_class, "BPT class of the simulated emission lines")
    fits.HDUList([primary, coadd, specobj]).writeto(path, overwrite=True)


def coadd_columns(path: str, needed: Sequence[str] = ("loglam", "flux", "ivar")) -> dict[str, np.ndarray]:
    """The COADD table of a DR8+ spec file, lower-cased columns -> arrays (all of ``needed``)."""
    with fits.open(path, memmap=False) as hdul:
        cols = table_columns(hdul, 1, path)
    _need(cols, needed, "COADD")
    return cols


def instrument_from_files(paths: Sequence[str] | None = None) -> Instrument:
    """Sky, line-spread width and relative throughput of real SDSS spec files (default:
    the ones bundled with ppxf), on SDSS's grid.

    The throughput follows from the noise: counts are flux times throughput T, so the
    variance is (flux + sky) / T up to a constant, and T ~ (flux + sky) * ivar. Its median
    over files, smoothed over 51 pixels and normalised to 1 in the r band, carries the
    blue fall-off and the dichroic step near 5900 A. The sky is SDSS's sky model per
    fibre (1e-17 erg/s/cm^2/A), the LSF its WDISP (sigma, pixels).
    """
    grid = sdss_loglam()
    wave = 10.0**grid
    r_band = (wave > R_BAND[0]) & (wave < R_BAND[1])
    skies, wdisps, thrus = [], [], []
    for path in list(paths) if paths else bundled_spectra():
        cols = coadd_columns(str(path), ("loglam", "sky", "wdisp"))
        good = (cols["wdisp"] > 0) & (cols["ivar"] > 0)
        loglam = cols["loglam"].astype(float)[good]
        skies.append(np.interp(grid, loglam, cols["sky"][good]))
        wdisps.append(np.interp(grid, loglam, cols["wdisp"][good]))
        counts = (cols["flux"] + cols["sky"])[good] * cols["ivar"][good]
        thru = np.convolve(np.interp(grid, loglam, counts), np.ones(51) / 51, mode="same")
        thrus.append(thru / np.median(thru[r_band]))
    thru = np.median(thrus, axis=0)
    thru[:25], thru[-25:] = thru[25], thru[-26]  # the running mean's edges
    return Instrument(grid, np.median(skies, axis=0), np.median(wdisps, axis=0), np.clip(thru, 0.05, None))
