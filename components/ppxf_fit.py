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
benchmarks/ppxf_vs_truth.py measures the choice on realistic mocks. Besides pPXF's own list
the gas templates hold :data:`EXTRA_LINES` (H11-H13, HeI, [ArIII], [OII]7320, [SIII], [OIII]4363,
[NII]5755; issue 25): left out, the nebular lines of a starburst sit on the stellar
continuum and the stars' sigma grows to smooth the templates under them (1176-52791-0591,
SDSS VDISP 19 km/s: "ok" at 628 km/s with the gas at 51 km/s; 84 km/s with them; 0.31 -> 0.38 s
per fit on 17 real spectra).

The spectrum is what a tf.Example holds: flux, ivar and mask on the 1-A model grid. It is
log-rebinned to SDSS's own velocity step (69 km/s per pixel), so the fit sees about as
many pixels as SDSS recorded. The resolution it is matched to is SDSS's LSF (the wdisp of
SDSS files, as the simulator uses) plus the three pixel boxes a fitted spectrum has been
through: SDSS's native pixel (69 km/s), the 1-A model-grid pixel and the log-rebinned pixel
(pPXF's pixel integration acts on the finer template pixels only; see
:func:`~stellarpop.components.instrument.pixel_boxes_kms` for the measurement). Where E-MILES is
broader than that (the blue, below ~5500 A rest) the templates keep their resolution: on real spectra sigma comes out
~3 km/s low there at 150 km/s (sqrt(64^2 - 56^2) km/s in quadrature).

Fits that fail or sit on a bound (issue 10: 2 of 19 real SDSS spectra raised, young
emission-line mocks of another library came back "ok" at sigma = 1000 km/s):

- Emission lines whose flux falls mostly on masked or absent pixels are not fitted
  (:meth:`Fitter._gas_lines`): pPXF would pin them to zero with heavily weighted equality
  rows, on which scipy 1.12's NNLS stops at its iteration limit (0266-51630-0174).
- A run that raises RuntimeError or does not converge is retried once, from
  ``retry_sigma_start`` and with pPXF's own ``lsq_box`` solver; a second failure is status
  ``failed`` with both reasons.
- A free kinematic parameter (V, sigma of the stars, or of a gas component with a line
  detected at ``line_snr``) within ``bound_tol`` of its bound is no measurement: free gas
  lines can run to V = +-2000 and sigma = 1000 km/s, become broad bumps that absorb a
  template mismatch, and drag the stars to the bound with them. Such a fit is retried with
  the gas tied to the stars, then with the lines masked instead of fitted; if it still sits
  there, status ``at_bound`` (values kept for inspection; the labeller keeps only ``ok``).
  The message of any retried fit lists each run and what it met.
