"""Each physical ingredient of the simulator, checked on its own."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from stellarpop.components import bpt, dust, examples, priors, readers, spectra, templates
from stellarpop.components import nuisances as N
from stellarpop.components import simulate as S
from stellarpop.components.instrument import C_KMS, FWHM_PER_SIGMA, SPPIXMASK, Instrument
from stellarpop.components.templates import LIGHT_WINDOW, Library, load_library


@pytest.fixture(scope="module")
def instrument() -> Instrument:
    return readers.instrument_from_files()


@pytest.fixture(scope="module")
def prep(instrument) -> templates.Prepared:
    return templates.prepare(load_library(), instrument)


def test_calzetti_reference_values():
    k = dust.calzetti_k(np.array([4400.0, 5500.0, 6300.0 - 1e-6, 6300.0, 10000.0]))
    assert k[1] == pytest.approx(4.05, abs=0.01)  # A_V / E(B-V) = R_V
    assert k[0] - k[1] == pytest.approx(1.0, abs=0.02)  # E(B-V) = A_B - A_V
    assert k[2] == pytest.approx(k[3], abs=0.05)  # the two branches meet at 0.63 micron
    assert k[4] == pytest.approx(2.659 * (-1.857 + 1.040) + 4.05)


@pytest.mark.parametrize("centre", [5000.0, 7500.0])
def test_template_lsf_brought_to_sdss_resolution(instrument, centre):
    """A line at the library's resolution comes out with SDSS's sigma at z_ref where SDSS is
    broader (the red), and unchanged where E-MILES is already broader (the blue)."""
    lam = np.arange(4500.0, 8000.0, 0.05)  # covers the light window, as a library must
    sig_tem = 2.51 / FWHM_PER_SIGMA
    line = 1 - 0.5 * np.exp(-0.5 * ((lam - centre) / sig_tem) ** 2)
    lib = Library(
        templates=line[:, None, None],
        lam=lam,
        fwhm=np.full(lam.size, 2.51),
        ages=np.array([10.0]),
        metals=np.array([0.0]),
        masses=np.ones((1, 1)),
    )
    prep = templates.prepare(lib, instrument, oversample=8)
    x = np.exp(prep.ln_lam)
    depth = 1 - prep.templates[:, 0]
    sel = np.abs(x - centre) < 25
    centre_vac = np.sum(depth[sel] * x[sel]) / depth[sel].sum()
    assert centre_vac == pytest.approx(centre * 1.000279, abs=0.05)  # air -> vacuum
    sigma_kms = math.sqrt(np.sum(depth[sel] * (x[sel] - centre_vac) ** 2) / depth[sel].sum()) / centre_vac * C_KMS
    sdss = np.interp(np.log10(centre_vac * 1.1), instrument.loglam, instrument.sigma_kms)
    tem = sig_tem / centre * C_KMS
    assert sigma_kms == pytest.approx(max(sdss, tem), rel=0.03)
    assert (sdss > tem) == (centre == 7500.0)  # the two regimes are both exercised


def test_gaussian_broadening_width():
    delta = np.zeros(201)
    delta[100] = 1
    out = S.gaussian_broaden(delta, 4.0)
    x = np.arange(201) - 100
    assert out.sum() == pytest.approx(1) and math.sqrt(np.sum(out * x**2)) == pytest.approx(4.0, rel=1e-3)


def _lines_only(params, prep, instrument, nuisance=None):
    """Noise-free observed emission lines: the model minus the same galaxy without lines."""
    with_lines = S.redshift_to_sdss(S.rest_model(params, prep, nuisance)[0], params.z, prep, instrument)
    passive = dataclasses.replace(params, galaxy_class="passive")
    without = S.redshift_to_sdss(S.rest_model(passive, prep, nuisance)[0], params.z, prep, instrument)
    return 10.0**instrument.loglam, with_lines - without


@pytest.mark.parametrize("z, sigma_gas", [(0.05, 60.0), (0.2, 150.0)])
def test_emission_line_lands_at_redshifted_wavelength_with_expected_width(prep, instrument, z, sigma_gas):
    rng = np.random.default_rng(3)
    params = dataclasses.replace(
        priors.draw_params(rng),
        galaxy_class="star-forming",
        z=z,
        sigma_gas=sigma_gas,
        log_nii_ha=-0.6,
        log_oiii_hb=0.3,
        ebv=0.0,
        components=(priors.Component(0.08, 0.0, 0.0, 0.05), priors.Component(10.0, 1.0, 0.0, 1.0)),
    )
    wave, lines = _lines_only(params, prep, instrument)
    mu = S.LINES["OIII5007"] * (1 + z)
    sel = np.abs(wave - mu) < 15
    w = lines[sel] * np.gradient(wave[sel])
    centroid = np.sum(w * wave[sel]) / w.sum()
    width = math.sqrt(np.sum(w * (wave[sel] - centroid) ** 2) / w.sum())
    assert centroid == pytest.approx(mu, abs=0.1)
    pixel = mu * math.log(10) * 1e-4  # SDSS pixel width at the line, A
    expect = math.hypot(mu * math.hypot(sigma_gas, prep.lsf_kms) / C_KMS, pixel / math.sqrt(12))
    assert width == pytest.approx(expect, rel=0.05)


def test_stellar_feature_lands_at_redshifted_wavelength(prep, instrument):
    """The Na D / Mg b absorption moves with z: the model at z equals the rest model stretched."""
    rng = np.random.default_rng(4)
    params = dataclasses.replace(priors.draw_params(rng), galaxy_class="passive", z=0.137)
    rest = S.rest_model(params, prep)[0]
    obs = S.redshift_to_sdss(rest, params.z, prep, instrument)
    wave = 10.0**instrument.loglam
    expected = np.interp(wave / (1 + params.z), np.exp(prep.ln_lam), rest) / (1 + params.z)
    inside = (wave > 4000) & (wave < 9000)
    np.testing.assert_allclose(obs[inside], expected[inside], rtol=0.02)


def test_measured_snr_equals_requested(prep, instrument):
    rng = np.random.default_rng(5)
    for snr in (4.0, 10.0, 25.0, 60.0):
        params = dataclasses.replace(priors.draw_params(rng), snr_r=snr)
        spec = S.simulate(params, prep, instrument, rng, "t").spectrum
        assert spectra.snr_in_band(spec) == pytest.approx(snr, rel=0.05)


def test_light_weighted_labels_of_two_bursts_equal_hand_computation(prep):
    ages, metals = prep.ages, prep.metals
    i1, j1, i2, j2 = 3, 1, 20, 4
    comps = [priors.Component(ages[i1], 0.0, metals[j1], 0.2), priors.Component(ages[i2], 0.0, metals[j2], 0.8)]
    w = S.mass_weights(comps, ages, metals)
    assert w[i1, j1] == pytest.approx(0.2) and w[i2, j2] == pytest.approx(0.8) and w.sum() == pytest.approx(1.0)
    light = prep.light.reshape(w.shape)
    l1, l2 = 0.2 * light[i1, j1], 0.8 * light[i2, j2]
    log_age, mh, _ = S.light_weighted(w, prep)
    assert log_age == pytest.approx((l1 * math.log10(ages[i1] * 1e9) + l2 * math.log10(ages[i2] * 1e9)) / (l1 + l2))
    assert mh == pytest.approx((l1 * metals[j1] + l2 * metals[j2]) / (l1 + l2))


def test_metallicity_between_grid_points_is_split_linearly(prep):
    w = S.mass_weights([priors.Component(prep.ages[10], 0.0, -0.55, 1.0)], prep.ages, prep.metals)
    j = np.searchsorted(prep.metals, -0.55) - 1  # between -0.71 and -0.40
    f = (-0.55 - prep.metals[j]) / (prep.metals[j + 1] - prep.metals[j])
    assert w[10, j] == pytest.approx(1 - f) and w[10, j + 1] == pytest.approx(f)
    assert float((w.sum(axis=0) * prep.metals).sum()) == pytest.approx(-0.55)


def test_no_stars_older_than_the_universe(prep):
    rng = np.random.default_rng(6)
    edges = S.age_bin_edges(prep.ages)
    for _ in range(200):
        params = priors.draw_params(rng, priors.Priors(mode="broad", z_range=(0.25, 0.3)))
        w = S.mass_weights(list(params.components), prep.ages, prep.metals).sum(axis=1)
        t_univ = 10.8  # Planck18 age at z = 0.25 is 10.7 Gyr
        assert w[edges[:-1] > t_univ].sum() == 0


@pytest.mark.parametrize("cls", ["star-forming", "composite", "AGN"])
def test_emission_line_ratios_fall_in_their_bpt_region(prep, cls):
    rng = np.random.default_rng(7)
    for _ in range(100):
        params = dataclasses.replace(priors.draw_params(rng), galaxy_class=cls)
        x, y = priors._draw_bpt(rng, cls)
        params = dataclasses.replace(params, log_nii_ha=x, log_oiii_hb=y)
        w = S.mass_weights(list(params.components), prep.ages, prep.metals)
        f = S.line_fluxes(params, w / w.sum(), prep, cont_hbeta=1.0)
        region = bpt.bpt_region(math.log10(f["NII6583"] / f["Halpha"]), math.log10(f["OIII5007"] / f["Hbeta"]))
        assert region == cls


def test_passive_galaxies_have_no_lines(prep, instrument):
    rng = np.random.default_rng(8)
    params = dataclasses.replace(priors.draw_params(rng), galaxy_class="passive")
    assert S.line_fluxes(params, np.ones((prep.ages.size, prep.metals.size)), prep, 1.0) == {}


def test_priors_centre_on_the_papers_sample(prep):
    """Medians of the SDSS-like prior near the paper's label medians (its Fig. 2)."""
    rng = np.random.default_rng(9)
    rows = []
    for _ in range(1500):
        p = priors.draw_params(rng)
        w = S.mass_weights(list(p.components), prep.ages, prep.metals)
        rows.append((*S.light_weighted(w / w.sum(), prep)[:2], p.ebv, p.sigma, p.z))
    med = np.median(np.array(rows), axis=0)
    target, tol = np.array([9.66, -0.22, 0.1, 150.0, 0.1]), np.array([0.1, 0.05, 0.02, 15.0, 0.02])
    assert np.all(np.abs(med - target) <= tol), med


