"""PpxfLabeler: a TFX component that adds pPXF labels to Examples (on Beam, resumable).

The component's spec, its executor (the labelling job of
:mod:`~stellarpop.components.ppxf_labeler.job` over every split of an Examples artefact) and
the component.
"""

from __future__ import annotations

import os

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from stellarpop.components import cache_key
from stellarpop.components.ppxf_labeler import job

LABEL_CONFIG_KEY = "label_config"
CHECKPOINT_DIR_KEY = "checkpoint_dir"
EXAMPLES_KEY = "examples"
LABELLED_KEY = "labelled_examples"


class PpxfLabelerSpec(ComponentSpec):
    PARAMETERS = {
        LABEL_CONFIG_KEY: ExecutionParameter(type=str),
        CHECKPOINT_DIR_KEY: ExecutionParameter(type=str, optional=True),
        **cache_key.PARAMETER,  # the code's fingerprint in the cache key, read by no executor
    }
    INPUTS = {EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {LABELLED_KEY: ChannelParameter(type=standard_artifacts.Examples)}


class Executor(base_beam_executor.BaseBeamExecutor):
    """Fits every input split's spectra and writes them again with labels, split by split.

    The checkpoints live in ``checkpoint_dir`` (an execution parameter) so that a re-run
    of a failed pipeline, which gets new output artefacts, still skips the finished fits;
    without one they live beside the output. In a streaming pipeline each execution gets
    one span and the checkpoints of every span are kept together: fits are keyed by
    spectrum id, so only the new span's spectra are fitted. The output keeps the input's
    span and version.
    """

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        config = job.LabelConfig.from_json(exec_properties[LABEL_CONFIG_KEY])
        source = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        labelled = artifact_utils.get_single_instance(output_dict[LABELLED_KEY])
        names = artifact_utils.decode_split_names(source.split_names)
        splits = {s: record_files(artifact_utils.get_split_uri([source], s)) for s in names}
        ckpt_dir = exec_properties.get(CHECKPOINT_DIR_KEY) or os.path.join(labelled.uri, job.CHECKPOINT_DIR)
        job.prepare_checkpoints(ckpt_dir, config)
        summary = job.run(self._make_beam_pipeline, splits, labelled.uri, ckpt_dir, config)
        labelled.split_names = artifact_utils.encode_split_names(list(splits))
        examples_utils.set_payload_format(labelled, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(labelled, "tfrecords_gzip")
        labelled.set_int_custom_property("num_examples", sum(c[job.LABELLED] for c in summary["splits"].values()))
        # Of this input's spectra (the checkpoints may hold other spans' fits too).
        labelled.set_int_custom_property("num_failed_fits", sum(c[job.FAILED] for c in summary["splits"].values()))
        labelled.set_int_custom_property("num_below_min_vd", sum(c[job.LOW_VD] for c in summary["splits"].values()))
        copy_span(source, labelled)


def copy_span(source, labelled) -> None:
    """The input's span and version (property and custom property, as FitsExampleGen sets
    them) on the labelled Examples: the span resolvers downstream read them."""
    for name in ("span", "version"):
        if source.has_custom_property(name):
            labelled.set_int_custom_property(name, int(source.get_custom_property(name)))
        if source.has_property(name):
            setattr(labelled, name, getattr(source, name))


def record_files(split_dir: str) -> list[str]:
    """The TFRecord data files in a folder: ``*.gz`` (``shard-*.gz``, ``labelled-*.gz``, the
    ingest's ``chunk*-data_tfrecord-*.gz``) and ``*tfrecord*``; not summaries, markers, hidden files."""
    import tensorflow as tf

    return sorted(
        f
        for f in tf.io.gfile.glob(os.path.join(split_dir, "*"))
        if _is_tfrecord_name(os.path.basename(f)) and not tf.io.gfile.isdir(f)
    )


def _is_tfrecord_name(name: str) -> bool:
    return not name.startswith(".") and (name.endswith(".gz") or "tfrecord" in name)


class PpxfLabeler(base_beam_component.BaseBeamComponent):
    """The input Examples with pPXF labels added (failed fits and sigma < min_vd dropped)."""

    SPEC_CLASS = PpxfLabelerSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self, examples: types.BaseChannel, config: job.LabelConfig = job.LabelConfig(), checkpoint_dir: str = ""
    ):
        spec = PpxfLabelerSpec(
            **{
                EXAMPLES_KEY: examples,
                LABEL_CONFIG_KEY: config.to_json(),
                CHECKPOINT_DIR_KEY: checkpoint_dir,
                LABELLED_KEY: types.Channel(type=standard_artifacts.Examples),
            }
        )
        super().__init__(spec=spec)
