"""Resampling, normalisation, validation and selection (pure numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stellarpop.components import readers
from stellarpop.components.spectra import (
    Spectrum,
    SpectrumError,
    failed_cuts,
    normalisation,
    pixel_edges,
    to_model_grid,
    validate,
)
from stellarpop.schema import features as F
from stellarpop.schema.preparation import Selection

# An SDSS coadd grid: log10(lambda) = 3.5790 + 1e-4 i (3793-9300 A), like NGC3073 DR18.
SDSS_WAVE = 10.0 ** (3.5790 + 1e-4 * np.arange(3900))


def _spectrum(wave, flux, ivar=None, bad=None, **meta) -> Spectrum:
    ivar = np.ones_like(flux) if ivar is None else ivar
    bad = np.zeros(len(flux), bool) if bad is None else bad
    return Spectrum(wave=wave, flux=flux, ivar=ivar, bad=bad, spec_id="t", **meta)


def _smooth(wave, amps, phases, slope):
    x = (wave - 6000.0) / 3000.0
    out = 10 + slope * x
    for k, (a, p) in enumerate(zip(amps, phases), start=1):
        out = out + a * np.sin(k * 3.0 * x + p)
    return out


def _integral(amps, phases, slope, lo, hi, n=200_001):
    w = np.linspace(lo, hi, n)
    return np.trapz(_smooth(w, amps, phases, slope), w)


@settings(max_examples=40, deadline=None)
@given(
    amps=st.lists(st.floats(0, 3), min_size=1, max_size=4),
    phases=st.lists(st.floats(0, 2 * math.pi), min_size=4, max_size=4),
    slope=st.floats(-4, 4),
)
def test_resampling_conserves_integrated_flux(amps, phases, slope):
    """Integrated flux over the model grid equals the true integral within 0.5%."""
    flux = _smooth(SDSS_WAVE, amps, phases, slope)
    out = to_model_grid(_spectrum(SDSS_WAVE, flux))
    lo, hi = F.GRID_START - 0.5, F.GRID_STOP - 0.5
    assert out.flux.sum() * F.GRID_STEP == pytest.approx(_integral(amps, phases, slope, lo, hi), rel=5e-3)
    assert out.coverage == 1.0 and not out.bad.any()


@settings(max_examples=30, deadline=None)
@given(centre=st.floats(3900, 8800), sigma=st.floats(1.5, 8.0), depth=st.floats(0.1, 0.9))
def test_absorption_line_centroid_kept_within_0p1_angstrom(centre, sigma, depth):
    flux = 1 - depth * np.exp(-0.5 * ((SDSS_WAVE - centre) / sigma) ** 2)
    out = to_model_grid(_spectrum(SDSS_WAVE, flux))
    sel = np.abs(out.wave - centre) < 6 * sigma
    absorbed = 1 - out.flux[sel]
    centroid = np.sum(out.wave[sel] * absorbed) / np.sum(absorbed)
    assert centroid == pytest.approx(centre, abs=0.1)


def test_identity_on_the_model_grid():
    grid = F.model_grid()
    rng = np.random.default_rng(1)
    flux = rng.normal(5, 1, grid.size)
    ivar = rng.uniform(0.5, 2, grid.size)
    out = to_model_grid(_spectrum(grid, flux, ivar))
    np.testing.assert_allclose(out.flux, flux, rtol=1e-6)
    np.testing.assert_allclose(out.ivar, ivar, rtol=1e-5)


def test_ivar_propagation_matches_noise_of_rebinned_realisations():
    """The resampled ivar predicts the scatter of resampled noise realisations."""
    rng = np.random.default_rng(2)
    sigma = 0.5
    ivar = np.full(SDSS_WAVE.size, 1 / sigma**2)
    outs = np.array(
        [to_model_grid(_spectrum(SDSS_WAVE, 10 + rng.normal(0, sigma, SDSS_WAVE.size), ivar)).flux for _ in range(300)]
    )
    predicted = to_model_grid(_spectrum(SDSS_WAVE, np.full(SDSS_WAVE.size, 10.0), ivar)).ivar
    measured = 1 / outs.var(axis=0)
    # 300 realisations: the variance is known to ~8%; compare in the median per 100 pixels.
    ratio = np.median((measured / predicted).reshape(-1, 100), axis=1)
    np.testing.assert_allclose(ratio, 1.0, atol=0.1)


def test_bad_pixels_are_interpolated_and_masked():
    flux = np.full(SDSS_WAVE.size, 10.0)
    bad = np.zeros(SDSS_WAVE.size, bool)
    i = np.searchsorted(SDSS_WAVE, 6000.0)
    flux[i : i + 3] = 1e4  # a cosmic ray flagged by the pipeline
    bad[i : i + 3] = True
    out = to_model_grid(_spectrum(SDSS_WAVE, flux, bad=bad))
    near = np.abs(out.wave - SDSS_WAVE[i + 1]) < 4
    assert out.bad[near].sum() >= 3 and out.bad.sum() <= 8
    assert np.all(out.ivar[out.bad] == 0)
    np.testing.assert_allclose(out.flux, 10.0, rtol=1e-6)  # no trace of the spike


def test_partial_coverage_is_padded_masked_and_flagged(bundled):
    """NGC3522's DR18 spectrum starts at 3826 A: the grid pixels below are padded and masked."""
    spec = readers.read_spectrum(bundled["NGC3522"])
    out = to_model_grid(spec)
    first_edge = pixel_edges(spec.wave)[0]
    uncovered = int(np.sum(F.model_grid() + 0.5 <= first_edge))  # pixels with no data at all
    assert uncovered == 26
    # The uncovered pixels and the partly covered one are masked; the padding repeats the
    # partly covered pixel's value; the pixels after it are data.
    assert out.bad[: uncovered + 1].all() and not out.bad[uncovered + 1 : uncovered + 50].all()
    assert np.all(out.flux[:uncovered] == out.flux[uncovered])
    assert out.coverage == pytest.approx(1 - (uncovered + 1) / F.N_PIXELS)


