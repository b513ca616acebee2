"""The ingest job: spectrum files -> tf.Examples on the model grid, plus failure records.

:func:`process_file` handles one file and is testable without Beam; :func:`IngestSpectra`
maps it over files with Beam, drops duplicate spectrum ids, applies the paper's selection
and writes failure records and a run summary. The FitsExampleGen executor and the
``stellarpop ingest`` command both run this transform.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import tensorflow as tf

from stellarpop.components import examples, readers
from stellarpop.components.instrument import DEFAULT_BAD_BITS
from stellarpop.components.progress import ProgressFile
from stellarpop.components.spectra import SpectrumError, describe_cuts, prepare
from stellarpop.schema import config_codec
from stellarpop.schema.preparation import Preparation

log = logging.getLogger(__name__)

FAILURES_DIR = "failures"  # beside the Split-* folders of the Examples artefact
IDS_DIR = "ids"  # spec_id <TAB> file of every spectrum read (for duplicates across runs)
SUMMARY_FILE = "ingest_summary.json"

# Stages of a failure record; "select" records are spectra outside the paper's sample, the
# others are inputs that could not be used.
ERROR_STAGES = ("resolve", "read", "validate", "duplicate")


@dataclass(frozen=True)
class IngestConfig:
    """Everything the ingest job needs besides its inputs and outputs (recorded with them)."""

    select: bool = True  # drop spectra outside the paper's sample (always recorded)
    preparation: Preparation = field(default_factory=Preparation)
    bad_bits: tuple[int, ...] = DEFAULT_BAD_BITS
    inputs: tuple[str, ...] = ()  # explicit inputs (CLI); empty: input_base/pattern
    catalogue: str = ""  # plate/mjd/fiber table resolved against sdss_root
    sdss_root: str = ""
    progress_dir: str = ""  # where workers report progress for a local progress bar
    known_ids: str = ""  # ids files of earlier runs (chunks): spectra already read

    def to_json(self) -> str:
        return config_codec.to_json(self)

    @classmethod
    def from_json(cls, text: str | None) -> IngestConfig:
        return config_codec.from_json(cls, text)


def failure(file: str, stage: str, reason: str, message: str, spec_id: str = "") -> dict[str, str]:
    """A failure record: which file, at which stage, a reason code and a readable message."""
    return {"file": file, "spec_id": spec_id, "stage": stage, "reason": reason, "message": message}


def process_file(path: str, config: IngestConfig) -> tuple[Any, dict | None]:
    """Read, validate and resample one file; decide its selection.

    Returns
    -------
    (Spectrum on the model grid, None), or (None, failure record)
    """
    stage, spec = "read", None
    try:
        spec = readers.read_spectrum(path, config.bad_bits)
        stage = "validate"
        return prepare(spec, config.preparation), None
    except SpectrumError as exc:
        return None, failure(path, stage, exc.reason, f"{path}: {exc}", spec.spec_id if spec else "")
    except Exception as exc:  # noqa: BLE001 - a crash on one file must not stop the batch
        log.exception("unexpected error on %s", path)
        return None, failure(path, stage, "internal_error", f"{path}: {type(exc).__name__}: {exc}")


def resolve(config: IngestConfig, pattern: str = "") -> tuple[list[str], list[dict]]:
    """Input files and failure records of inputs that name no file."""
    files, missing = readers.resolve(
        list(config.inputs) or ([pattern] if pattern else []), config.catalogue, config.sdss_root
    )
    return files, [failure(m.file, "resolve", "not_found", f"{m.file}: {m.message}") for m in missing]


class _ProcessFile(beam.DoFn):
    """Beam wrapper of :func:`process_file`; reports progress to ``progress_dir``."""

    def __init__(self, config: IngestConfig):
        self._config = config

    def setup(self):
        self._progress = ProgressFile(self._config.progress_dir)

    def process(self, path: str):
        spec, fail = process_file(path, self._config)
        if fail is not None:
            yield beam.pvalue.TaggedOutput("failures", fail)
        else:
            serialized = examples.to_example(spec).SerializeToString(deterministic=True)
            yield (
                spec.spec_id,
                path,
                serialized,
                spec.selection,
                describe_cuts(spec, self._config.preparation.selection),
            )
        self._progress.add()

    def finish_bundle(self):
        self._progress.flush()


def _duplicates(item):
    """For one spectrum id read from several files, keep the first file; fail the others."""
    spec_id, paths = item
    paths = sorted(paths)
    for other in paths[1:]:
        yield failure(
            other, "duplicate", "duplicate_id", f"{other}: spectrum id {spec_id} already read from {paths[0]}", spec_id
        )


class _DropKnown(beam.DoFn):
    """Fails spectra whose id an earlier run (chunk) already read."""

    def __init__(self, known_ids: str):
        self._pattern = known_ids

    def setup(self):
        self._known = read_ids(self._pattern) if self._pattern else {}

    def process(self, r):
        first = self._known.get(r[0])
        if first is None:
            yield r
        else:
            msg = f"{r[1]}: spectrum id {r[0]} already read from {first}"
            yield beam.pvalue.TaggedOutput("failures", failure(r[1], "duplicate", "duplicate_id", msg, r[0]))


def read_ids(pattern: str) -> dict[str, str]:
    """{spec_id: file} from ids files (a glob)."""
    out: dict[str, str] = {}
    for path in sorted(tf.io.gfile.glob(pattern)):
        with tf.io.gfile.GFile(path) as fh:
            for line in fh:
                if line.strip():
                    spec_id, file = line.rstrip("\n").split("\t", 1)
                    out.setdefault(spec_id, file)
    return out


def _summary(_, n_inputs, n_written, stage_reason_counts, cut_counts, config_json):
    failures: dict[str, dict[str, int]] = {}
    for (stage, reason), n in stage_reason_counts:
        failures.setdefault(stage, {})[reason] = n
    n_errors = sum(n for (stage, _), n in stage_reason_counts if stage in ERROR_STAGES)
    n_rejected = sum(n for (stage, _), n in stage_reason_counts if stage == "select")
    return json.dumps(
        {
            "inputs": n_inputs,
            "examples": n_written,
            "errors": n_errors,
            "rejected_by_selection": n_rejected,
            "failures": failures,
            "selection_cuts_failed": dict(cut_counts),
            "config": json.loads(config_json),
        },
        indent=2,
        sort_keys=True,
    )


def _unique(spectra, known_ids: str):
    """One record per spectrum id: duplicates within the run and ids read by earlier runs
    (chunks) become failure records. Returns (unique records, [failure PCollections])."""
    dup_failures = (
        spectra
        | "IdToPath" >> beam.Map(lambda r: (r[0], r[1]))
        | "GroupById" >> beam.GroupByKey()
        | "Duplicates" >> beam.FlatMap(_duplicates)
    )
    losers = dup_failures | "LoserPaths" >> beam.Map(lambda f: f["file"]) | "LoserSet" >> beam.combiners.ToSet()
    checked = (
        spectra
        | "DropDuplicates" >> beam.Filter(lambda r, lost: r[1] not in lost, lost=beam.pvalue.AsSingleton(losers))
        | "KnownIds" >> beam.ParDo(_DropKnown(known_ids)).with_outputs("failures", main="unique")
    )
    return checked.unique, [dup_failures, checked.failures]


def _selected(pipeline: beam.Pipeline, unique, select: bool):
    """(kept records, selection failure records): with ``select`` the spectra outside the
    paper's sample are rejected and recorded, else all are kept."""
    if not select:
        return unique, pipeline | "NoRejected" >> beam.Create([])
    kept = unique | "Selected" >> beam.Filter(lambda r: not r[3])
    rejected = (
        unique
        | "Rejected" >> beam.Filter(lambda r: bool(r[3]))
        | "RejectRecord"
        >> beam.Map(
            lambda r: failure(r[1], "select", "+".join(r[3]), f"{r[1]}: outside the paper's sample: {r[4]}", r[0])
        )
    )
    return kept, rejected


