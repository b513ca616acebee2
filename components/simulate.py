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
labeller normalises its templates in (:data:`LIGHT_WINDOW`), E(B-V) and sigma.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from astropy.cosmology import Planck18
from scipy.ndimage import gaussian_filter1d
from ppxf import ppxf_util

from stellarpop.components import nuisances as N
from stellarpop.components.sdss_io import bad_pixels
from stellarpop.components.spectra import SPPIXMASK, Spectrum, pixel_edges
from stellarpop.components.templates import Library

C_KMS = 299792.458
SDSS_VELSCALE = C_KMS * math.log(10) * 1e-4  # 69.03 km/s per SDSS pixel
LIGHT_WINDOW = (5070.0, 5950.0)  # rest frame, A: V band, the labeller's norm_range
R_BAND = (5600.0, 6800.0)  # observed, A (as spectra.R_BAND)
FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))
L_HALPHA_PER_SFR = 1.26e41 / 3.828e33  # L_sun per (M_sun/yr), Kennicutt (1998)
CLASSES = ("passive", "star-forming", "composite", "AGN")

# Vacuum rest wavelengths (A) of the nebular lines.
LINES = {
    "Halpha": 6564.61, "Hbeta": 4862.68, "Hgamma": 4341.68, "Hdelta": 4102.89, "Hepsilon": 3971.20,
    "OII3726": 3727.09, "OII3729": 3729.88, "OIII4959": 4960.30, "OIII5007": 5008.24,
    "NII6548": 6549.86, "NII6583": 6585.27, "SII6716": 6718.29, "SII6731": 6732.67,
    "OI6300": 6302.05, "HeI5876": 5877.25,
}
BALMER_TO_HBETA = {"Halpha": 2.86, "Hbeta": 1.0, "Hgamma": 0.468, "Hdelta": 0.259, "Hepsilon": 0.159}  # case B


def calzetti_k(lam: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) attenuation curve k(lambda), R_V = 4.05 (lam in Angstrom).

    A(lambda) = k(lambda) E(B-V); the two branches meet at 6300 A.
    """
    x = 1e4 / np.asarray(lam, float)  # 1/micron
    blue = 2.659 * (-2.156 + 1.509 * x - 0.198 * x**2 + 0.011 * x**3) + 4.05
    red = 2.659 * (-1.857 + 1.040 * x) + 4.05
    return np.where(lam < 6300.0, blue, red)


def kauffmann03(x):
    """The Kauffmann et al. (2003) star-forming upper limit in the [NII] BPT diagram."""
    return 0.61 / (x - 0.05) + 1.30


def kewley01(x):
    """The Kewley et al. (2001) maximum-starburst line."""
    return 0.61 / (x - 0.47) + 1.19


def bpt_region(log_nii_ha: float, log_oiii_hb: float) -> str:
    """star-forming / composite / AGN for a point of the [NII] BPT diagram."""
    x, y = log_nii_ha, log_oiii_hb
    if x < 0.05 and y < kauffmann03(x):
        return "star-forming"
    if x < 0.47 and y < kewley01(x):
        return "composite"
    return "AGN"


# --------------------------------------------------------------------------------------------
# Inputs prepared once per worker
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instrument:
    """SDSS as its files record it: the coadd grid, a sky spectrum, the LSF width and the
    relative throughput (see ``sdss_io.instrument_from_files``)."""

    loglam: np.ndarray  # (P,) log10 vacuum Angstrom
    sky: np.ndarray  # (P,) 1e-17 erg/s/cm^2/A
    wdisp: np.ndarray  # (P,) LSF sigma in pixels
    throughput: np.ndarray  # (P,) relative throughput, 1 in the r band

    @property
    def sigma_kms(self) -> np.ndarray:
        return self.wdisp * SDSS_VELSCALE

    @functools.cached_property
    def edges(self) -> np.ndarray:
        """Pixel edges (Angstrom) of the coadd grid."""
        return pixel_edges(10.0**self.loglam)

    @functools.cached_property
    def sky_lines(self) -> np.ndarray:
        """The sky's emission lines: sky minus its 51-pixel running mean, clipped at 0."""
        return np.clip(self.sky - np.convolve(self.sky, np.ones(51) / 51, mode="same"), 0, None)

    @functools.cached_property
    def bright_sky(self) -> np.ndarray:
        """Pixels on the strongest 0.5% of sky-line flux: flagged BRIGHTSKY, as SDSS does."""
        return self.sky_lines > np.percentile(self.sky_lines, 99.5)


