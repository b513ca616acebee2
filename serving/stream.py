"""Continuous prediction: a Beam streaming job predicts spectrum files as they land::

    discover --(file | tick)--> SkipCommitted --> PredictFiles --(batch | tick)-->
        CloseWindows --(pane)--> WritePanes --> OUT

Locally a paced impulse every ``poll_s`` lists the watched folder (:class:`ListFolder`); on
Dataflow GCS object-finalize notifications come through Pub/Sub, with ticks from an impulse.
Files that the output's ledger names are skipped (a restart), the others are prepared as
``stellarpop predict`` prepares them and predicted in batches by TFX's RunInference handler on
the newest model version (``stream_io``: files, model versions, the output's layout). Fixed
windows of ``window_s`` by discovery time are closed by ticks carrying the wall-clock time
(on Dataflow also by the watermark); a file that arrives for a written window makes a late
pane; a pane's ledger is written last.

Why not ``WindowInto`` with triggers, nor ``MatchContinuously``: on the local runner (the
DirectRunner's FnApiRunner) nothing after a GroupByKey or a Flatten runs before the job
stops, there are no processing-time triggers, event-time timers fire after every bundle and a
deferred ``PeriodicImpulse`` is re-run at once (a spinning core); the BundleBasedDirectRunner
cannot run ``PeriodicImpulse``; and a state write costs milliseconds once TensorFlow is loaded
(the state cache sizes values with objsize), so state is written per listing and per batch,
not per file. The chain stays linear and the window clock travels in the data.
"""

from __future__ import annotations

import logging
import math
import pickle
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import BytesCoder, PickleCoder
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.periodicsequence import ImpulseSeqGenDoFn, ImpulseSeqGenRestrictionProvider, PeriodicImpulse
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from stellarpop.serving import stream_io, stream_model
from stellarpop.serving.stream_io import DEAD, ROW, FileRecord

log = logging.getLogger("stellarpop.serving.stream")

TICK, FILE, BATCH = "tick", "file", "batch"
LOCAL_RUNNERS = ("DirectRunner", "SwitchingDirectRunner", "FnApiRunner")
MAX_PER_LISTING = 512  # files taken from one listing; a backlog is committed pane by pane
_COUNTS: dict[str, dict[str, int]] = {}  # {run id: {counter: value}}, for the local summary
_STOPS: dict[str, threading.Event] = {}  # {run id: set by Ctrl-C or SIGTERM}, local runs
_LOCK = threading.Lock()


def stop_requested(run_id: str) -> threading.Event:
    """Set to end a local run as ``stop_after_s`` does: one last listing, every window written."""
    with _LOCK:
        return _STOPS.setdefault(run_id, threading.Event())


@dataclass(frozen=True)
class StreamSettings:
    """One run of the job (the fields are :func:`run_stream`'s arguments)."""

    watch: str
    model_base_path: str
    output: str
    run_id: str
    start: float
    window_s: float = 10.0
    stop_after_s: float | None = None
    poll_s: float = 1.0
    pubsub_subscription: str | None = None
    batch_size: int = 64
    watermark_timers: bool = False  # a runner with a real watermark (not the local one)

    @property
    def stop(self) -> float | None:
        return None if self.stop_after_s is None else self.start + self.stop_after_s


class Pane(NamedTuple):
    """The items of window [start, end) (s since the epoch) since its previous pane; ``number``
    counts the run's panes, ``late`` marks a window written before."""

    start: float
    end: float
    number: int
    late: bool
    items: tuple


class Counter:
    """A Beam counter that also counts in this process for the local summary (the
    FnApiRunner's metrics query recurses once per bundle and overflows on a long run)."""

    def __init__(self, run_id: str, name: str):
        self.run_id, self.name, self.beam = run_id, name, Metrics.counter("stellarpop.stream", name)

    def inc(self, n: int = 1) -> None:
        self.beam.inc(n)
        with _LOCK:
            counts = _COUNTS.setdefault(self.run_id, {})
            counts[self.name] = counts.get(self.name, 0) + n


