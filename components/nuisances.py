"""What real SDSS spectra have and plain mocks lack: seeded, recorded simulator nuisances.

:class:`Nuisances` is the configuration (every amplitude 0 = off, the default: the mocks
are then exactly those made before this module existed). :func:`draw` turns it into one
spectrum's :class:`Draw` (the realised values, recorded with the mock) from generators the
caller derives from the seed; the functions below apply a draw (pure: arrays in, arrays
out). The options, and where :mod:`~stellarpop.components.simulate` applies them:

- flux calibration: a smooth multiplicative error per spectrum plus one per plate, applied
  to flux, noise and sky together (as SDSS's calibration vector is), so S/N is unchanged;
- LSF: an extra Gaussian broadening in quadrature (stars and gas), constant in velocity;
- wavelength solution: a shift and a stretch of the pixels' true wavelengths;
- sky subtraction: residuals at the sky lines (scale error and a sub-pixel offset of the
  sky model, which gives SDSS's P-Cygni-like residuals) and in the sky continuum;
- masked gaps: a contiguous range where a CCD region was rejected (ivar 0, flux 0);
- template mismatch: each SSP multiplied by a smooth function and its absorption features
  deepened or weakened, renormalised so that the light-weighted truth is unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from stellarpop.components.instrument import C_KMS, SPPIXMASK

TEMPLATE_ORDER = 3  # Legendre orders 1..3 of the smooth SSP perturbation (continuum shape)
DEPTH_WIDTH_KMS = 6000.0  # ~100 A at 5000 A: structure narrower than this counts as "lines"


@dataclass(frozen=True)
class Nuisances:
    """Simulator nuisances, each drawn per spectrum; an amplitude of 0 turns it off.

    Amplitudes are rms values of Gaussian draws unless stated otherwise.
    """

    calib_rms: float = 0.0  # rms over the spectrum of the per-spectrum calibration error
    calib_plate_rms: float = 0.0  # the same for the component shared by a plate
    calib_order: int = 5  # Legendre orders 1..calib_order in log-lambda (~1000 A wiggles)
    lsf_extra_kms: float = 0.0  # extra LSF sigma, km/s: sigma_extra^2 uniform in [0, this^2]
    wave_shift_kms: float = 0.0  # shift of the wavelength solution
    wave_stretch_kms: float = 0.0  # stretch: the shift's change from the centre to either end
    sky_line_rms: float = 0.0  # sky-line residual as a fraction of the sky-line flux
    sky_shift_pix: float = 0.0  # offset (pixels) of the subtracted sky model: P-Cygni residuals
    sky_cont_rms: float = 0.0  # sky-continuum residual as a fraction of the sky continuum
    gap_prob: float = 0.0  # probability of one masked gap
    gap_range: tuple[float, float] = (100.0, 1000.0)  # gap length, A (uniform)
    template_rms: float = 0.0  # rms of each SSP's smooth multiplicative perturbation
    line_depth_rms: float = 0.0  # rms fractional change of each SSP's absorption features

    @property
    def active(self) -> bool:
        """Whether any option is on (off: no draw is made nor recorded)."""
        return self != dataclasses.replace(Nuisances(), calib_order=self.calib_order, gap_range=self.gap_range)

    @classmethod
    def realistic(cls) -> Nuisances:
        """Amplitudes like SDSS's, for training (each a round, deliberately generous value).

        Calibration: 3% per spectrum and 3% per plate, which with the simulator's own ~1.6%
        give ~4.5% rms, SDSS's spectrophotometric accuracy of about 4%. LSF: sigma up to
        +20% (60 -> 72 km/s, +10% on average); only broadening can be simulated (the
        templates are at SDSS's recorded LSF), so the nominal LSF is the narrow end.
        Wavelengths: 7 km/s shift and 5 km/s stretch (~0.1 pixel). Sky: 5% of the line
        flux, 0.05 pixel offset (P-Cygni residuals of a few per cent of a line's peak) and
        1% of the continuum, which matter at low S/N. Gaps: one spectrum in ten, 100-1300 A
        (the real ones: 840 A in 0266-51630-0174, 1212 A in another). Templates: 3% smooth
        and 5% line depth, the order of the differences between SSP libraries and of
        alpha/Fe and IMF effects on line strengths.
        """
        return cls(
            calib_rms=0.03,
            calib_plate_rms=0.03,
            lsf_extra_kms=40.0,
            wave_shift_kms=7.0,
            wave_stretch_kms=5.0,
            sky_line_rms=0.05,
            sky_shift_pix=0.05,
            sky_cont_rms=0.01,
            gap_prob=0.1,
            gap_range=(100.0, 1300.0),
            template_rms=0.03,
            line_depth_rms=0.05,
        )

    @classmethod
    def coerce(cls, spec: Nuisances | str | dict | None) -> Nuisances:
        """A Nuisances from a config value: None/'none' (off), 'realistic', or a mapping of
        fields with an optional ``preset`` ('none' or 'realistic') that the fields override."""
        if isinstance(spec, cls):
            return spec
        spec = {"preset": spec or "none"} if not isinstance(spec, dict) else dict(spec)
        presets = {"none": cls, "realistic": cls.realistic}
        preset = spec.pop("preset", "none")
        if preset not in presets:
            raise ValueError(f"nuisances preset is 'none' or 'realistic', not {preset!r}")
        return dataclasses.replace(
            presets[preset](), **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        )


# Spectra a model trained with 'realistic' should not trust (and one it should): nuisances far
# beyond training's, for the out-of-domain score's test and benchmark (pipeline/training/calibration.py).
STRESS = {
    "in domain (realistic)": "realistic",
    "calibration errors 25%+15%": {"preset": "realistic", "calib_rms": 0.25, "calib_plate_rms": 0.15},
    "sky-dominated": {"preset": "realistic", "sky_line_rms": 1.0, "sky_cont_rms": 0.3, "sky_shift_pix": 0.5},
    "template mismatch x7": {"preset": "realistic", "template_rms": 0.2, "line_depth_rms": 0.4},
}


@dataclass(frozen=True)
class Draw:
    """One spectrum's nuisances as realised (recorded with the mock; zeros are off)."""

    calib: tuple[float, ...] = ()  # Legendre coefficients (orders 1..) of the spectrum's own error
    calib_plate: tuple[float, ...] = ()  # the same for its plate's
    lsf_kms: float = 0.0  # extra LSF sigma
    shift_kms: float = 0.0
    stretch_kms: float = 0.0
    sky: tuple[float, float, float] = (0.0, 0.0, 0.0)  # line fraction, offset (pixels), continuum fraction
    gap: tuple[float, float] = (0.0, 0.0)  # observed A; (0, 0): none
    template_seed: int = 0  # seed of the SSP perturbations (see template_coefficients)
    template_rms: float = 0.0
    line_depth_rms: float = 0.0

    @property
    def perturbs_templates(self) -> bool:
        return bool(self.template_rms or self.line_depth_rms)


@functools.lru_cache(maxsize=8)
def legendre_basis(n: int, order: int) -> np.ndarray:
    """P_1..P_order on n points spread evenly over [-1, 1], (n, order), read-only (cached:
    a spectrum's grid is the same for every spectrum)."""
    basis = np.polynomial.legendre.legvander(np.linspace(-1, 1, n), order)[:, 1:]
    basis.flags.writeable = False
    return basis


def legendre_scales(order: int) -> np.ndarray:
    """Per-order standard deviations (orders 1..order) that give a Legendre sum of expected
    rms 1 over [-1, 1], spread evenly over the orders (rms^2 = sum c_j^2 / (2j + 1))."""
    return np.sqrt((2 * np.arange(1, order + 1) + 1) / order)


def draw(
    nuis: Nuisances, rng: np.random.Generator, plate_rng: np.random.Generator, wave_range: tuple[float, float]
) -> Draw:
    """One spectrum's nuisances.

    ``rng`` is the spectrum's own nuisance stream, ``plate_rng`` its plate's (the same for
    every spectrum of the plate); ``wave_range`` (A) is the observed range the gap lies in.
    Every quantity is drawn whatever the amplitudes, in a fixed order, so that turning one
    option on or off does not change the others' realisations.
    """
    scales = legendre_scales(nuis.calib_order)
    calib = nuis.calib_rms * scales * rng.standard_normal(nuis.calib_order)
    lsf = nuis.lsf_extra_kms * math.sqrt(rng.random())  # sigma_total^2 uniform in its range
    shift, stretch = rng.standard_normal(2) * (nuis.wave_shift_kms, nuis.wave_stretch_kms)
    sky = rng.standard_normal(3) * (nuis.sky_line_rms, nuis.sky_shift_pix, nuis.sky_cont_rms)
    has_gap, length, where = rng.random(3)
    length = nuis.gap_range[0] + length * (nuis.gap_range[1] - nuis.gap_range[0])
    lo = wave_range[0] + where * (wave_range[1] - wave_range[0] - length)
    gap = (float(lo), float(lo + length)) if has_gap < nuis.gap_prob else (0.0, 0.0)
    seed = int(rng.integers(2**63))
    plate = nuis.calib_plate_rms * scales * plate_rng.standard_normal(nuis.calib_order)
    return Draw(
        calib=tuple(map(float, calib)),
        calib_plate=tuple(map(float, plate)),
        lsf_kms=float(lsf),
        shift_kms=float(shift),
        stretch_kms=float(stretch),
        sky=tuple(map(float, sky)),
        gap=gap,
        template_seed=seed,
        template_rms=nuis.template_rms,
        line_depth_rms=nuis.line_depth_rms,
    )


# --------------------------------------------------------------------------------------------
# The observed spectrum
# --------------------------------------------------------------------------------------------
def _unit(at: np.ndarray, loglam: np.ndarray) -> np.ndarray:
    """log-lambda ``at`` mapped to [-1, 1] over the spectrum (its first and last pixel)."""
    return 2 * (at - loglam[0]) / (loglam[-1] - loglam[0]) - 1


def calibration(d: Draw, loglam: np.ndarray) -> np.ndarray:
    """The multiplicative calibration error, 1 + spectrum's + plate's Legendre series in x
    (log-lambda over the spectrum mapped to [-1, 1]; SDSS's pixels are even in it)."""
    coef = np.zeros(max(len(d.calib), len(d.calib_plate)))
    coef[: len(d.calib)] += d.calib
    coef[: len(d.calib_plate)] += d.calib_plate
    return 1 + legendre_basis(loglam.size, coef.size) @ coef


def observed_edges(d: Draw | None, edges: np.ndarray, loglam: np.ndarray) -> np.ndarray:
    """The true wavelengths (A) of the nominal pixel edges under a wavelength-solution error.

    A shift v (km/s, ``shift + stretch * x``, x in [-1, 1] over the spectrum) makes the
    pixel recorded at lambda see lambda * exp(-v/c): features appear redder by v.
    """
    if d is None or not (d.shift_kms or d.stretch_kms):
        return edges
    v = d.shift_kms + d.stretch_kms * _unit(np.log10(edges), loglam)
    return edges * np.exp(-v / C_KMS)


def sky_residual(d: Draw, sky: np.ndarray, sky_lines: np.ndarray) -> np.ndarray:
    """Sky-subtraction residual (flux units of ``sky``): a scale error of the lines, a
    sub-pixel offset of the sky model (lines' slope times the offset) and a continuum error."""
    lines, offset, cont = d.sky
    return lines * sky_lines + offset * np.gradient(sky_lines) + cont * (sky - sky_lines)


def gap_pixels(d: Draw, wave: np.ndarray) -> np.ndarray:
    """The pixels inside the draw's gap (none when it has none)."""
    return (wave >= d.gap[0]) & (wave <= d.gap[1]) if d.gap[1] > 0 else np.zeros(wave.size, bool)


def corrupt(d: Draw, flux, sigma, mask, model, sky, sky_lines, loglam):
    """Apply the observed-frame nuisances to a noisy spectrum.

    ``sky`` and ``sky_lines`` are the object's sky and its lines in flux units. The sky
    residual is added, then everything is multiplied by the calibration error (as SDSS's
    flux calibration vector scales the counts, their noise and the sky alike), then the gap
    is cut: flux 0, ivar 0 (``sigma`` inf) and NODATA in the mask, as SDSS's coadd leaves a
    range without good exposures. Returns new flux, sigma, mask, model and sky.
    """
    cal = calibration(d, loglam)
    flux = (flux + sky_residual(d, sky, sky_lines)) * cal
    sigma, model, sky = sigma * cal, model * cal, sky * cal
    gap = gap_pixels(d, 10.0**loglam)
    flux[gap], sigma[gap] = 0.0, np.inf
    mask = mask.copy()
    mask[gap] |= 1 << SPPIXMASK["NODATA"]
    return flux, sigma, mask, model, sky


# --------------------------------------------------------------------------------------------
# Template mismatch
# --------------------------------------------------------------------------------------------
def template_coefficients(d: Draw, n_templates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The SSP perturbations from the draw's seed: the Legendre coefficients (orders
    1..TEMPLATE_ORDER) of a smooth shape q(x) of expected rms 1, drawn per spectrum; each
    SSP's amplitude along it (rms ``template_rms``) and its line-depth change (rms
    ``line_depth_rms``), independent between SSPs. One shape per spectrum, scaled per SSP
    (not one per SSP): the mixture then needs one product more, not one per order."""
    rng = np.random.default_rng(d.template_seed)
    shape = legendre_scales(TEMPLATE_ORDER) * rng.standard_normal(TEMPLATE_ORDER)
    return shape, d.template_rms * rng.standard_normal(n_templates), d.line_depth_rms * rng.standard_normal(n_templates)


def depth_filter_size(velscale: float) -> int:
    """Width (pixels, odd) of the running mean whose residual holds the absorption features."""
    return int(DEPTH_WIDTH_KMS / velscale) // 2 * 2 + 1


@functools.lru_cache(maxsize=8)
def _window_terms(n_pix: int, first: int, last: int, size: int) -> tuple[slice, np.ndarray, np.ndarray]:
    """The pixels that the light of perturbed SSPs depends on, the window's indicator there
    and (indicator - S indicator): S's transpose is S (a symmetric running mean), so the
    window mean of S T is the mean of T weighted by S applied to the window."""
    win = np.zeros(n_pix)
    win[first : last + 1] = 1.0
    sl = slice(max(first - size, 0), last + size + 1)
    return sl, win[sl], (win - uniform_filter1d(win, size))[sl]


def mix_perturbed(
    templates_t: np.ndarray, light: np.ndarray, in_window: np.ndarray, velscale: float, weights: np.ndarray, d: Draw
) -> np.ndarray:
    """The mixture sum_k w_k' T_k' of perturbed SSPs (float64).

    T_k' = T_k (1 + a_k q(x)) + d_k (T_k - S T_k), with q, a_k and d_k from
    :func:`template_coefficients` (x: ln lambda mapped to [-1, 1]) and S a running mean over
    :data:`DEPTH_WIDTH_KMS`. The weights are w_k' = w_k light_k / light_k', light_k' the
    mean of T_k' over ``in_window`` (exact: the window means of q T_k and S T_k are linear
    in T_k), so each SSP's light, hence the light-weighted age and [M/H], is what it was:
    the truth is unchanged. ``templates_t`` is the library as (n_templates, n_pix); only
    the SSPs in the mixture are read, with three vector products (faster than one matrix
    product of this shape).
    """
    shape, amp, dep = template_coefficients(d, templates_t.shape[0])
    used = np.flatnonzero(weights)
    rows = templates_t[used]
    q = legendre_basis(templates_t.shape[1], TEMPLATE_ORDER) @ shape
    size = depth_filter_size(velscale)
    where = np.flatnonzero(in_window)
    sl, win, high = _window_terms(templates_t.shape[1], where[0], where[-1], size)
    # float32 like the library: the change of light is a few per cent, known to 1e-6 of it.
    probe = np.column_stack([q[sl] * win, high]).astype(np.float32)
    change = (rows[:, sl] @ probe / where.size * np.column_stack([amp[used], dep[used]])).sum(axis=1)
    w = weights[used] * light[used] / (light[used] + change)
    main, tilt, lines = ((w * v).astype(np.float32) @ rows for v in (1.0, amp[used], dep[used]))
    lines = lines.astype(float)
    return main + q * tilt + lines - uniform_filter1d(lines, size)
