"""Each physical ingredient of the simulator, checked on its own."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from stellarpop.components import examples, sdss_io, simulate as S, spectra
from stellarpop.components.templates import Library, load_library


@pytest.fixture(scope="module")
def instrument() -> S.Instrument:
    return S.Instrument(*sdss_io.instrument_from_files())


@pytest.fixture(scope="module")
def prep(instrument) -> S.Prepared:
    return S.prepare(load_library(), instrument)


def test_calzetti_reference_values():
    k = S.calzetti_k(np.array([4400.0, 5500.0, 6300.0 - 1e-6, 6300.0, 10000.0]))
    assert k[1] == pytest.approx(4.05, abs=0.01)  # A_V / E(B-V) = R_V
    assert k[0] - k[1] == pytest.approx(1.0, abs=0.02)  # E(B-V) = A_B - A_V
    assert k[2] == pytest.approx(k[3], abs=0.05)  # the two branches meet at 0.63 micron
    assert k[4] == pytest.approx(2.659 * (-1.857 + 1.040) + 4.05)


@pytest.mark.parametrize("centre", [5000.0, 7500.0])
def test_template_lsf_brought_to_sdss_resolution(instrument, centre):
    """A line at the library's resolution comes out with SDSS's sigma at z_ref where SDSS is
    broader (the red), and unchanged where E-MILES is already broader (the blue)."""
    lam = np.arange(4500.0, 8000.0, 0.05)  # covers the light window, as a library must
    sig_tem = 2.51 / S.FWHM_PER_SIGMA
    line = 1 - 0.5 * np.exp(-0.5 * ((lam - centre) / sig_tem) ** 2)
    lib = Library(templates=line[:, None, None], lam=lam, fwhm=np.full(lam.size, 2.51), ages=np.array([10.0]),
                  metals=np.array([0.0]), masses=np.ones((1, 1)))
    prep = S.prepare(lib, instrument, oversample=8)
    x = np.exp(prep.ln_lam)
    depth = 1 - prep.templates[:, 0]
    sel = np.abs(x - centre) < 25
    centre_vac = np.sum(depth[sel] * x[sel]) / depth[sel].sum()
    assert centre_vac == pytest.approx(centre * 1.000279, abs=0.05)  # air -> vacuum
    sigma_kms = math.sqrt(np.sum(depth[sel] * (x[sel] - centre_vac) ** 2) / depth[sel].sum()) / centre_vac * S.C_KMS
    sdss = np.interp(np.log10(centre_vac * 1.1), instrument.loglam, instrument.sigma_kms)
    tem = sig_tem / centre * S.C_KMS
    assert sigma_kms == pytest.approx(max(sdss, tem), rel=0.03)
    assert (sdss > tem) == (centre == 7500.0)  # the two regimes are both exercised


def test_gaussian_broadening_width():
    delta = np.zeros(201)
    delta[100] = 1
    out = S.gaussian_broaden(delta, 4.0)
    x = np.arange(201) - 100
    assert out.sum() == pytest.approx(1) and math.sqrt(np.sum(out * x**2)) == pytest.approx(4.0, rel=1e-3)


def _lines_only(params, prep, instrument):
    """Noise-free observed emission lines: the model minus the same galaxy without lines."""
    with_lines = S.redshift_to_sdss(S.rest_model(params, prep)[0], params.z, prep, instrument)
    passive = dataclasses.replace(params, galaxy_class="passive")
    without = S.redshift_to_sdss(S.rest_model(passive, prep)[0], params.z, prep, instrument)
    return 10.0**instrument.loglam, with_lines - without


@pytest.mark.parametrize("z, sigma_gas", [(0.05, 60.0), (0.2, 150.0)])
def test_emission_line_lands_at_redshifted_wavelength_with_expected_width(prep, instrument, z, sigma_gas):
    rng = np.random.default_rng(3)
    params = dataclasses.replace(S.draw_params(rng), galaxy_class="star-forming", z=z, sigma_gas=sigma_gas,
                                 log_nii_ha=-0.6, log_oiii_hb=0.3, ebv=0.0,
                                 components=(S.Component(0.08, 0.0, 0.0, 0.05), S.Component(10.0, 1.0, 0.0, 1.0)))
    wave, lines = _lines_only(params, prep, instrument)
    mu = S.LINES["OIII5007"] * (1 + z)
    sel = np.abs(wave - mu) < 15
    w = lines[sel] * np.gradient(wave[sel])
    centroid = np.sum(w * wave[sel]) / w.sum()
    width = math.sqrt(np.sum(w * (wave[sel] - centroid) ** 2) / w.sum())
    assert centroid == pytest.approx(mu, abs=0.1)
    pixel = mu * math.log(10) * 1e-4  # SDSS pixel width at the line, A
    expect = math.hypot(mu * math.hypot(sigma_gas, prep.lsf_kms) / S.C_KMS, pixel / math.sqrt(12))
    assert width == pytest.approx(expect, rel=0.05)


def test_stellar_feature_lands_at_redshifted_wavelength(prep, instrument):
    """The Na D / Mg b absorption moves with z: the model at z equals the rest model stretched."""
    rng = np.random.default_rng(4)
    params = dataclasses.replace(S.draw_params(rng), galaxy_class="passive", z=0.137)
    rest = S.rest_model(params, prep)[0]
    obs = S.redshift_to_sdss(rest, params.z, prep, instrument)
    wave = 10.0**instrument.loglam
    expected = np.interp(wave / (1 + params.z), np.exp(prep.ln_lam), rest) / (1 + params.z)
    inside = (wave > 4000) & (wave < 9000)
    np.testing.assert_allclose(obs[inside], expected[inside], rtol=0.02)


def test_measured_snr_equals_requested(prep, instrument):
    rng = np.random.default_rng(5)
    for snr in (4.0, 10.0, 25.0, 60.0):
        params = dataclasses.replace(S.draw_params(rng), snr_r=snr)
        spec = S.simulate(params, prep, instrument, rng, "t").spectrum
        assert spectra.snr_in_band(spec) == pytest.approx(snr, rel=0.05)


def test_light_weighted_labels_of_two_bursts_equal_hand_computation(prep):
    ages, metals = prep.ages, prep.metals
    i1, j1, i2, j2 = 3, 1, 20, 4
    comps = [S.Component(ages[i1], 0.0, metals[j1], 0.2), S.Component(ages[i2], 0.0, metals[j2], 0.8)]
    w = S.mass_weights(comps, ages, metals)
    assert w[i1, j1] == pytest.approx(0.2) and w[i2, j2] == pytest.approx(0.8) and w.sum() == pytest.approx(1.0)
    light = prep.light.reshape(w.shape)
    l1, l2 = 0.2 * light[i1, j1], 0.8 * light[i2, j2]
    log_age, mh, _ = S.light_weighted(w, prep)
    assert log_age == pytest.approx((l1 * math.log10(ages[i1] * 1e9) + l2 * math.log10(ages[i2] * 1e9)) / (l1 + l2))
    assert mh == pytest.approx((l1 * metals[j1] + l2 * metals[j2]) / (l1 + l2))


def test_metallicity_between_grid_points_is_split_linearly(prep):
    w = S.mass_weights([S.Component(prep.ages[10], 0.0, -0.55, 1.0)], prep.ages, prep.metals)
    j = np.searchsorted(prep.metals, -0.55) - 1  # between -0.71 and -0.40
    f = (-0.55 - prep.metals[j]) / (prep.metals[j + 1] - prep.metals[j])
    assert w[10, j] == pytest.approx(1 - f) and w[10, j + 1] == pytest.approx(f)
    assert float((w.sum(axis=0) * prep.metals).sum()) == pytest.approx(-0.55)


def test_no_stars_older_than_the_universe(prep):
    rng = np.random.default_rng(6)
    edges = S.age_bin_edges(prep.ages)
    for _ in range(200):
        params = S.draw_params(rng, S.Priors(mode="broad", z_range=(0.25, 0.3)))
        w = S.mass_weights(list(params.components), prep.ages, prep.metals).sum(axis=1)
        t_univ = 10.8  # Planck18 age at z = 0.25 is 10.7 Gyr
        assert w[edges[:-1] > t_univ].sum() == 0


@pytest.mark.parametrize("cls", ["star-forming", "composite", "AGN"])
def test_emission_line_ratios_fall_in_their_bpt_region(prep, cls):
    rng = np.random.default_rng(7)
    for _ in range(100):
        params = dataclasses.replace(S.draw_params(rng), galaxy_class=cls)
        x, y = S._draw_bpt(rng, cls)
        params = dataclasses.replace(params, log_nii_ha=x, log_oiii_hb=y)
        w = S.mass_weights(list(params.components), prep.ages, prep.metals)
        f = S.line_fluxes(params, w / w.sum(), prep, cont_hbeta=1.0)
        bpt = S.bpt_region(math.log10(f["NII6583"] / f["Halpha"]), math.log10(f["OIII5007"] / f["Hbeta"]))
        assert bpt == cls


def test_passive_galaxies_have_no_lines(prep, instrument):
    rng = np.random.default_rng(8)
    params = dataclasses.replace(S.draw_params(rng), galaxy_class="passive")
    assert S.line_fluxes(params, np.ones((prep.ages.size, prep.metals.size)), prep, 1.0) == {}


def test_priors_centre_on_the_papers_sample(prep):
    """Medians of the SDSS-like prior near the paper's label medians (its Fig. 2)."""
    rng = np.random.default_rng(9)
    rows = []
    for _ in range(1500):
        p = S.draw_params(rng)
        w = S.mass_weights(list(p.components), prep.ages, prep.metals)
        rows.append((*S.light_weighted(w / w.sum(), prep)[:2], p.ebv, p.sigma, p.z))
    med = np.median(np.array(rows), axis=0)
    target, tol = np.array([9.66, -0.22, 0.1, 150.0, 0.1]), np.array([0.1, 0.05, 0.02, 15.0, 0.02])
    assert np.all(np.abs(med - target) <= tol), med


def test_same_seed_gives_identical_bytes(prep, instrument):
    def one(seed):
        rng = np.random.default_rng(seed)
        mock = S.simulate(S.draw_params(rng), prep, instrument, rng, "sim")
        spec, truth = mock.spectrum, mock.truth
        grid = spectra.to_model_grid(spec)
        return examples.to_example(grid, truth={k: truth[k] for k in ("log_age", "mh", "ebv", "vd")}).SerializeToString(deterministic=True)

    assert one(11) == one(11)
    assert one(11) != one(12)
