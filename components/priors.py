"""What a mock galaxy is, drawn at random: its star-formation history (:class:`Component`),
redshift, dust, kinematics, emission-line class and observing conditions (:class:`Params`),
from the distributions of :class:`Priors` (pure: the rng is passed in)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from astropy.cosmology import Planck18

from stellarpop.components.bpt import CLASSES, bpt_region, kauffmann03, kewley01
from stellarpop.schema import config_codec


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
    ew_halpha: float = 0.0  # rest EW (A) of the star-forming Halpha; 0: from the SFR of the last 100 Myr
    v_gas: float = 0.0  # the gas's velocity relative to the stars, km/s


MODES = ("sdss", "broad", "wide", "sky")
# wide: the real sample's range, where sdss under-represents it (issue 10): sigma and S/N_r
# log-uniform, and a share of the redshifts log-uniform at low z (nearby galaxies).
WIDE_RANGES = {"sigma_range": (50.0, 500.0), "snr_range": (3.0, 100.0)}
# sky: wide over the whole sky's galaxies (issue 25): dispersions from below SDSS's resolution,
# S/N down to the paper's cut, half the galaxies with emission lines whose strength is drawn
# (Halpha EW log-uniform up to hundreds of A), gas kinematics apart from the stars'.
SKY_RANGES = {"sigma_range": (10.0, 500.0), "snr_range": (4.0, 100.0)}
SKY_CLASS_FRACTIONS = (0.35, 0.40, 0.10, 0.15)
SKY_EW_HALPHA = (3.0, 500.0)  # A, rest frame, log-uniform (star-forming and composite)
SKY_SIGMA_GAS = (15.0, 250.0)  # km/s, log-uniform, independent of the stars'
SKY_V_GAS = 40.0  # km/s, the std of the gas's velocity offset
RANGES = {"wide": WIDE_RANGES, "sky": SKY_RANGES}
WIDE_LOW_Z, WIDE_LOW_Z_FRACTION = (0.002, 0.05), 0.3


@dataclass(frozen=True)
class Priors:
    """Parameter distributions. ``sdss`` mimics the paper's sample (its Figs. 1-2: z mostly
    0.05-0.2, medians log age 9.66, [M/H] -0.22, E(B-V) 0.1, sigma 150 km/s); ``broad``
    spreads every parameter over the whole range, for training; ``wide`` is ``broad`` over
    what the real sample covers: z uniform in ``z_range`` plus a share
    :data:`WIDE_LOW_Z_FRACTION` log-uniform in :data:`WIDE_LOW_Z`, sigma and S/N_r
    log-uniform, their ranges those of :data:`WIDE_RANGES` unless given otherwise.

    ``sky`` is ``wide`` over the whole sky's galaxies (:data:`SKY_RANGES`: sigma from 10 km/s,
    below SDSS's resolution, S/N_r from 4; :data:`SKY_CLASS_FRACTIONS` unless given), with
    emission whose strength is drawn rather than set by the star-formation history (Halpha
    EW log-uniform in :data:`SKY_EW_HALPHA`, AGN Hbeta EW up to 30 A) and gas whose
    dispersion and velocity are drawn apart from the stars'.

    ``sdss_fraction`` (``broad``, ``wide`` and ``sky`` only) draws that share of the galaxies from
    the ``sdss`` priors instead (their own sigma and S/N ranges; this one's classes, z range
    and E(B-V) limit): a training set that covers the real sample's range and is as dense
    as the paper's sample where most real galaxies are. A network trained on ``wide``
    alone shrinks old, metal-rich galaxies toward the middle of its prior (issue 10: log
    age -0.05 dex at every S/N on SDSS-like mocks).
    """

    mode: str = "sdss"
    class_fractions: tuple[float, ...] = (0.45, 0.25, 0.15, 0.15)  # order of CLASSES
    z_range: tuple[float, float] = (0.002, 0.3)
    snr_range: tuple[float, float] = (3.0, 80.0)
    sigma_range: tuple[float, float] = (30.0, 400.0)
    ebv_max: float = 0.8
    # 0 draws what was drawn before the field existed: left out of records (resume still matches)
    sdss_fraction: float = dataclasses.field(default=0.0, metadata={config_codec.RECORDED_IF_SET: True})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"priors mode is one of {MODES}, not {self.mode!r}")
        if not 0.0 <= self.sdss_fraction <= 1.0 or (self.sdss_fraction and self.mode == "sdss"):
            raise ValueError(
                f"priors sdss_fraction is in [0, 1] and only for broad or wide priors, "
                f"not {self.sdss_fraction!r} with {self.mode}"
            )
        if self.mode in RANGES:  # ranges left at the class defaults take the mode's
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            ranges = dict(RANGES[self.mode])
            if self.mode == "sky":
                ranges["class_fractions"] = SKY_CLASS_FRACTIONS
            for name, value in ranges.items():
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
    if priors.mode in ("wide", "sky"):
        if rng.random() < WIDE_LOW_Z_FRACTION:
            return _log_uniform(rng, max(lo, WIDE_LOW_Z[0]), min(hi, WIDE_LOW_Z[1]))
        return float(rng.uniform(lo, hi))
    return float(np.clip(rng.lognormal(math.log(0.1), 0.45), lo, hi))


def draw_params(rng: np.random.Generator, priors: Priors = Priors()) -> Params:
    """Draw one galaxy from the priors."""
    if priors.sdss_fraction and rng.random() < priors.sdss_fraction:  # sdss galaxies: no sky emission
        priors = Priors(class_fractions=priors.class_fractions, z_range=priors.z_range, ebv_max=priors.ebv_max)
    broad = priors.mode in ("broad", "wide", "sky")
    cls = CLASSES[int(rng.choice(len(CLASSES), p=np.asarray(priors.class_fractions) / sum(priors.class_fractions)))]
    z = _draw_z(rng, priors)
    t_univ = age_of_universe(z)
    if broad:
        ebv = float(rng.uniform(0, priors.ebv_max))
        wide = priors.mode in ("wide", "sky")
        sigma = _log_uniform(rng, *priors.sigma_range) if wide else float(rng.uniform(*priors.sigma_range))
        snr = _log_uniform(rng, *priors.snr_range)
    else:
        ebv_scale = {"passive": 0.09, "star-forming": 0.25, "composite": 0.19, "AGN": 0.15}[cls]
        ebv = float(min(rng.exponential(ebv_scale), priors.ebv_max))
        sig_med = {"passive": 185.0, "star-forming": 105.0, "composite": 145.0, "AGN": 165.0}[cls]
        sigma = float(np.clip(rng.lognormal(math.log(sig_med), 0.35), *priors.sigma_range))
        snr = float(np.clip(rng.lognormal(math.log(16.0), 0.5), *priors.snr_range))
    x, y = _draw_bpt(rng, cls)
    params = Params(
        z=z,
        ebv=ebv,
        sigma=sigma,
        snr_r=snr,
        galaxy_class=cls,
        components=_draw_components(rng, cls, t_univ, broad),
        sigma_gas=float(rng.uniform(40, 160)),
        log_nii_ha=x,
        log_oiii_hb=y,
        agn_ew_hbeta=float(10 ** rng.uniform(-0.3, 0.8)) if cls in ("AGN", "composite") else 0.0,
        sky_ratio=float(10 ** rng.uniform(-1.0, 1.0)),
        calib=tuple(float(c) for c in rng.normal(0, 0.02, 3)),
        sky_residual=float(abs(rng.normal(0, 0.02))),
        flux_scale=float(10 ** rng.uniform(0.5, 2.0)),
    )
    return _sky_emission(rng, params) if priors.mode == "sky" else params


def _sky_emission(rng: np.random.Generator, params: Params) -> Params:
    """``sky`` mode's emission lines: their strength and the gas's kinematics, drawn after
    everything else (so the rest of a draw is ``wide``'s with sky's ranges)."""
    cls = params.galaxy_class
    ew = _log_uniform(rng, *SKY_EW_HALPHA) if cls in ("star-forming", "composite") else 0.0
    return dataclasses.replace(
        params,
        ew_halpha=ew,
        agn_ew_hbeta=_log_uniform(rng, 0.5, 30.0) if cls in ("AGN", "composite") else 0.0,
        sigma_gas=_log_uniform(rng, *SKY_SIGMA_GAS),
        v_gas=float(rng.normal(0.0, SKY_V_GAS)),
    )


def _draw_bpt(rng: np.random.Generator, cls: str) -> tuple[float, float]:
    """A point of the [NII] BPT diagram inside the class's region (rejection sampling)."""
    if cls == "passive":
        return -0.5, -0.3  # unused: passive galaxies have no lines
    boxes = {
        "star-forming": (-1.3, -0.2, -1.0, 0.6),
        "composite": (-0.5, 0.2, -0.8, 0.6),
        "AGN": (-0.3, 0.5, -0.4, 1.2),
    }
    x0, x1, y0, y1 = boxes[cls]
    for _ in range(1000):
        x, y = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        if (
            bpt_region(x, y) == cls
            and abs(y - (kauffmann03(x) if x < 0.05 else -9)) > 0.05
            and (x >= 0.47 or abs(y - kewley01(x)) > 0.05)
        ):
            return x, y
    raise RuntimeError(f"could not draw a BPT point for {cls}")
