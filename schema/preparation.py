"""How a spectrum on its native grid becomes a network input: the sample cuts of the paper
and the preparation settings (coverage, normalisation window) that ingest, the simulator,
training and prediction share. Plain frozen dataclasses, encoded by :mod:`.config_codec`;
:func:`stellarpop.components.spectra.prepare` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stellarpop.schema import features as F


@dataclass(frozen=True)
class Selection:
    """The paper's sample cuts (Section 2.1). Each failed cut is recorded by name."""

    z_min: float = F.Z_MIN
    z_max: float = F.Z_MAX
    snr_r_min: float = F.SNR_R_MIN
    zwarning_zero: bool = True
    classes: tuple[str, ...] = ("GALAXY",)  # empty: no class cut


@dataclass(frozen=True)
class Preparation:
    """How a spectrum on its native grid becomes a network input: the settings that ingest,
    the simulator and prediction share (one owner; the pipeline gives its normalisation
    window to Transform and the Trainer too, and the exported model records all of them).
    """

    min_coverage: float = 0.8  # fraction of the model grid the native spectrum must cover
    norm_centre: float = F.NORM_CENTRE  # Angstrom, observed: the flux normalisation window
    norm_half_width: float = F.NORM_HALF_WIDTH
    selection: Selection = field(default_factory=Selection)

    def __post_init__(self):
        if not self.norm_half_width > 0:
            raise ValueError(f"norm_half_width {self.norm_half_width:g}: the window's half width is > 0 Angstrom")
        if not 0 < self.min_coverage <= 1:
            raise ValueError(f"min_coverage {self.min_coverage:g}: a fraction in (0, 1]")