class _PacedImpulseDoFn(ImpulseSeqGenDoFn):
    """PeriodicImpulse's generator, waiting until its next firing is due (the FnApiRunner
    re-runs a deferred residual at once, not after the delay asked for); a stop request
    fires once more, then ends the sequence (a KeyboardInterrupt is lost inside Beam)."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def process(
        self,
        element,
        restriction_tracker=beam.DoFn.RestrictionParam(ImpulseSeqGenRestrictionProvider()),
        watermark_estimator=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        start, _, interval = element
        position = restriction_tracker.current_restriction().start
        if stop_requested(self.run_id).wait(
            min(max(0.0, start.micros / 1e6 + interval * position - time.time()), interval)
        ):
            if restriction_tracker.try_claim(position):
                yield time.time()
            restriction_tracker.try_claim(restriction_tracker.current_restriction().stop)  # done
            return
        yield from super().process(element, restriction_tracker, watermark_estimator)


class PacedImpulse(beam.PTransform):
    """``PeriodicImpulse`` (elements: the firing time, s) that does not spin on the local runner."""

    def __init__(self, start: float, stop: float | None, interval: float, run_id: str):
        self.start, self.stop, self.interval, self.run_id = start, stop, interval, run_id

    def expand(self, pbegin):
        stop = MAX_TIMESTAMP if self.stop is None else Timestamp(self.stop)
        return (
            pbegin
            | "Start" >> beam.Create([(Timestamp(self.start), stop, self.interval)])
            | "Fire" >> beam.ParDo(_PacedImpulseDoFn(self.run_id))
            | "At its time" >> beam.Map(lambda t: TimestampedValue(t, t))
        )


class ListFolder(beam.DoFn):
    """(key, impulse) -> ``(FILE, record)`` per new settled file under ``root``
    (``stream_io.select_new``), then ``(TICK, now)``; the last impulse before ``stop`` ends with
    a final tick (inf), and an impulse that waited a poll behind a long bundle only ticks. One
    state cell, written once per listing, holds the versions already passed."""

    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())  # {path: (size, mtime)}

    def __init__(self, root: str, poll_s: float, stop: float | None, run_id: str):
        self.root, self.poll_s, self.stop, self.run_id = root, poll_s, stop, run_id

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        fired, now = float(element[1]), time.time()
        final = stop_requested(self.run_id).is_set() or (self.stop is not None and fired + self.poll_s > self.stop)
        if final or now - fired <= self.poll_s:
            try:
                listing = stream_io.list_files(self.root, seen=fired)
            except Exception as err:  # noqa: BLE001 - retried at the next impulse
                log.warning("listing %s failed: %s", self.root, err)
                listing = None
            if listing is not None:
                known = seen.read() or {}
                fresh, updated = stream_io.select_new(listing, known, now, MAX_PER_LISTING)
                yield from ((FILE, record) for record in fresh)
                if updated != known:
                    seen.write(updated)
        yield TICK, math.inf if final else max(fired, now)


class FromNotification(beam.DoFn):
    """A GCS notification -> ``(path, (FILE, record))``, found at its publish time."""

    def __init__(self, root: str, run_id: str):
        self.root, self.ignored = root, Counter(run_id, "notifications_ignored")

    def process(self, message, timestamp=beam.DoFn.TimestampParam):
        record = stream_io.record_from_notification(message.data, message.attributes or {}, self.root, float(timestamp))
        if record is None:
            self.ignored.inc()
        else:
            yield record.path, (FILE, record)


class NewOrChanged(beam.DoFn):
    """Per path (a notification may come twice): a file passes when its (size, mtime) is new."""

    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        _, item = element
        if item[0] == FILE and seen.read() == (item[1].size, item[1].mtime):
            return
        if item[0] == FILE:
            seen.write((item[1].size, item[1].mtime))
        yield item


class SkipCommitted(beam.DoFn):
    """Drops the files that a ledger in ``output`` names (predicted by an earlier run)."""

    def __init__(self, output: str, run_id: str):
        self.output, self.skipped = output, Counter(run_id, "skipped_committed")

    def setup(self):
        self._done = stream_io.committed_keys(self.output)

    def process(self, item):
        if item[0] == FILE and item[1].key in self._done:
            self.skipped.inc()
        else:
            yield item


class PredictFiles(beam.DoFn):
    """Files -> ``(BATCH, items)``, the rows and dead letters (``(ROW | DEAD, record,
    payload)``) of up to ``batch_size`` files, all by one model version; a tick flushes the
    batch, then passes."""

    def __init__(self, base_path: str, poll_s: float, batch_size: int, run_id: str):
        self.base_path, self.poll_s, self.batch_size = base_path, poll_s, batch_size
        self.counters = {name: Counter(run_id, name) for name in ("predicted", "dead_letters", "superseded")}

    def setup(self):
        self._models = stream_model.model_versions(self.base_path, self.poll_s)
        self._models.current()  # a model that cannot load stops the job at its start

    def start_bundle(self):
        self._batch: list[FileRecord] = []

    def process(self, item):
        if item[0] == TICK:
            yield from self._flush()
            yield item
            return
        self._batch.append(item[1])
        if len(self._batch) >= self.batch_size:
            yield from self._flush()

    def finish_bundle(self):
        for out in self._flush():
            yield WindowedValue(out, Timestamp(min(record.seen for _, record, _ in out[1])), (GlobalWindow(),))

    def _flush(self) -> Iterator[tuple]:
        batch, self._batch = self._batch, []
        if not batch:
            return
        version = self._models.current()  # one snapshot for the whole batch
        prepared = [stream_io.prepare_record(record, version.preparation) for record in batch]
        items = [p for p in prepared if p is not None and p[0] == DEAD]
        ready = [p for p in prepared if p is not None and p[0] != DEAD]
        items += stream_io.predict_prepared(ready, version) if ready else []
        rows = sum(1 for kind, _, _ in items if kind == ROW)
        for name, n in (("predicted", rows), ("dead_letters", len(items) - rows), ("superseded", prepared.count(None))):
            self.counters[name].inc(n)
        if items:
            yield BATCH, tuple(items)


class CloseWindows(beam.DoFn):
    """(key, batch | tick) -> :class:`Pane`. Each item joins the fixed window of ``window_s``
    holding its ``seen`` time; a tick at ``now`` emits a pane for each window that ends by
    ``now`` and holds items, late if the window was written before. With ``watermark_timers``
    (Dataflow) an event-time timer also closes a window when the watermark passes its end, and
    a drain writes what is left; the local runner fires such timers after every bundle."""

    PENDING = BagStateSpec("pending", BytesCoder())  # pickled (start, items): cheap for the state cache to size
    WRITTEN = ReadModifyWriteStateSpec("written", PickleCoder())  # (panes so far, {window start: panes})
    TIMER_AT = ReadModifyWriteStateSpec("timer_at", PickleCoder())
    CLOSE = TimerSpec("close", TimeDomain.WATERMARK)
    KEEP_S = 86400.0  # how long a written window is remembered, to mark its later panes late

    def __init__(self, window_s: float, watermark_timers: bool = False):
        self.window_s, self.watermark_timers = window_s, watermark_timers

    def process(
        self,
        element,
        pending=beam.DoFn.StateParam(PENDING),
        written=beam.DoFn.StateParam(WRITTEN),
        timer_at=beam.DoFn.StateParam(TIMER_AT),
        close=beam.DoFn.TimerParam(CLOSE),
    ):
        kind, payload = element[1]
        if kind == TICK:
            yield from self._close(pending, written, payload)
            return
        windows: dict[float, list] = {}
        for item in payload:
            windows.setdefault(math.floor(item[1].seen / self.window_s) * self.window_s, []).append(item)
        for start, items in windows.items():
            pending.add(pickle.dumps((start, tuple(items)), protocol=pickle.HIGHEST_PROTOCOL))
        at, end = timer_at.read(), min(windows) + self.window_s
        if self.watermark_timers and (at is None or end < at):
            close.set(Timestamp(end))
            timer_at.write(end)

    @on_timer(CLOSE)
    def on_close(
        self,
        fired=beam.DoFn.TimestampParam,
        pending=beam.DoFn.StateParam(PENDING),
        written=beam.DoFn.StateParam(WRITTEN),
        timer_at=beam.DoFn.StateParam(TIMER_AT),
        close=beam.DoFn.TimerParam(CLOSE),
    ):
        yield from self._close(pending, written, float(fired))
        ends = [start + self.window_s for start, _ in map(pickle.loads, pending.read())]
        timer_at.clear()
        if ends:
            close.set(Timestamp(min(ends)))
            timer_at.write(min(ends))

    def _close(self, pending, written, now: float) -> Iterator[Pane]:
        blobs = [(blob, *pickle.loads(blob)) for blob in pending.read()]
        due = [(start, item) for _, start, items in blobs if start + self.window_s <= now for item in items]
        if not due:
            return
        pending.clear()
        for blob, start, _ in blobs:
            if start + self.window_s > now:
                pending.add(blob)
        count, panes = written.read() or (0, {})
        for start in sorted({start for start, _ in due}):
            yield Pane(start, start + self.window_s, count, start in panes, tuple(it for s, it in due if s == start))
            count, panes[start] = count + 1, panes.get(start, 0) + 1
        horizon = now - self.KEEP_S if math.isfinite(now) else -math.inf
        written.write((count, {s: n for s, n in panes.items() if s >= horizon}))


class WritePanes(beam.DoFn):
    """Pane -> its files in ``output`` (``stream_io.write_pane``); yields the pane's stem."""

    def __init__(self, output: str, run_id: str):
        self.output, self.run_id = output, run_id

    def process(self, pane):
        stem = stream_io.pane_stem(pane.start, pane.end, self.run_id, pane.number, pane.late)
        items = sorted(pane.items, key=lambda item: item[1].path)
        ledger = [
            {
                "file": rec.path,
                "size": rec.size,
                "mtime": rec.mtime,
                "seen": rec.seen,
                "outcome": kind,
                "model_version": payload.get("model_version"),
                "pane": stem,
            }
            for kind, rec, payload in items
        ]
        stream_io.write_pane(
            self.output,
            stem,
            [p for kind, _, p in items if kind == ROW],
            [p for kind, _, p in items if kind == DEAD],
            ledger,
        )
        yield stem


