"""Where a stellar velocity dispersion is below what an SDSS spectrum resolves.

SDSS's spectrograph has an instrumental dispersion of about 65 km/s (R ~ 2000); a galaxy's
dispersion adds to it in quadrature, so a dispersion well below it widens the lines by less
than the noise lets one measure. SDSS's own VDISP is not a measurement below ~70 km/s. The
limit is per spectrum: it grows as the S/N falls, ``limit = LIMIT_AT_SNR10 * (10 / S/N_r)**EXPONENT``,
clipped to ``[LIMIT_MIN, LIMIT_MAX]``. The constants are not yet measured: 70 km/s at S/N 10
is SDSS's stated resolution and the S/N^-1/2 scaling is an assumption. Measuring them on simulated spectra of known
dispersion (the ``sky`` priors go down to 10 km/s) is issue 25's open work.

A value below its spectrum's limit is reported as an upper limit: ``vd_unresolved`` true
and ``vd`` = max(limit, vd + vd_err) (a 1-sigma upper bound that is never below the limit).
"""

from __future__ import annotations

import math

LIMIT_AT_SNR10 = 70.0  # km/s at S/N_r = 10
EXPONENT = 0.5
LIMIT_MIN, LIMIT_MAX = 50.0, 150.0  # km/s


def vd_limit(snr_r: float) -> float:
    """The smallest dispersion (km/s) a spectrum of median S/N_r ``snr_r`` resolves."""
    if not math.isfinite(snr_r) or snr_r <= 0:
        return LIMIT_MAX
    return float(min(LIMIT_MAX, max(LIMIT_MIN, LIMIT_AT_SNR10 * (10.0 / snr_r) ** EXPONENT)))


def mark(vd: float, vd_err: float, snr_r: float) -> tuple[float, bool, float]:
    """(vd as reported, unresolved, the limit): an unresolved vd becomes its upper limit."""
    limit = vd_limit(snr_r)
    if not math.isfinite(vd):
        return vd, False, limit
    if vd < limit:
        err = vd_err if math.isfinite(vd_err) else 0.0
        return max(limit, vd + err), True, limit
    return vd, False, limit
