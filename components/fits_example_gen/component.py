"""FitsExampleGen: a file-based ExampleGen for SDSS (and generic) spectrum files.

The component's spec, its executor (the base ExampleGen splitting on top of the ingest job,
:func:`~stellarpop.components.fits_example_gen.job.IngestSpectra`) and the component.

Spans: an input pattern with TFX's ``{SPAN}`` (or ``{YYYY}{MM}{DD}``, optionally
``{VERSION}``) spec, e.g. ``span-{SPAN}/*``, reads one span per execution: the latest, or the
one a ``range_config`` static range names. FileBasedExampleGen's driver resolves it (and
fingerprints that span's files for the cache key) and rewrites the pattern; the executor
reads only that span and records it on the Examples artefact, as the ``span`` (and
``version``) custom property the driver sets and as the artefact's ``span`` property, which
TFX's span resolver functions read.
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
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import proto_utils

from stellarpop.components import cache_key, spans
from stellarpop.components.fits_example_gen import job
from stellarpop.components.fits_example_gen.job import IngestConfig
from stellarpop.schema import features as F

log = logging.getLogger(__name__)

INGEST_CONFIG_KEY = "ingest_config"
_REPORT_DIR_KEY = "_stellarpop_report_dir"


class FitsExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        INGEST_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
        **cache_key.PARAMETER,  # the code's fingerprint in the cache key, read by no executor
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
        span, version = self._resolve_span(props, input_config)
        self._generate(examples, props)
        examples.span = span  # the property TFX's span resolver functions read
        examples.set_int_custom_property(example_gen_utils.SPAN_PROPERTY_NAME, span)
        if version is not None:
            examples.version = version
            examples.set_int_custom_property(example_gen_utils.VERSION_PROPERTY_NAME, version)
        summary = job.read_summary(examples.uri)
        examples.set_int_custom_property("num_examples", summary["examples"])
        examples.set_int_custom_property("num_errors", summary["errors"])
        examples.set_int_custom_property("num_rejected", summary["rejected_by_selection"])
        examples.set_string_custom_property("failures_by_reason", json.dumps(summary["failures"], sort_keys=True))
        log.info("ingest summary (span %d): %s", span, json.dumps(summary))

    def _generate(self, examples, props: dict[str, Any]) -> None:
        """What ``BaseExampleGenExecutor.Do`` does, with the splits written by the ingest job.

        The base executor partitions with ``beam.Partition`` (tagged outputs) and writes with
        ``WriteToTFRecord`` (a sink whose finalisation the DaskRunner never runs); here the
        job's :class:`~stellarpop.components.fits_example_gen.job.SplitWriter` assigns splits
        with TFX's own partition function and writes TFX's file names, on every runner.
        """
        import math
        import os

        from tfx.components.example_gen import write_split
        from tfx.components.util import examples_utils

        self._log_startup({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, props)
        keys = standard_component_specs
        input_config = proto_utils.json_to_proto(props[keys.INPUT_CONFIG_KEY], example_gen_pb2.Input())
        output_config = proto_utils.json_to_proto(props[keys.OUTPUT_CONFIG_KEY], example_gen_pb2.Output())
        file_format = props.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY, example_gen_pb2.FORMAT_TFRECORDS_GZIP)
        if file_format not in (example_gen_pb2.FILE_FORMAT_UNSPECIFIED, example_gen_pb2.FORMAT_TFRECORDS_GZIP):
            raise ValueError(f"output_file_format {file_format}: FitsExampleGen writes gzipped TFRecords only")
        split_names = example_gen_utils.generate_output_split_names(input_config, output_config)
        examples.split_names = artifact_utils.encode_split_names(split_names)
        config = job.IngestConfig.from_json(props.get(INGEST_CONFIG_KEY))
        pattern = os.path.join(props[standard_component_specs.INPUT_BASE_KEY] or "", input_config.splits[0].pattern)
        output_json = proto_utils.proto_to_json(output_config)

        def writer_of(n_files: int) -> job.SplitWriter:
            n_shards = max(1, math.ceil(n_files / job.FILES_PER_SHARD))
            return job.SplitWriter(examples.uri, output_json, tuple(split_names), n_shards)

        with self._make_beam_pipeline() as pipeline:
            _ = pipeline | "IngestSpectra" >> job.IngestSpectra(  # pylint: disable=no-value-for-parameter
                config, examples.uri, "" if config.inputs else pattern, writer_of=writer_of
            )
        if props.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY):
            examples_utils.set_payload_format(examples, props[standard_component_specs.OUTPUT_DATA_FORMAT_KEY])
        examples_utils.set_file_format(examples, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))

    @staticmethod
    def _resolve_span(props: dict[str, Any], input_config: example_gen_pb2.Input) -> tuple[int, int | None]:
        """The span and version to read. After FileBasedExampleGen's driver (every pipeline
        run) the pattern names one span and ``props`` holds it; an executor called without the
        driver (``Do`` in tests, a standalone run) resolves the span spec itself, honouring
        ``range_config``, and rewrites ``props``' input config."""
        if not spans.has_span_spec(input_config):
            span = props.get(example_gen_utils.SPAN_PROPERTY_NAME) or 0
            return int(span), props.get(example_gen_utils.VERSION_PROPERTY_NAME)
        range_config = None
        if props.get(standard_component_specs.RANGE_CONFIG_KEY):
            range_config = range_config_pb2.RangeConfig()
            proto_utils.json_to_proto(props[standard_component_specs.RANGE_CONFIG_KEY], range_config)
        span, version, resolved = spans.resolve_span(
            props[standard_component_specs.INPUT_BASE_KEY], input_config, range_config
        )
        props[standard_component_specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(resolved)
        props[example_gen_utils.SPAN_PROPERTY_NAME] = span
        props[example_gen_utils.VERSION_PROPERTY_NAME] = version
        return span, version


class FitsExampleGen(FileBasedExampleGen):
    """Reads spectrum files under ``input_base`` into tf.Examples of the project's spec.

    Outputs one ``Examples`` artefact with train/eval/test splits and, beside them, the
    failure records and run summary of the ingest job. With a span spec in the input
    pattern, one span: the latest, or the one ``range_config`` names (:func:`stellarpop.components.spans.static_span`).
    """

    SPEC_CLASS = FitsExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self,
        input_base: str,
        input_config: example_gen_pb2.Input | None = None,
        output_config: example_gen_pb2.Output | None = None,
        ingest_config: IngestConfig | None = None,
        range_config: range_config_pb2.RangeConfig | None = None,
    ):
        spec = FitsExampleGenSpec(
            input_base=input_base,
            input_config=input_config or default_input_config(),
            output_config=output_config or default_output_config(),
            range_config=range_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            examples=types.Channel(type=standard_artifacts.Examples),
            **{INGEST_CONFIG_KEY: (ingest_config or IngestConfig()).to_json()},
        )
        # Skip FileBasedExampleGen.__init__, which builds the stock spec; keep its driver.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
