"""FitsExampleGen: a file-based ExampleGen for SDSS (and generic) spectrum files."""

from __future__ import annotations

from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from stellarpop.components.fits_example_gen import executor
from stellarpop.components.fits_example_gen.ingest import IngestConfig
from stellarpop.transforms import features as F


class FitsExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        executor.INGEST_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
        # Set by pipeline.stamp: a fingerprint of the code that runs, read by no executor.
        "code_fingerprint": ExecutionParameter(type=str, optional=True),
    }


def default_output_config() -> example_gen_pb2.Output:
    """The paper's 8:1:1 split into train, eval and test, by a hash of the object id.

    Hashing ``object_id`` (not the spectrum id) keeps repeat observations of one galaxy in
    one split.
    """
    return example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=8),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
                example_gen_pb2.SplitConfig.Split(name="test", hash_buckets=1),
            ],
            partition_feature_name=F.OBJECT_ID,
        )
    )


def default_input_config(pattern: str = "*") -> example_gen_pb2.Input:
    """One input split; a directory that the pattern matches is searched recursively."""
    return example_gen_utils.make_default_input_config(pattern)


class FitsExampleGen(FileBasedExampleGen):
    """Reads spectrum files under ``input_base`` into tf.Examples of the project's spec.

    Outputs one ``Examples`` artefact with train/eval/test splits and, beside them, the
    failure records and run summary of the ingest job.
    """

    SPEC_CLASS = FitsExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        input_base: str,
        input_config: example_gen_pb2.Input | None = None,
        output_config: example_gen_pb2.Output | None = None,
        ingest_config: IngestConfig | None = None,
    ):
        spec = FitsExampleGenSpec(
            input_base=input_base,
            input_config=input_config or default_input_config(),
            output_config=output_config or default_output_config(),
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            examples=types.Channel(type=standard_artifacts.Examples),
            **{executor.INGEST_CONFIG_KEY: (ingest_config or IngestConfig()).to_json()},
        )
        # Skip FileBasedExampleGen.__init__, which builds the stock spec; keep its driver.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
