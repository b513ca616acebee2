"""TFX executor of FitsExampleGen: the base ExampleGen splitting on top of IngestSpectra."""

from __future__ import annotations

import json
import logging
from typing import Any

import apache_beam as beam
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from stellarpop.components.fits_example_gen import ingest

log = logging.getLogger(__name__)

INGEST_CONFIG_KEY = "ingest_config"
_REPORT_DIR_KEY = "_stellarpop_report_dir"


@beam.ptransform_fn
def _InputToExamples(pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):  # noqa: N802
    import os

    config = ingest.IngestConfig.from_json(exec_properties.get(INGEST_CONFIG_KEY))
    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY] or "", split_pattern)
    return pipeline | "IngestSpectra" >> ingest.IngestSpectra(  # pylint: disable=no-value-for-parameter
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
        summary = ingest.read_summary(examples.uri)
        examples.set_int_custom_property("num_examples", summary["examples"])
        examples.set_int_custom_property("num_errors", summary["errors"])
        examples.set_int_custom_property("num_rejected", summary["rejected_by_selection"])
        examples.set_string_custom_property("failures_by_reason", json.dumps(summary["failures"], sort_keys=True))
        log.info("ingest summary: %s", json.dumps(summary))


def run_standalone(
    out_dir: str,
    config: ingest.IngestConfig,
    beam_pipeline_args: list[str] | None = None,
    input_base: str = "",
    output_config: example_gen_pb2.Output | None = None,
) -> dict:
    """Run the executor outside a pipeline (``stellarpop ingest``): same job, same layout.

    Writes an Examples artefact folder ``out_dir/examples`` (``Split-*/``, ``failures/``,
    ``ingest_summary.json``) and returns the summary.
    """
    import os

    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts

    from stellarpop.components.fits_example_gen import component

    examples = standard_artifacts.Examples()
    examples.uri = os.path.join(out_dir, "examples")
    exec_properties = {
        standard_component_specs.INPUT_BASE_KEY: input_base,
        standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(component.default_input_config()),
        standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(
            output_config or component.default_output_config()
        ),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        INGEST_CONFIG_KEY: config.to_json(),
    }
    context = BaseBeamExecutor.Context(beam_pipeline_args=beam_pipeline_args or [], tmp_dir=os.path.join(out_dir, ".tmp"))
    Executor(context).Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
    return ingest.read_summary(examples.uri)
