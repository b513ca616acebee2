"""MockExampleGen: a TFX component that simulates spectra with exact truth (on Beam)."""

from __future__ import annotations

import json
import os

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from stellarpop.components.mock_example_gen import job
from stellarpop.components.progress import ResumeError

SIM_CONFIG_KEY = "sim_config"
EXAMPLES_KEY = "examples"


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs the simulation job into the Examples artefact (``Split-{train,eval,test}``)."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        config = job.SimConfig.from_json(exec_properties[SIM_CONFIG_KEY])
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        examples.split_names = artifact_utils.encode_split_names([s for s, _ in job.SPLITS])
        with self._make_beam_pipeline() as pipeline:
            job.run(pipeline, config, examples.uri)
        summary = job.read_summary(examples.uri)
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")
        examples.set_int_custom_property("num_examples", sum(summary["splits"].values()))
        examples.set_int_custom_property("seed", config.seed)
        examples.set_string_custom_property("classes", json.dumps(summary["classes"], sort_keys=True))


class MockExampleGenSpec(ComponentSpec):
    # code_fingerprint: set by pipeline.stamp (part of the cache key), read by no executor.
    PARAMETERS = {SIM_CONFIG_KEY: ExecutionParameter(type=str), "code_fingerprint": ExecutionParameter(type=str, optional=True)}
    INPUTS = {}
    OUTPUTS = {EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}


class MockExampleGen(base_beam_component.BaseBeamComponent):
    """Simulated SDSS-like spectra with exact truth, in the project's tf.Example spec."""

    SPEC_CLASS = MockExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, config: job.SimConfig):
        spec = MockExampleGenSpec(
            **{SIM_CONFIG_KEY: config.to_json(), EXAMPLES_KEY: types.Channel(type=standard_artifacts.Examples)}
        )
        super().__init__(spec=spec)


def run_standalone(out_dir: str, config: job.SimConfig, beam_pipeline_args: list[str], restart: bool = False) -> dict:
    """``stellarpop simulate``: the same executor into ``out_dir/examples``, resumable by shard."""
    import dataclasses
    import shutil

    examples_dir = os.path.join(out_dir, "examples")
    recorded = os.path.join(out_dir, "sim_config.json")
    plain = dataclasses.replace(config, progress_dir="").to_json()
    if restart:
        shutil.rmtree(examples_dir, ignore_errors=True)
    elif os.path.exists(recorded) and open(recorded).read() != plain and os.path.exists(examples_dir):
        raise ResumeError(f"{out_dir} holds a simulation with another configuration: give another --output or --restart")
    os.makedirs(out_dir, exist_ok=True)
    with open(recorded, "w") as fh:
        fh.write(plain)
    examples = standard_artifacts.Examples()
    examples.uri = examples_dir
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=beam_pipeline_args, tmp_dir=os.path.join(out_dir, ".tmp")
    )
    Executor(context).Do({}, {EXAMPLES_KEY: [examples]}, {SIM_CONFIG_KEY: config.to_json()})
    return job.read_summary(examples_dir)
