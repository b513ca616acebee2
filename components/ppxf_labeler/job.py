"""The labelling job: tf.Examples -> pPXF fits (checkpointed) -> labelled tf.Examples.

Two Beam passes:

1. **Fit.** Every spectrum whose id has no checkpointed result is fitted (``ppxf_fit``),
   and its result is appended to the worker's own checkpoint file as one JSON line, flushed
   and fsync'ed before the next fit starts (on a remote filesystem, which cannot append,
   results are written in small files of ``remote_batch`` fits). A crash or ``kill -9``
   loses only the fits in flight; a re-run reads the checkpoints and skips finished ids. A
   failed fit is a result with status ``failed`` and its message, never a crashed job.
2. **Write.** Each input split is rewritten with the label features added
   (``features.LABEL_KEYS``, their ``_err``, chi2 and good-pixel count). Failed fits and the
   paper's cut (sigma < ``min_vd``, 50 km/s) are dropped and counted per split.

A fit depends on the spectrum and the configuration alone (one BLAS thread per worker), so
the labels do not depend on the number of workers or on interruptions (tested).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
import tensorflow as tf

from stellarpop.components import ppxf_fit, readers, templates
from stellarpop.components.atomic import write_text, write_tfrecords
from stellarpop.components.progress import ProgressFile, ResumeError
from stellarpop.schema import config_codec
from stellarpop.schema import features as F

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "label_config.json"
SUMMARY_FILE = "label_summary.json"
LABELLED, FAILED, LOW_VD = "labelled", "failed_fit", "vd_below_min"


@dataclass(frozen=True)
class LabelConfig:
    """A labelling run (recorded with its output and checked on resume)."""

    fit: ppxf_fit.FitConfig = field(default_factory=ppxf_fit.FitConfig)
    min_vd: float = 50.0  # km/s; the paper drops spectra with sigma below this
    instrument_files: tuple[str, ...] = ()  # SDSS files giving the LSF; empty: ppxf's
    remote_batch: int = 20
    progress_dir: str = ""

    def to_json(self) -> str:
        return config_codec.to_json(self)

    @classmethod
    def from_json(cls, text: str) -> LabelConfig:
        return config_codec.from_json(cls, text)

    def recorded(self) -> str:
        """What must match for a checkpoint to be resumed (no paths of this session)."""
        return dataclasses.replace(self, progress_dir="", remote_batch=0).to_json()


def read_checkpoints(ckpt_dir: str) -> dict[str, ppxf_fit.LabelResult]:
    """Every finished fit in ``ckpt_dir``; a line cut by a crash is ignored (refitted)."""
    out = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(ckpt_dir, "*.jsonl"))):
        with tf.io.gfile.GFile(path) as fh:
            text = fh.read()
        for line in text.split("\n")[:-1]:  # the text after the last newline is torn
            try:
                result = ppxf_fit.LabelResult.from_json(line)
            except (ValueError, TypeError):
                log.warning("%s: ignoring a damaged checkpoint line", path)
                continue
            out[result.spec_id] = result
    return out


def prepare_checkpoints(ckpt_dir: str, config: LabelConfig, restart: bool = False) -> None:
    """Create ``ckpt_dir`` or check that it holds fits of the same configuration."""
    recorded = os.path.join(ckpt_dir, CONFIG_FILE)
    if restart and tf.io.gfile.exists(ckpt_dir):
        tf.io.gfile.rmtree(ckpt_dir)
    if tf.io.gfile.exists(recorded):
        with tf.io.gfile.GFile(recorded) as fh:
            if fh.read() != config.recorded():
                raise ResumeError(
                    f"{ckpt_dir} holds fits made with another configuration: use another folder or restart"
                )
        return
    tf.io.gfile.makedirs(ckpt_dir)
    with tf.io.gfile.GFile(recorded, "w") as fh:
        fh.write(config.recorded())


def spectrum_of(example: tf.train.Example) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, float]:
    """(spec_id, flux, ivar, mask, z) of a serialized-and-parsed Example."""
    f = example.features.feature
    return (
        f[F.SPEC_ID].bytes_list.value[0].decode(),
        np.asarray(f[F.FLUX].float_list.value, float),
        np.asarray(f[F.IVAR].float_list.value, float),
        np.asarray(f[F.MASK].int64_list.value),
        float(f[F.Z].float_list.value[0]),
    )


class _CheckpointWriter:
    """Appends results to this worker's own file (local), or writes small files (remote)."""

    def __init__(self, ckpt_dir: str, remote_batch: int):
        self._dir = ckpt_dir
        self._local = "://" not in ckpt_dir
        self._batch = max(1, remote_batch)
        self._fh = None
        self._pending: list[str] = []

    def write(self, result: ppxf_fit.LabelResult) -> None:
        line = result.to_json() + "\n"
        if self._local:
            if self._fh is None:
                self._fh = open(os.path.join(self._dir, f"fits-{uuid.uuid4().hex}.jsonl"), "a")
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        else:
            self._pending.append(line)
            if len(self._pending) >= self._batch:
                self.flush()

    def flush(self) -> None:
        if self._pending:
            name = os.path.join(self._dir, f"fits-{uuid.uuid4().hex}")
            with tf.io.gfile.GFile(name + ".tmp", "w") as fh:
                fh.write("".join(self._pending))
            tf.io.gfile.rename(name + ".tmp", name + ".jsonl")
            self._pending = []

    def close(self) -> None:
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


