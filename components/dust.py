"""Dust attenuation: the Calzetti et al. (2000) law that both the simulator and the pPXF
labeller use, so that E(B-V) means the same in the mocks' truth and in the labels."""

from __future__ import annotations

import numpy as np

R_V = 4.05  # Calzetti (2000): A_V = R_V E(B-V); pPXF's ``reddening`` is A_V


def calzetti_k(lam: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) attenuation curve k(lambda), R_V = 4.05 (lam in Angstrom).

    A(lambda) = k(lambda) E(B-V); the two branches meet at 6300 A.
    """
    x = 1e4 / np.asarray(lam, float)  # 1/micron
    blue = 2.659 * (-2.156 + 1.509 * x - 0.198 * x**2 + 0.011 * x**3) + 4.05
    red = 2.659 * (-1.857 + 1.040 * x) + 4.05
    return np.where(lam < 6300.0, blue, red)
