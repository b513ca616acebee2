"""FitsExampleGen: a file-based ExampleGen for SDSS (and generic) spectrum files.

The component's spec, its executor (the base ExampleGen splitting on top of the ingest job,
:func:`~stellarpop.components.fits_example_gen.job.IngestSpectra`) and the component.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import apache_beam as beam
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import proto_utils

from stellarpop.components.fits_example_gen import job
from stellarpop.components.fits_example_gen.job import IngestConfig
from stellarpop.transforms import features as F

log = logging.getLogger(__name__)

INGEST_CONFIG_KEY = "ingest_config"
_REPORT_DIR_KEY = "_stellarpop_report_dir"


class FitsExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        INGEST_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
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
            splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=n) for name, n in F.SPLITS],
            partition_feature_name=F.OBJECT_ID,
        )
    )


def default_input_config(pattern: str = "*") -> example_gen_pb2.Input:
    """One input split; a directory that the pattern matches is searched recursively."""
    return example_gen_utils.make_default_input_config(pattern)


@beam.ptransform_fn
def _InputToExamples(pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):  # noqa: N802
    import os

    config = job.IngestConfig.from_json(exec_properties.get(INGEST_CONFIG_KEY))
    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY] or "", split_pattern)
    return pipeline | "IngestSpectra" >> job.IngestSpectra(  # pylint: disable=no-value-for-parameter
        config, exec_properties[_REPORT_DIR_KEY], "" if config.inputs else pattern
    )


class Executor(BaseExampleGenExecutor):
    """Spectrum files -> train/eval/test tf.Examples, split by a hash of ``object_id``.

    Besides the ``Split-*`` folders, the Examples artefact holds ``failures/*.jsonl`` and
    ``ingest_summary.json``; the counts are set as the artefact's custom properties
    (``num_examples``, ``num_errors``, ``num_rejected``, ``failures_by_reason``).
    """

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _InputToExamples

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        if len(input_config.splits) != 1:
            raise ValueError("FitsExampleGen reads one input split and makes the output splits by hash")
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        props = dict(exec_properties)
        props[_REPORT_DIR_KEY] = examples.uri
        super().Do(input_dict, output_dict, props)
        summary = job.read_summary(examples.uri)
        examples.set_int_custom_property("num_examples", summary["examples"])
        examples.set_int_custom_property("num_errors", summary["errors"])
        examples.set_int_custom_property("num_rejected", summary["rejected_by_selection"])
        examples.set_string_custom_property("failures_by_reason", json.dumps(summary["failures"], sort_keys=True))
        log.info("ingest summary: %s", json.dumps(summary))


class FitsExampleGen(FileBasedExampleGen):
    """Reads spectrum files under ``input_base`` into tf.Examples of the project's spec.

    Outputs one ``Examples`` artefact with train/eval/test splits and, beside them, the
    failure records and run summary of the ingest job.
    """

    SPEC_CLASS = FitsExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

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
            **{INGEST_CONFIG_KEY: (ingest_config or IngestConfig()).to_json()},
        )
        # Skip FileBasedExampleGen.__init__, which builds the stock spec; keep its driver.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