def test_same_seed_gives_identical_bytes(prep, instrument):
    def one(seed):
        rng = np.random.default_rng(seed)
        mock = S.simulate(priors.draw_params(rng), prep, instrument, rng, "sim")
        spec, truth = mock.spectrum, mock.truth
        grid = spectra.to_model_grid(spec)
        return examples.to_example(grid, truth={k: truth[k] for k in ("log_age", "mh", "ebv", "vd")}).SerializeToString(
            deterministic=True
        )

    assert one(11) == one(11)
    assert one(11) != one(12)


# --------------------------------------------------------------------------------------------
# Nuisances (components/nuisances.py): each option recovered from what it does to a mock
# --------------------------------------------------------------------------------------------
# Today's mocks (before nuisances existed), spectrum i of default_rng([3, i]) with each
# prior: flux at pixels 200, 1500, 2500, 3500, the sum of ivar and the masked pixels.
TODAY = {
    ("sdss", 0): ([8.5049953461, 28.7867431641, 35.9374084473, 34.8512191772], 463.7027817098424, 22),
    ("sdss", 1): ([3.7105579376, 6.1811385155, 6.1625671387, 5.5015821457], 34264.163095116615, 22),
    ("broad", 0): ([4.7612042427, 25.3044013977, 42.3066596985, 51.2551383972], 46.884234648838174, 22),
    ("broad", 2): ([2.941685915, 7.0641136169, 6.3578882217, 9.0936441422], 1379.1508358344436, 21),
}


