"""pPXF with the paper's settings recovers the truth of noiseless mocks made from its own
36 templates, and a fit that cannot be done is a recorded failure."""

from __future__ import annotations

import numpy as np
import pytest

from stellarpop.components import ppxf_fit, sdss_io, simulate, spectra, templates
from stellarpop.transforms import features as F


@pytest.fixture(scope="module")
def setup():
    lib = templates.load_library()
    inst = simulate.Instrument(*sdss_io.instrument_from_files())
    sub = ppxf_fit.select_library(lib, ppxf_fit.PAPER_AGES, ppxf_fit.PAPER_METALS)
    return lib, inst, simulate.prepare(sub, inst)


def _noiseless(setup, z, sigma, ebv, bursts):
    """A model-grid spectrum of bursts on the 36 SSPs: (age Gyr, [M/H], mass) each."""
    _, inst, prep = setup
    comps = tuple(simulate.Component(start=a, tau=0.0, mh=m, mass=w) for a, m, w in bursts)
    params = simulate.Params(z=z, ebv=ebv, sigma=sigma, snr_r=100.0, galaxy_class="passive", components=comps,
                             sky_residual=0.0)
    rest, truth = simulate.rest_model(params, prep)
    _, ivar, _, model, _ = simulate.observe(params, rest, prep, inst, np.random.default_rng(0))
    spec = spectra.Spectrum(wave=10**inst.loglam, flux=model, ivar=ivar, bad=ivar <= 0, spec_id="mock", z=z)
    return spectra.to_model_grid(spec), truth


def test_select_library_takes_the_paper_grid(setup):
    lib, _, prep = setup
    assert prep.ages.size == 9 and prep.metals.size == 4
    np.testing.assert_allclose(prep.ages, [0.0631, 0.1259, 0.2512, 0.5012, 1.0, 1.9953, 3.9811, 7.9433, 15.8489], rtol=1e-3)
    np.testing.assert_allclose(prep.metals, ppxf_fit.PAPER_METALS)
    with pytest.raises(ValueError, match="map twice"):
        ppxf_fit.select_library(lib, (1.0, 1.01), (0.0,))


@pytest.mark.parametrize(
    "z, sigma, ebv, bursts",
    [
        (0.10, 150.0, 0.10, [(7.9433, 0.0, 1.0)]),
        (0.05, 80.0, 0.30, [(1.9953, -0.71, 1.0), (15.8489, 0.22, 2.0)]),
        (0.20, 250.0, 0.05, [(0.1259, -0.71, 0.05), (3.9811, 0.0, 1.0)]),
    ],
)
@pytest.mark.parametrize("gas_components", [0, 1])
def test_recovers_noiseless_truth(setup, z, sigma, ebv, bursts, gas_components):
    lib, inst, _ = setup
    grid, truth = _noiseless(setup, z, sigma, ebv, bursts)
    fitter = ppxf_fit.Fitter(lib, inst, ppxf_fit.FitConfig(gas_components=gas_components))
    r = fitter.fit("mock", grid.flux, grid.ivar, grid.bad, z)
    assert r.ok, r.message
    assert abs(r.log_age - truth["log_age"]) < 0.02
    assert abs(r.mh - truth["mh"]) < 0.02
    assert abs(r.vd - sigma) < 3.0
    assert abs(r.ebv - ebv) < 0.01
    assert 0 < r.vd_err < 5 and 0 < r.ebv_err < 0.01 and 0 < r.log_age_err < 0.05 and 0 < r.mh_err < 0.05
    assert r.n_good > 3000


def test_failures_are_results_with_a_message(setup):
    lib, inst, _ = setup
    fitter = ppxf_fit.Fitter(lib, inst)
    flux = np.ones(F.N_PIXELS)
    ivar = np.ones(F.N_PIXELS)
    mostly_masked = np.ones(F.N_PIXELS, int)
    mostly_masked[:100] = 0
    r = fitter.fit("a", flux, ivar, mostly_masked, 0.1)
    assert r.status == ppxf_fit.FAILED and "pixels usable" in r.message and np.isnan(r.vd)
    r = fitter.fit("b", flux, ivar, np.zeros(F.N_PIXELS), float("nan"))
    assert r.status == ppxf_fit.FAILED and "redshift" in r.message
    r = fitter.fit("c", -flux, ivar, np.zeros(F.N_PIXELS), 0.1)
    assert r.status == ppxf_fit.FAILED and "positive flux" in r.message


def test_result_json_round_trip_is_exact():
    r = ppxf_fit.LabelResult("x", log_age=9.123456789012345, vd=float("nan"), status="ok", n_good=3)
    assert ppxf_fit.LabelResult.from_json(r.to_json()).to_json() == r.to_json()
    assert ppxf_fit.LabelResult.from_json(r.to_json()).log_age == r.log_age
