"""The ingest job without TFX (``stellarpop ingest``): one run, or a resumable chunked run.

:func:`run_standalone` runs the FitsExampleGen executor outside a pipeline, into the same
Examples layout. :func:`run_chunked` makes that resumable: a DR7-sized ingest (800,000
files at ~100 files/s) runs for hours. The sorted input list is cut into chunks; each
chunk is one run of the ingest job into ``chunks/NNNNN/``, whose
outputs are then moved into the one Examples folder under chunk-prefixed names
(``examples/Split-train/chunk00003-data_tfrecord-...``) before the chunk is marked done.
A re-run of the same command skips done chunks and redoes at most the chunk in flight.
Spectrum ids of published chunks are passed to later ones, so duplicates across chunks are
caught as within one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from stellarpop.components.fits_example_gen import component, job
from stellarpop.components.fits_example_gen.component import INGEST_CONFIG_KEY, Executor
from stellarpop.components.progress import ResumeError
from stellarpop.components.scratch import scratch_tempdir

log = logging.getLogger(__name__)

CHUNKS_DIR = "chunks"
DONE_FILE = "DONE"
INPUTS_FILE = "inputs.txt"


def run_standalone(
    out_dir: str,
    config: job.IngestConfig,
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
    context = BaseBeamExecutor.Context(
        beam_pipeline_args=beam_pipeline_args or [], tmp_dir=os.path.join(out_dir, ".tmp")
    )
    with scratch_tempdir():
        Executor(context).Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
    return job.read_summary(examples.uri)


def _chunk_prefix(k: int) -> str:
    return f"chunk{k:05d}-"


def _remove_published(examples: Path, k: int) -> None:
    """Delete what a crashed publication of chunk k may have left."""
    for path in examples.glob(f"*/{_chunk_prefix(k)}*"):
        path.unlink()


def _publish(chunk_examples: Path, examples: Path, k: int) -> None:
    for path in sorted(chunk_examples.rglob("*")):
        if path.is_file() and path.name != job.SUMMARY_FILE:
            target = examples / path.parent.relative_to(chunk_examples) / (_chunk_prefix(k) + path.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def _add(total: dict, part: dict) -> dict:
    for key, value in part.items():
        if isinstance(value, dict):
            _add(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


def run_chunked(
    inputs: list[str],
    out_dir: str,
    config: job.IngestConfig,
    beam_pipeline_args: list[str],
    chunk_size: int = 50_000,
    restart: bool = False,
) -> dict:
    """Ingest ``inputs`` (files, and inputs that named no file, to be recorded) into
    ``out_dir/examples``, resuming a crashed run of the same inputs.

    Returns the summary of the whole run (also written to ``examples/ingest_summary.json``).
    """
    out = Path(out_dir)
    examples = out / "examples"
    chunks_root = out / CHUNKS_DIR
    listing = "".join(f"{f}\n" for f in inputs)
    manifest = out / INPUTS_FILE
    if restart:
        shutil.rmtree(examples, ignore_errors=True)
        shutil.rmtree(chunks_root, ignore_errors=True)
    elif manifest.exists() and manifest.read_text() != listing and (chunks_root.exists() or examples.exists()):
        raise ResumeError(f"{out} holds a run of other inputs: give another --output, or --restart to replace it")
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_text(listing)
    examples.mkdir(exist_ok=True)
    size = chunk_size if chunk_size > 0 else max(len(inputs), 1)
    chunks = [inputs[i : i + size] for i in range(0, len(inputs), size)] or [[]]
    total: dict = {}
    for k, chunk in enumerate(chunks):
        cdir = chunks_root / f"{k:05d}"
        if (cdir / DONE_FILE).exists():
            log.info("chunk %d already done: skipped", k)
            _add(total, json.loads((cdir / "summary.json").read_text()))
            _report_skipped(config.progress_dir, k, len(chunk))
            continue
        shutil.rmtree(cdir, ignore_errors=True)
        _remove_published(examples, k)
        cdir.mkdir(parents=True)
        (cdir / INPUTS_FILE).write_text("".join(f"{f}\n" for f in chunk))
        chunk_config = dataclasses.replace(
            config,
            inputs=(f"@{(cdir / INPUTS_FILE).resolve()}",),
            known_ids=str(examples.resolve() / job.IDS_DIR / "*.tsv"),
        )
        summary = run_standalone(str(cdir), chunk_config, beam_pipeline_args)
        summary.pop("config")
        _publish(cdir / "examples", examples, k)
        (cdir / "summary.json").write_text(json.dumps(summary))
        shutil.rmtree(cdir / "examples")
        (cdir / DONE_FILE).write_text("")
        _add(total, summary)
    total["config"] = json.loads(dataclasses.replace(config, inputs=(), progress_dir="").to_json())
    total["chunks"] = len(chunks)
    (examples / job.SUMMARY_FILE).write_text(json.dumps(total, indent=2, sort_keys=True))
    return total


def _report_skipped(progress_dir: str, k: int, n: int) -> None:
    if progress_dir:
        Path(progress_dir, f"skipped-{k:05d}.count").write_text(str(n))
