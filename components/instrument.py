"""The instrument: SDSS's spectrograph as the pipeline sees it, and the physical constants.

One home for what every stage must agree on about SDSS: its coadd grid (log10 lambda =
3.5800 + 1e-4 i, vacuum, 69 km/s per pixel), the r band where S/N is quoted, the pixel-mask
bits that make a pixel bad, and :class:`Instrument`, the sky, line-spread function and
throughput measured from real spec files (for the simulator and the labeller). Constants come
from astropy.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from astropy import constants

from stellarpop.transforms import features as F

C_KMS = float(constants.c.to_value("km/s"))  # 299792.458
FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))

# SDSS's coadd grid.
SDSS_LOGLAM0 = 3.5800  # log10(Angstrom) of the first pixel
SDSS_DLOGLAM = 1e-4
SDSS_NPIX = 3841  # 3801.9-9203.9 A
SDSS_VELSCALE = C_KMS * math.log(10) * SDSS_DLOGLAM  # 69.03 km/s per SDSS pixel

# r band of the SDSS filter set (observed Angstrom): where S/N_r is measured when a file does
# not carry SN_MEDIAN, and where the simulator sets a mock's S/N.
R_BAND = (5600.0, 6800.0)

# SDSS spectro pixel-mask bits (SPPIXMASK) that make a pixel unusable: FULLREJECT, NOSKY,
# BRIGHTSKY, NODATA. The same choice as SDSS's own quasar catalogue readers; configurable.
SPPIXMASK = {"FULLREJECT": 18, "NOSKY": 22, "BRIGHTSKY": 23, "NODATA": 24}
DEFAULT_BAD_BITS = tuple(SPPIXMASK.values())


def sdss_loglam() -> np.ndarray:
    """SDSS's native coadd grid: log10(lambda / A) = 3.5800 + 1e-4 i (vacuum)."""
    return SDSS_LOGLAM0 + SDSS_DLOGLAM * np.arange(SDSS_NPIX)


def bad_pixels(ivar: np.ndarray, and_mask: np.ndarray | None, bad_bits=DEFAULT_BAD_BITS) -> np.ndarray:
    """True where ivar <= 0, a value is non-finite, or any of ``bad_bits`` is set."""
    bad = ~(ivar > 0)
    if and_mask is not None and len(bad_bits):
        bits = np.bitwise_or.reduce([1 << b for b in bad_bits])
        bad |= (np.asarray(and_mask).astype(np.int64) & bits) != 0
    return bad


def pixel_boxes_kms(lam_obs: np.ndarray, velscale: float = SDSS_VELSCALE) -> np.ndarray:
    """Sigma (km/s) of the pixel boxes a model-grid spectrum has been through, at observed
    wavelength ``lam_obs``: SDSS's native 69 km/s pixel, the 1-A model-grid pixel and the
    log-rebinned pixel of the fit (``velscale``). Measured on noiseless mocks: leaving out
    the last biases sigma by +2 km/s at 80-150 km/s; with all three the bias is < 0.3 km/s."""
    native = SDSS_VELSCALE / math.sqrt(12)
    grid = F.GRID_STEP / math.sqrt(12) / np.asarray(lam_obs, float) * C_KMS
    return np.sqrt(native**2 + grid**2 + velscale**2 / 12)


@dataclass(frozen=True)
class Instrument:
    """SDSS as its files record it: the coadd grid, a sky spectrum, the LSF width and the
    relative throughput (see :meth:`from_files`)."""

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
        from stellarpop.components.spectra import pixel_edges  # spectra imports this module

        return pixel_edges(10.0**self.loglam)

    @functools.cached_property
    def sky_lines(self) -> np.ndarray:
        """The sky's emission lines: sky minus its 51-pixel running mean, clipped at 0."""
        return np.clip(self.sky - np.convolve(self.sky, np.ones(51) / 51, mode="same"), 0, None)

    @functools.cached_property
    def bright_sky(self) -> np.ndarray:
        """Pixels on the strongest 0.5% of sky-line flux: flagged BRIGHTSKY, as SDSS does."""
        return self.sky_lines > np.percentile(self.sky_lines, 99.5)

    @classmethod
    def from_files(cls, paths: Sequence[str] | None = None) -> "Instrument":
        """Sky, line-spread width and relative throughput of real SDSS spec files (default:
        the ones bundled with ppxf), on SDSS's grid.

        The throughput follows from the noise: counts are flux times throughput T, so the
        variance is (flux + sky) / T up to a constant, and T ~ (flux + sky) * ivar. Its median
        over files, smoothed over 51 pixels and normalised to 1 in the r band, carries the
        blue fall-off and the dichroic step near 5900 A. The sky is SDSS's sky model per
        fibre (1e-17 erg/s/cm^2/A), the LSF its WDISP (sigma, pixels).
        """
        from stellarpop.components.readers import sdss  # I/O; the readers import this module

        grid = sdss_loglam()
        wave = 10.0**grid
        r_band = (wave > R_BAND[0]) & (wave < R_BAND[1])
        skies, wdisps, thrus = [], [], []
        for path in list(paths) if paths else sdss.bundled_spectra():
            cols = sdss.coadd_columns(str(path), ("loglam", "sky", "wdisp"))
            good = (cols["wdisp"] > 0) & (cols["ivar"] > 0)
            loglam = cols["loglam"].astype(float)[good]
            skies.append(np.interp(grid, loglam, cols["sky"][good]))
            wdisps.append(np.interp(grid, loglam, cols["wdisp"][good]))
            counts = (cols["flux"] + cols["sky"])[good] * cols["ivar"][good]
            thru = np.convolve(np.interp(grid, loglam, counts), np.ones(51) / 51, mode="same")
            thrus.append(thru / np.median(thru[r_band]))
        thru = np.median(thrus, axis=0)
        thru[:25], thru[-25:] = thru[25], thru[-26]  # the running mean's edges
        return cls(grid, np.median(skies, axis=0), np.median(wdisps, axis=0), np.clip(thru, 0.05, None))