FIT_SLICES = 16  # units of work per input file in the fit pass (see fit_all)


@functools.lru_cache(maxsize=2)
def _checkpoints(ckpt_dir: str, token: str) -> dict[str, ppxf_fit.LabelResult]:
    """The checkpoints as one pass (``token``) found them, read once per worker process.

    The DaskRunner gives every task its own copy of a DoFn and never calls ``setup``: the
    cache keeps a worker from re-reading every checkpoint for each unit of work. A new pass
    has a new token, so it never sees another pass's snapshot."""
    return read_checkpoints(ckpt_dir)


@functools.lru_cache(maxsize=2)
def _fitter(config_json: str) -> ppxf_fit.Fitter:
    """The fitter of a configuration, built once per worker process (templates and LSF)."""
    config = LabelConfig.from_json(config_json)
    lib = templates.load_library(config.fit.library or None)
    inst = readers.instrument_from_files(config.instrument_files or None)
    return ppxf_fit.Fitter(lib, inst, config.fit)


def read_slice(unit: tuple[str, int, int]) -> list[bytes]:
    """Records ``k, k + n, k + 2n, ...`` of a gzipped (by name) or plain TFRecord file."""
    path, k, n = unit
    dataset = tf.data.TFRecordDataset([path], compression_type="GZIP" if path.endswith(".gz") else "")
    return [raw.numpy() for i, raw in enumerate(dataset) if i % n == k]


class FitSpectra(beam.DoFn):
    """Fits the spectra of one unit of work (file, slice, slices) that have no checkpointed
    result; checkpoints each result.

    The finished ids are read from the checkpoints on first use (not pickled into the DoFn:
    the job graph stays the same size however many spectra are done). The checkpoint writer
    is opened and closed within ``process``: the DaskRunner calls no ``start_bundle`` or
    ``finish_bundle``, so nothing may wait in a buffer for them."""

    def __init__(self, config: LabelConfig, ckpt_dir: str, token: str = ""):
        self._config = config
        self._dir = ckpt_dir
        self._token = token or uuid.uuid4().hex

    def setup(self):
        from threadpoolctl import threadpool_limits

        # One BLAS thread: results then do not depend on the threads a worker happens to get.
        self._limits = threadpool_limits(1)
        self._fitter = _fitter(self._config.to_json())
        self._progress = ProgressFile(self._config.progress_dir)
        self._done = frozenset(_checkpoints(self._dir, self._token))

    def process(self, unit: tuple[str, int, int]):
        if not hasattr(self, "_done"):
            self.setup()
        writer = _CheckpointWriter(self._dir, self._config.remote_batch)
        try:
            for serialized in read_slice(unit):
                spec_id, flux, ivar, mask, z = spectrum_of(tf.train.Example.FromString(serialized))
                if spec_id not in self._done:
                    writer.write(self._fitter.fit(spec_id, flux, ivar, mask, z))
                    beam.metrics.Metrics.counter("ppxf", "fitted").inc()
                self._progress.add()
        finally:
            writer.close()
            self._progress.flush()
        return []


