"""Names, dotted module paths and Beam argument profiles shared by runners and the CLI."""

from __future__ import annotations

import dataclasses
import os

PIPELINE_NAME = "stellarpop"


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
RUN_FN = "stellarpop.pipeline.trainer.run_fn"


@dataclasses.dataclass
class PipelineConfig:
    """One pipeline run, read from a YAML file (``stellarpop run-pipeline --config``).

    ``examples.source`` is ``simulate`` (MockExampleGen with ``simulate``), ``ingest``
    (FitsExampleGen over ``inputs``) or ``import`` (an existing Examples folder with
    Split-* subfolders, e.g. a ``stellarpop simulate`` output, imported without copying).
    ``label_source`` is ``truth`` (simulated data) or ``ppxf`` (adds the PpxfLabeler).
    """

    name: str = PIPELINE_NAME
    root: str = "runs/pipeline"  # pipeline root, metadata.sqlite, serving/ (pushed models)
    examples: dict = dataclasses.field(default_factory=lambda: {"source": "simulate", "n": 600, "seed": 0, "mode": "sdss"})
    label_source: str = "truth"
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

    @classmethod
    def from_yaml(cls, path: str) -> "PipelineConfig":
        import yaml

        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**raw)

    def resolved(self) -> "PipelineConfig":
        root = os.path.abspath(self.root)
        serving = os.path.abspath(self.serving_dir) if self.serving_dir else os.path.join(root, "serving", self.name)
        return dataclasses.replace(self, root=root, serving_dir=serving)
