"""The fast FITS path (components.readers.raw_fits) reads every file exactly as astropy's
path does: the same Spectrum field for field, or the same error; what it does not cover
goes to astropy."""

from __future__ import annotations

import dataclasses
import glob

import numpy as np
import pytest
from make_test_data import REAL_SDSS  # tests/data, on the path (tests/conftest.py)

from stellarpop.components import readers
from stellarpop.components.readers import raw_fits, registry
from stellarpop.components.readers import sdss as sdss_reader
from stellarpop.components.spectra import SpectrumError


def _astropy_only(monkeypatch):
    first = next(k for k, r in registry.READERS.items() if r.kind == "fits")
    monkeypatch.setitem(registry.READERS, first, dataclasses.replace(registry.READERS[first], fast=None))


def _outcome(path) -> tuple:
    try:
        spec = readers.read_spectrum(path)
    except SpectrumError as exc:
        return ("error", exc.reason, str(exc))
    return ("spectrum", spec)


def _same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0], (a, b)
    if a[0] == "error":
        assert a == b
        return
    for field in dataclasses.fields(a[1]):
        x, y = getattr(a[1], field.name), getattr(b[1], field.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), field.name
        else:
            assert x == y or (x != x and y != y), (field.name, x, y)


def _compare(paths, monkeypatch) -> int:
    fast = [_outcome(p) for p in paths]
    with monkeypatch.context() as m:
        _astropy_only(m)
        slow = [_outcome(p) for p in paths]
    for a, b in zip(fast, slow, strict=True):
        _same(a, b)
    return sum(o[0] == "spectrum" for o in fast)


def test_fast_path_equals_astropy_on_bundled_dr7_and_broken_files(bundled, dr7_file, broken, monkeypatch):
    folder, _ = broken
    paths = [*map(str, bundled.values()), str(dr7_file), *sorted(glob.glob(str(folder / "*")))]
    assert _compare(paths, monkeypatch) >= 3


def test_fast_path_takes_sdss_files_and_leaves_the_rest(bundled, dr7_file):
    for path in bundled.values():
        assert sdss_reader.read_plain_sdss_spec(str(path)).spec_id
    with pytest.raises(raw_fits.NotPlain):
        sdss_reader.read_plain_sdss_spec(str(dr7_file))  # DR7: an image, no COADD table


def test_scan_finds_every_hdu_as_astropy_does(bundled):
    from astropy.io import fits

    path = str(next(iter(bundled.values())))
    hdus = raw_fits.scan(path)
    with fits.open(path) as hdul:
        assert [h.name for h in hdus] == [h.name for h in hdul]
        assert [h._data_offset for h in hdus] == [hdul.fileinfo(i)["datLoc"] for i in range(len(hdul))]
        assert hdus[0].header["NAXIS"] == hdul[0].header["NAXIS"]
        assert hdus[1].header["TFIELDS"] == hdul[1].header["TFIELDS"]


@pytest.mark.parametrize(
    "raw, value",
    [(b"'O''Brien '", "O'Brien"), (b"T", True), (b"  42 / a count", 42), (b"1.5D3", 1500.0), (b"-0.25", -0.25)],
)
def test_card_values(raw, value):
    assert raw_fits._value(raw) == value


@pytest.mark.skipif(not REAL_SDSS.is_dir(), reason="shared/real-sdss is not beside the checkout")
def test_fast_path_equals_astropy_on_every_shared_file(monkeypatch):
    paths = sorted(str(p) for p in REAL_SDSS.rglob("*") if p.is_file() and p.suffix.lower() != ".md")
    assert _compare(paths, monkeypatch) >= 25