def test_normalisation_reference():
    grid = F.model_grid()
    flux = np.linspace(1, 2, grid.size)
    mask = np.zeros(grid.size, bool)
    win = (grid >= 4950) & (grid <= 5050)
    assert normalisation(flux, mask, grid) == pytest.approx(np.median(flux[win]))
    mask[win & (grid < 5000)] = True
    assert normalisation(flux, mask, grid) == pytest.approx(np.median(flux[win & ~mask]))
    assert normalisation(flux, mask, grid, centre=5500, half_width=1) == pytest.approx(flux[grid == 5500][0])
    assert np.isnan(normalisation(flux, np.ones(grid.size, bool), grid))
    batch = normalisation(np.stack([flux, 2 * flux]), np.zeros((2, grid.size)), grid)
    np.testing.assert_allclose(batch, [np.median(flux[win]), 2 * np.median(flux[win])])


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda s: s.replace(flux=np.where(np.arange(s.flux.size) == 5, np.inf, s.flux)), "nonfinite_flux"),
        (lambda s: s.replace(ivar=-s.ivar), "bad_ivar"),
        (lambda s: s.replace(ivar=np.zeros_like(s.ivar), bad=np.ones(s.flux.size, bool)), "zero_ivar"),
        (lambda s: s.replace(wave=s.wave / 10), "wavelength_coverage"),  # nm, not Angstrom
        (lambda s: s.replace(wave=s.wave[::-1].copy()), "bad_wavelength"),
        (lambda s: s.replace(bad=np.arange(s.flux.size) % 3 > 0), "too_many_bad_pixels"),
    ],
)
def test_validate_names_the_problem(edit, reason):
    good = _spectrum(SDSS_WAVE, np.ones(SDSS_WAVE.size))
    validate(good)
    with pytest.raises(SpectrumError) as info:
        validate(edit(good))
    assert info.value.reason == reason


def test_selection_cuts_are_named():
    sel = Selection()
    base = dict(z=0.1, snr_r=12.0, zwarning=0, spec_class="GALAXY")
    spec = _spectrum(SDSS_WAVE, np.ones(SDSS_WAVE.size), **base)
    assert failed_cuts(spec, sel) == ()
    assert failed_cuts(spec.replace(z=0.001), sel) == ("z_range",)
    assert failed_cuts(spec.replace(z=0.31, snr_r=4.9), sel) == ("z_range", "snr_r")
    assert failed_cuts(spec.replace(zwarning=4), sel) == ("zwarning",)
    assert failed_cuts(spec.replace(spec_class="STAR"), sel) == ("class",)
    assert failed_cuts(spec.replace(z=math.nan), sel) == ("z_range",)
    assert failed_cuts(spec.replace(spec_class=""), sel) == ()  # unknown class: no class cut
    assert failed_cuts(spec.replace(z=0.3), sel) == () and failed_cuts(spec.replace(z=0.002), sel) == ()