def _pair(prep, instrument, nuisance, seed=21, **changes):
    """The same galaxy and noise without and with a nuisance draw."""
    params = dataclasses.replace(priors.draw_params(np.random.default_rng(seed)), **changes)
    return tuple(
        S.simulate(params, prep, instrument, np.random.default_rng([seed, 1]), "t", nuisance=d)
        for d in (None, nuisance)
    )


def _draws(nuis: N.Nuisances, n: int, wave_range=(3800.0, 9200.0)) -> list[N.Draw]:
    return [N.draw(nuis, np.random.default_rng([1, i]), np.random.default_rng([2, i]), wave_range) for i in range(n)]


def _legendre_residual(y: np.ndarray, order: int) -> float:
    """rms of y about its least-squares Legendre fit of ``order`` (x even over the pixels)."""
    x = np.linspace(-1, 1, y.size)
    return float(np.std(y - np.polynomial.legendre.legval(x, np.polynomial.legendre.legfit(x, y, order))))


def _within(sample: np.ndarray, expected: float, sigmas: float = 4.0) -> bool:
    """The sample's mean is ``expected`` within ``sigmas`` standard errors."""
    return abs(sample.mean() - expected) <= sigmas * sample.std() / math.sqrt(sample.size)


@pytest.mark.parametrize("mode, i", list(TODAY))
def test_nuisances_off_reproduce_todays_mocks(prep, instrument, mode, i):
    """Off (the default) the new code path changes nothing: a zero draw, no draw and the
    mocks recorded before nuisances existed are the same spectrum."""
    assert not N.Nuisances().active and N.Nuisances.realistic().active
    zero = N.draw(N.Nuisances(), np.random.default_rng(1), np.random.default_rng(2), (3800.0, 9200.0))
    mocks = []
    for d in (None, N.Draw(), zero):
        rng = np.random.default_rng([3, i])
        mocks.append(
            S.simulate(priors.draw_params(rng, priors.Priors(mode=mode)), prep, instrument, rng, "x", nuisance=d)
        )
    for m in mocks[1:]:
        np.testing.assert_array_equal(m.spectrum.flux, mocks[0].spectrum.flux)
        np.testing.assert_array_equal(m.spectrum.ivar, mocks[0].spectrum.ivar)
        np.testing.assert_array_equal(m.and_mask, mocks[0].and_mask)
    flux, ivar_sum, n_masked = TODAY[mode, i]
    spec = mocks[0].spectrum
    np.testing.assert_allclose(spec.flux[[200, 1500, 2500, 3500]], flux, rtol=1e-5)  # BLAS rounding differs by CPU
    assert spec.ivar.sum() == pytest.approx(ivar_sum, rel=1e-5) and (mocks[0].and_mask > 0).sum() == n_masked


