"""PpxfLabeler: a TFX component that adds pPXF labels to Examples (on Beam, resumable)."""

from __future__ import annotations

import os
import shutil

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from stellarpop.components.ppxf_labeler import job

LABEL_CONFIG_KEY = "label_config"
CHECKPOINT_DIR_KEY = "checkpoint_dir"
EXAMPLES_KEY = "examples"
LABELLED_KEY = "labelled_examples"


class Executor(base_beam_executor.BaseBeamExecutor):
    """Fits every input split's spectra and writes them again with labels, split by split.

    The checkpoints live in ``checkpoint_dir`` (an execution parameter) so that a re-run
    of a failed pipeline, which gets new output artefacts, still skips the finished fits;
    without one they live beside the output.
    """

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        config = job.LabelConfig.from_json(exec_properties[LABEL_CONFIG_KEY])
        source = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        labelled = artifact_utils.get_single_instance(output_dict[LABELLED_KEY])
        names = artifact_utils.decode_split_names(source.split_names)
        splits = {s: _files(artifact_utils.get_split_uri([source], s)) for s in names}
        ckpt_dir = exec_properties.get(CHECKPOINT_DIR_KEY) or os.path.join(labelled.uri, job.CHECKPOINT_DIR)
        job.prepare_checkpoints(ckpt_dir, config)
        summary = job.run(self._make_beam_pipeline, splits, labelled.uri, ckpt_dir, config)
        labelled.split_names = artifact_utils.encode_split_names(list(splits))
        examples_utils.set_payload_format(labelled, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(labelled, "tfrecords_gzip")
        labelled.set_int_custom_property("num_examples", sum(c[job.LABELLED] for c in summary["splits"].values()))
        labelled.set_int_custom_property("num_failed_fits", summary["failed"])
        labelled.set_int_custom_property("num_below_min_vd", sum(c[job.LOW_VD] for c in summary["splits"].values()))


def _files(split_dir: str) -> list[str]:
    """The TFRecord data files in a folder: ``*.gz`` (``shard-*.gz``, ``labelled-*.gz``, the
    ingest's ``chunk*-data_tfrecord-*.gz``) and ``*tfrecord*``; not summaries, markers, hidden files."""
    import tensorflow as tf

    return sorted(
        f for f in tf.io.gfile.glob(os.path.join(split_dir, "*"))
        if _is_tfrecord_name(os.path.basename(f)) and not tf.io.gfile.isdir(f)
    )


def _is_tfrecord_name(name: str) -> bool:
    return not name.startswith(".") and (name.endswith(".gz") or "tfrecord" in name)


class PpxfLabelerSpec(ComponentSpec):
    PARAMETERS = {
        LABEL_CONFIG_KEY: ExecutionParameter(type=str),
        CHECKPOINT_DIR_KEY: ExecutionParameter(type=str, optional=True),
        # Set by pipeline.stamp: a fingerprint of the code that runs, read by no executor.
        "code_fingerprint": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {LABELLED_KEY: ChannelParameter(type=standard_artifacts.Examples)}


class PpxfLabeler(base_beam_component.BaseBeamComponent):
    """The input Examples with pPXF labels added (failed fits and sigma < min_vd dropped)."""

    SPEC_CLASS = PpxfLabelerSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, examples: types.BaseChannel, config: job.LabelConfig = job.LabelConfig(), checkpoint_dir: str = ""):
        spec = PpxfLabelerSpec(
            **{
                EXAMPLES_KEY: examples,
                LABEL_CONFIG_KEY: config.to_json(),
                CHECKPOINT_DIR_KEY: checkpoint_dir,
                LABELLED_KEY: types.Channel(type=standard_artifacts.Examples),
            }
        )
        super().__init__(spec=spec)


NO_EXAMPLES = "no tf.Example TFRecords (expected an examples/ folder with Split-* subfolders, or TFRecord files)"


def input_splits(inputs: list[str]) -> dict[str, list[str]]:
    """{split: TFRecord files} of the CLI's inputs.

    Parameters
    ----------
    inputs : list of str
        Examples folders (``Split-*`` kept), run folders of ``stellarpop ingest``,
        ``simulate`` or ``label`` (their ``examples/`` is read), TFRecord files or globs
        of them (split ``all``).

    Raises
    ------
    FileNotFoundError
        For an input that names nothing.
    ValueError
        For an input that holds no TFRecord files.
    """
    splits: dict[str, list[str]] = {}
    for item in inputs:
        found = _input_splits(str(item))
        if not any(found.values()):
            raise ValueError(f"{item}: {NO_EXAMPLES}")
        for split, files in found.items():
            splits.setdefault(split, []).extend(files)
    return splits


def _input_splits(path: str) -> dict[str, list[str]]:
    """{split: TFRecord files} of one input (see :func:`input_splits`)."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(path):
        found = [f for f in sorted(tf.io.gfile.glob(path)) if not tf.io.gfile.isdir(f)]
        if not found:
            raise FileNotFoundError(f"{path}: no such file or Examples folder")
        return {"all": found}
    inner = os.path.join(path, "examples")
    if not tf.io.gfile.glob(os.path.join(path, "Split-*")) and tf.io.gfile.isdir(inner):
        path = inner  # a run folder
    split_dirs = [d for d in sorted(tf.io.gfile.glob(os.path.join(path, "Split-*"))) if tf.io.gfile.isdir(d)]
    if not split_dirs:
        return {"all": _files(path)}
    return {os.path.basename(d.rstrip("/"))[len("Split-"):]: _files(d) for d in split_dirs}


def run_standalone(
    inputs: list[str], out_dir: str, config: job.LabelConfig, beam_pipeline_args: list[str], restart: bool = False
) -> dict:
    """``stellarpop label``: the same executor's job into ``out_dir`` (checkpoints inside)."""
    splits = input_splits(inputs)
    ckpt_dir = os.path.join(out_dir, job.CHECKPOINT_DIR)
    examples_dir = os.path.join(out_dir, "examples")
    job.prepare_checkpoints(ckpt_dir, config, restart)
    shutil.rmtree(examples_dir, ignore_errors=True)  # pass 2 rewrites it from the checkpoints
    os.makedirs(examples_dir)
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=beam_pipeline_args, tmp_dir=os.path.join(out_dir, ".tmp")
    )
    executor = Executor(context)
    return job.run(executor._make_beam_pipeline, splits, examples_dir, ckpt_dir, config)
