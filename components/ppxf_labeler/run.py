"""The labelling job without TFX (``stellarpop label``): the CLI's inputs resolved to
splits of TFRecord files (:func:`input_splits`), then the PpxfLabeler executor's job into a
run folder, resumable from its checkpoints."""

from __future__ import annotations

import os
import shutil

from tfx.dsl.components.base import base_beam_executor

from stellarpop.components.ppxf_labeler import job
from stellarpop.components.ppxf_labeler.component import Executor, record_files
from stellarpop.components.scratch import scratch_tempdir

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
        return {"all": record_files(path)}
    return {os.path.basename(d.rstrip("/"))[len("Split-") :]: record_files(d) for d in split_dirs}


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
    with scratch_tempdir():
        executor = Executor(context)
        return job.run(executor._make_beam_pipeline, splits, examples_dir, ckpt_dir, config)