def build_pipeline(pipeline: beam.Pipeline, s: StreamSettings) -> beam.PCollection:
    """Apply the job to ``pipeline``; returns the PCollection of pane stems."""
    keyed = beam.typehints.Tuple[str, Any]  # a deterministic key coder for the state
    if s.watermark_timers:
        stop = MAX_TIMESTAMP if s.stop is None else Timestamp(s.stop)
        impulse = pipeline | "Every poll" >> PeriodicImpulse(Timestamp(s.start), stop, s.poll_s)
    else:
        impulse = pipeline | "Every poll" >> PacedImpulse(s.start, s.stop, s.poll_s, s.run_id)
    if s.pubsub_subscription:
        notified = (
            pipeline
            | "GCS notifications" >> beam.io.ReadFromPubSub(subscription=s.pubsub_subscription, with_attributes=True)
            | "Landed objects" >> beam.ParDo(FromNotification(s.watch, s.run_id)).with_output_types(keyed)
        )
        ticks = impulse | "Ticks" >> beam.Map(lambda t: ("", (TICK, max(float(t), time.time())))).with_output_types(
            keyed
        )
        found = (notified, ticks) | "With ticks" >> beam.Flatten() | "New or changed" >> beam.ParDo(NewOrChanged())
    else:
        found = (
            impulse
            | "One lister" >> beam.Map(lambda t: ("", t)).with_output_types(keyed)
            | "List the folder" >> beam.ParDo(ListFolder(s.watch, s.poll_s, s.stop, s.run_id))
        )
    return (
        found
        | "Not yet committed" >> beam.ParDo(SkipCommitted(s.output, s.run_id))
        | "Prepare and predict" >> beam.ParDo(PredictFiles(s.model_base_path, s.poll_s, s.batch_size, s.run_id))
        | "One writer" >> beam.Map(lambda item: (0, item)).with_output_types(beam.typehints.Tuple[int, Any])
        | "Close windows" >> beam.ParDo(CloseWindows(s.window_s, s.watermark_timers))
        | "Write panes" >> beam.ParDo(WritePanes(s.output, s.run_id))
    )
