"""The [NII] BPT diagram (Baldwin, Phillips & Terlevich 1981): the classes a galaxy's
emission lines put it in, the simulator's and the slices' vocabulary, and the class of a
measured spectrum from its four line fluxes (:func:`classify`).

Pure functions: the fluxes come from whoever measured them (the SDSS reader takes them from
a spec file's ``SPZLINE`` table, ``readers/sdss.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# passive: no measurable lines (the simulator's quiescent galaxies, unclassifiable spectra).
CLASSES = ("passive", "star-forming", "composite", "AGN")
PASSIVE = CLASSES[0]

# The four lines of the diagram, named as SDSS's spZline / SPZLINE tables name them
# (LINENAME; vacuum wavelengths 4862.68, 5008.24, 6564.61, 6585.27 A).
H_BETA = "H_beta"
OIII_5007 = "[O_III] 5007"
H_ALPHA = "H_alpha"
NII_6583 = "[N_II] 6583"
BPT_LINES = (H_BETA, OIII_5007, H_ALPHA, NII_6583)

# Brinchmann et al. (2004): a galaxy is classified only with S/N > 3 in all four lines.
MIN_LINE_SNR = 3.0


def kauffmann03(x):
    """The Kauffmann et al. (2003) star-forming upper limit in the [NII] BPT diagram."""
    return 0.61 / (x - 0.05) + 1.30


def kewley01(x):
    """The Kewley et al. (2001) maximum-starburst line."""
    return 0.61 / (x - 0.47) + 1.19


def bpt_region(log_nii_ha: float, log_oiii_hb: float) -> str:
    """star-forming / composite / AGN for a point of the [NII] BPT diagram.

    Star-forming below Kauffmann et al. (2003) (left of its asymptote, log [NII]/Halpha
    < 0.05), composite between it and Kewley et al. (2001) (left of log [NII]/Halpha =
    0.47), AGN above Kewley's line or right of its asymptote.
    """
    x, y = log_nii_ha, log_oiii_hb
    if x < 0.05 and y < kauffmann03(x):
        return "star-forming"
    if x < 0.47 and y < kewley01(x):
        return "composite"
    return "AGN"


def line_snr(flux: float | None, error: float | None) -> float:
    """S/N of one line flux; NaN when it cannot be measured.

    Parameters
    ----------
    flux : float or None
        Line flux (any unit; SDSS's LINEAREA is 1e-17 erg/s/cm^2). May be negative (a
        fit below the continuum), giving a negative S/N.
    error : float or None
        Its 1-sigma error, same unit. SDSS's data model writes a negative error for an
        invalid fit (the real files have -2 for a line with no usable pixels), so an
        error <= 0 or non-finite gives NaN.

    Returns
    -------
    float
    """
    if flux is None or error is None:
        return math.nan
    flux, error = float(flux), float(error)
    if not (math.isfinite(flux) and math.isfinite(error)) or error <= 0:
        return math.nan
    return flux / error


def classify(fluxes: Mapping[str, float], errors: Mapping[str, float], min_snr: float = MIN_LINE_SNR) -> str:
    """BPT class of a spectrum from its four emission-line fluxes.

    Brinchmann et al. (2004)'s rule: only galaxies with S/N > ``min_snr`` (3) in each of
    Hbeta, [OIII] 5007, Halpha and [NII] 6583 are placed on the diagram, by
    :func:`bpt_region` (Kauffmann et al. 2003 and Kewley et al. 2001 lines) at
    (log [NII]/Halpha, log [OIII]/Hbeta). Any other spectrum is ``"passive"``: this class
    then means *unclassifiable, lines too weak or not measured* (a missing line, an invalid
    fit, S/N <= ``min_snr``), which for the paper's sample are mostly quiescent galaxies,
    but also includes weak-lined star-forming galaxies and LINERs (Brinchmann's "low S/N"
    classes are folded in here).

    Parameters
    ----------
    fluxes : mapping
        Line name (:data:`BPT_LINES`, SDSS's LINENAME) -> flux; other keys are ignored.
        Only ratios are used, so any common unit (SDSS's LINEAREA, 1e-17 erg/s/cm^2).
    errors : mapping
        Line name -> 1-sigma error of the flux, same unit; <= 0 or missing means not
        measured (see :func:`line_snr`).
    min_snr : float
        The S/N every line must exceed.

    Returns
    -------
    str
        One of :data:`CLASSES`.
    """
    snr = [line_snr(fluxes.get(line), errors.get(line)) for line in BPT_LINES]
    if not all(s > min_snr for s in snr):  # NaN compares False: unmeasured lines too
        return PASSIVE
    x = math.log10(fluxes[NII_6583] / fluxes[H_ALPHA])
    y = math.log10(fluxes[OIII_5007] / fluxes[H_BETA])
    return bpt_region(x, y)
