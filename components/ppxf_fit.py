"""Label one spectrum with pPXF, as the paper does (pure: arrays in, a LabelResult out).

The paper's settings (its Section 2.2): 36 SSPs (9 ages x 4 [M/H]; here the nearest
E-MILES ages to 0.06 ... 15 Gyr), templates brought to the galaxy's instrumental resolution
by the quadratic difference, the spectrum de-redshifted with the catalogue z, Calzetti
reddening fitted from the continuum shape (ppxf's ``reddening``, which is A_V; E(B-V) =
A_V / 4.05), no additive and no multiplicative polynomial, no regularisation, two moments.

Gas: the paper does not say. Masking the lines leaves their wings, and the [NII]/Halpha
and Balmer emission fill absorption features the ages rest on, so the gas lines are fitted
as a kinematic component of their own (every line a free template, not attenuated: the free
Balmer lines take up the gas's dust). Measured on noiseless mocks on the 2-core machine:
stars alone 0.1-0.2 s per fit; one gas component 0.5-1.4 s; Balmer and forbidden lines as
two components 1.3-1.9 s, for the same labels. ``gas_components`` = 0, 1 (default) or 2;
benchmarks/ppxf_vs_truth.py measures the choice on realistic mocks.

The spectrum is what a tf.Example holds: flux, ivar and mask on the 1-A model grid. It is
log-rebinned to SDSS's own velocity step (69 km/s per pixel), so the fit sees about as
many pixels as SDSS recorded. The resolution it is matched to is SDSS's LSF (the wdisp of
SDSS files, as the simulator uses) plus the three pixel boxes a fitted spectrum has been
through: SDSS's native pixel (69 km/s), the 1-A model-grid pixel and the log-rebinned pixel
(pPXF's pixel integration acts on the finer template pixels only; see
:func:`pixel_boxes_kms` for the measurement). Where E-MILES is broader than that (the blue,
below ~5500 A rest) the templates keep their resolution: on real spectra sigma comes out
~3 km/s low there at 150 km/s (sqrt(64^2 - 56^2) km/s in quadrature).

Formal errors: sigma's and E(B-V)'s from pPXF's covariance of the non-linear parameters;
log age's and [M/H]'s from the covariance of the non-zero template weights (the linear
least-squares problem at the solution), propagated to the light-weighted means. All are
multiplied by sqrt(chi2/DOF), as pPXF's documentation advises when chi2/DOF != 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
from dataclasses import dataclass

import numpy as np
from ppxf import ppxf_util
from ppxf.ppxf import ppxf

from stellarpop.components import simulate
from stellarpop.components.templates import Library
from stellarpop.transforms import features as F

C_KMS = simulate.C_KMS
R_V = 4.05  # Calzetti (2000); pPXF's reddening is A_V
PAPER_AGES = (0.06, 0.12, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # Gyr
PAPER_METALS = (-1.71, -0.71, 0.0, 0.22)

OK = "ok"
FAILED = "failed"


@dataclass(frozen=True)
class FitConfig:
    """How every spectrum is fitted (recorded with the labels)."""

    ages: tuple[float, ...] = PAPER_AGES  # Gyr; the nearest library ages are used
    metals: tuple[float, ...] = PAPER_METALS  # dex; the nearest library [M/H] are used
    gas_components: int = 1  # kinematic components of the emission lines: 0 (none), 1 or 2 (Balmer, forbidden)
    velscale: float = simulate.SDSS_VELSCALE  # km/s per log-rebinned galaxy pixel
    velscale_ratio: int = 2  # templates sampled this many times finer
    sigma_start: float = 150.0  # km/s
    ebv_start: float = 0.1  # mag
    gas_sigma_start: float = 80.0  # km/s
    z_step: float = 0.01  # templates are matched to the LSF at z rounded to this step
    linear_method: str = "nnls"  # pPXF's solver of the weights (nnls: 25% faster than lsq_box here)
    min_good_fraction: float = 0.5  # fewer good pixels than this: a failed fit
    library: str = ""  # an sps_lib .npz; empty: the E-MILES build

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FitConfig":
        raw = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


@dataclass(frozen=True)
class LabelResult:
    """pPXF's labels of one spectrum; NaN values and status ``failed`` when the fit failed."""

    spec_id: str
    log_age: float = math.nan
    mh: float = math.nan
    ebv: float = math.nan
    vd: float = math.nan
    log_age_err: float = math.nan
    mh_err: float = math.nan
    ebv_err: float = math.nan
    vd_err: float = math.nan
    chi2: float = math.nan  # per degree of freedom
    n_good: int = 0
    status: str = FAILED
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    def labels(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in F.LABEL_KEYS}

    def to_json(self) -> str:
        # repr-exact floats (json writes repr): a re-read result is bit-identical.
        return json.dumps(dataclasses.asdict(self), sort_keys=True, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> "LabelResult":
        return cls(**json.loads(text))


def select_library(lib: Library, ages: tuple[float, ...], metals: tuple[float, ...]) -> Library:
    """The sub-grid of the SSPs nearest to ``ages`` (Gyr) and ``metals`` (dex)."""
    ia = [int(np.argmin(np.abs(np.log(lib.ages / a)))) for a in ages]
    im = [int(np.argmin(np.abs(lib.metals - m))) for m in metals]
    if len(set(ia)) != len(ia) or len(set(im)) != len(im):
        raise ValueError(f"ages {ages} or metals {metals} map twice onto one library SSP")
    return dataclasses.replace(
        lib,
        templates=lib.templates[:, ia][:, :, im],
        ages=lib.ages[ia],
        metals=lib.metals[im],
        masses=lib.masses[ia][:, im],
    )


def pixel_boxes_kms(lam_obs: np.ndarray, velscale: float = simulate.SDSS_VELSCALE) -> np.ndarray:
    """Sigma (km/s) of the pixel boxes a model-grid spectrum has been through, at observed
    wavelength ``lam_obs``: SDSS's native 69 km/s pixel, the 1-A model-grid pixel and the
    log-rebinned pixel of the fit (``velscale``). Measured on noiseless mocks: leaving out
    the last biases sigma by +2 km/s at 80-150 km/s; with all three the bias is < 0.3 km/s."""
    native = simulate.SDSS_VELSCALE / math.sqrt(12)
    grid = F.GRID_STEP / math.sqrt(12) / np.asarray(lam_obs, float) * C_KMS
    return np.sqrt(native**2 + grid**2 + velscale**2 / 12)


class Fitter:
    """Fits spectra with one template set; caches the templates matched at each z step."""

    def __init__(self, lib: Library, instrument: simulate.Instrument, config: FitConfig = FitConfig()):
        self.config = config
        self.lib = select_library(lib, config.ages, config.metals)
        self.instrument = instrument
        self._prepared: dict[float, simulate.Prepared] = {}

    def templates_at(self, z: float) -> simulate.Prepared:
        """Templates at the galaxy's resolution for redshift ``z`` (cached per z step)."""
        z_ref = round(round(z / self.config.z_step) * self.config.z_step, 6)
        if z_ref not in self._prepared:
            self._prepared[z_ref] = simulate.prepare(
                self.lib, self.instrument, oversample=self.config.velscale_ratio, z_ref=z_ref,
                extra_sigma_kms=functools.partial(pixel_boxes_kms, velscale=self.config.velscale),
            )
        return self._prepared[z_ref]

    def lsf_fwhm_rest(self, z: float):
        """The galaxy's line-spread FWHM (Angstrom) at rest wavelength, for the gas lines."""
        inst = self.instrument
        sig_kms = np.hypot(inst.sigma_kms, pixel_boxes_kms(10.0**inst.loglam, self.config.velscale))
        lam_obs = 10.0**inst.loglam

        def fwhm(lam_rest):
            return simulate.FWHM_PER_SIGMA * np.interp(lam_rest * (1 + z), lam_obs, sig_kms) / C_KMS * lam_rest

        return fwhm

    def fit(self, spec_id: str, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, z: float) -> LabelResult:
        """Label one model-grid spectrum; a failure is a result with its message, never raised."""
        try:
            return self._fit(spec_id, np.asarray(flux, float), np.asarray(ivar, float), np.asarray(mask) > 0, float(z))
        except Exception as exc:  # noqa: BLE001 - any pPXF failure is a recorded status
            return LabelResult(spec_id, message=f"{type(exc).__name__}: {exc}")

    def _fit(self, spec_id, flux, ivar, bad, z) -> LabelResult:
        cfg = self.config
        if not (math.isfinite(z) and z > -0.01):
            return LabelResult(spec_id, message=f"redshift {z} is not usable")
        bad = bad | ~(ivar > 0) | ~np.isfinite(flux)
        lam_rest = F.GRID_START + F.GRID_STEP * np.arange(flux.size)
        lam_rest = lam_rest / (1 + z)
        scale = np.median(flux[~bad]) if np.any(~bad) else 0.0
        if not scale > 0:
            return LabelResult(spec_id, message="no good pixel with positive flux")
        var = np.where(bad, 0.0, 1.0 / np.where(ivar > 0, ivar, 1.0)) / scale**2
        galaxy, ln_lam, _ = ppxf_util.log_rebin(lam_rest, np.where(bad, 0.0, flux / scale), velscale=cfg.velscale)
        var_log = ppxf_util.log_rebin(lam_rest, var, velscale=cfg.velscale)[0]
        bad_log = ppxf_util.log_rebin(lam_rest, bad.astype(float), velscale=cfg.velscale)[0] > 1e-6
        # A log pixel wider than the 1-A input pixels averages them: its variance shrinks.
        width = np.exp(ln_lam) * (1 + z) * cfg.velscale / C_KMS  # observed Angstrom
        noise = np.sqrt(np.clip(var_log, 0, None) / np.maximum(width / F.GRID_STEP, 1.0))
        good = ~bad_log & (noise > 0) & np.isfinite(galaxy)
        # The first and last log pixels are partial.
        good[[0, -1]] = False
        n_good = int(good.sum())
        if n_good < cfg.min_good_fraction * galaxy.size:
            return LabelResult(spec_id, n_good=n_good, message=f"{n_good} of {galaxy.size} pixels usable")
        noise[~good] = np.median(noise[good])

        prep = self.templates_at(z)
        stars = prep.templates / prep.light  # each SSP normalised to 1 in the light window
        n_stars = stars.shape[1]
        lam_temp = np.exp(prep.ln_lam)
        lam_gal = np.exp(ln_lam)
        start = [[0.0, cfg.sigma_start]]
        component = [0] * n_stars
        templates = stars
        if cfg.gas_components:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints the lines it makes
                gas, names, _ = ppxf_util.emission_lines(
                    prep.ln_lam, [lam_gal[0], lam_gal[-1]], self.lsf_fwhm_rest(z), tie_balmer=False,
                    limit_doublets=False, vacuum=True,
                )
            groups = [np.ones(len(names), bool)]
            if cfg.gas_components == 2:
                balmer = np.array([n.startswith("H") for n in names])
                groups = [balmer, ~balmer]
            for group in groups:
                if group.any():
                    templates = np.column_stack([templates, gas[:, group]])
                    component += [len(start)] * int(group.sum())
                    start.append([0.0, cfg.gas_sigma_start])
        component = np.array(component)
        pp = _PPXF(
            templates, galaxy, noise, cfg.velscale, start if len(start) > 1 else start[0], moments=[2] * len(start), degree=-1, mdegree=0,
            lam=lam_gal, lam_temp=lam_temp, velscale_ratio=cfg.velscale_ratio, reddening=cfg.ebv_start * R_V,
            component=component, gas_component=component > 0 if len(start) > 1 else None, goodpixels=np.flatnonzero(good), quiet=True,
            linear_method=cfg.linear_method,
        )
        sol = pp.sol[0] if len(start) > 1 else pp.sol
        err = pp.error[0] if len(start) > 1 else pp.error
        inflate = math.sqrt(max(pp.chi2, 0.0))
        w = pp.weights[:n_stars]
        if not w.sum() > 0:
            return LabelResult(spec_id, chi2=float(pp.chi2), n_good=n_good, message="all stellar weights are zero")
        log_ages = np.repeat(np.log10(prep.ages * 1e9), prep.metals.size)
        metals = np.tile(prep.metals, prep.ages.size)
        cov = _weights_covariance(pp, n_stars, good)
        age, age_err = _weighted_mean(w, log_ages, cov)
        mh, mh_err = _weighted_mean(w, metals, cov)
        status = OK if pp.status > 0 else FAILED
        return LabelResult(
            spec_id,
            log_age=age,
            mh=mh,
            ebv=float(pp.reddening) / R_V,
            vd=float(sol[1]),
            log_age_err=age_err * inflate,
            mh_err=mh_err * inflate,
            ebv_err=pp.reddening_error / R_V * inflate,
            vd_err=float(err[1]) * inflate,
            chi2=float(pp.chi2),
            n_good=n_good,
            status=status,
            message="" if status == OK else f"pPXF status {pp.status} (not converged)",
        )


class _PPXF(ppxf):
    """pPXF keeping the formal error of the stellar reddening (pPXF returns only the
    kinematic errors; the dust parameters follow the kinematics and mdegree in ``perror``)."""

    def format_output(self, params, perror):
        p = int(np.sum(self.moments)) + self.mdegree * self.nspec
        self.reddening_error = float(perror[p]) if self.reddening is not None else math.nan
        super().format_output(params, perror)


def _weights_covariance(pp: ppxf, n_stars: int, good: np.ndarray) -> np.ndarray:
    """Covariance of the stellar weights: the linear problem restricted to non-zero weights."""
    cov = np.zeros((n_stars, n_stars))
    active = np.flatnonzero(pp.weights > 0)
    design = pp.matrix[: pp.npix][good][:, active] / pp.noise[good, None]
    inv = np.linalg.pinv(design.T @ design)
    stars = active < n_stars
    idx = active[stars]
    cov[np.ix_(idx, idx)] = inv[np.ix_(stars, stars)]
    return cov


def _weighted_mean(w: np.ndarray, x: np.ndarray, cov: np.ndarray) -> tuple[float, float]:
    """sum(w x) / sum(w) and its error from the weights' covariance."""
    total = w.sum()
    mean = float(w @ x / total)
    grad = (x - mean) / total
    return mean, float(math.sqrt(max(grad @ cov @ grad, 0.0)))
