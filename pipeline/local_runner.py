"""Run the pipeline locally: LocalDagRunner, SQLite MLMD, Beam DirectRunner (multi-process).

A re-run with the same configuration reuses every component whose inputs, settings and
code are unchanged (TFX's cache, recorded in ``metadata.sqlite``), and a Trainer killed
mid-training continues from its last finished epoch (``<root>/trainer_checkpoints``). With
caching off (``enable_cache: false``, ``run-pipeline --no-cache``) every component runs
again and the Trainer starts from epoch 1.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
from tfx import v1 as tfx

from stellarpop.pipeline import configs
from stellarpop.pipeline.pipeline import create_pipeline, resume_dir, write_schema


def metadata_path(cfg: configs.PipelineConfig) -> str:
    return os.path.join(cfg.root, "metadata.sqlite")


def run(cfg: configs.PipelineConfig, beam_pipeline_args: list[str] | None = None) -> configs.PipelineConfig:
    """Run every component of ``cfg`` in this process; returns the resolved configuration."""
    cfg = cfg.resolved()
    os.makedirs(cfg.root, exist_ok=True)
    args = beam_pipeline_args if beam_pipeline_args is not None else configs.local_beam_args(cfg.workers or None)
    with open(os.path.join(cfg.root, "pipeline_config.json"), "w") as fh:
        json.dump({"config": cfg.__dict__, "beam_args": args}, fh, indent=2, default=str)
    if not cfg.enable_cache and tf.io.gfile.exists(resume_dir(cfg)):
        tf.io.gfile.rmtree(resume_dir(cfg))  # a fresh run: no epochs of a killed one either
    pipeline = create_pipeline(
        cfg,
        write_schema(cfg.root, cfg.label_source),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path(cfg)),
        beam_pipeline_args=args,
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return cfg
