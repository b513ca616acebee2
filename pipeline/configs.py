"""Names, dotted module paths and Beam argument profiles shared by runners and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os

from stellarpop.schema import config_codec
from stellarpop.schema.preparation import Preparation
from stellarpop.transforms.config import DEFAULT_LABEL_SOURCE, PreprocessingConfig

PIPELINE_NAME = "stellarpop"
QUIET_SHUTDOWN_PLUGIN = "stellarpop.components.quiet_shutdown"


def local_beam_args(workers: int | None = None) -> list[str]:
    """DirectRunner on several local processes (Beam's default runs one thread).

    Also limits each process to one BLAS/OpenMP thread (workers inherit the environment):
    with one worker per core, numpy's threads would only fight over the cores.
    """
    workers = workers or os.cpu_count() or 1
    if workers > 1:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    return [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={workers}",
        # each worker installs the filter of TensorFlow's one known shutdown message
        f"--beam_plugins={QUIET_SHUTDOWN_PLUGIN}",
    ]


def dataflow_beam_args(project: str, region: str, temp_location: str, setup_file: str = "./setup.py") -> list[str]:
    """Dataflow: workers install this distribution from ``setup.py``."""
    return [
        "--runner=DataflowRunner",
        f"--project={project}",
        f"--region={region}",
        f"--temp_location={temp_location}",
        f"--setup_file={setup_file}",
    ]


# --- Module code, by dotted path (installed with the distribution; no module_file wheels) -----
PREPROCESSING_FN = "stellarpop.transforms.preprocessing.preprocessing_fn"
RUN_FN = "stellarpop.pipeline.training.trainer.run_fn"


# The Python types a YAML value may have, by PipelineConfig field annotation.
_YAML_TYPES = {
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "dict": (dict,),
    "int | None": (int, type(None)),
}


@dataclasses.dataclass
class PipelineConfig:
    """One pipeline run, read from a YAML file (``stellarpop run-pipeline --config``).

    ``examples.source`` is ``simulate`` (MockExampleGen with ``simulate``: SimConfig's keys,
    and the priors' ``mode`` and ``sdss_fraction``), ``ingest``
    (FitsExampleGen over ``inputs``) or ``import`` (an existing Examples folder with
    Split-* subfolders, e.g. a ``stellarpop simulate`` output, imported without copying).
    ``label_source`` is ``truth`` (simulated data) or ``ppxf`` (adds the PpxfLabeler).
    ``enable_cache`` turns on TFX execution caching: a component whose inputs and settings
    are unchanged since a previous run reuses that run's outputs (``run-pipeline --no-cache``
    turns it off).

    ``spans`` > 0 makes the pipeline streaming: ``examples.source`` must be ``ingest`` with a
    ``pattern`` holding TFX's ``{SPAN}`` (or ``{YYYY}{MM}{DD}``) spec, e.g. ``span-{SPAN}/*``
    under ``input_base``; each run ingests (and labels) one span, and Transform, the Trainer
    and the Evaluator read the last ``spans`` spans; the Trainer starts from the latest
    blessed model. ``schedule`` is the cron of the Kubeflow recurring run
    (``kubeflow_runner``); local runs ignore it.
    """

    name: str = PIPELINE_NAME
    root: str = "runs/pipeline"  # pipeline root, metadata.sqlite, serving/ (pushed models)
    examples: dict = dataclasses.field(
        default_factory=lambda: {"source": "simulate", "n": 600, "seed": 0, "mode": "sdss"}
    )
    label_source: str = DEFAULT_LABEL_SOURCE  # "truth" (simulated data) or "ppxf"
    # How spectra are prepared (Preparation: min_coverage, norm_centre,
    # norm_half_width, selection); given to the example generator, Transform and Trainer.
    preparation: dict = dataclasses.field(default_factory=dict)
    label: dict = dataclasses.field(default_factory=dict)  # LabelConfig fields for the PpxfLabeler
    statistics_sample_rate: float = 1.0
    trainer: dict = dataclasses.field(default_factory=dict)  # run_fn custom_config (model, epochs, ...)
    train_steps: int | None = None  # None: run_fn's epochs decide
    eval_steps: int | None = None
    thresholds: dict = dataclasses.field(default_factory=dict)  # clipped-std upper bounds by output
    change_thresholds: dict = dataclasses.field(default_factory=dict)
    serving_dir: str = ""  # default: <root>/serving/<name>
    workers: int = 0  # local Beam worker processes; 0: one per core
    seed: int = 0
    enable_cache: bool = True  # TFX execution caching: skip components whose inputs are unchanged
    spans: int = 0  # rolling window in spans (streaming); 0: one dataset, no spans
    schedule: str = ""  # cron of the Kubeflow recurring run, e.g. "0 2 * * *" (UTC)

    @classmethod
    def from_yaml(cls, path: str) -> PipelineConfig:
        """Read a YAML mapping of some of the fields (the others keep their defaults).

        Raises
        ------
        ValueError
            One line naming ``path``: no such file, invalid YAML (with its line), a top level
            that is not a mapping, unknown keys, or a value of the wrong type.
        """
        import yaml

        try:
            with open(path) as fh:
                raw = yaml.safe_load(fh)
        except OSError as exc:
            raise ValueError(
                f"{path}: {'no such file' if isinstance(exc, FileNotFoundError) else exc.strerror}"
            ) from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ValueError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: the top level is a {type(raw).__name__}, not a mapping of settings")
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(raw) - set(fields)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(map(str, unknown))}")
        for key, value in raw.items():
            expected = _YAML_TYPES.get(fields[key], (object,))
            if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
                raise ValueError(f"{path}: {key} is {value!r}, expected {fields[key]}")
        cfg = cls(**raw)
        try:
            cfg.check()
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        return cfg

    def check(self) -> None:
        """ValueError (one line) for settings that a stage would reject: the preparation,
        the label source, unknown trainer keys, a model name that does not exist."""
        from stellarpop.pipeline.training import trainer  # TensorFlow: only when a config is checked

        self.check_spans()
        if "preprocessing" in self.trainer:
            raise ValueError("trainer.preprocessing: give label_source and preparation at the top level (one owner)")
        trainer.TrainConfig.from_custom_config(
            {**self.trainer, "preprocessing": dataclasses.asdict(self.preprocessing())}
        )
        self.check_examples()
        if self.label:
            from stellarpop.components.ppxf_labeler.job import LabelConfig

            config_codec.from_dict(LabelConfig, self.label, "label")

    def check_examples(self) -> None:
        """ValueError for unknown ``examples`` keys of the chosen source, and for an imported
        folder whose spectra were prepared otherwise than ``preparation`` says."""
        ex = dict(self.examples)
        source = ex.pop("source", "simulate")
        known = {"simulate": None, "ingest": {"input_base", "pattern"}, "import": {"uri"}}
        if source not in known:
            raise ValueError(f"examples.source is simulate, ingest or import, not {source!r}")
        if source == "simulate":
            from stellarpop.components.mock_example_gen.job import SimConfig

            priors(ex)
            config_codec.from_dict(SimConfig, ex, "examples")
        elif set(ex) - known[source]:
            raise ValueError(
                f"examples: unknown keys {sorted(set(ex) - known[source])} for source {source} "
                f"(known: {', '.join(sorted(known[source]))})"
            )
        if source == "import":
            recorded = recorded_preparation(ex.get("uri", ""))
            if recorded is not None and recorded != self.preprocessing().preparation:
                raise ValueError(
                    f"examples.uri {ex['uri']}: its spectra were prepared with {recorded}, "
                    f"not the config's preparation {self.preprocessing().preparation}"
                )

    def check_spans(self) -> None:
        """ValueError unless ``spans`` (if set) comes with an ingest whose pattern names spans,
        and ``schedule`` (if set) is a five-field cron, optionally after ``TZ=<IANA zone>``."""
        if self.spans < 0:
            raise ValueError(f"spans is {self.spans}: the number of spans in the window, 0 for none")
        fields = self.schedule.split()
        if fields and fields[0].startswith(("TZ=", "CRON_TZ=")):  # Vertex's time-zone prefix
            fields = fields[1:]
        if self.schedule and len(fields) != 5:
            raise ValueError(
                f"schedule {self.schedule!r} is not a five-field cron ([TZ=zone] minute hour day month weekday)"
            )
        if not self.spans:
            return
        source, pattern = self.examples.get("source", "simulate"), self.examples.get("pattern", "")
        if source != "ingest" or not self.examples.get("input_base"):
            raise ValueError(f"spans needs examples.source ingest with an input_base, not {source!r}")
        from stellarpop.components import spans  # TFX: only for a config with spans

        if not spans.names_spans(pattern):
            raise ValueError(
                "spans needs examples.pattern with {SPAN} or {YYYY}{MM}{DD}, e.g. 'span-{SPAN}/*', "
                f"not {pattern!r}"
            )

    def preprocessing(self) -> PreprocessingConfig:
        """The settings Transform and the Trainer share (ValueError for unknown keys)."""
        preparation = config_codec.from_dict(Preparation, self.preparation, "preparation")
        return PreprocessingConfig(label_source=self.label_source, preparation=preparation)

    def resolved(self) -> PipelineConfig:
        root = os.path.abspath(self.root)
        serving = os.path.abspath(self.serving_dir) if self.serving_dir else os.path.join(root, "serving", self.name)
        return dataclasses.replace(self, root=root, serving_dir=serving)


def priors(examples: dict):
    """The simulate source's :class:`Priors`, taking ``mode`` and ``sdss_fraction`` out of
    ``examples`` (its other keys are SimConfig's)."""
    from stellarpop.components.priors import Priors

    raw = {"mode": examples.pop("mode", "sdss"), "sdss_fraction": examples.pop("sdss_fraction", 0.0)}
    return config_codec.from_dict(Priors, raw, "examples")


def recorded_preparation(examples_dir: str) -> Preparation | None:
    """The preparation a ``stellarpop simulate`` or ``ingest`` output records in its summary
    (None: no summary, or one written before preparations were recorded)."""
    for name in ("simulate_summary.json", "ingest_summary.json"):
        path = os.path.join(examples_dir, name)
        if os.path.exists(path):
            with open(path) as fh:
                raw = json.load(fh).get("config", {}).get("preparation")
            return None if raw is None else config_codec.from_dict(Preparation, raw, path)
    return None