@dataclass(frozen=True)
class Prepared:
    """Templates ready for mixing: vacuum, at SDSS resolution, on a log grid.

    ``templates`` has shape (n_pix, n_ages * n_metals) in L_sun/A per M_sun formed, on
    ``ln_lam`` (natural log of vacuum rest wavelength) with ``velscale`` km/s per pixel.
    ``light`` is each template's mean flux in :data:`LIGHT_WINDOW` (light per M_sun).
    """

    ln_lam: np.ndarray
    templates: np.ndarray
    light: np.ndarray
    ages: np.ndarray  # (n_ages,) Gyr
    metals: np.ndarray  # (n_metals,)
    masses: np.ndarray  # (n_ages, n_metals)
    velscale: float
    lsf_kms: float  # SDSS's median instrumental sigma (for the emission lines)
    k_dust: np.ndarray  # Calzetti k(lambda) on the grid (computed once, used per spectrum)
    edges: np.ndarray  # pixel edges (Angstrom) of the grid

    @functools.cached_property
    def templates_t(self) -> np.ndarray:
        """``templates`` as (n_templates, n_pix), contiguous: the SSPs of one mixture are then
        rows, cheap to gather (for the template-mismatch nuisance; made on first use)."""
        return np.ascontiguousarray(self.templates.T)


def prepare(
    lib: Library, instrument: Instrument, oversample: int = 2, z_ref: float = 0.1,
    extra_sigma_kms: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Prepared:
    """Bring the library to vacuum and to SDSS's line-spread function, on a log grid.

    The LSF difference (quadratic, in Angstrom) is taken with SDSS's sigma at the observed
    wavelength lambda_rest * (1 + z_ref); SDSS's LSF is nearly constant in velocity, so the
    error of using one z_ref for 0 < z < 0.3 is a few km/s in quadrature. Where the library
    is broader than SDSS it is left as it is. ``extra_sigma_kms(observed wavelength)`` adds
    a broadening in quadrature on top (the pPXF labeller's pixel boxes).
    """
    lam_vac = ppxf_util.air_to_vac(lib.lam)
    sig_sdss_kms = np.interp(np.log10(lam_vac * (1 + z_ref)), instrument.loglam, instrument.sigma_kms)
    sig_sdss = sig_sdss_kms / C_KMS * lam_vac  # rest-frame Angstrom
    sig_tem = lib.fwhm / FWHM_PER_SIGMA
    sig_target2 = np.maximum(sig_sdss, sig_tem) ** 2
    if extra_sigma_kms is not None:
        sig_target2 = sig_target2 + (extra_sigma_kms(lam_vac * (1 + z_ref)) / C_KMS * lam_vac) ** 2
    sig_diff = np.sqrt(np.clip(sig_target2 - sig_tem**2, 0, None))
    flat = lib.templates.reshape(lib.lam.size, -1)
    smooth = ppxf_util.varsmooth(lam_vac, flat, sig_diff)
    velscale = SDSS_VELSCALE / oversample
    templates, ln_lam, velscale = ppxf_util.log_rebin(lam_vac, smooth, velscale=velscale)
    lam = np.exp(ln_lam)
    win = (lam >= LIGHT_WINDOW[0]) & (lam <= LIGHT_WINDOW[1])
    if lam[0] > LIGHT_WINDOW[0] or lam[-1] < LIGHT_WINDOW[1]:
        raise ValueError(f"the library ({lam[0]:.0f}-{lam[-1]:.0f} A) does not cover the light window {LIGHT_WINDOW} A")
    return Prepared(
        ln_lam=ln_lam,
        # float32: the mixing reads the whole library per spectrum (memory bound), and the
        # noise of any mock is far above float32 precision.
        templates=np.ascontiguousarray(templates, dtype=np.float32),
        light=templates[win].mean(axis=0),
        ages=lib.ages,
        metals=lib.metals,
        masses=lib.masses,
        velscale=float(velscale),
        lsf_kms=float(np.median(instrument.sigma_kms)),
        k_dust=calzetti_k(lam),
        edges=pixel_edges(lam),
    )


# --------------------------------------------------------------------------------------------
# Star-formation histories
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Component:
    """One stellar component: a delayed-exponential episode or a burst, with its [M/H].

    ``start`` is the lookback time (Gyr, at the galaxy's redshift) when it began; a burst
    (``tau`` = 0) forms all its mass at ``start``. ``mass`` is the mass formed (M_sun).
    """

    start: float
    tau: float
    mh: float
    mass: float


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
# Parameters and priors
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    z: float
    ebv: float
    sigma: float  # stellar LOSVD, km/s
    snr_r: float
    galaxy_class: str
    components: tuple[Component, ...]
    sigma_gas: float = 80.0
    log_nii_ha: float = -0.5
    log_oiii_hb: float = -0.3
    agn_ew_hbeta: float = 0.0  # rest-frame EW (A) of the AGN's Hbeta
    sky_ratio: float = 1.0  # sky / object counts in the r band
    calib: tuple[float, ...] = (0.0, 0.0, 0.0)  # Legendre coefficients of the flux calibration error
    sky_residual: float = 0.02
    flux_scale: float = 30.0  # continuum near 6200 A observed, 1e-17 erg/s/cm^2/A


MODES = ("sdss", "broad", "wide")
# wide: the real sample's range, where sdss under-represents it (issue 10): sigma and S/N_r
# log-uniform, and a share of the redshifts log-uniform at low z (nearby galaxies).
WIDE_RANGES = {"sigma_range": (50.0, 500.0), "snr_range": (3.0, 100.0)}
WIDE_LOW_Z, WIDE_LOW_Z_FRACTION = (0.002, 0.05), 0.3


@dataclass(frozen=True)
class Priors:
    """Parameter distributions. ``sdss`` mimics the paper's sample (its Figs. 1-2: z mostly
    0.05-0.2, medians log age 9.66, [M/H] -0.22, E(B-V) 0.1, sigma 150 km/s); ``broad``
    spreads every parameter over the whole range, for training; ``wide`` is ``broad`` over
    what the real sample covers: z uniform in ``z_range`` plus a share
    :data:`WIDE_LOW_Z_FRACTION` log-uniform in :data:`WIDE_LOW_Z`, sigma and S/N_r
    log-uniform, their ranges those of :data:`WIDE_RANGES` unless given otherwise.
    """

    mode: str = "sdss"
    class_fractions: tuple[float, ...] = (0.45, 0.25, 0.15, 0.15)  # order of CLASSES
    z_range: tuple[float, float] = (0.002, 0.3)
    snr_range: tuple[float, float] = (3.0, 80.0)
    sigma_range: tuple[float, float] = (30.0, 400.0)
    ebv_max: float = 0.8

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"priors mode is one of {MODES}, not {self.mode!r}")
        if self.mode == "wide":  # ranges left at the class defaults take wide's
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name, value in WIDE_RANGES.items():
                if getattr(self, name) == defaults[name]:
                    object.__setattr__(self, name, value)