def test_nuisance_draws_follow_their_configuration(instrument):
    """Each drawn amplitude has the configured rms (4 standard errors), the LSF's extra
    sigma^2 is uniform in [0, X^2], gaps come with the configured probability and length."""
    nuis = N.Nuisances.realistic()
    draws = _draws(nuis, 3000)
    own = [dataclasses.replace(d, calib_plate=()) for d in draws[:500]]
    calib = np.array([np.mean((N.calibration(d, instrument.loglam) - 1) ** 2) for d in own])
    assert _within(calib, nuis.calib_rms**2)
    for values, rms in [
        ([d.shift_kms for d in draws], nuis.wave_shift_kms),
        ([d.stretch_kms for d in draws], nuis.wave_stretch_kms),
        *[
            ([d.sky[k] for d in draws], a)
            for k, a in enumerate((nuis.sky_line_rms, nuis.sky_shift_pix, nuis.sky_cont_rms))
        ],
    ]:
        assert _within(np.square(values), rms**2), (values[:3], rms)
    assert _within(np.array([d.lsf_kms for d in draws]) ** 2, nuis.lsf_extra_kms**2 / 2)
    assert max(d.lsf_kms for d in draws) <= nuis.lsf_extra_kms
    gaps = np.array([d.gap for d in draws if d.gap[1] > 0])
    p = nuis.gap_prob
    assert abs(len(gaps) / len(draws) - p) <= 4 * math.sqrt(p * (1 - p) / len(draws))
    length = gaps[:, 1] - gaps[:, 0]
    assert length.min() >= nuis.gap_range[0] and length.max() <= nuis.gap_range[1]
    assert gaps.min() >= 3800.0 and gaps.max() <= 9200.0
    where = (gaps[:, 0] - 3800.0) / (9200.0 - 3800.0 - length)  # uniform in [0, 1]
    assert abs(where.mean() - 0.5) <= 4 * math.sqrt(1 / 12 / len(where))


def test_nuisance_draws_are_seeded_and_independent_of_each_other():
    """Same generators, same draw; turning one option off leaves the others' values."""
    nuis = N.Nuisances.realistic()
    a, b = _draws(nuis, 2), _draws(nuis, 2)
    assert a == b and a[0] != a[1]
    no_sky = _draws(dataclasses.replace(nuis, sky_line_rms=0.0), 1)[0]
    assert no_sky.sky[0] == 0 and dataclasses.replace(no_sky, sky=a[0].sky) == a[0]


def test_calibration_error_is_smooth_and_scales_flux_noise_and_sky(prep, instrument):
    """Ratio of the mock with and without it: the drawn Legendre series of configured order
    (to float32 rounding), the same for flux, noise and sky; S/N is unchanged."""
    nuis = N.Nuisances(calib_rms=0.04, calib_plate_rms=0.03)
    d = _draws(nuis, 1)[0]
    plain, mock = _pair(prep, instrument, d)
    good = plain.spectrum.ivar > 0
    ratio = mock.spectrum.flux / plain.spectrum.flux
    cal = N.calibration(d, instrument.loglam)
    np.testing.assert_allclose(ratio[good], cal[good], rtol=3e-7 * 4)
    np.testing.assert_allclose(np.sqrt(plain.spectrum.ivar / mock.spectrum.ivar)[good], cal[good], rtol=3e-7 * 4)
    np.testing.assert_allclose(mock.sky / plain.sky, cal, rtol=1e-12)
    assert _legendre_residual(cal, nuis.calib_order) < 1e-12 and _legendre_residual(cal, 2) > 1e-3
    assert spectra.snr_in_band(mock.spectrum) == pytest.approx(spectra.snr_in_band(plain.spectrum), rel=1e-5)


def test_calibration_is_shared_by_a_plate(instrument):
    """Two spectra with the plate's generator share its component; another plate does not."""
    nuis = N.Nuisances(calib_plate_rms=0.03)

    def cal(own, plate):
        d = N.draw(nuis, np.random.default_rng(own), np.random.default_rng(plate), (3800.0, 9200.0))
        return N.calibration(d, instrument.loglam)

    np.testing.assert_array_equal(cal(1, 7), cal(2, 7))
    assert np.std(cal(1, 7) - cal(1, 8)) > 1e-3


