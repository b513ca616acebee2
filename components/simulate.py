"""Realistic SDSS-like galaxy spectra with exact truth (pure: arrays in, arrays out, rng passed).

A spectrum is built as SDSS would record it: an SSP mixture from a star-formation history
(each component with its own [M/H], ages limited by the age of the Universe at z), Calzetti
(2000) dust, a Gaussian LOSVD, the line-spread function of SDSS's spectrograph, nebular
emission with BPT-class line ratios tied to the young stars, redshift, SDSS's log-lambda
pixels in vacuum, a smooth flux-calibration error, and noise from object plus sky with
sky-subtraction residuals and masked pixels, scaled to a drawn S/N_r. What real spectra add
beyond that (calibration between plates, LSF and wavelength errors, strong sky residuals,
masked gaps, template mismatch) is in :mod:`~stellarpop.components.nuisances`, applied here
when a spectrum's :class:`~stellarpop.components.nuisances.Draw` is given.

Truth is the light-weighted log age and [M/H] in the rest-frame window that the pPXF
labeller normalises its templates in (``templates.LIGHT_WINDOW``), E(B-V) and sigma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from stellarpop.components import nuisances as N
from stellarpop.components.dust import calzetti_k
from stellarpop.components.instrument import C_KMS, R_BAND, SPPIXMASK, Instrument, bad_pixels
from stellarpop.components.priors import Component, Params
from stellarpop.components.spectra import Spectrum
from stellarpop.components.templates import LIGHT_WINDOW, Prepared

L_HALPHA_PER_SFR = 1.26e41 / 3.828e33  # L_sun per (M_sun/yr), Kennicutt (1998)

# Vacuum rest wavelengths (A) of the nebular lines.
LINES = {
    "Halpha": 6564.61,
    "Hbeta": 4862.68,
    "Hgamma": 4341.68,
    "Hdelta": 4102.89,
    "Hepsilon": 3971.20,
    "OII3726": 3727.09,
    "OII3729": 3729.88,
    "OIII4959": 4960.30,
    "OIII5007": 5008.24,
    "NII6548": 6549.86,
    "NII6583": 6585.27,
    "SII6716": 6718.29,
    "SII6731": 6732.67,
    "OI6300": 6302.05,
    "HeI5876": 5877.25,
}
BALMER_TO_HBETA = {"Halpha": 2.86, "Hbeta": 1.0, "Hgamma": 0.468, "Hdelta": 0.259, "Hepsilon": 0.159}  # case B


# --------------------------------------------------------------------------------------------
# Star-formation histories
# --------------------------------------------------------------------------------------------
def age_bin_edges(ages: np.ndarray) -> np.ndarray:
    """Edges (Gyr) of the age bins that the SSP ages represent (geometric midpoints)."""
    mid = np.sqrt(ages[1:] * ages[:-1])
    return np.concatenate(([0.0], mid, [ages[-1] ** 2 / mid[-1]]))


def mass_weights(components: list[Component], ages: np.ndarray, metals: np.ndarray) -> np.ndarray:
    """Mass formed in each SSP (n_ages, n_metals) for a list of components.

    Each component's mass goes into the age bins by its SFR integrated over the bins, and
    between the two [M/H] grid points that bracket its metallicity (linear in [M/H]).
    """
    edges = age_bin_edges(ages)
    w = np.zeros((ages.size, metals.size))
    for comp in components:
        if comp.tau <= 0:
            per_age = np.zeros(ages.size)
            per_age[np.clip(np.searchsorted(edges, comp.start) - 1, 0, ages.size - 1)] = 1.0
        else:
            t = np.linspace(0.0, comp.start, 400)  # lookback times
            since = comp.start - t  # time since the episode began
            sfr = since * np.exp(-since / comp.tau)
            idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, ages.size - 1)
            per_age = np.bincount(idx, sfr, minlength=ages.size)
            per_age /= per_age.sum()
        mh = float(np.clip(comp.mh, metals[0], metals[-1]))
        j = int(np.clip(np.searchsorted(metals, mh) - 1, 0, metals.size - 2))
        f = (mh - metals[j]) / (metals[j + 1] - metals[j])
        w[:, j] += comp.mass * per_age * (1 - f)
        w[:, j + 1] += comp.mass * per_age * f
    return w


def light_weighted(weights: np.ndarray, prep: Prepared) -> tuple[float, float, np.ndarray]:
    """Light-weighted log10(age/yr) and [M/H] of mass weights, and the light fractions.

    Light is each SSP's mean flux in :data:`LIGHT_WINDOW` times its mass formed, as pPXF's
    weights are with templates normalised in that window.
    """
    light = weights.ravel() * prep.light
    frac = (light / light.sum()).reshape(weights.shape)
    log_age = np.log10(prep.ages * 1e9)
    return float((frac.sum(axis=1) * log_age).sum()), float((frac.sum(axis=0) * prep.metals).sum()), frac


# --------------------------------------------------------------------------------------------
# The spectrum
# --------------------------------------------------------------------------------------------
def gaussian_broaden(flux: np.ndarray, sigma_pix: float) -> np.ndarray:
    """Convolve with a normalised Gaussian of ``sigma_pix`` pixels (constant in velocity on a
    log grid), truncated at 5 sigma."""
    if sigma_pix < 0.1:
        return flux
    return gaussian_filter1d(flux, sigma_pix, mode="nearest", truncate=5.0)


def line_fluxes(
    params: Params, weights: np.ndarray, prep: Prepared, cont_hbeta: float, cont_halpha: float | None = None
) -> dict[str, float]:
    """Intrinsic (unattenuated) line luminosities in L_sun.

    Star formation: L(Halpha) from the SFR averaged over the last 100 Myr (Kennicutt 1998),
    or, where ``params.ew_halpha`` is set, an Halpha of that rest EW against the continuum
    ``cont_halpha`` (a line strength drawn, not implied by the history);
    AGN: an Hbeta of rest EW ``agn_ew_hbeta`` against the continuum ``cont_hbeta``.
    Ratios: case B Balmer lines; [NII]/Halpha and [OIII]/Hbeta from the BPT point; the
    others typical of the class.
    """
    if params.galaxy_class == "passive":
        return {}
    young = weights[prep.ages < 0.1].sum()
    l_hbeta = L_HALPHA_PER_SFR * young / 1e8 / 2.86
    if params.ew_halpha > 0:
        l_hbeta = params.ew_halpha * (cont_hbeta if cont_halpha is None else cont_halpha) / 2.86
    if params.galaxy_class in ("AGN", "composite"):
        l_hbeta += params.agn_ew_hbeta * cont_hbeta
    if params.galaxy_class == "star-forming" and l_hbeta <= 0:
        l_hbeta = 2.0 * cont_hbeta  # a weak line at EW 2 A when no SSP is younger than 100 Myr
    agn_like = params.galaxy_class == "AGN"
    nii = 10**params.log_nii_ha * 2.86
    oiii = 10**params.log_oiii_hb
    out = {name: r * l_hbeta for name, r in BALMER_TO_HBETA.items()}
    out.update(
        OIII5007=oiii * l_hbeta,
        OIII4959=oiii * l_hbeta / 2.98,
        NII6583=nii * l_hbeta,
        NII6548=nii * l_hbeta / 3.05,
        SII6716=(0.6 if agn_like else 0.3) * 2.86 * l_hbeta * 0.55,
        SII6731=(0.6 if agn_like else 0.3) * 2.86 * l_hbeta * 0.45,
        OI6300=(0.15 if agn_like else 0.03) * 2.86 * l_hbeta,
        OII3726=(3.0 if agn_like else 2.0) * l_hbeta * 0.45,
        OII3729=(3.0 if agn_like else 2.0) * l_hbeta * 0.55,
        HeI5876=0.1 * l_hbeta,
    )
    return out


def rest_model(params: Params, prep: Prepared, nuisance: N.Draw | None = None) -> tuple[np.ndarray, dict]:
    """Noise-free rest-frame spectrum (L_sun/A on ``prep.ln_lam``) and its truth.

    A ``nuisance`` draw perturbs the SSPs (truth unchanged, see
    :func:`~stellarpop.components.nuisances.mix_perturbed`) and broadens stars and gas by
    its extra LSF in quadrature.
    """
    weights = mass_weights(list(params.components), prep.ages, prep.metals)
    weights /= weights.sum()
    log_age, mh, frac = light_weighted(weights, prep)
    lam = np.exp(prep.ln_lam)
    if nuisance is not None and nuisance.perturbs_templates:
        in_window = (lam >= LIGHT_WINDOW[0]) & (lam <= LIGHT_WINDOW[1])
        stars = N.mix_perturbed(prep.templates_t, prep.light, in_window, prep.velscale, weights.ravel(), nuisance)
    else:
        stars = (prep.templates @ weights.ravel().astype(np.float32)).astype(np.float64)
    lsf_extra = nuisance.lsf_kms if nuisance is not None else 0.0
    stars = gaussian_broaden(stars, math.hypot(params.sigma, lsf_extra) / prep.velscale)
    near_hb = np.abs(lam - LINES["Hbeta"]) < 50
    near_ha = np.abs(lam - LINES["Halpha"]) < 50
    spec = stars * 10 ** (-0.4 * params.ebv * prep.k_dust)
    fluxes = line_fluxes(params, weights, prep, float(np.median(stars[near_hb])), float(np.median(stars[near_ha])))
    if fluxes:
        ebv_gas = params.ebv / 0.44  # Calzetti (2000): stars see 0.44 of the gas's E(B-V)
        sig_gas = math.hypot(params.sigma_gas, prep.lsf_kms, lsf_extra) / C_KMS  # gas and SDSS's LSF
        dln = prep.ln_lam[1] - prep.ln_lam[0]
        half = int(math.ceil(6 * sig_gas / dln)) + 2
        names = list(fluxes)
        rest_mus = np.array([LINES[n] for n in names])
        att = 10 ** (-0.4 * ebv_gas * calzetti_k(rest_mus))
        mus = rest_mus * (1 + params.v_gas / C_KMS)
        for name, mu, a in zip(names, mus, att):
            i = int(round((math.log(mu) - prep.ln_lam[0]) / dln))
            sl = slice(max(i - half, 0), min(i + half + 1, lam.size))
            s = mu * sig_gas
            spec[sl] += fluxes[name] * a * np.exp(-0.5 * ((lam[sl] - mu) / s) ** 2) / (math.sqrt(2 * math.pi) * s)
    truth = {"log_age": log_age, "mh": mh, "ebv": params.ebv, "vd": params.sigma}
    return spec, {**truth, "light_fractions": frac}


def redshift_to_sdss(
    rest: np.ndarray, z: float, prep: Prepared, instrument: Instrument, out_edges: np.ndarray | None = None
) -> np.ndarray:
    """A rest-frame model (per A) on SDSS's observed pixels, flux conserving (per A).

    ``out_edges``: the pixels' true edges where they differ from the instrument's (a
    wavelength-solution error).
    """
    in_edges = prep.edges * (1 + z)
    out_edges = instrument.edges if out_edges is None else out_edges
    # The cumulative flux of piecewise-constant pixels is piecewise linear: interpolating it
    # at the output edges is the exact overlap integral (and needs no sort).
    cum = np.concatenate(([0.0], np.cumsum(rest / (1 + z) * np.diff(in_edges))))
    return np.diff(np.interp(out_edges, in_edges, cum)) / np.diff(out_edges)


def observe(
    params: Params,
    rest: np.ndarray,
    prep: Prepared,
    instrument: Instrument,
    rng: np.random.Generator,
    nuisance: N.Draw | None = None,
):
    """Redshift onto SDSS's pixels and add SDSS-like calibration error, noise and masks.

    Returns flux, ivar (1e-17 erg/s/cm^2/A units), and_mask, the noise-free model and the
    sky spectrum, on ``instrument.loglam``. A ``nuisance`` draw adds its wavelength error,
    sky residuals, calibration error and gap (its own values: ``rng`` is used as without).
    """
    edges = N.observed_edges(nuisance, instrument.edges, instrument.loglam)
    model = redshift_to_sdss(rest, params.z, prep, instrument, edges)
    wave = 10.0**instrument.loglam
    # Overall flux level, then a smooth flux-calibration distortion of a few per cent.
    r = (wave >= R_BAND[0]) & (wave <= R_BAND[1])
    model *= params.flux_scale / np.median(model[r])
    x = np.linspace(-1, 1, wave.size)
    model *= 1 + np.polynomial.legendre.legval(x, (0.0,) + tuple(params.calib))
    # Noise: variance from object and sky counts (flux times throughput), scaled to the
    # requested median S/N_r.
    sky_scale = params.sky_ratio * np.median(model[r]) / np.median(instrument.sky[r])
    shape = (model + instrument.sky * sky_scale) / instrument.throughput
    scale = np.median(model[r] / np.sqrt(np.clip(shape[r], 1e-30, None))) / params.snr_r
    sigma = scale * np.sqrt(np.clip(shape, 1e-30, None))
    flux = model + sigma * rng.standard_normal(wave.size)
    # Sky-subtraction residuals at the sky lines: a few per cent of the line flux.
    flux += params.sky_residual * sky_scale * instrument.sky_lines * rng.standard_normal()
    mask = np.zeros(wave.size, np.int64)
    mask[instrument.bright_sky] |= 1 << SPPIXMASK["BRIGHTSKY"]
    hits = rng.random(wave.size) < 5e-4  # cosmic rays and bad columns rejected in the coadd
    mask[hits] |= 1 << SPPIXMASK["FULLREJECT"]
    sky = instrument.sky * sky_scale
    if nuisance is not None:
        flux, sigma, mask, model, sky = N.corrupt(
            nuisance, flux, sigma, mask, model, sky, instrument.sky_lines * sky_scale, instrument.loglam
        )
    ivar = 1.0 / sigma**2
    ivar[hits] = 0.0
    return flux, ivar, mask, model, sky


@dataclass(frozen=True)
class Mock:
    """A simulated spectrum (on SDSS's grid, stored as SDSS stores it), its truth, the drawn
    parameters, its pixel mask bits, its noise-free model, its sky and its nuisance draw."""

    spectrum: Spectrum
    truth: dict
    params: Params
    and_mask: np.ndarray
    model: np.ndarray
    sky: np.ndarray
    nuisance: N.Draw | None = None


def simulate(
    params: Params,
    prep: Prepared,
    instrument: Instrument,
    rng: np.random.Generator,
    spec_id: str,
    plate: int = -1,
    mjd: int = -1,
    fiber: int = -1,
    nuisance: N.Draw | None = None,
) -> Mock:
    """One simulated spectrum and its truth, with a spectrum's ``nuisance`` draw if given.

    Flux, ivar and log-lambda are rounded to float32 as in SDSS files, so that a mock written
    to FITS and read back is the same spectrum.
    """
    rest, truth = rest_model(params, prep, nuisance)
    flux, ivar, mask, model, sky = observe(params, rest, prep, instrument, rng, nuisance)
    flux, ivar = flux.astype(np.float32), ivar.astype(np.float32)
    spec = Spectrum(
        wave=10.0 ** instrument.loglam.astype(np.float32).astype(np.float64),
        flux=flux.astype(np.float64),
        ivar=ivar.astype(np.float64),
        bad=bad_pixels(ivar, mask),
        spec_id=spec_id,
        object_id=spec_id,
        plate=plate,
        mjd=mjd,
        fiber=fiber,
        z=params.z,
        z_err=0.0,
        zwarning=0,
        spec_class="GALAXY",
        subclass=params.galaxy_class.upper(),
        bpt_class=params.galaxy_class,
        snr_r=params.snr_r,
    )
    return Mock(spec, truth, params, mask, model, sky, nuisance)
