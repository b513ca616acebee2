"""MockExampleGen: a TFX component that simulates spectra with exact truth (on Beam).

The component's spec, its executor (the simulation job of
:mod:`~stellarpop.components.mock_example_gen.job` into an Examples artefact) and the component.
"""

from __future__ import annotations

import json

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from stellarpop.components import cache_key
from stellarpop.components.mock_example_gen import job
from stellarpop.schema import features as F

SIM_CONFIG_KEY = "sim_config"
EXAMPLES_KEY = "examples"


class MockExampleGenSpec(ComponentSpec):
    # cache_key.PARAMETER: the code's fingerprint in the cache key, read by no executor.
    PARAMETERS = {SIM_CONFIG_KEY: ExecutionParameter(type=str), **cache_key.PARAMETER}
    INPUTS = {}
    OUTPUTS = {EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs the simulation job into the Examples artefact (``Split-{train,eval,test}``)."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        config = job.SimConfig.from_json(exec_properties[SIM_CONFIG_KEY])
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        examples.split_names = artifact_utils.encode_split_names(list(F.SPLIT_NAMES))
        with self._make_beam_pipeline() as pipeline:
            job.run(pipeline, config, examples.uri)
        summary = job.read_summary(examples.uri)
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")
        examples.set_int_custom_property("num_examples", sum(summary["splits"].values()))
        examples.set_int_custom_property("seed", config.seed)
        examples.set_string_custom_property("classes", json.dumps(summary["classes"], sort_keys=True))


class MockExampleGen(base_beam_component.BaseBeamComponent):
    """Simulated SDSS-like spectra with exact truth, in the project's tf.Example spec."""

    SPEC_CLASS = MockExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, config: job.SimConfig):
        spec = MockExampleGenSpec(
            **{SIM_CONFIG_KEY: config.to_json(), EXAMPLES_KEY: types.Channel(type=standard_artifacts.Examples)}
        )
        super().__init__(spec=spec)