def add_labels(example: tf.train.Example, result: ppxf_fit.LabelResult) -> tf.train.Example:
    """The Example with pPXF's labels, errors, chi2 and good-pixel count added."""
    feats = example.features.feature
    for key in F.LABEL_KEYS:
        for name in (key, key + F.ERR_SUFFIX):
            feats[name].ClearField("float_list")
            feats[name].float_list.value.append(float(getattr(result, name)))
    feats[F.PPXF_CHI2].ClearField("float_list")
    feats[F.PPXF_CHI2].float_list.value.append(float(result.chi2))
    feats[F.PPXF_NGOOD].ClearField("int64_list")
    feats[F.PPXF_NGOOD].int64_list.value.append(int(result.n_good))
    return example


class WriteLabels(beam.DoFn):
    """Adds labels to one input file of a split and writes it as one output file; drops
    failed fits and sigma < min_vd. Yields the file's (split, {outcome: n}) counts.

    The results are read from the checkpoints on first use. The output file is written under
    a temporary name and renamed (:mod:`~stellarpop.components.atomic`), not by a Beam sink,
    whose finalisation the DaskRunner never runs; its records keep the input's order."""

    def __init__(self, split: str, ckpt_dir: str, min_vd: float, out_dir: str = "", n_files: int = 1, token: str = ""):
        self._split = split
        self._dir = ckpt_dir
        self._min_vd = min_vd
        self._out = out_dir
        self._n_files = n_files
        self._token = token or uuid.uuid4().hex

    def setup(self):
        self._results = _checkpoints(self._dir, self._token)  # spec_id -> LabelResult

    def label(self, serialized: bytes) -> tuple[str, bytes | None]:
        """(outcome, labelled record or None) of one input record."""
        example = tf.train.Example.FromString(serialized)
        result = self._results[example.features.feature[F.SPEC_ID].bytes_list.value[0].decode()]
        if not result.ok:
            return FAILED, None
        if not result.vd >= self._min_vd:
            return LOW_VD, None
        return LABELLED, add_labels(example, result).SerializeToString(deterministic=True)

    def process(self, indexed_file: tuple[int, str]):
        if not hasattr(self, "_results"):
            self.setup()
        index, path = indexed_file
        counts: Counter = Counter()
        labelled = []
        for serialized in read_slice((path, 0, 1)):
            outcome, record = self.label(serialized)
            counts[outcome] += 1
            if record is not None:
                labelled.append(record)
        name = f"labelled-{index:05d}-of-{self._n_files:05d}.gz"
        write_tfrecords(os.path.join(self._out, f"Split-{self._split}", name), labelled)
        yield self._split, dict(counts)


def fit_all(pipeline: beam.Pipeline, files: list[str], config: LabelConfig, ckpt_dir: str, slices: int = FIT_SLICES):
    """Pass 1: fit every spectrum of ``files`` that has no result in ``ckpt_dir``.

    The units of work are (file, k, ``slices``): records k, k + slices, ... of a file. Only
    Create and ParDo: the DaskRunner spreads the work by Create's partitions alone (its
    Reshuffle does nothing), so one unit per file would leave all but a few workers idle."""
    units = [(f, k, slices) for f in files for k in range(slices)]
    return (
        pipeline
        | "FitUnits" >> beam.Create(units)
        | "Reshuffle" >> beam.Reshuffle()
        | "Fit" >> beam.ParDo(FitSpectra(config, ckpt_dir))
    )


