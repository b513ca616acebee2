"""The ingest job: spectrum files -> tf.Examples on the model grid, plus failure records.

:func:`process_file` handles one file and is testable without Beam; :func:`IngestSpectra`
maps it over files with Beam, drops duplicate spectrum ids, applies the paper's selection
and writes failure records and a run summary. The FitsExampleGen executor and the
``stellarpop ingest`` command both run this transform.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import tensorflow as tf

from stellarpop.components import examples, readers
from stellarpop.components.atomic import write_text, write_tfrecords
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


# Tags of the job's records: (tag, payload) pairs stand in for tagged outputs, which the
# DaskRunner of Beam 2.59 mixes into every consumer.
SPECTRUM, FAILURE = "spectrum", "failure"
# Report items, all meeting in one group of a constant key (see _write_reports).
_ID, _FAIL, _CUT, _KEPT, _SEED = "id", "failure", "cut", "kept", "seed"
FILES_PER_SHARD = 5000  # inputs per output shard of each split (one writer each)


def _payloads(item: tuple, tag: str):
    """The payload of a (tag, payload) record with ``tag``; nothing for other tags."""
    if item[0] == tag:
        yield item[1]


class _ProcessFile(beam.DoFn):
    """Beam wrapper of :func:`process_file` -> (SPECTRUM, record) or (FAILURE, record);
    reports progress to ``progress_dir``. ``process`` calls ``setup`` itself when a runner
    did not (the DaskRunner maps ``process`` alone)."""

    def __init__(self, config: IngestConfig):
        self._config = config

    def setup(self):
        self._progress = ProgressFile(self._config.progress_dir)
        self._ready = True

    def process(self, path: str):
        if not getattr(self, "_ready", False):
            self.setup()
        spec, fail = process_file(path, self._config)
        self._progress.add()
        if fail is not None:
            yield FAILURE, fail
        else:
            serialized = examples.to_example(spec).SerializeToString(deterministic=True)
            cuts = describe_cuts(spec, self._config.preparation.selection)
            yield SPECTRUM, (spec.spec_id, path, serialized, spec.selection, cuts)

    def finish_bundle(self):
        if getattr(self, "_ready", False):
            self._progress.flush()


def _first_of_id(item):
    """For one spectrum id read from several files, keep the first file's record (by file
    name, as before: independent of the order workers finish); fail the others."""
    spec_id, records = item
    records = sorted(records, key=lambda r: r[1])
    yield SPECTRUM, records[0]
    for other in records[1:]:
        msg = f"{other[1]}: spectrum id {spec_id} already read from {records[0][1]}"
        yield FAILURE, failure(other[1], "duplicate", "duplicate_id", msg, spec_id)


class _DropKnown(beam.DoFn):
    """Fails spectra whose id an earlier run (chunk) already read; failures pass through.
    The ids are read on first use (``setup`` or the first ``process``), not pickled."""

    def __init__(self, known_ids: str):
        self._pattern = known_ids

    def setup(self):
        self._known = read_ids(self._pattern) if self._pattern else {}

    def process(self, item):
        if not hasattr(self, "_known"):
            self.setup()
        tag, r = item
        first = self._known.get(r[0]) if tag == SPECTRUM else None
        if first is None:
            yield item
        else:
            msg = f"{r[1]}: spectrum id {r[0]} already read from {first}"
            yield FAILURE, failure(r[1], "duplicate", "duplicate_id", msg, r[0])


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


def _unique(records, known_ids: str):
    """Tagged records with one SPECTRUM per spectrum id: duplicates within the run and ids
    read by earlier runs (chunks) become FAILURE records. The records of one id meet in a
    GroupByKey (no side input: the DaskRunner has none)."""
    by_id = (
        records
        | "Spectra" >> beam.FlatMap(_payloads, SPECTRUM)
        | "KeyById" >> beam.Map(lambda r: (r[0], r))
        | "GroupById" >> beam.GroupByKey()
        | "FirstOfId" >> beam.FlatMap(_first_of_id)
        | "KnownIds" >> beam.ParDo(_DropKnown(known_ids))
    )
    read_failures_ = records | "ReadFailures" >> beam.Filter(lambda item: item[0] == FAILURE)
    return (by_id, read_failures_) | "Checked" >> beam.Flatten()


def _select(item, select: bool):
    """A unique spectrum -> (KEPT, record), or with ``select`` and outside the paper's
    sample -> a FAILURE ("select") record; failures pass through."""
    tag, r = item
    if tag != SPECTRUM:
        yield item
    elif select and r[3]:
        yield FAILURE, failure(r[1], "select", "+".join(r[3]), f"{r[1]}: outside the paper's sample: {r[4]}", r[0])
    else:
        yield _KEPT, r


def _report_items(item):
    """The small items the report is made of (see :func:`_write_report`)."""
    tag, r = item
    if tag == FAILURE:
        yield _FAIL, json.dumps(r, sort_keys=True)
    elif tag == SPECTRUM:
        yield _ID, f"{r[0]}\t{r[1]}"
        for cut in r[3]:
            yield _CUT, cut
    else:
        yield _KEPT, ""


def _summary(n_inputs: int, n_written: int, failures: list[dict], cut_counts: Counter, config_json: str) -> str:
    stage_reason = Counter((f["stage"], f["reason"]) for f in failures)
    by_stage: dict[str, dict[str, int]] = {}
    for (stage, reason), n in sorted(stage_reason.items()):
        by_stage.setdefault(stage, {})[reason] = n
    return json.dumps(
        {
            "inputs": n_inputs,
            "examples": n_written,
            "errors": sum(n for (stage, _), n in stage_reason.items() if stage in ERROR_STAGES),
            "rejected_by_selection": sum(n for (stage, _), n in stage_reason.items() if stage == "select"),
            "failures": by_stage,
            "selection_cuts_failed": dict(sorted(cut_counts.items())),
            "config": json.loads(config_json),
        },
        indent=2,
        sort_keys=True,
    )


def _write_report(group, report_dir: str, n_inputs: int, config_json: str) -> str:
    """Writes ``ids/``, ``failures/`` and the summary from the one group of report items.

    One group of a constant key (a GroupByKey: every runner has it) replaces Beam's text
    sinks and the Count/ToList side inputs, none of which the DaskRunner runs. Lines are
    sorted, so the files do not depend on the runner. Returns the summary's path.
    """
    _, items = group
    kinds: dict[str, list[str]] = {_ID: [], _FAIL: [], _CUT: [], _KEPT: []}
    for kind, value in items:
        if kind != _SEED:
            kinds[kind].append(value)
    one = "00000-of-00001"
    write_text(os.path.join(report_dir, IDS_DIR, f"ids-{one}.tsv"), "".join(f"{x}\n" for x in sorted(kinds[_ID])))
    failures = [json.loads(x) for x in sorted(kinds[_FAIL])]
    lines = "".join(f"{x}\n" for x in sorted(kinds[_FAIL]))
    write_text(os.path.join(report_dir, FAILURES_DIR, f"failures-{one}.jsonl"), lines)
    text = _summary(n_inputs, len(kinds[_KEPT]), failures, Counter(kinds[_CUT]), config_json)
    return write_text(os.path.join(report_dir, SUMMARY_FILE), text)


def _shard_of(spec_id: str, n_shards: int) -> int:
    """A stable shard (crc32: Python's str hash differs between worker processes)."""
    return zlib.crc32(spec_id.encode()) % n_shards


@dataclass(frozen=True)
class SplitWriter:
    """Writes kept spectra into ``Split-<name>/data_tfrecord-SSSSS-of-NNNNN.gz`` (TFX's
    ExampleGen names), assigning splits with TFX's own partition function and config.

    Each shard's records meet in a GroupByKey and are written sorted by spectrum id under a
    temporary name, then renamed: no Beam file sink (its finalisation never runs on the
    DaskRunner), and a reader never sees a partial file. Every shard writes every split, if
    empty, as Beam's sink wrote one file for an empty split.
    """

    examples_dir: str
    output_config_json: str
    split_names: tuple[str, ...]
    n_shards: int

    def write(self, group) -> int:
        from tfx.components.example_gen.base_example_gen_executor import _PartitionFn
        from tfx.proto import example_gen_pb2
        from tfx.utils import proto_utils

        shard, records = group
        config = proto_utils.json_to_proto(self.output_config_json, example_gen_pb2.Output())
        splits = config.split_config.splits
        buckets = list(itertools.accumulate(s.hash_buckets for s in splits))
        by_split: dict[str, list[bytes]] = {s: [] for s in self.split_names}
        for r in sorted((r for r in records if r is not None), key=lambda r: r[0]):
            example = tf.train.Example.FromString(r[2])
            index = _PartitionFn(example, len(buckets), buckets, config.split_config) if splits else 0
            by_split[self.split_names[index]].append(r[2])
        for split, serialized in by_split.items():
            name = f"data_tfrecord-{shard:05d}-of-{self.n_shards:05d}.gz"
            path = os.path.join(self.examples_dir, f"Split-{split}", name)
            write_tfrecords(path, serialized)
        return sum(len(v) for v in by_split.values())


def _write_splits(pipeline: beam.Pipeline, kept, writer: SplitWriter):
    shards = pipeline | "AllShards" >> beam.Create([(k, None) for k in range(writer.n_shards)])
    keyed = kept | "KeyByShard" >> beam.Map(lambda r, n: (_shard_of(r[0], n), r), writer.n_shards)
    return (
        (keyed, shards)
        | "ShardRecords" >> beam.Flatten()
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShard" >> beam.Map(writer.write)
    )


@beam.ptransform_fn
def IngestSpectra(
    pipeline: beam.Pipeline,
    config: IngestConfig,
    report_dir: str,
    pattern: str = "",  # noqa: N802
    writer_of=None,
):
    """Files -> tf.train.Examples on the model grid (the PTransform's output).

    Side outputs, written under ``report_dir``: ``failures/failures-*.jsonl`` (one record
    per unusable input, duplicate or rejected spectrum), ``ids/`` and ``ingest_summary.json``.
    ``writer_of(n_files)``, if given, returns the :class:`SplitWriter` that also writes the
    kept spectra into split files (the executor's output on every runner).

    The same pipeline runs on the DirectRunner and on the DaskRunner: only Create, ParDo/Map,
    GroupByKey and Flatten, with (tag, payload) records instead of tagged outputs.
    """
    files, unresolved = resolve(config, pattern)
    log.info("ingest: %d input files, %d unresolved inputs", len(files), len(unresolved))
    records = (
        pipeline
        | "Files" >> beam.Create(files)
        | "Reshuffle" >> beam.Reshuffle()
        | "Process" >> beam.ParDo(_ProcessFile(config))
    )
    checked = _unique(records, config.known_ids)
    selected = checked | "Select" >> beam.FlatMap(_select, config.select)
    unresolved_pc = pipeline | "Unresolved" >> beam.Create([(FAILURE, u) for u in unresolved])
    seed = pipeline | "ReportSeed" >> beam.Create([(_SEED, "")])  # a report also for no input
    n_inputs, config_json = len(files) + len(unresolved), config.to_json()
    report_dir = str(report_dir)
    items = (
        (checked | "UniqueOnly" >> beam.Filter(lambda item: item[0] == SPECTRUM), selected, unresolved_pc)
        | "ReportRecords" >> beam.Flatten()
        | "ReportItems" >> beam.FlatMap(_report_items)
    )
    _ = (
        (items, seed)
        | "WithSeed" >> beam.Flatten()
        | "KeyReport" >> beam.Map(lambda item: (None, item))
        | "GroupReport" >> beam.GroupByKey()
        | "WriteReport" >> beam.Map(lambda group: _write_report(group, report_dir, n_inputs, config_json))
    )
    kept = selected | "Kept" >> beam.FlatMap(_payloads, _KEPT)
    if writer_of is not None:
        _write_splits(pipeline, kept, writer_of(len(files)))
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