def _lines_width(params, prep, instrument, line, nuisance=None):
    wave, lines = _lines_only(params, prep, instrument, nuisance)
    mu = S.LINES[line] * (1 + params.z)
    sel = np.abs(wave - mu) < 20
    w = lines[sel] * np.gradient(wave[sel])
    centroid = np.sum(w * wave[sel]) / w.sum()
    return math.sqrt(np.sum(w * (wave[sel] - centroid) ** 2) / w.sum()), mu


def test_lsf_variation_broadens_in_quadrature(prep, instrument):
    """Emission lines widen by the drawn extra sigma in quadrature; stars are broadened as
    if their dispersion were sigma (+) the extra."""
    rng = np.random.default_rng(3)
    params = dataclasses.replace(
        priors.draw_params(rng),
        galaxy_class="star-forming",
        z=0.08,
        sigma_gas=60.0,
        ebv=0.0,
        log_nii_ha=-0.6,
        log_oiii_hb=0.3,
        components=(priors.Component(0.08, 0.0, 0.0, 0.05), priors.Component(10.0, 1.0, 0.0, 1.0)),
    )
    d = N.Draw(lsf_kms=45.0)
    for line in ("Hbeta", "OIII5007"):  # lines with no neighbour within 20 A
        (w0, mu), (w1, _) = (
            _lines_width(params, prep, instrument, line),
            _lines_width(params, prep, instrument, line, d),
        )
        assert math.sqrt(w1**2 - w0**2) == pytest.approx(mu * 45.0 / C_KMS, rel=0.05)
    passive = dataclasses.replace(params, galaxy_class="passive")
    broadened = dataclasses.replace(passive, sigma=math.hypot(passive.sigma, 45.0))
    np.testing.assert_array_equal(S.rest_model(passive, prep, d)[0], S.rest_model(broadened, prep)[0])


def _velocity_by_chi2(flux, ivar, rest, z, prep, instrument, sel):
    """Velocity (km/s) that best aligns the redshifted ``rest`` with ``flux`` over ``sel``
    (free scale), its error from the chi^2 curvature, and the information-weighted x."""
    trial = np.arange(-80.0, 81.0, 4.0)
    chi2 = []
    for v in trial:
        m = S.redshift_to_sdss(rest, (1 + z) * math.exp(v / C_KMS) - 1, prep, instrument)[sel]
        a = np.sum(ivar[sel] * flux[sel] * m) / np.sum(ivar[sel] * m * m)
        chi2.append(np.sum(ivar[sel] * (flux[sel] - a * m) ** 2))
    k = int(np.clip(np.argmin(chi2), 3, trial.size - 4))
    c2, c1, _ = np.polyfit(trial[k - 3 : k + 4], chi2[k - 3 : k + 4], 2)
    m0, m1 = (S.redshift_to_sdss(rest, (1 + z) * math.exp(v / C_KMS) - 1, prep, instrument) for v in (-2.0, 2.0))
    info = ivar * (m1 - m0) ** 2
    x = np.linspace(-1, 1, flux.size)
    return -c1 / (2 * c2), math.sqrt(2 / (2 * c2)), float(np.sum(info[sel] * x[sel]) / info[sel].sum())


def test_wavelength_shift_and_stretch_recovered_by_cross_correlation(prep, instrument):
    """Chi^2 against the same galaxy redshifted by trial velocities, in four ranges of the
    spectrum, finds shift + stretch * x within 4 errors from the noise."""
    d = N.Draw(shift_kms=25.0, stretch_kms=15.0)
    params = dataclasses.replace(
        priors.draw_params(np.random.default_rng(31)),
        galaxy_class="passive",
        z=0.1,
        snr_r=80.0,
        calib=(0.0, 0.0, 0.0),
        sky_residual=0.0,
    )
    mock = S.simulate(params, prep, instrument, np.random.default_rng(32), "t", nuisance=d)
    rest = S.rest_model(params, prep)[0]
    flux, ivar = mock.spectrum.flux, mock.spectrum.ivar
    fits = [
        _velocity_by_chi2(flux, ivar, rest, params.z, prep, instrument, sel)
        for sel in np.array_split(np.arange(flux.size), 4)
    ]
    v, err, x = map(np.array, zip(*fits))
    assert np.all(np.abs(v - (d.shift_kms + d.stretch_kms * x)) <= 4 * err), (v, err, x)
    design = np.column_stack([np.ones(4), x]) / err[:, None]
    (shift, stretch), *_ = np.linalg.lstsq(design, v / err, rcond=None)
    cov = np.linalg.inv(design.T @ design)
    assert abs(shift - d.shift_kms) <= 4 * math.sqrt(cov[0, 0]) and abs(stretch - d.stretch_kms) <= 4 * math.sqrt(
        cov[1, 1]
    )
    assert math.sqrt(cov[0, 0]) < 3.0  # the test has the power to see the shift