def _write_reports(pipeline: beam.Pipeline, report_dir: str, failures, unique, kept, n_inputs: int, config_json: str):
    """The ids of every spectrum read, the failure records and the run summary."""
    _ = (
        unique
        | "IdLine" >> beam.Map(lambda r: f"{r[0]}\t{r[1]}")
        | "WriteIds" >> beam.io.WriteToText(os.path.join(report_dir, IDS_DIR, "ids"), file_name_suffix=".tsv")
    )
    _ = (
        failures
        | "FailureJson" >> beam.Map(lambda f: json.dumps(f, sort_keys=True))
        | "WriteFailures"
        >> beam.io.WriteToText(
            os.path.join(report_dir, FAILURES_DIR, "failures"), file_name_suffix=".jsonl", num_shards=1
        )
    )
    counts = (
        failures
        | "StageReason" >> beam.Map(lambda f: (f["stage"], f["reason"]))
        | "CountFailures" >> beam.combiners.Count.PerElement()
    )
    cuts = unique | "Cuts" >> beam.FlatMap(lambda r: r[3]) | "CountCuts" >> beam.combiners.Count.PerElement()
    n_written = kept | "CountWritten" >> beam.combiners.Count.Globally()
    _ = (
        pipeline
        | "SummarySeed" >> beam.Create([None])
        | "Summary"
        >> beam.Map(
            _summary,
            n_inputs=n_inputs,
            n_written=beam.pvalue.AsSingleton(n_written),
            stage_reason_counts=beam.pvalue.AsList(counts),
            cut_counts=beam.pvalue.AsList(cuts),
            config_json=config_json,
        )
        | "WriteSummary"
        >> beam.io.WriteToText(os.path.join(report_dir, SUMMARY_FILE), num_shards=1, shard_name_template="")
    )


