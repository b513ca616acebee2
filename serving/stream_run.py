"""``stellarpop stream``: check the arguments, run the streaming job (:mod:`.stream`) until it
is stopped, and summarise the run."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import apache_beam as beam

from stellarpop.serving import stream_io, stream_model
from stellarpop.serving.stream import _COUNTS, _LOCK, LOCAL_RUNNERS, StreamSettings, build_pipeline, stop_requested
from stellarpop.serving.stream_io import ROW, iso

log = logging.getLogger("stellarpop.serving.stream")


def check_stream_args(
    watch: str,
    model_base_path: str,
    output: str,
    window_s: float = 10.0,
    stop_after_s: float | None = None,
    poll_s: float = 1.0,
    pubsub_subscription: str | None = None,
) -> None:
    """Raise ValueError (one line naming the CLI option) for a bad argument of :func:`run_stream`."""
    local = stream_io.is_local
    problems = [
        (not window_s > 0, f"--window {window_s}: a window is a positive number of seconds"),
        (not poll_s > 0, f"--poll {poll_s}: the poll interval is a positive number of seconds"),
        (
            stop_after_s is not None and not stop_after_s > 0,
            f"--stop-after {stop_after_s}: a positive number of seconds",
        ),
        (
            pubsub_subscription and not re.fullmatch(r"projects/[^/]+/subscriptions/[^/]+", pubsub_subscription),
            f"--pubsub-subscription {pubsub_subscription}: expected projects/PROJECT/subscriptions/NAME",
        ),
        (
            pubsub_subscription and not watch.startswith("gs://"),
            f"--watch {watch}: with --pubsub-subscription, the gs://BUCKET/PREFIX whose objects to predict",
        ),
        (
            pubsub_subscription and stop_after_s is not None,
            "--stop-after: a Pub/Sub job runs until it is drained (gcloud dataflow jobs drain JOB)",
        ),
        (not pubsub_subscription and local(watch) and not os.path.isdir(watch), f"--watch {watch}: not a folder"),
        (
            local(output) and os.path.exists(output) and not os.path.isdir(output),
            f"--output {output}: a file; the output is a folder",
        ),
        (
            local(output)
            and local(watch)
            and (os.path.abspath(output) + os.sep).startswith(os.path.abspath(watch) + os.sep),
            f"--output {output}: inside the watched folder {watch} (its files would be read as spectra)",
        ),
    ]
    for wrong, message in problems:
        if wrong:
            raise ValueError(message)
    if not stream_model.complete_versions(model_base_path):
        raise ValueError(
            f"--model-base-path {model_base_path}: no numbered version folder holding a "
            "saved_model.pb (TF Serving layout, BASE/1/saved_model.pb)"
        )


def run_stream(
    watch: str,
    model_base_path: str,
    output: str,
    window_s: float = 10.0,
    stop_after_s: float | None = None,
    poll_s: float = 1.0,
    beam_args: list[str] | None = None,
    *,
    pubsub_subscription: str | None = None,
    batch_size: int = 64,
) -> dict:
    """Predict the spectrum files landing in ``watch`` continuously, into windowed tables.

    Parameters
    ----------
    watch : str
        Folder (or ``gs://`` prefix) listed recursively every ``poll_s`` (hidden names and
        ``.tmp``/``.part`` skipped; a file is taken once unmodified for 1 s); with
        ``pubsub_subscription``, the ``gs://BUCKET/PREFIX`` whose notifications count.
    model_base_path : str
        Numbered SavedModel versions (TF Serving layout): the newest complete one predicts,
        and a newer one landing there is switched to while the job runs.
    output : str
        Folder of ``predictions/*.csv`` (one per window pane), ``dead_letters/*.jsonl``,
        ``ledger/*.jsonl`` and ``runs/<run id>.json``.
    window_s, poll_s : float
        Fixed windows, each written at the first poll after its end; the interval of the
        listing, of the window clock and of the model-version check (s).
    stop_after_s : float, optional
        Stop listing after this many seconds, write what is pending, return. None: run until
        Ctrl-C or SIGTERM, which stop the same way (``interrupted`` in the summary).
    beam_args : list of str, optional
        Beam options; default the DirectRunner in this process. ``--runner=DataflowRunner
        --project=P --region=R --temp_location=gs://...`` submits the job to Dataflow.
    pubsub_subscription : str, optional
        ``projects/P/subscriptions/S`` receiving the bucket's OBJECT_FINALIZE notifications,
        read instead of listing ``watch`` (Dataflow).
    batch_size : int
        Files per call of the model.

    Returns
    -------
    dict
        Local runs: ``run_id``, ``files_predicted``, ``dead_letters``, ``model_versions``
        ({version: files}), ``skipped_already_predicted``, ``superseded``, ``panes``,
        ``latency_s`` (landed -> row written: median, p95), ``uncommitted_moved``,
        ``interrupted``, ``wall_s``, the arguments (also in ``runs/<run id>.json``).
        Other runners, once submitted: ``run_id``, ``runner``, ``state``, ``job_id``.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    check_stream_args(watch, model_base_path, output, window_s, stop_after_s, poll_s, pubsub_subscription)
    options = PipelineOptions(list(beam_args or []))
    standard = options.view_as(StandardOptions)
    standard.streaming = True
    runner, start = standard.runner or "DirectRunner", time.time()
    absolute = [
        os.path.abspath(p) if stream_io.is_local(p) else p.rstrip("/") for p in (watch, model_base_path, output)
    ]
    s = StreamSettings(
        *absolute,
        run_id=time.strftime("%Y%m%dT%H%M%SZ-", time.gmtime(start)) + uuid.uuid4().hex[:6],
        start=start,
        window_s=window_s,
        stop_after_s=stop_after_s,
        poll_s=poll_s,
        pubsub_subscription=pubsub_subscription,
        batch_size=batch_size,
        watermark_timers=runner not in LOCAL_RUNNERS,
    )
    moved = stream_io.recover(s.output)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, s)
    log.info("stream %s with %s -> %s (run %s, %s)", s.watch, s.model_base_path, s.output, s.run_id, runner)
    if s.watermark_timers:
        result = pipeline.run()
        job_id = getattr(result, "job_id", None)
        return {
            "run_id": s.run_id,
            "runner": runner,
            "state": str(result.state),
            "job_id": job_id() if callable(job_id) else job_id,
        }
    with _stop_on_signals(s.run_id):
        pipeline.run().wait_until_finish()
    summary = summarize(s, moved, stop_requested(s.run_id).is_set())
    stream_io.write_run_summary(s.output, summary)
    return summary


@contextlib.contextmanager
def _stop_on_signals(run_id: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM ends the local run gracefully; a second Ctrl-C ends the process."""

    def handler(signum, frame):
        log.warning("stopping: one last listing, then every window is written (Ctrl-C again to quit at once)")
        stop_requested(run_id).set()
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def summarize(s: StreamSettings, moved: list[str], interrupted: bool) -> dict:
    """The summary of a finished local run, from its ledger entries and the counters."""
    import numpy as np

    entries = stream_io.read_ledger(s.output, s.run_id)
    versions = [str(e["model_version"]) for e in entries if e["outcome"] == ROW]
    latency = [e["written"] - e["mtime"] for e in entries]
    with _LOCK:
        counts = _COUNTS.pop(s.run_id, {})
    return {
        "run_id": s.run_id,
        "watch": s.watch,
        "model_base_path": s.model_base_path,
        "output": s.output,
        "window_s": s.window_s,
        "poll_s": s.poll_s,
        "stop_after_s": s.stop_after_s,
        "started": iso(s.start),
        "wall_s": round(time.time() - s.start, 3),
        "files_predicted": len(versions),
        "dead_letters": len(entries) - len(versions),
        "model_versions": {v: versions.count(v) for v in sorted(set(versions))},
        "skipped_already_predicted": counts.get("skipped_committed", 0),
        "superseded": counts.get("superseded", 0),
        "panes": len({e["pane"] for e in entries}),
        "uncommitted_moved": len(moved),
        "interrupted": interrupted,
        "latency_s": {"median": float(np.median(latency)), "p95": float(np.percentile(latency, 95))}
        if latency
        else None,
    }
