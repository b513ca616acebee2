"""What a report is made of: the artefacts of one evaluated run and the Evaluator's results
(:mod:`.run_report` finds and reads them; :mod:`.tables` renders them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import tensorflow_model_analysis as tfma

from stellarpop.schema import features as F


@dataclass
class RunArtifacts:
    """The artefacts of one evaluated model, found in MLMD (local paths).

    Attributes
    ----------
    evaluation : TFMA output folder; blessing: the ModelBlessing folder, blessed: its verdict
    model, baseline_model : the Model artefacts (baseline "" when there was none)
    model_run : the Trainer's ModelRun folder ("" when not found)
    examples : the Examples artefact the Evaluator read
    pushed : the PushedModel's custom properties (pushed, pushed_version,
        pushed_destination); empty when no Pusher read this blessing
    executions : (component, execution id, state, start time UTC) of each component's
        latest execution
    """

    run_root: str
    evaluation: str
    blessing: str
    blessed: bool
    model: str
    examples: str
    baseline_model: str = ""
    model_run: str = ""
    pushed: dict = field(default_factory=dict)
    executions: list = field(default_factory=list)


@dataclass
class Evaluation:
    """The Evaluator's results: ``{slice: {"output/metric": value}}`` of the candidate and
    the baseline ({} without one), the EvalConfig it ran, its validation result."""

    candidate: dict
    baseline: dict
    config: tfma.EvalConfig
    validation: object

    @property
    def label_keys(self) -> dict[str, str]:
        """Output -> the label feature the Evaluator compared it with."""
        spec = next(s for s in self.config.model_specs if not s.is_baseline)
        keys = dict(spec.label_keys)
        return dict(sorted(keys.items(), key=lambda kv: F.LABEL_KEYS.index(kv[0]) if kv[0] in F.LABEL_KEYS else 99))