@beam.ptransform_fn
def IngestSpectra(pipeline: beam.Pipeline, config: IngestConfig, report_dir: str, pattern: str = ""):  # noqa: N802
    """Files -> tf.train.Examples on the model grid (the PTransform's output).

    Side outputs, written under ``report_dir``: ``failures/failures-*.jsonl`` (one record
    per unusable input, duplicate or rejected spectrum), ``ids/`` and ``ingest_summary.json``.
    """
    files, unresolved = resolve(config, pattern)
    log.info("ingest: %d input files, %d unresolved inputs", len(files), len(unresolved))
    results = (
        pipeline
        | "Files" >> beam.Create(files)
        | "Reshuffle" >> beam.Reshuffle()
        | "Process" >> beam.ParDo(_ProcessFile(config)).with_outputs("failures", main="spectra")
    )
    unique, id_failures = _unique(results.spectra, config.known_ids)
    kept, rejected = _selected(pipeline, unique, config.select)
    unresolved_pc = pipeline | "Unresolved" >> beam.Create(unresolved)
    all_failures = (results.failures, *id_failures, rejected, unresolved_pc) | "AllFailures" >> beam.Flatten()
    _write_reports(pipeline, report_dir, all_failures, unique, kept, len(files) + len(unresolved), config.to_json())
    return kept | "ToExample" >> beam.Map(lambda r: tf.train.Example.FromString(r[2]))


def read_summary(report_dir: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(report_dir, SUMMARY_FILE)) as fh:
        return json.loads(fh.read())


def read_failures(report_dir: str) -> list[dict]:
    out = []
    for path in sorted(tf.io.gfile.glob(os.path.join(report_dir, FAILURES_DIR, "*.jsonl"))):
        with tf.io.gfile.GFile(path) as fh:
            out.extend(json.loads(line) for line in fh if line.strip())
    return out