def _draw_components(rng: np.random.Generator, cls: str, t_univ: float, broad: bool) -> tuple[Component, ...]:
    def mh(mean):
        return float(np.clip(rng.normal(mean, 0.35 if broad else 0.25), -1.71, 0.22))

    def start(lo, hi):
        return float(min(t_univ, rng.uniform(lo, hi)))

    kind = rng.choice(["delayed", "burst_on_old", "two_pop"], p=[0.4, 0.3, 0.3])
    if broad:
        old = Component(start(0.1, t_univ), float(rng.uniform(0.05, 8.0)), mh(-0.4), 1.0)
    elif cls == "passive":
        old = Component(start(9.0, 13.5), float(rng.uniform(0.3, 1.5)), mh(-0.08), 1.0)
    elif cls == "star-forming":
        old = Component(start(8.0, 13.0), float(rng.uniform(1.0, 4.0)), mh(-0.4), 1.0)
    else:
        old = Component(start(8.0, 13.5), float(rng.uniform(0.5, 3.0)), mh(-0.15), 1.0)
    if kind == "delayed":
        return (old,)
    young_mh = mh(old.mh - 0.1 if cls != "passive" else old.mh)
    if kind == "burst_on_old":
        frac = float(10 ** rng.uniform(-3.5, -1.3 if cls != "passive" else -2.5))
        return old, Component(start(0.05, 2.0 if cls != "passive" else 5.0), 0.0, young_mh, frac)
    frac = float(rng.uniform(0.05, 0.4))
    second = Component(start(1.0, min(8.0, t_univ)), float(rng.uniform(0.3, 3.0)), young_mh, frac)
    return old, second