def test_sky_residuals_follow_the_sky_lines(prep, instrument):
    """The difference with and without them is the drawn mix of sky lines, their slope and
    the sky continuum, recovered by least squares to the float32 rounding of the flux."""
    d = N.Draw(sky=(0.3, -0.2, 0.02))
    plain, mock = _pair(prep, instrument, d, snr_r=5.0, sky_ratio=5.0)
    scale = np.median(plain.sky / instrument.sky)
    lines = instrument.sky_lines * scale
    basis = np.column_stack([lines, np.gradient(lines), plain.sky - lines])
    diff = mock.spectrum.flux - plain.spectrum.flux
    coef, *_ = np.linalg.lstsq(basis, diff, rcond=None)
    rounding = 2.0**-24 * np.sqrt(np.mean(mock.spectrum.flux**2 + plain.spectrum.flux**2))
    err = rounding * np.sqrt(np.diag(np.linalg.inv(basis.T @ basis)))
    assert np.all(np.abs(coef - d.sky) <= 5 * err + 1e-9), (coef, err)
    only_lines = _pair(prep, instrument, N.Draw(sky=(-0.3, 0.0, 0.0)), snr_r=5.0, sky_ratio=5.0)
    assert np.corrcoef(only_lines[1].spectrum.flux - only_lines[0].spectrum.flux, lines)[0, 1] < -0.999


def test_masked_gap_is_contiguous_zero_and_flagged(prep, instrument):
    """A gap: a contiguous range of the configured length with ivar 0, flux 0, NODATA set
    and bad; the rest of the spectrum as without it."""
    wave = 10.0**instrument.loglam
    nuis = N.Nuisances(gap_prob=1.0, gap_range=(100.0, 1000.0))
    for d in _draws(nuis, 5, (wave[0], wave[-1])):
        plain, mock = _pair(prep, instrument, d)
        gap = (mock.and_mask & (1 << SPPIXMASK["NODATA"])) > 0
        idx = np.flatnonzero(gap)
        assert idx.size and np.all(np.diff(idx) == 1)
        pixel = wave[idx[-1]] * math.log(10) * 1e-4
        assert 100.0 - 2 * pixel <= wave[idx[-1]] - wave[idx[0]] <= 1000.0
        assert (
            np.all(mock.spectrum.ivar[gap] == 0)
            and np.all(mock.spectrum.flux[gap] == 0)
            and np.all(mock.spectrum.bad[gap])
        )
        np.testing.assert_array_equal(mock.spectrum.flux[~gap], plain.spectrum.flux[~gap])
        np.testing.assert_array_equal(mock.and_mask[~gap], plain.and_mask[~gap])


def _one_ssp(prep, i_age=18, j_met=3, **changes):
    """A passive galaxy made of one SSP, without dust."""
    params = priors.draw_params(np.random.default_rng(41))
    comp = priors.Component(float(prep.ages[i_age]), 0.0, float(prep.metals[j_met]), 1.0)
    return dataclasses.replace(params, galaxy_class="passive", ebv=0.0, components=(comp,), **changes)


def test_template_mismatch_is_the_perturbed_library_with_the_truth_unchanged(prep):
    """The fast mixture equals the mixture of explicitly perturbed SSPs, each scaled back to
    its light in the light window: the light fractions, hence the truth, are unchanged."""
    params = priors.draw_params(np.random.default_rng(42), priors.Priors(mode="broad"))
    params = dataclasses.replace(params, galaxy_class="passive", ebv=0.0)
    d = N.Draw(template_seed=5, template_rms=0.05, line_depth_rms=0.1)
    rest, truth = S.rest_model(params, prep, d)
    _, plain_truth = S.rest_model(params, prep)
    assert truth["log_age"] == plain_truth["log_age"] and truth["mh"] == plain_truth["mh"]
    np.testing.assert_array_equal(truth["light_fractions"], plain_truth["light_fractions"])
    templates = prep.templates.astype(float)
    shape, amp, dep = N.template_coefficients(d, templates.shape[1])
    q = np.polynomial.legendre.legval(np.linspace(-1, 1, templates.shape[0]), (0.0, *shape))
    smooth = uniform_filter1d(templates, N.depth_filter_size(prep.velscale), axis=0)
    perturbed = templates * (1 + q[:, None] * amp) + dep * (templates - smooth)
    lam = np.exp(prep.ln_lam)
    light = perturbed[(lam >= LIGHT_WINDOW[0]) & (lam <= LIGHT_WINDOW[1])].mean(axis=0)
    w = S.mass_weights(list(params.components), prep.ages, prep.metals).ravel()
    w = w / w.sum() * prep.light / light
    np.testing.assert_allclose((w * light) / (w * light).sum(), truth["light_fractions"].ravel(), rtol=1e-5, atol=1e-12)
    expected = S.gaussian_broaden(perturbed @ w, params.sigma / prep.velscale)
    np.testing.assert_allclose(rest, expected, rtol=1e-5)


