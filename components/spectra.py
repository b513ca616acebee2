"""The Spectrum record, resampling to the model grid, validation and the paper's selection.

Pure numpy: nothing here reads or writes files (``readers`` does). Every path into the
network (SDSS files, generic tables, simulated spectra, spectra sent for prediction) goes
through :func:`prepare` with the run's :class:`Preparation`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from stellarpop.components.instrument import R_BAND, pixel_edges
from stellarpop.schema import features as F
from stellarpop.schema.preparation import Preparation, Selection


class SpectrumError(ValueError):
    """A spectrum that cannot be used; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Spectrum:
    """One spectrum with its metadata.

    Attributes
    ----------
    wave : ndarray, shape (L,), Angstrom, vacuum, observed frame, strictly increasing
    flux : ndarray, shape (L,), 1e-17 erg/s/cm^2/A
    ivar : ndarray, shape (L,), inverse variance of ``flux``; 0 marks a bad pixel
    bad : ndarray, shape (L,), bool; True where the pixel must not be used
    """

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    bad: np.ndarray
    spec_id: str
    source_file: str = ""
    object_id: str = ""
    plate: int = -1
    mjd: int = -1
    fiber: int = -1
    ra: float = math.nan
    dec: float = math.nan
    z: float = math.nan
    z_err: float = math.nan
    zwarning: int = 0
    spec_class: str = ""
    subclass: str = ""
    bpt_class: str = ""
    sdss_vdisp: float = 0.0
    sdss_vdisp_err: float = 0.0
    snr_r: float = math.nan  # from the file when it has one, else computed
    coverage: float = 1.0  # fraction of the model grid covered (set by to_model_grid)
    selection: tuple[str, ...] = field(default_factory=tuple)  # failed cuts

    def replace(self, **changes) -> Spectrum:
        return dataclasses.replace(self, **changes)


class Overlap:
    """Exact overlaps between input and output pixels, for flux-conserving rebinning.

    The overlap is cut into segments, each inside one input pixel ``i_in`` and one output
    pixel ``i_out``, of ``length`` (Angstrom). Computed once per spectrum and applied to
    flux, variance and the bad-pixel indicator.
    """

    def __init__(self, in_edges: np.ndarray, out_edges: np.ndarray):
        self.n_out = len(out_edges) - 1
        lo, hi = max(in_edges[0], out_edges[0]), min(in_edges[-1], out_edges[-1])
        cuts = np.union1d(in_edges, out_edges) if hi > lo else np.array([])
        cuts = cuts[(cuts >= lo) & (cuts <= hi)]
        self.length = np.diff(cuts)
        mid = 0.5 * (cuts[1:] + cuts[:-1])
        self.i_in = np.searchsorted(in_edges, mid) - 1
        self.i_out = np.searchsorted(out_edges, mid) - 1
        self.covered = np.bincount(self.i_out, self.length, minlength=self.n_out)

    def rebin(self, values: np.ndarray, power: int = 1) -> np.ndarray:
        """``sum_i (overlap_i ** power) * values_i`` per output pixel: with ``power=1`` and a
        flux density, the integral over the output pixel; with ``power=2`` and a variance,
        the variance of that integral."""
        return np.bincount(self.i_out, self.length**power * values[self.i_in], minlength=self.n_out)


def _uniform_edges(grid: np.ndarray) -> np.ndarray:
    step = grid[1] - grid[0]
    return np.concatenate((grid - step / 2, [grid[-1] + step / 2]))


def model_grid_overlap(wave: np.ndarray) -> Overlap:
    """The overlap of a native grid with the model grid, for many spectra on one grid."""
    return Overlap(pixel_edges(wave), _uniform_edges(F.model_grid()))