_Z_TABLE = np.linspace(0.0, 1.0, 201)
_AGE_TABLE = None


def age_of_universe(z: float) -> float:
    """Planck18 age (Gyr) at z, from a table (the integral costs ~0.3 ms a call)."""
    global _AGE_TABLE
    if _AGE_TABLE is None:
        _AGE_TABLE = Planck18.age(_Z_TABLE).value
    return float(np.interp(z, _Z_TABLE, _AGE_TABLE))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(10 ** rng.uniform(math.log10(lo), math.log10(hi)))


def _draw_z(rng: np.random.Generator, priors: Priors) -> float:
    lo, hi = priors.z_range
    if priors.mode == "broad":
        return float(rng.uniform(lo, hi))
    if priors.mode == "wide":
        if rng.random() < WIDE_LOW_Z_FRACTION:
            return _log_uniform(rng, max(lo, WIDE_LOW_Z[0]), min(hi, WIDE_LOW_Z[1]))
        return float(rng.uniform(lo, hi))
    return float(np.clip(rng.lognormal(math.log(0.1), 0.45), lo, hi))


def draw_params(rng: np.random.Generator, priors: Priors = Priors()) -> Params:
    """Draw one galaxy from the priors."""
    broad = priors.mode in ("broad", "wide")
    cls = CLASSES[int(rng.choice(len(CLASSES), p=np.asarray(priors.class_fractions) / sum(priors.class_fractions)))]
    z = _draw_z(rng, priors)
    t_univ = age_of_universe(z)
    if broad:
        ebv = float(rng.uniform(0, priors.ebv_max))
        wide = priors.mode == "wide"
        sigma = _log_uniform(rng, *priors.sigma_range) if wide else float(rng.uniform(*priors.sigma_range))
        snr = _log_uniform(rng, *priors.snr_range)
    else:
        ebv_scale = {"passive": 0.09, "star-forming": 0.25, "composite": 0.19, "AGN": 0.15}[cls]
        ebv = float(min(rng.exponential(ebv_scale), priors.ebv_max))
        sig_med = {"passive": 185.0, "star-forming": 105.0, "composite": 145.0, "AGN": 165.0}[cls]
        sigma = float(np.clip(rng.lognormal(math.log(sig_med), 0.35), *priors.sigma_range))
        snr = float(np.clip(rng.lognormal(math.log(16.0), 0.5), *priors.snr_range))
    x, y = _draw_bpt(rng, cls)
    return Params(
        z=z, ebv=ebv, sigma=sigma, snr_r=snr, galaxy_class=cls,
        components=_draw_components(rng, cls, t_univ, broad),
        sigma_gas=float(rng.uniform(40, 160)),
        log_nii_ha=x, log_oiii_hb=y,
        agn_ew_hbeta=float(10 ** rng.uniform(-0.3, 0.8)) if cls in ("AGN", "composite") else 0.0,
        sky_ratio=float(10 ** rng.uniform(-1.0, 1.0)),
        calib=tuple(float(c) for c in rng.normal(0, 0.02, 3)),
        sky_residual=float(abs(rng.normal(0, 0.02))),
        flux_scale=float(10 ** rng.uniform(0.5, 2.0)),
    )


def _draw_bpt(rng: np.random.Generator, cls: str) -> tuple[float, float]:
    """A point of the [NII] BPT diagram inside the class's region (rejection sampling)."""
    if cls == "passive":
        return -0.5, -0.3  # unused: passive galaxies have no lines
    boxes = {"star-forming": (-1.3, -0.2, -1.0, 0.6), "composite": (-0.5, 0.2, -0.8, 0.6), "AGN": (-0.3, 0.5, -0.4, 1.2)}
    x0, x1, y0, y1 = boxes[cls]
    for _ in range(1000):
        x, y = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        if bpt_region(x, y) == cls and abs(y - (kauffmann03(x) if x < 0.05 else -9)) > 0.05 and (x >= 0.47 or abs(y - kewley01(x)) > 0.05):
            return x, y
    raise RuntimeError(f"could not draw a BPT point for {cls}")


