"""The simulation job without TFX (``stellarpop simulate``): the MockExampleGen executor into
a run folder, resumable by shard."""

from __future__ import annotations

import os
from pathlib import Path

from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts

from stellarpop.components.mock_example_gen import job
from stellarpop.components.mock_example_gen.component import EXAMPLES_KEY, SIM_CONFIG_KEY, Executor
from stellarpop.components.progress import ResumeError
from stellarpop.components.scratch import scratch_tempdir


def run_standalone(out_dir: str, config: job.SimConfig, beam_pipeline_args: list[str], restart: bool = False) -> dict:
    """``stellarpop simulate``: the same executor into ``out_dir/examples``, resumable by shard."""
    import dataclasses
    import shutil

    examples_dir = os.path.join(out_dir, "examples")
    recorded = os.path.join(out_dir, "sim_config.json")
    plain = dataclasses.replace(config, progress_dir="").to_json()
    if restart:
        shutil.rmtree(examples_dir, ignore_errors=True)
    elif os.path.exists(recorded) and Path(recorded).read_text() != plain and os.path.exists(examples_dir):
        raise ResumeError(
            f"{out_dir} holds a simulation with another configuration: give another --output or --restart"
        )
    os.makedirs(out_dir, exist_ok=True)
    with open(recorded, "w") as fh:
        fh.write(plain)
    examples = standard_artifacts.Examples()
    examples.uri = examples_dir
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=beam_pipeline_args, tmp_dir=os.path.join(out_dir, ".tmp")
    )
    with scratch_tempdir():
        Executor(context).Do({}, {EXAMPLES_KEY: [examples]}, {SIM_CONFIG_KEY: config.to_json()})
    return job.read_summary(examples_dir)