def test_template_mismatch_smooth_part_has_the_configured_rms(prep):
    """One SSP: the ratio with/without is a smooth (Legendre order 3) function whose rms
    over many draws is the configured one."""
    params = _one_ssp(prep)
    plain = S.rest_model(params, prep)[0]
    rms2 = []
    for d in _draws(N.Nuisances(template_rms=0.03), 300):
        ratio = S.rest_model(params, prep, d)[0] / plain
        ratio /= ratio.mean()
        assert _legendre_residual(ratio, N.TEMPLATE_ORDER) < 1e-4
        rms2.append(np.mean((ratio - 1) ** 2))
    assert _within(np.array(rms2), 0.03**2)


def test_line_depth_change_scales_the_absorption_features(prep):
    """One SSP: the features (the spectrum minus its running mean over DEPTH_WIDTH_KMS) are
    deeper or weaker by the drawn fraction."""
    params = _one_ssp(prep)
    plain = S.rest_model(params, prep)[0]
    size = N.depth_filter_size(prep.velscale)
    inner = slice(2 * size, -2 * size)
    for d in _draws(N.Nuisances(line_depth_rms=0.1), 5):
        k = np.ravel_multi_index((18, 3), (prep.ages.size, prep.metals.size))
        depth = N.template_coefficients(d, prep.ages.size * prep.metals.size)[2][k]
        rest = S.rest_model(params, prep, d)[0]
        rest *= np.median(plain / rest)  # the scaling back to the SSP's light
        hp0, hp1 = (y - uniform_filter1d(y, size) for y in (plain, rest))
        fit = np.sum(hp1[inner] * hp0[inner]) / np.sum(hp0[inner] ** 2) - 1
        assert fit == pytest.approx(depth, abs=0.01 * abs(depth) + 5e-4)


def test_wide_priors_cover_the_real_sample():
    """wide: z 0.002-0.3 with 30% log-uniform over 0.002-0.05, sigma 50-500 km/s and S/N_r
    3-100 log-uniform, E(B-V) as broad; fractions within 4 binomial errors."""
    wide = priors.Priors(mode="wide")
    assert wide.sigma_range == (50.0, 500.0) and wide.snr_range == (3.0, 100.0)
    assert priors.Priors(mode="wide", sigma_range=(60.0, 400.0)).sigma_range == (60.0, 400.0)
    with pytest.raises(ValueError):
        priors.Priors(mode="wid")
    rng = np.random.default_rng(51)
    draws = [priors.draw_params(rng, wide) for _ in range(4000)]
    z, sigma, snr, ebv = (np.array([getattr(p, k) for p in draws]) for k in ("z", "sigma", "snr_r", "ebv"))
    assert (
        z.min() >= 0.002
        and z.max() <= 0.3
        and sigma.min() >= 50
        and sigma.max() <= 500
        and snr.min() >= 3
        and snr.max() <= 100
    )
    f = priors.WIDE_LOW_Z_FRACTION
    expected = {
        "z < 0.05": (np.mean(z < 0.05), f + (1 - f) * 0.048 / 0.298),
        "z < 0.01": (np.mean(z < 0.01), f * math.log(5) / math.log(25) + (1 - f) * 0.008 / 0.298),
        "sigma < 158": (np.mean(sigma < math.sqrt(50 * 500)), 0.5),
        "snr < 17.3": (np.mean(snr < math.sqrt(300)), 0.5),
        "ebv < 0.4": (np.mean(ebv < 0.4), 0.5),
    }
    for name, (got, p) in expected.items():
        assert abs(got - p) <= 4 * math.sqrt(p * (1 - p) / len(draws)), (name, got, p)