def to_model_grid(spec: Spectrum, grid: np.ndarray | None = None, overlap: Overlap | None = None) -> Spectrum:
    """Resample a spectrum onto the model grid, conserving flux.

    Bad input pixels are first interpolated over (linearly, from good neighbours), so that
    the flux stays smooth for the network; every output pixel that any bad input pixel
    touches is masked and gets ivar = 0. Grid pixels outside the input's coverage are
    padded with the nearest covered value and masked; ``coverage`` records the fraction of
    the grid that is fully covered.

    Parameters
    ----------
    spec : Spectrum on its native grid
    grid : ndarray, shape (M,), uniform pixel centres; default the model grid (5100 pixels)
    overlap : optional :func:`model_grid_overlap` of ``spec.wave`` (for many spectra on one grid)

    Returns
    -------
    Spectrum on ``grid`` with ``bad`` = the output mask.
    """
    grid = F.model_grid() if grid is None else grid
    step = grid[1] - grid[0]

    good = ~spec.bad
    if good.sum() < 2:
        raise SpectrumError("no_good_pixels", "fewer than two usable pixels")
    flux = spec.flux.astype(np.float64, copy=True)
    flux[~good] = np.interp(spec.wave[~good], spec.wave[good], flux[good])
    var = np.zeros_like(flux)
    var[good] = 1.0 / spec.ivar[good]

    overlap = overlap or Overlap(pixel_edges(spec.wave), _uniform_edges(grid))
    covered = overlap.covered
    flux_int = overlap.rebin(flux)
    var_int = overlap.rebin(var, power=2)
    bad_len = overlap.rebin((~good).astype(np.float64))

    full = covered >= step * (1 - 1e-9)
    some = covered > 0
    out_flux = np.zeros(len(grid))
    out_flux[some] = flux_int[some] / covered[some]
    out_ivar = np.zeros(len(grid))
    ok = full & (bad_len == 0) & (var_int > 0)
    out_ivar[ok] = covered[ok] ** 2 / var_int[ok]
    mask = ~ok
    if not some.any():
        raise SpectrumError("no_overlap", "spectrum does not overlap the model grid")
    # Pad uncovered pixels with the nearest covered value.
    idx = np.flatnonzero(some)
    out_flux[: idx[0]] = out_flux[idx[0]]
    out_flux[idx[-1] + 1 :] = out_flux[idx[-1]]
    return spec.replace(
        wave=grid,
        flux=out_flux.astype(np.float32),
        ivar=out_ivar.astype(np.float32),
        bad=mask,
        coverage=float(full.mean()),
    )


def snr_in_band(spec: Spectrum, band: tuple[float, float] = R_BAND) -> float:
    """Median S/N per pixel over good pixels in a wavelength band (observed frame)."""
    sel = (spec.wave >= band[0]) & (spec.wave <= band[1]) & ~spec.bad
    if not sel.any():
        return 0.0
    return float(np.median(spec.flux[sel] * np.sqrt(spec.ivar[sel])))


def norm_window(centre: float = F.NORM_CENTRE, half_width: float = F.NORM_HALF_WIDTH):
    return centre - half_width, centre + half_width


def normalisation(
    flux: np.ndarray,
    mask: np.ndarray,
    grid: np.ndarray,
    centre: float = F.NORM_CENTRE,
    half_width: float = F.NORM_HALF_WIDTH,
) -> np.ndarray:
    """Median flux of unmasked pixels in the normalisation window (numpy reference).

    The pipeline does this inside the tf.Transform graph; this reference defines what that
    graph must compute and lets ingest reject spectra that cannot be normalised.

    Parameters
    ----------
    flux : ndarray, shape (..., M)
    mask : ndarray, shape (..., M), nonzero where masked
    grid : ndarray, shape (M,), Angstrom

    Returns
    -------
    ndarray, shape (...), NaN where no unmasked pixel lies in the window
    """
    lo, hi = norm_window(centre, half_width)
    in_win = (grid >= lo) & (grid <= hi)
    vals = np.where(np.asarray(mask, bool) | ~in_win, np.nan, flux)
    with warnings.catch_warnings():  # all-NaN rows are expected: they give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(vals, axis=-1)