- Stars at ``sigma_suspect`` (400 km/s) or more with a detected gas component under
  ``gas_sigma_ratio`` (half) of their sigma are suspect (issue 25: emission fitted as broad
  stars): refitted with the gas tied to the stars, which is the label if its chi2/DOF is
  within ``tied_chi2_tol`` (5%) of the free fit's and its stars are below ``sigma_suspect``;
  else status ``inconsistent`` (the free fit's values, for inspection). A galaxy really that
  broad with gas that narrow (the ``sky`` priors draw the two independently) is thus not
  labelled either.

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

from stellarpop.components import instrument, templates
from stellarpop.components.dust import R_V
from stellarpop.components.instrument import C_KMS
from stellarpop.components.templates import Library
from stellarpop.schema import config_codec
from stellarpop.schema import features as F

PAPER_AGES = (0.06, 0.12, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # Gyr
PAPER_METALS = (-1.71, -0.71, 0.0, 0.22)

OK = "ok"
FAILED = "failed"
AT_BOUND = "at_bound"
INCONSISTENT = "inconsistent"  # stars far broader than the detected gas, not confirmed by a tied fit
GAS_FREE, GAS_TIED, GAS_MASKED, GAS_NONE = "free", "tied", "masked", "none"
SIGMA_MIN_PIX = 0.01  # pPXF's lower bound of sigma, in pixels

# Nebular lines of star-forming and starburst galaxies that ppxf_util.emission_lines leaves out
# (vacuum A, from air wavelengths by ppxf_util.air_to_vac). Unfitted, they sit on the stellar
# continuum and the stars' sigma grows to smooth the templates under them: 1176-52791-0591
# (SDSS VDISP 19 km/s) came out at 628 km/s, mostly from H11-H13 on the Balmer-break side.
# Left out on purpose: HeI 3889 and H14 3722 (within a pixel of H8 and [OII]3726: degenerate).
EXTRA_LINES = {
    "H11": 3771.70,
    "H12": 3751.22,
    "H13": 3735.43,
    "[OIII]4363": 4364.44,
    "HeI4471": 4472.73,
    "[NII]5755": 5756.24,
    "[SIII]6312": 6313.81,
    "HeI6678": 6679.99,
    "HeI7065": 7067.14,
    "[ArIII]7136": 7137.76,
    "[OII]7320": 7322.01,
    "[OII]7330": 7332.75,
    "[ArIII]7751": 7753.19,
}


@dataclass(frozen=True)
class FitConfig:
    """How every spectrum is fitted (recorded with the labels)."""

    ages: tuple[float, ...] = PAPER_AGES  # Gyr; the nearest library ages are used
    metals: tuple[float, ...] = PAPER_METALS  # dex; the nearest library [M/H] are used
    gas_components: int = 1  # kinematic components of the emission lines: 0 (none), 1 or 2 (Balmer, forbidden)
    velscale: float = instrument.SDSS_VELSCALE  # km/s per log-rebinned galaxy pixel
    velscale_ratio: int = 2  # templates sampled this many times finer
    sigma_start: float = 150.0  # km/s
    ebv_start: float = 0.1  # mag
    gas_sigma_start: float = 80.0  # km/s
    z_step: float = 0.01  # templates are matched to the LSF at z rounded to this step
    linear_method: str = "nnls"  # pPXF's solver of the weights (nnls: 25% faster than lsq_box here)
    min_good_fraction: float = 0.5  # fewer good pixels than this: a failed fit
    library: str = ""  # an sps_lib .npz; empty: the E-MILES build
    vel_max: float = 2000.0  # km/s; every velocity is bounded to +-vel_max about the catalogue z (pPXF's default)
    sigma_max: float = 1000.0  # km/s; upper bound of every sigma (pPXF's default; the lower is 0.01 pixel)
    bound_tol: float = 1.0  # km/s; a velocity or sigma closer than this to its bound sits on it
    retry_sigma_start: float = 300.0  # km/s; sigma's start after a failed run or one with the stars on a bound
    min_line_fraction: float = 0.5  # a gas line is fitted only if this fraction of its flux is on good pixels
    line_snr: float = 3.0  # a gas component's kinematics count as measured if a line's flux/error exceeds this
    extra_lines: bool = True  # fit EXTRA_LINES too (besides ppxf_util.emission_lines')
    sigma_suspect: float = 400.0  # km/s; stars this broad with far narrower detected gas are checked
    gas_sigma_ratio: float = 0.5  # ... "far narrower": a detected gas sigma below this fraction of the stars'
    tied_chi2_tol: float = 0.05  # a tied fit whose chi2/DOF is within this fraction of the free one's replaces it

    def to_json(self) -> str:
        return config_codec.to_json(self)

    @classmethod
    def from_json(cls, text: str) -> FitConfig:
        return config_codec.from_json(cls, text)


@dataclass(frozen=True)
class LabelResult:
    """pPXF's labels of one spectrum. Status ``failed``: NaN values; ``at_bound``: the values of a
    fit whose kinematics sat on a bound after its retries (for inspection, not labels)."""

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

    def to_json(self) -> str:
        # repr-exact floats (json writes repr): a re-read result is bit-identical.
        return json.dumps(dataclasses.asdict(self), sort_keys=True, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> LabelResult:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class _Data:
    """A spectrum ready for pPXF: log-rebinned at rest (de-redshifted with the catalogue z)."""

    galaxy: np.ndarray  # flux / median flux of the good pixels
    noise: np.ndarray  # 1-sigma, same units; the median where not good
    good: np.ndarray  # bool, the pixels fitted
    ln_lam: np.ndarray  # natural log of rest wavelength (Angstrom)
    z: float

    @property
    def n_good(self) -> int:
        return int(self.good.sum())


@dataclass(frozen=True)
class _Attempt:
    """How one pPXF run treats the spectrum: where sigma starts, the emission lines (``free``:
    templates with kinematics of their own; ``tied``: with the stars' V and sigma;
    ``masked``: no templates, +-800 km/s about each line masked; ``none``: neither, as
    configured by ``gas_components=0``) and the weights' solver."""

    sigma_start: float
    gas: str
    linear_method: str

    def __str__(self) -> str:  # no start value: a message is the same for every spectrum that meets it
        return f"gas {self.gas}, {self.linear_method}"


class Fitter:
    """Fits spectra with one template set; caches the templates matched at each z step."""

    def __init__(self, lib: Library, instrument: instrument.Instrument, config: FitConfig = FitConfig()):
        self.config = config
        self.lib = templates.select_library(lib, config.ages, config.metals)
        self.instrument = instrument
        self._prepared: dict[float, templates.Prepared] = {}

    def templates_at(self, z: float) -> templates.Prepared:
        """Templates at the galaxy's resolution for redshift ``z`` (cached per z step)."""
        z_ref = round(round(z / self.config.z_step) * self.config.z_step, 6)
        if z_ref not in self._prepared:
            self._prepared[z_ref] = templates.prepare(
                self.lib,
                self.instrument,
                oversample=self.config.velscale_ratio,
                z_ref=z_ref,
                extra_sigma_kms=functools.partial(instrument.pixel_boxes_kms, velscale=self.config.velscale),
            )
        return self._prepared[z_ref]

    def lsf_fwhm_rest(self, z: float):
        """The galaxy's line-spread FWHM (Angstrom) at rest wavelength, for the gas lines."""
        inst = self.instrument
        sig_kms = np.hypot(inst.sigma_kms, instrument.pixel_boxes_kms(10.0**inst.loglam, self.config.velscale))
        lam_obs = 10.0**inst.loglam

        def fwhm(lam_rest):
            return instrument.FWHM_PER_SIGMA * np.interp(lam_rest * (1 + z), lam_obs, sig_kms) / C_KMS * lam_rest

        return fwhm

    def fit(self, spec_id: str, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, z: float) -> LabelResult:
        """Label one model-grid spectrum; a failure is a result with its message, never raised.

        A run that raises or does not converge is retried once from another start with
        pPXF's own bounded solver (``lsq_box``: scipy 1.12's NNLS can stop at its iteration
        limit on ill-conditioned problems); a run with a kinematic parameter on its bound is
        retried as :meth:`_next` says. Status ``failed`` (values NaN) or ``at_bound`` (the
        last run's values, kept for inspection) when the retries do not help; the message
        says what each run found.
        """
        try:
            data = self._prepare(
                spec_id, np.asarray(flux, float), np.asarray(ivar, float), np.asarray(mask) > 0, float(z)
            )
            return data if isinstance(data, LabelResult) else self._fit(spec_id, data)
        except Exception as exc:  # noqa: BLE001 - any pPXF failure is a recorded status
            return LabelResult(spec_id, message=f"{type(exc).__name__}: {exc}")

    def _fit(self, spec_id: str, data: _Data) -> LabelResult:
        """The runs of one spectrum (see :meth:`fit`)."""
        cfg = self.config
        attempt = _Attempt(cfg.sigma_start, GAS_FREE if cfg.gas_components else GAS_NONE, cfg.linear_method)
        errors, notes, pp, suspect = 0, [], None, None  # suspect: a free run with the stars far broader than the gas
        while attempt is not None:
            try:
                pp = self._run(data, attempt)
            except RuntimeError as exc:
                errors, pp = errors + 1, None
                notes.append(f"{attempt}: {type(exc).__name__}: {exc}")
                retry = dataclasses.replace(attempt, sigma_start=cfg.retry_sigma_start, linear_method="lsq_box")
                attempt = retry if errors == 1 else None
                continue
            bounded = self._at_bounds(pp, attempt)
            if bounded:
                notes.append(f"{attempt}: on a bound: {', '.join(bounded.values())}")
                if suspect is not None:
                    break
                attempt = self._next(attempt, float(np.atleast_2d(pp.sol)[0][1]) if 0 not in bounded else None)
                continue
            if suspect is None and attempt.gas == GAS_FREE and (why := self._broad_stars(pp)):
                notes.append(f"{attempt}: {why}")
                suspect, attempt = pp, dataclasses.replace(attempt, gas=GAS_TIED, sigma_start=cfg.sigma_start)
                continue
            if suspect is not None and (why := self._tied_rejected(pp, suspect)):
                notes.append(f"{attempt}: {why}")
                break
            return self._result(spec_id, data, pp, OK, "; ".join(notes))
        if suspect is not None:
            return self._result(spec_id, data, suspect, INCONSISTENT, "; ".join(notes))
        if pp is None:
            return LabelResult(spec_id, n_good=data.n_good, message="; ".join(notes))
        return self._result(spec_id, data, pp, AT_BOUND, "; ".join(notes))

    def _broad_stars(self, pp: _PPXF) -> str:
        """Why a free-gas fit's stars are suspect ('' if they are not): a stellar sigma of at
        least ``sigma_suspect`` with a detected gas component (see :meth:`_at_bounds`) below
        ``gas_sigma_ratio`` of it. Real galaxies that broad are massive and their gas is
        about as broad; in a star-forming dwarf it is template mismatch or unfitted emission
        that the stars smooth away (1176-52791-0591: 628 km/s, gas 51 km/s, SDSS 19 km/s)."""
        cfg = self.config
        sol = np.atleast_2d(pp.sol)
        if len(sol) < 2 or not sol[0][1] >= cfg.sigma_suspect:
            return ""
        detected = pp.gas_flux > cfg.line_snr * pp.gas_flux_error
        gas_k = pp.component[pp.gas_component]
        narrow = [k for k in range(1, len(sol)) if np.any(detected[gas_k == k])]
        if not any(sol[k][1] < cfg.gas_sigma_ratio * sol[0][1] for k in narrow):
            return ""
        return f"stellar sigma >= {cfg.sigma_suspect:g} km/s, detected gas under {cfg.gas_sigma_ratio:g} of it"

    def _tied_rejected(self, tied: _PPXF, free: _PPXF) -> str:
        """Why the tied fit after a suspect free one (:meth:`_broad_stars`) is not the label
        ('' if it is): its stars still at ``sigma_suspect`` or more, or a chi2/DOF more than
        ``tied_chi2_tol`` above the free fit's (the data then want the broad stars, which the
        narrow gas contradicts: status ``inconsistent``, the free fit's values kept)."""
        cfg = self.config
        sigma, excess = float(np.atleast_2d(tied.sol)[0][1]), tied.chi2 / free.chi2 - 1
        if sigma >= cfg.sigma_suspect:
            return f"stellar sigma still >= {cfg.sigma_suspect:g} km/s"
        if excess > cfg.tied_chi2_tol:
            return f"chi2/DOF more than {100 * cfg.tied_chi2_tol:g}% above the free fit's"
        return ""

    def _prepare(
        self, spec_id: str, flux: np.ndarray, ivar: np.ndarray, bad: np.ndarray, z: float
    ) -> _Data | LabelResult:
        """The spectrum log-rebinned at rest at ``velscale``, or why it cannot be fitted."""
        cfg = self.config
        if not (math.isfinite(z) and z > -0.01):
            return LabelResult(spec_id, message=f"redshift {z} is not usable")
        bad = bad | ~(ivar > 0) | ~np.isfinite(flux)
        lam_rest = (F.GRID_START + F.GRID_STEP * np.arange(flux.size)) / (1 + z)
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
        good[[0, -1]] = False  # the first and last log pixels are partial
        n_good = int(good.sum())
        if n_good < cfg.min_good_fraction * galaxy.size:
            return LabelResult(spec_id, n_good=n_good, message=f"{n_good} of {galaxy.size} pixels usable")
        noise[~good] = np.median(noise[good])
        return _Data(galaxy, noise, good, ln_lam, z)

    def _gas_lines(self, data: _Data, prep: templates.Prepared) -> list[np.ndarray]:
        """pPXF's emission-line templates of each gas component (columns), with
        :data:`EXTRA_LINES` (``extra_lines``), without the lines that have less than
        ``min_line_fraction`` of their flux on fitted pixels.

        pPXF keeps a line whose pixels are all masked with a zero-weight equality constraint,
        which it imposes by rows weighted ~1e7 times the data: scipy 1.12's NNLS then stops
        at its iteration limit (0266-51630-0174: Halpha, [NII], [SII] and [OI] fall in 547
        masked pixels). A line mostly masked is not measured either: its wings alone would
        set its flux, freely trading with the stellar Balmer absorption.
        """
        lam_gal = np.exp(data.ln_lam)
        fwhm = self.lsf_fwhm_rest(data.z)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the lines it makes
            gas, names, _ = ppxf_util.emission_lines(
                prep.ln_lam, [lam_gal[0], lam_gal[-1]], fwhm, tie_balmer=False, limit_doublets=False, vacuum=True
            )
        if self.config.extra_lines:
            extra = {n: w for n, w in EXTRA_LINES.items() if lam_gal[0] < w < lam_gal[-1]}
            if extra:
                gas = np.column_stack([gas, ppxf_util.gaussian(prep.ln_lam, np.array(list(extra.values())), fwhm)])
                names = np.append(names, list(extra))
        good = np.interp(prep.ln_lam, data.ln_lam, data.good.astype(float), left=0.0, right=0.0) > 0.5
        fitted = gas[good].sum(0) >= self.config.min_line_fraction * gas.sum(0)
        groups = [np.ones(len(names), bool)]
        if self.config.gas_components == 2:
            balmer = np.array([n.startswith("H") for n in names])
            groups = [balmer, ~balmer]
        return [gas[:, g & fitted] for g in groups if np.any(g & fitted)]

    def _run(self, data: _Data, attempt: _Attempt) -> _PPXF:
        """One pPXF fit with the paper's settings; raises RuntimeError if it did not converge."""
        cfg = self.config
        prep = self.templates_at(data.z)
        templates = prep.templates / prep.light  # each SSP normalised to 1 in the light window
        component, start = [0] * templates.shape[1], [[0.0, attempt.sigma_start]]
        for lines in self._gas_lines(data, prep) if attempt.gas in (GAS_FREE, GAS_TIED) else []:
            templates = np.column_stack([templates, lines])
            component += [len(start)] * lines.shape[1]
            start.append([0.0, cfg.gas_sigma_start])
        n, component = len(start), np.array(component)
        bounds = [[[-cfg.vel_max, cfg.vel_max], [SIGMA_MIN_PIX * cfg.velscale, cfg.sigma_max]]] * n
        if n == 1:  # pPXF takes one component's lists unnested
            start, bounds = start[0], bounds[0]
        tied = [["", ""]] + [["p[0]", "p[1]"]] * (n - 1) if attempt.gas == GAS_TIED and n > 1 else None
        good = data.good
        if attempt.gas == GAS_MASKED:
            good = good & ppxf_util.determine_mask(data.ln_lam, np.exp(prep.ln_lam[[0, -1]]))
        pp = _PPXF(
            templates,
            data.galaxy,
            data.noise,
            cfg.velscale,
            start,
            bounds=bounds,
            tied=tied,
            moments=[2] * n,
            degree=-1,
            mdegree=0,
            lam=np.exp(data.ln_lam),
            lam_temp=np.exp(prep.ln_lam),
            velscale_ratio=cfg.velscale_ratio,
            reddening=cfg.ebv_start * R_V,
            component=component,
            gas_component=component > 0 if n > 1 else None,
            goodpixels=np.flatnonzero(good),
            quiet=True,
            linear_method=attempt.linear_method,
        )
        if pp.status <= 0:
            raise RuntimeError(f"pPXF status {pp.status} (not converged)")
        return pp

    def _at_bounds(self, pp: _PPXF, attempt: _Attempt) -> dict[int, str]:
        """The free kinematic parameters within ``bound_tol`` of a bound: {component: text}.

        A gas component none of whose lines is detected (flux > ``line_snr`` times its
        error) is left out: its kinematics are not measured (in a passive galaxy the noise
        puts unresolved "lines" at the lower sigma bound, harmless to the stellar fit).
        """
        cfg = self.config
        sol = np.atleast_2d(pp.sol)
        lo, hi = SIGMA_MIN_PIX * cfg.velscale + cfg.bound_tol, cfg.sigma_max - cfg.bound_tol
        out = {}
        for k in range(1 if attempt.gas == GAS_TIED else len(sol)):
            if k and not np.any((pp.gas_flux > cfg.line_snr * pp.gas_flux_error)[pp.component[pp.gas_component] == k]):
                continue
            v, s = sol[k][:2]
            text = [f"V {math.copysign(cfg.vel_max, v):+g}"] * (abs(v) > cfg.vel_max - cfg.bound_tol)
            text += [f"sigma {round(SIGMA_MIN_PIX * cfg.velscale if s <= lo else cfg.sigma_max, 2):g}"] * (
                not lo < s < hi
            )
            if text:
                out[k] = f"{'stellar' if k == 0 else f'gas {k}'} {' and '.join(text)} km/s"
        return out

    def _next(self, attempt: _Attempt, stellar_sigma: float | None) -> _Attempt | None:
        """The run after one with a parameter on its bound: free gas -> gas tied to the stars
        -> lines masked (a runaway gas component takes up a template mismatch as broad
        "lines" and can drag the stars along); without gas, one run from the other start.
        A retry starts from ``stellar_sigma`` (km/s, the stars' sigma when they were not on
        a bound: fewer iterations) or else from ``retry_sigma_start``. None: nothing left."""
        start = stellar_sigma or self.config.retry_sigma_start
        if attempt.gas == GAS_NONE:
            return None if attempt.sigma_start == start else dataclasses.replace(attempt, sigma_start=start)
        after = {GAS_FREE: GAS_TIED, GAS_TIED: GAS_MASKED}
        return dataclasses.replace(attempt, gas=after[attempt.gas], sigma_start=start) if attempt.gas in after else None

    def _result(self, spec_id: str, data: _Data, pp: _PPXF, status: str, message: str) -> LabelResult:
        """The light-weighted labels of a converged fit and their formal errors."""
        prep = self.templates_at(data.z)
        n_stars = prep.templates.shape[1]
        sol, err = (pp.sol[0], pp.error[0]) if np.ndim(pp.sol) == 2 else (pp.sol, pp.error)
        inflate = math.sqrt(max(pp.chi2, 0.0))
        w = pp.weights[:n_stars]
        if not w.sum() > 0:
            return LabelResult(
                spec_id, chi2=float(pp.chi2), n_good=pp.goodpixels.size, message="all stellar weights are zero"
            )
        cov = _weights_covariance(pp, n_stars)
        age, age_err = _weighted_mean(w, np.repeat(np.log10(prep.ages * 1e9), prep.metals.size), cov)
        mh, mh_err = _weighted_mean(w, np.tile(prep.metals, prep.ages.size), cov)
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
            n_good=pp.goodpixels.size,
            status=status,
            message=message,
        )


class _PPXF(ppxf):
    """pPXF keeping the formal error of the stellar reddening (pPXF returns only the
    kinematic errors; the dust parameters follow the kinematics and mdegree in ``perror``)."""

    def format_output(self, params, perror):
        p = int(np.sum(self.moments)) + self.mdegree * self.nspec
        self.reddening_error = float(perror[p]) if self.reddening is not None else math.nan
        super().format_output(params, perror)


def _weights_covariance(pp: ppxf, n_stars: int) -> np.ndarray:
    """Covariance of the stellar weights: the linear problem restricted to non-zero weights."""
    cov = np.zeros((n_stars, n_stars))
    active = np.flatnonzero(pp.weights > 0)
    design = pp.matrix[: pp.npix][pp.goodpixels][:, active] / pp.noise[pp.goodpixels, None]
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
