"""The E-MILES library: built from the ppxf 8.2.6 sdist into the cache, in sps_lib format."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ppxf import sps_util

from stellarpop.components import reference_data, templates


def test_file_names_and_mass_table():
    assert templates.age_metal("Eun1.30Zm0.40T00.0794_iPp0.00_baseFe_linear_FWHM_variable.fits") == (0.0794, -0.40)
    assert templates.age_metal("Eun1.30Zp0.22T17.7828_iPp0.00_baseFe") == (17.7828, 0.22)
    with pytest.raises(templates.TemplateError):
        templates.age_metal("NGC3522_SDSS_DR18.fits")
    [table] = reference_data.ppxf_sdist_members(templates.MASS_TABLE)
    masses = templates.read_mass_table(table)
    assert len(masses) == 50 * 7  # 50 ages x 7 [M/H] for slope 1.30
    assert all(0.5 < m <= 1.0 for m in masses.values())  # stars + remnants per M_sun formed


def test_emiles_library_layout_and_values():
    lib = templates.load_library()
    assert lib.templates.shape == (lib.lam.size, 25, 6)
    np.testing.assert_allclose(lib.metals, [-1.71, -1.31, -0.71, -0.40, 0.00, 0.22])
    assert lib.ages[0] == pytest.approx(0.0631) and lib.ages[-1] == pytest.approx(15.8489)
    assert lib.lam[0] >= templates.DEFAULT_LAM_RANGE[0] and lib.lam[-1] <= templates.DEFAULT_LAM_RANGE[1]
    assert np.allclose(np.diff(lib.lam), 0.9)
    assert lib.fwhm[np.searchsorted(lib.lam, 5000)] == pytest.approx(2.51)
    assert np.all((lib.masses > 0.5) & (lib.masses < 1))
    # E-MILES has no infrared part for the youngest SSPs: zeros only redward of 8950 A, which
    # the model grid (rest < 8899 A for z >= 0) never reaches.
    assert np.all(lib.templates[lib.lam <= 8950] > 0)
    zero = (lib.templates <= 0).any(axis=(1, 2))
    assert zero.any() and lib.lam[zero].min() > 8950
    # Old populations are redder: the 4000 A break grows with age.
    blue, red = (lib.lam > 3850) & (lib.lam < 3950), (lib.lam > 4000) & (lib.lam < 4100)
    d4000 = lib.templates[red].mean(axis=0) / lib.templates[blue].mean(axis=0)
    assert np.all(np.diff(d4000[:, 4]) > -0.02) and d4000[-1, 4] > 1.8


def test_ppxf_reads_the_library():
    sps = sps_util.sps_lib(str(templates.library_path()), 70.0, norm_range=[5070, 5950])
    assert sps.templates.shape[1:] == (25, 6)


def test_user_library_and_checks(tmp_path):
    lib = templates.load_library()
    mine = tmp_path / "mine.npz"
    np.savez(
        mine,
        templates=lib.templates[:, :2, :3],
        lam=lib.lam,
        fwhm=lib.fwhm,
        ages=lib.ages[:2],
        metals=lib.metals[:3],
        masses=lib.masses[:2, :3],
    )
    assert templates.load_library(mine).templates.shape[1:] == (2, 3)
    bad = tmp_path / "bad.npz"
    np.savez(bad, templates=lib.templates[:, :2, :3], lam=lib.lam)
    with pytest.raises(templates.TemplateError, match="not an sps_lib file"):
        templates.load_library(bad)
    with pytest.raises(templates.TemplateError, match="no such template library"):
        templates.load_library(tmp_path / "missing.npz")


def test_clear_error_when_neither_registry_nor_cache_has_it(tmp_path, monkeypatch):
    monkeypatch.setenv("STELLARPOP_CACHE", str(tmp_path))
    monkeypatch.setattr(
        reference_data, "PPXF", dataclasses.replace(reference_data.PPXF, spec="ppxf==0.0.0.dev0")
    )  # no such release
    with pytest.raises(templates.TemplateError, match="cannot obtain ppxf==0.0.0.dev0"):
        templates.library_path()