def validate(spec: Spectrum, min_coverage: float = 0.8, min_good: float = 0.5) -> None:
    """Raise :class:`SpectrumError` for a spectrum on its native grid that cannot be used."""
    n_bad_flux = int((~np.isfinite(spec.flux)).sum())
    if n_bad_flux:
        raise SpectrumError("nonfinite_flux", f"flux has {n_bad_flux} non-finite values (NaN/inf)")
    n_bad_ivar = int((~np.isfinite(spec.ivar)).sum() + (spec.ivar < 0).sum())
    if n_bad_ivar:
        raise SpectrumError("bad_ivar", f"ivar has {n_bad_ivar} negative or non-finite values")
    if len(spec.wave) < 2 or not np.all(np.diff(spec.wave) > 0):
        raise SpectrumError("bad_wavelength", "wavelengths are not strictly increasing")
    if not (spec.ivar > 0).any():
        raise SpectrumError("zero_ivar", "ivar is zero everywhere")
    lo, hi = F.GRID_START - 0.5, F.GRID_STOP - 0.5
    w0, w1 = float(spec.wave[0]), float(spec.wave[-1])
    cover = max(0.0, min(w1, hi) - max(w0, lo)) / (hi - lo)
    if cover < min_coverage:
        raise SpectrumError(
            "wavelength_coverage",
            f"covers {w0:.0f}-{w1:.0f} A, {100 * cover:.0f}% of the {F.GRID_START:.0f}-"
            f"{F.GRID_STOP:.0f} A model grid (need {100 * min_coverage:.0f}%); "
            "not an SDSS-like optical spectrum in Angstrom?",
        )
    in_grid = (spec.wave >= lo) & (spec.wave <= hi)
    frac_good = float((~spec.bad[in_grid]).mean())
    if frac_good < min_good:
        raise SpectrumError(
            "too_many_bad_pixels",
            f"only {100 * frac_good:.0f}% of pixels in the model range are usable",
        )


def check_normalisable(grid_spec: Spectrum, centre: float, half_width: float) -> float:
    """The normalisation flux of a spectrum on the model grid; error if it is not positive."""
    norm = float(normalisation(grid_spec.flux, grid_spec.bad, grid_spec.wave, centre, half_width))
    lo, hi = norm_window(centre, half_width)
    if not np.isfinite(norm):
        raise SpectrumError("norm_window_masked", f"no usable pixel in the {lo:.0f}-{hi:.0f} A normalisation window")
    if norm <= 0:
        raise SpectrumError(
            "norm_flux_not_positive",
            f"median flux {norm:.3g} in the {lo:.0f}-{hi:.0f} A normalisation window is zero or negative",
        )
    return norm


def failed_cuts(spec: Spectrum, sel: Selection) -> tuple[str, ...]:
    """Names of the selection cuts a spectrum fails (empty: it is in the paper's sample)."""
    failed = []
    if not (np.isfinite(spec.z) and sel.z_min <= spec.z <= sel.z_max):
        failed.append("z_range")
    if sel.zwarning_zero and spec.zwarning != 0:
        failed.append("zwarning")
    if not (np.isfinite(spec.snr_r) and spec.snr_r >= sel.snr_r_min):
        failed.append("snr_r")
    if sel.classes and spec.spec_class and spec.spec_class.upper() not in sel.classes:
        failed.append("class")
    return tuple(failed)


def describe_cuts(spec: Spectrum, sel: Selection) -> str:
    """Human-readable reason for the failed cuts of a spectrum."""
    words = {
        "z_range": f"z={spec.z:.4g} outside {sel.z_min}-{sel.z_max}",
        "zwarning": f"ZWARNING={spec.zwarning}",
        "snr_r": f"S/N_r={spec.snr_r:.3g} < {sel.snr_r_min}",
        "class": f"CLASS={spec.spec_class} not in {','.join(sel.classes)}",
    }
    return "; ".join(words[c] for c in spec.selection)


def prepare(spec: Spectrum, settings: Preparation = Preparation(), overlap: Overlap | None = None) -> Spectrum:
    """The one path from a native spectrum to the model grid, for every source of spectra.

    Validates the native spectrum, resamples it onto the model grid, checks that it can be
    normalised, and records the paper's selection cuts it fails in ``selection`` (empty: in
    the sample); what to do with a spectrum outside the sample is the caller's choice.
    ``overlap``: the native grid's :func:`model_grid_overlap`, for many spectra on one grid.

    Raises
    ------
    SpectrumError
        The spectrum cannot be used at all (its ``reason`` says why).
    """
    validate(spec, min_coverage=settings.min_coverage)
    grid = to_model_grid(spec, overlap=overlap)
    check_normalisable(grid, settings.norm_centre, settings.norm_half_width)
    return grid.replace(selection=failed_cuts(grid, settings.selection))
