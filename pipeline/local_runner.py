"""Run the pipeline locally: LocalDagRunner, SQLite MLMD, Beam DirectRunner (multi-process).

A re-run with the same configuration reuses every component whose inputs, settings and
code are unchanged (TFX's cache, recorded in ``metadata.sqlite``), and a Trainer killed
mid-training continues from its last finished epoch (``<root>/trainer_checkpoints``). With
caching off (``enable_cache: false``, ``run-pipeline --no-cache``) every component runs
again and the Trainer starts from epoch 1.

Streaming (``spans`` in the config): each run ingests one span, the latest under the
config's ``input_base`` or the one given (``run(cfg, span=N)``, ``run-pipeline --span N``),
and trains on the last ``spans`` spans; running a span again reuses every output.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
from tfx import v1 as tfx

from stellarpop.components import spans
from stellarpop.components.scratch import scratch_tempdir
from stellarpop.pipeline import configs
from stellarpop.pipeline.pipeline import create_pipeline, resume_dir, write_schema


def metadata_path(cfg: configs.PipelineConfig) -> str:
    return os.path.join(cfg.root, "metadata.sqlite")


def resolve_span(cfg: configs.PipelineConfig, span: int | None = None) -> int:
    """The span a run of ``cfg`` ingests: ``span`` if given (it must exist), else the latest
    under ``examples.input_base`` (:func:`stellarpop.components.spans.span_to_read`).

    Raises
    ------
    ValueError
        One line: the config has no spans, or no files match the pattern (for ``span``).
    """
    if not cfg.spans:
        raise ValueError(f"{cfg.name}: a span needs `spans` (the window size) and a span pattern in the config")
    return spans.span_to_read(cfg.examples["input_base"], cfg.examples["pattern"], span)


def run(
    cfg: configs.PipelineConfig, span: int | None = None, beam_pipeline_args: list[str] | None = None
) -> configs.PipelineConfig:
    """Run every component of ``cfg`` in this process; returns the resolved configuration.

    ``span`` (configs with ``spans`` only): the span to ingest; None: the latest. Raises
    ValueError (one line) for a span that the config cannot have or whose files do not exist.
    """
    cfg = cfg.resolved()
    if span is not None and not cfg.spans:
        raise ValueError(f"{cfg.name}: --span needs `spans` (the window size) and a span pattern in the config")
    span = resolve_span(cfg, span) if cfg.spans else None
    os.makedirs(cfg.root, exist_ok=True)
    args = beam_pipeline_args if beam_pipeline_args is not None else configs.local_beam_args(cfg.workers or None)
    with open(os.path.join(cfg.root, "pipeline_config.json"), "w") as fh:
        json.dump({"config": cfg.__dict__, "beam_args": args, "span": span}, fh, indent=2, default=str)
    if not cfg.enable_cache and tf.io.gfile.exists(resume_dir(cfg)):
        tf.io.gfile.rmtree(resume_dir(cfg))  # a fresh run: no epochs of a killed one either
    pipeline = create_pipeline(
        cfg,
        write_schema(cfg.root, cfg.label_source),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path(cfg)),
        beam_pipeline_args=args,
        span=span,
    )
    with scratch_tempdir():
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return cfg