def test_sdss_fraction_mixes_the_sdss_priors_into_wide():
    """sdss_fraction 0.4: 40% of the galaxies from the sdss priors (old, metal-rich passive
    ones, sigma down to 30 km/s), within 4 binomial errors; 0 draws what wide drew before;
    refused out of [0, 1] and with sdss priors."""

    def draws(fraction, n=3000):
        return [
            priors.draw_params(np.random.default_rng([7, i]), priors.Priors(mode="wide", sdss_fraction=fraction))
            for i in range(n)
        ]

    # Drawn by the code before sdss_fraction existed (commit 8402ea0): 0 draws the same numbers.
    before = [
        (0.23315433569306765, 99.80132087837954, 0.1801657519924735),
        (0.0036760150654331484, 135.18821270679504, 0.12796420924724014),
        (0.2802540448936112, 88.86846270632675, 0.5462729265060453),
    ]
    np.testing.assert_allclose([(p.z, p.sigma, p.ebv) for p in draws(0.0, 3)], before, rtol=1e-12)
    wide, mixed = draws(0.0), draws(0.4)
    # Passive sdss galaxies (45%) all began more than 9 Gyr ago (z < 0.3); wide's at any time.
    old = [np.mean([p.galaxy_class == "passive" and p.components[0].start > 9.0 for p in d]) for d in (wide, mixed)]
    expected = 0.6 * old[0] + 0.4 * 0.45
    assert abs(old[1] - expected) <= 4 * math.sqrt(expected * (1 - expected) / len(mixed)), (old, expected)
    assert min(p.sigma for p in mixed) < 50 <= min(p.sigma for p in wide)
    for bad in ({"mode": "wide", "sdss_fraction": 1.5}, {"mode": "sdss", "sdss_fraction": 0.2}):
        with pytest.raises(ValueError, match="sdss_fraction"):
            priors.Priors(**bad)


def test_same_seed_gives_identical_bytes_with_nuisances(prep, instrument):
    def one(seed):
        d = _draws(N.Nuisances.realistic(), seed + 1)[seed]
        rng = np.random.default_rng(seed)
        spec = S.simulate(
            priors.draw_params(rng, priors.Priors(mode="wide")), prep, instrument, rng, "sim", nuisance=d
        ).spectrum
        return spec.flux.tobytes() + spec.ivar.tobytes()

    assert one(3) == one(3)
    assert one(3) != one(4)


def test_sky_priors_cover_every_kind_of_galaxy():
    """sky: sigma 10-500 km/s (below SDSS's resolution) and S/N_r 4-100 log-uniform, the
    sky's class mix, Halpha EW log-uniform 3-500 A for star-forming and composite galaxies,
    gas dispersion and velocity drawn apart from the stars'; wide's draws unchanged."""
    sky = priors.Priors(mode="sky")
    assert sky.sigma_range == priors.SKY_RANGES["sigma_range"] and sky.snr_range == priors.SKY_RANGES["snr_range"]
    assert sky.class_fractions == priors.SKY_CLASS_FRACTIONS
    draws = [priors.draw_params(np.random.default_rng([5, i]), sky) for i in range(3000)]
    sigma = np.array([p.sigma for p in draws])
    assert sigma.min() >= 10 and sigma.max() <= 500 and abs(np.mean(sigma < 50) - math.log(5) / math.log(50)) < 0.04
    sf = [p for p in draws if p.galaxy_class in ("star-forming", "composite")]
    ew = np.array([p.ew_halpha for p in sf])
    assert ew.min() >= 3 and ew.max() <= 500 and np.mean(ew > 100) > 0.2
    assert all(p.ew_halpha == 0 for p in draws if p.galaxy_class in ("passive", "AGN"))
    assert np.std([p.v_gas for p in draws]) == pytest.approx(priors.SKY_V_GAS, rel=0.1)
    assert abs(np.corrcoef([p.sigma for p in draws], [p.sigma_gas for p in draws])[0, 1]) < 0.1
    wide = priors.draw_params(np.random.default_rng(3), priors.Priors(mode="wide"))
    assert wide.ew_halpha == 0 and wide.v_gas == 0  # the fields' defaults: wide draws as before


def test_a_drawn_halpha_ew_is_the_spectrums(prep):
    """A star-forming galaxy drawn at Halpha EW 300 A shows a line of about that EW in its
    noise-free rest-frame model (no dust on the gas; the gas moved by v_gas)."""
    base = priors.draw_params(np.random.default_rng(11), priors.Priors(mode="sky"))
    params = dataclasses.replace(
        base, galaxy_class="star-forming", ew_halpha=300.0, ebv=0.0, sigma=50.0, sigma_gas=60.0, v_gas=100.0
    )
    spec, _ = S.rest_model(params, prep)
    lam = np.exp(prep.ln_lam)
    line = np.abs(lam - S.LINES["Halpha"] * (1 + 100.0 / 299792.458)) < 15
    side = (np.abs(lam - 6564.6) > 40) & (np.abs(lam - 6564.6) < 80)
    cont = np.median(spec[side])
    ew = np.sum((spec[line] - cont) / cont * np.gradient(lam)[line])
    nii = 10**params.log_nii_ha * 2.86 * 300 / 2.86 * (1 + 1 / 3.05)  # [NII] is outside the window
    assert ew == pytest.approx(300.0, rel=0.15), (ew, nii)
    peak = lam[line][np.argmax(spec[line])]
    assert peak > S.LINES["Halpha"]  # redshifted by the gas's own velocity