# --------------------------------------------------------------------------------------------
# The spectrum
# --------------------------------------------------------------------------------------------
def gaussian_broaden(flux: np.ndarray, sigma_pix: float) -> np.ndarray:
    """Convolve with a normalised Gaussian of ``sigma_pix`` pixels (constant in velocity on a
    log grid), truncated at 5 sigma."""
    if sigma_pix < 0.1:
        return flux
    return gaussian_filter1d(flux, sigma_pix, mode="nearest", truncate=5.0)


def line_fluxes(params: Params, weights: np.ndarray, prep: Prepared, cont_hbeta: float) -> dict[str, float]:
    """Intrinsic (unattenuated) line luminosities in L_sun.

    Star formation: L(Halpha) from the SFR averaged over the last 100 Myr (Kennicutt 1998);
    AGN: an Hbeta of rest EW ``agn_ew_hbeta`` against the continuum ``cont_hbeta``.
    Ratios: case B Balmer lines; [NII]/Halpha and [OIII]/Hbeta from the BPT point; the
    others typical of the class.
    """
    if params.galaxy_class == "passive":
        return {}
    young = weights[prep.ages < 0.1].sum()
    l_hbeta = L_HALPHA_PER_SFR * young / 1e8 / 2.86
    if params.galaxy_class in ("AGN", "composite"):
        l_hbeta += params.agn_ew_hbeta * cont_hbeta
    if params.galaxy_class == "star-forming" and l_hbeta <= 0:
        l_hbeta = 2.0 * cont_hbeta  # a weak line at EW 2 A when no SSP is younger than 100 Myr
    agn_like = params.galaxy_class == "AGN"
    nii = 10**params.log_nii_ha * 2.86
    oiii = 10**params.log_oiii_hb
    out = {name: r * l_hbeta for name, r in BALMER_TO_HBETA.items()}
    out.update(
        OIII5007=oiii * l_hbeta, OIII4959=oiii * l_hbeta / 2.98,
        NII6583=nii * l_hbeta, NII6548=nii * l_hbeta / 3.05,
        SII6716=(0.6 if agn_like else 0.3) * 2.86 * l_hbeta * 0.55, SII6731=(0.6 if agn_like else 0.3) * 2.86 * l_hbeta * 0.45,
        OI6300=(0.15 if agn_like else 0.03) * 2.86 * l_hbeta,
        OII3726=(3.0 if agn_like else 2.0) * l_hbeta * 0.45, OII3729=(3.0 if agn_like else 2.0) * l_hbeta * 0.55,
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
    spec = stars * 10 ** (-0.4 * params.ebv * prep.k_dust)
    fluxes = line_fluxes(params, weights, prep, float(np.median(stars[near_hb])))
    if fluxes:
        ebv_gas = params.ebv / 0.44  # Calzetti (2000): stars see 0.44 of the gas's E(B-V)
        sig_gas = math.hypot(params.sigma_gas, prep.lsf_kms, lsf_extra) / C_KMS  # gas and SDSS's LSF
        dln = prep.ln_lam[1] - prep.ln_lam[0]
        half = int(math.ceil(6 * sig_gas / dln)) + 2
        names = list(fluxes)
        mus = np.array([LINES[n] for n in names])
        att = 10 ** (-0.4 * ebv_gas * calzetti_k(mus))
        for name, mu, a in zip(names, mus, att):
            i = int(round((math.log(mu) - prep.ln_lam[0]) / dln))
            sl = slice(max(i - half, 0), min(i + half + 1, lam.size))
            s = mu * sig_gas
            spec[sl] += fluxes[name] * a * np.exp(-0.5 * ((lam[sl] - mu) / s) ** 2) / (math.sqrt(2 * math.pi) * s)
    truth = {"log_age": log_age, "mh": mh, "ebv": params.ebv, "vd": params.sigma}
    return spec, {**truth, "light_fractions": frac}


def redshift_to_sdss(rest: np.ndarray, z: float, prep: Prepared, instrument: Instrument,
                     out_edges: np.ndarray | None = None) -> np.ndarray:
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


def observe(params: Params, rest: np.ndarray, prep: Prepared, instrument: Instrument, rng: np.random.Generator,
            nuisance: N.Draw | None = None):
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
            nuisance, flux, sigma, mask, model, sky, instrument.sky_lines * sky_scale, instrument.loglam)
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
    params: Params, prep: Prepared, instrument: Instrument, rng: np.random.Generator, spec_id: str,
    plate: int = -1, mjd: int = -1, fiber: int = -1, nuisance: N.Draw | None = None,
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
