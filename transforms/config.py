"""The settings that Transform and the Trainer must agree on, in one object.

The pipeline builds one :class:`PreprocessingConfig` from its YAML (``label_source`` and
``preparation``) and gives the same values to the example generator (how spectra are
prepared), to Transform (the normalisation window, the label source) and to the Trainer,
which records them in the exported model; prediction reads them back from there. Nothing
downstream restates a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stellarpop.schema import features as F
from stellarpop.schema.preparation import Preparation

DEFAULT_LABEL_SOURCE = "truth"  # the default pipeline trains on simulated spectra


@dataclass(frozen=True)
class PreprocessingConfig:
    """``label_source``: which features feed the labels (``features.LABEL_SOURCES``);
    ``preparation``: validation, resampling, normalisation window and selection."""

    label_source: str = DEFAULT_LABEL_SOURCE
    preparation: Preparation = field(default_factory=Preparation)

    def __post_init__(self):
        if self.label_source not in F.LABEL_SOURCES:
            raise ValueError(f"label_source {self.label_source!r}; expected one of {sorted(F.LABEL_SOURCES)}")

    @property
    def norm_window(self) -> tuple[float, float]:
        """(centre, half width) of the flux normalisation window, Angstrom."""
        return self.preparation.norm_centre, self.preparation.norm_half_width