def _write_counts(group, path: str) -> str:
    """label_counts.json ([[split, outcome, n], ...]) of every file's counts."""
    _, items = group
    total: Counter = Counter()
    for item in items:
        if item is not None:
            split, counts = item
            total.update({(split, outcome): n for outcome, n in counts.items()})
    return write_text(path, json.dumps([[s, o, n] for (s, o), n in sorted(total.items())]))


def write_all(pipeline: beam.Pipeline, splits: dict[str, list[str]], ckpt_dir: str, min_vd: float, out_dir: str):
    """Pass 2: every split rewritten with labels into ``out_dir/Split-*`` (one output file per
    input file); the counts meet in one group of a constant key and go to label_counts.json."""
    token = uuid.uuid4().hex
    counts = [pipeline | "CountsSeed" >> beam.Create([None])]  # a counts file also for no input
    for split, files in splits.items():
        counts.append(
            pipeline
            | f"Write{split}Files" >> beam.Create(list(enumerate(files)))
            | f"Write{split}Reshuffle" >> beam.Reshuffle()
            | f"Label{split}" >> beam.ParDo(WriteLabels(split, ckpt_dir, min_vd, out_dir, len(files), token))
        )
    path = os.path.join(out_dir, "label_counts.json")
    return (
        counts
        | "AllCounts" >> beam.Flatten()
        | "KeyCounts" >> beam.Map(lambda item: (None, item))
        | "GroupCounts" >> beam.GroupByKey()
        | "WriteCounts" >> beam.Map(_write_counts, path)
    )


def run(make_pipeline, splits: dict[str, list[str]], out_dir: str, ckpt_dir: str, config: LabelConfig) -> dict:
    """Fit (resuming from ``ckpt_dir``), then write the labelled splits and a summary.

    ``make_pipeline()`` returns a fresh Beam pipeline (a context manager) for each pass. The
    template library is made ready first, in this process, so workers never fill the cache.
    """
    templates.library_path(config.fit.library or None)
    files = [f for fs in splits.values() for f in fs]
    done = read_checkpoints(ckpt_dir)
    log.info("%d fits already checkpointed in %s", len(done), ckpt_dir)
    with make_pipeline() as pipeline:
        fit_all(pipeline, files, config, ckpt_dir)
    results = read_checkpoints(ckpt_dir)
    with make_pipeline() as pipeline:
        write_all(pipeline, splits, ckpt_dir, config.min_vd, out_dir)
    with tf.io.gfile.GFile(os.path.join(out_dir, "label_counts.json")) as fh:
        triples = json.load(fh)
    per_split = {s: {LABELLED: 0, FAILED: 0, LOW_VD: 0} for s in splits}
    for split, outcome, n in triples:
        per_split[split][outcome] = n
    failures = sorted((r for r in results.values() if not r.ok), key=lambda r: r.spec_id)
    summary = {
        "splits": per_split,
        "fitted_before": len(done),
        "fitted": len(results),
        "failed": len(failures),
        "failure_messages": dict(sorted(Counter(r.message for r in failures).items())),
        "config": json.loads(config.recorded()),
    }
    with tf.io.gfile.GFile(os.path.join(out_dir, SUMMARY_FILE), "w") as fh:
        json.dump(summary, fh, indent=2, sort_keys=True)
    with tf.io.gfile.GFile(os.path.join(out_dir, "failed_fits.jsonl"), "w") as fh:
        fh.write("".join(r.to_json() + "\n" for r in failures))
    return summary


def read_summary(out_dir: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(out_dir, SUMMARY_FILE)) as fh:
        return json.load(fh)
