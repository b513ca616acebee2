"""The streaming job (serving/stream.py): windows and late files pinned with TestStream,
real SDSS files dropped into a watched folder while the job runs (rows, dead letters), a new
model version pushed mid-stream, a restart, and the Dataflow variant built from Pub/Sub."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream as BeamTestStream  # not "Test*": pytest would collect it
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from make_test_data import SAME_PREDICTION

from stellarpop.schema import features as F
from stellarpop.serving import predict, stream, stream_io, stream_model, stream_run
from stellarpop.serving.stream_io import FileRecord

VALUES = list(F.LABEL_KEYS) + list(F.LABEL_ERR_KEYS) + [F.OOD_SCORE]


@pytest.fixture(scope="module")
def real_files(spectrum_files) -> list[Path]:
    """Real SDSS spectrum files, at least 5 (all predictable)."""
    return spectrum_files


def land(source: Path, folder: Path, name: str | None = None) -> Path:
    """Copy a file in the way a user does (not atomically: the job must wait for the copy)."""
    target = folder / (name or source.name)
    shutil.copyfile(source, target)
    return target


def lander(steps) -> threading.Thread:
    """Run ``steps`` (a function) in a thread started now; the test joins it."""
    thread = threading.Thread(target=steps, daemon=True)
    thread.start()
    return thread


def run(watch: Path, base: Path | str, out: Path, **kw) -> dict:
    kw = {"window_s": 1.0, "poll_s": 0.25, "stop_after_s": 6.0} | kw
    return stream_run.run_stream(str(watch), str(base), str(out), **kw)


def committed(out: Path) -> list[dict]:
    """The ledger entries so far (read while the job writes: a renamed temporary is skipped)."""
    try:
        return stream_io.read_ledger(str(out))
    except Exception:  # noqa: BLE001 - a file renamed between listing and reading: ask again later
        return []


# --- windows ---


@pytest.mark.parametrize("clock", ["ticks", "watermark"])
def test_windows_and_late_files_with_test_stream(clock):
    """Fixed 10 s windows, closed by ticks (the local runner) or by the watermark (Dataflow):
    a file that arrives behind the watermark, after its window was written, goes into a late
    pane of that window; the last tick or the watermark writes the rest."""
    ticks = clock == "ticks"

    def element(name: str, seen: float):  # a batch of one row, as PredictFiles emits them
        return TimestampedValue(
            (0, (stream.BATCH, ((stream.ROW, FileRecord(name, 1, seen, seen), {"file": name}),))), seen
        )

    def tick(now: float):
        return [TimestampedValue((0, (stream.TICK, now)), min(now, 1e9))] if ticks else []

    events = BeamTestStream()
    for step in (
        [element("a", 1.0), element("b", 4.0), element("c", 12.0)] + tick(9.5),
        10,
        tick(10.2) + [element("d", 7.0)],  # d is late: behind the watermark, its window written
        15,
        tick(15.0),
        20,
        tick(20.1) + [element("e", 25.0)],
        tick(math.inf),
        31,
    ):  # the local job's last tick; the watermark passes e's window
        if isinstance(step, int):
            events.advance_watermark_to(step)
        elif step:
            events.add_elements(step)
    events.advance_watermark_to_infinity()  # (what a timer emits at the end of time is lost here: 31 first)
    with beam.Pipeline(options=PipelineOptions(streaming=True)) as p:
        panes = (
            p
            | events
            | beam.ParDo(stream.CloseWindows(10.0, watermark_timers=not ticks))
            | beam.Map(
                lambda pane: (
                    pane.start,
                    pane.end,
                    pane.number,
                    pane.late,
                    tuple(sorted(item[1].path for item in pane.items)),
                )
            )
        )
        assert_that(
            panes,
            equal_to(
                [
                    (0.0, 10.0, 0, False, ("a", "b")),
                    (0.0, 10.0, 1, True, ("d",)),
                    (10.0, 20.0, 2, False, ("c",)),
                    (20.0, 30.0, 3, False, ("e",)),
                ]
            ),
        )


# --- runs on a watched folder ---


@pytest.mark.e2e
def test_files_landing_give_rows_and_dead_letters(tmp_path, real_files):
    """Real SDSS files and broken ones land while the job runs: one row per good file with
    `stellarpop predict`'s values, one dead letter per bad file, hidden and partial names
    ignored, every file in the ledger once."""
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    raw = real_files[2].read_bytes()

    def steps():
        for source in real_files:
            land(source, watch)
            time.sleep(0.15)
        (watch / "sub").mkdir()
        (watch / "sub" / "corrupt.fits").write_bytes(np.random.default_rng(0).bytes(6000))
        (watch / "truncated.fits").write_bytes(raw[:100_001])
        _noise_table(watch / "noise_table.fits")
        (watch / ".hidden.fits").write_bytes(raw)
        (watch / "copying.fits.part").write_bytes(raw[:5000])

    thread = lander(steps)
    summary = run(watch, predict.REPO_MODELS + "/default", out, stop_after_s=7.0)
    thread.join()

    rows = stream_io.read_predictions(str(out))
    assert list(rows.columns) == stream_io.STREAM_COLUMNS
    assert sorted(rows["file"]) == sorted(str(watch / f.name) for f in real_files)
    shipped = int(os.path.basename(predict.model_dir(predict.REPO_MODELS + "/default")))
    assert set(rows["model_version"]) == {shipped} and (rows["error"].isna() | (rows["error"] == "")).all()
    expected = {
        Path(r["file"]).name: r
        for r in predict.predict_files(
            [str(f) for f in real_files], predict.Predictor(predict.REPO_MODELS + "/default")
        )
    }
    for row in rows.to_dict("records"):
        want = expected[Path(row["file"]).name]
        assert row["spec_id"] == want["spec_id"]
        np.testing.assert_allclose([row[k] for k in VALUES], [want[k] for k in VALUES], **SAME_PREDICTION)
        assert row[F.OOD_FLAG] == want[F.OOD_FLAG]
    dead = {Path(d["file"]).name: d for d in stream_io.read_dead_letters(str(out))}
    assert set(dead) == {"corrupt.fits", "truncated.fits", "noise_table.fits"}
    assert "truncated" in dead["truncated.fits"]["reason"]
    assert "no COADD table" in dead["noise_table.fits"]["reason"]
    assert all(d["stage"] == "prepare" for d in dead.values())
    ledger = committed(out)
    assert len(ledger) == len({e["file"] for e in ledger}) == len(real_files) + 3
    assert summary["files_predicted"] == len(real_files) and summary["dead_letters"] == 3
    # a file's row is written at the first poll after its window ends (+ the settle time)
    assert summary["latency_s"]["median"] <= 1.0 + stream_io.SETTLE_S + 3.0


def _noise_table(path: Path) -> None:
    """A FITS table of noise: a file that is not a spectrum."""
    from astropy.table import Table

    rng = np.random.default_rng(1)
    Table({"a": rng.normal(size=200), "b": rng.normal(size=200)}).write(path)


@pytest.mark.e2e
def test_new_model_version_mid_stream(tmp_path, real_files, base_path, add_version):
    """Version 2 lands under the base path while files keep landing: the job switches to it,
    and every file is predicted exactly once, by one version, never back to version 1."""
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    landed: list[str] = []

    def steps():
        deadline = time.time() + 11.0
        for i in range(60):
            if time.time() > deadline:
                return
            landed.append(str(land(real_files[i % len(real_files)], watch, f"f{i:02d}.fits")))
            versions = {e["model_version"] for e in committed(out)}
            if len(landed) == 6:
                add_version(base_path, 2)
            if 2 in versions and len(landed) >= 10:
                return
            time.sleep(0.25)

    thread = lander(steps)
    summary = run(watch, base_path, out, stop_after_s=15.0)
    thread.join()

    rows = stream_io.read_predictions(str(out)).sort_values("predicted")
    assert sorted(rows["file"]) == sorted(landed)  # each landed file once: none lost, none twice
    versions = list(rows["model_version"])
    assert versions[0] == 1 and versions[-1] == 2 and versions == sorted(versions)
    assert summary["model_versions"] == {"1": versions.count(1), "2": versions.count(2)}
    by_source = {}
    for row in rows.to_dict("records"):  # the same model twice: equal values for the same spectrum
        by_source.setdefault(int(Path(row["file"]).stem[1:]) % len(real_files), []).append([row[k] for k in VALUES])
    for values in by_source.values():
        np.testing.assert_allclose(values, [values[0]] * len(values), rtol=1e-6)


@pytest.mark.e2e
def test_restart_predicts_only_new_files(tmp_path, real_files):
    """A second run on the same folder predicts only the files landed since; the outputs of a
    pane whose ledger was never written (a crash) are moved aside and their files redone."""
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    for source in real_files[:3]:
        land(source, watch)
    first = run(watch, predict.REPO_MODELS + "/default", out, stop_after_s=4.0)
    assert first["files_predicted"] == 3

    # a crash between a pane's CSV and its ledger: the CSV of a pane with no ledger
    orphan = out / stream_io.PREDICTIONS / "20000101T000000.000Z_20000101T000001.000Z_crashed_000000.csv"
    shutil.copy(next((out / stream_io.PREDICTIONS).glob("*.csv")), orphan)
    for source in real_files[3:5]:
        land(source, watch)
    second = run(watch, predict.REPO_MODELS + "/default", out, stop_after_s=4.0)

    assert second["files_predicted"] == 2 and second["skipped_already_predicted"] == 3
    assert second["uncommitted_moved"] == 1 and not orphan.exists()
    assert (out / stream_io.UNCOMMITTED / stream_io.PREDICTIONS / orphan.name).exists()
    rows = stream_io.read_predictions(str(out))
    assert sorted(rows["file"]) == sorted(str(watch / f.name) for f in real_files[:5])
    assert {p.stem for p in (out / stream_io.RUNS).glob("*.json")} == {first["run_id"], second["run_id"]}


@pytest.mark.e2e
def test_interrupt_writes_what_is_pending_and_stops(tmp_path, real_files):
    """Ctrl-C (SIGINT) ends a run that has no --stop-after: one last listing, and the window
    still open (60 s here) is written before the job returns."""
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    land(real_files[0], watch)
    os.utime(watch / real_files[0].name, (time.time() - 5,) * 2)  # settled
    before = signal.getsignal(signal.SIGINT)  # pytest's, or SIG_IGN under a shell's background job
    thread = lander(lambda: (time.sleep(4.0), os.kill(os.getpid(), signal.SIGINT)))
    started = time.time()
    summary = run(watch, predict.REPO_MODELS + "/default", out, window_s=60.0, stop_after_s=None)
    thread.join()
    assert summary["interrupted"] and summary["files_predicted"] == 1 and time.time() - started < 20
    assert list(stream_io.read_predictions(str(out))["file"]) == [str(watch / real_files[0].name)]
    assert signal.getsignal(signal.SIGINT) is before  # the handler it found is back


def test_recover_keeps_committed_panes_only(tmp_path):
    """A pane counts once its ledger is written; temporaries of a killed write are deleted."""
    out = str(tmp_path)
    stream_io.write_pane(out, "s1", [{"file": "/x/a.fits"}], [], [{"file": "/x/a.fits", "size": 3, "mtime": 1.5}])
    stream_io.write_pane(out, "s2", [{"file": "/x/b.fits"}], [{"file": "/x/c.fits"}], [])
    os.remove(tmp_path / stream_io.LEDGER / "s2.jsonl")  # killed before its commit
    (tmp_path / stream_io.PREDICTIONS / ".tmp-1-s3.csv").write_text("half")
    moved = stream_io.recover(out)
    assert sorted(Path(m).name for m in moved) == ["s2.csv", "s2.jsonl"]
    assert sorted(os.listdir(tmp_path / stream_io.PREDICTIONS)) == ["s1.csv"]
    assert stream_io.committed_keys(out) == {("/x/a.fits", 3, 1.5)}
    assert list(stream_io.read_predictions(out)["file"]) == ["/x/a.fits"]


def test_model_versions_wait_for_a_complete_copy(tmp_path, base_path):
    """A version folder is used once it holds saved_model.pb and stopped changing; one that
    fails to load leaves the version in use and is retried when its folder changes."""
    versions = stream_model.ModelVersions(str(base_path), poll_s=0.0)
    assert versions.current().number == 1
    partial = base_path / "2"
    partial.mkdir()
    shutil.copy(base_path / "1" / "saved_model.pb", partial)  # a copy under way: no variables yet
    assert versions.current().number == 1  # changed since the last poll: not settled
    assert versions.current().number == 1  # settled, fails to load, stays on 1
    shutil.copytree(base_path / "1", partial, dirs_exist_ok=True)  # the copy ends
    assert versions.current().number == 1  # changed: wait one poll
    loaded = versions.current()
    assert loaded.number == 2 and loaded.preparation == versions.current().preparation


# --- the Dataflow variant, arguments, notifications ---


def test_dataflow_variant_reads_gcs_notifications(base_path):
    """With a Pub/Sub subscription the job reads GCS notifications, ticks from its own
    impulse and writes what is left when drained; it is built and serialised, not run."""
    settings = stream.StreamSettings(
        watch="gs://bucket/landing",
        model_base_path="gs://bucket/models/stellarpop",
        output="gs://bucket/out",
        run_id="r",
        start=time.time(),
        pubsub_subscription="projects/my-project/subscriptions/spectra",
        watermark_timers=True,
    )
    # the DataflowRunner itself would look for credentials while the graph is built: not here
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    stream.build_pipeline(pipeline, settings)
    labels = []
    pipeline.visit(
        type(
            "V",
            (beam.pipeline.PipelineVisitor,),
            {
                "enter_composite_transform": lambda self, node: labels.append(node.full_label),
                "visit_transform": lambda self, node: labels.append(node.full_label),
            },
        )()
    )
    assert "GCS notifications" in labels and "With ticks" in labels and "List the folder" not in labels
    proto = pipeline.to_runner_api()
    assert any("ReadFromPubSub" in t.spec.urn or "pubsub" in t.spec.urn for t in proto.components.transforms.values())
    stream_run.check_stream_args(
        "gs://bucket/landing",
        str(base_path),
        "gs://bucket/out",
        pubsub_subscription="projects/my-project/subscriptions/spectra",
    )


def test_notifications_become_file_records():
    meta = {"bucket": "b", "name": "landing/spec-1.fits", "size": "725760", "updated": "2026-01-02T03:04:05.678Z"}
    attrs = {"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "landing/spec-1.fits"}
    record = stream_io.record_from_notification(json.dumps(meta).encode(), attrs, "gs://b/landing", seen=9.0)
    assert record == FileRecord("gs://b/landing/spec-1.fits", 725760, 1767323045.678, 9.0)
    assert (
        stream_io.record_from_notification(b"", attrs | {"eventType": "OBJECT_DELETE"}, "gs://b/landing", 9.0) is None
    )
    outside = attrs | {"objectId": "elsewhere/spec-1.fits"}
    assert stream_io.record_from_notification(json.dumps(meta).encode(), outside, "gs://b/landing", 9.0) is None
    hidden = attrs | {"objectId": "landing/.spec-1.fits"}
    assert stream_io.record_from_notification(json.dumps(meta).encode(), hidden, "gs://b/landing", 9.0) is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"window_s": 0}, "--window 0: a window is a positive number of seconds"),
        ({"stop_after_s": -1}, "--stop-after -1: a positive number of seconds"),
        ({"watch": "missing"}, "--watch {tmp}/missing: not a folder"),
        ({"output": "file.txt"}, "--output {tmp}/file.txt: a file; the output is a folder"),
        ({"output": "in/out"}, "--output {tmp}/in/out: inside the watched folder"),
        ({"base": "in"}, "--model-base-path {tmp}/in: no numbered version folder"),
        (
            {"pubsub_subscription": "spectra"},
            "--pubsub-subscription spectra: expected projects/PROJECT/subscriptions/NAME",
        ),
        (
            {"pubsub_subscription": "projects/p/subscriptions/s"},
            "--watch {tmp}/in: with --pubsub-subscription, the gs://",
        ),
    ],
)
def test_argument_errors(tmp_path, base_path, change, message):
    (tmp_path / "in").mkdir()
    (tmp_path / "file.txt").write_text("x")
    args = {
        "watch": "in",
        "base": str(base_path),
        "output": "out",
        "window_s": 10.0,
        "stop_after_s": None,
        "pubsub_subscription": None,
    } | change
    with pytest.raises(ValueError) as err:
        stream_run.check_stream_args(
            str(tmp_path / args["watch"]),
            str(tmp_path / args["base"]),
            str(tmp_path / args["output"]),
            window_s=args["window_s"],
            stop_after_s=args["stop_after_s"],
            pubsub_subscription=args["pubsub_subscription"],
        )
    assert str(err.value).startswith(message.format(tmp=tmp_path))


def test_select_new_takes_settled_new_files_oldest_first():
    """A listing yields the files unmodified for SETTLE_S whose version is new, oldest first,
    up to the limit; the rest (and files still being written) wait for a later listing."""
    now = 100.0
    listing = [
        FileRecord("/w/c", 1, 90.0, now),
        FileRecord("/w/a", 1, 95.0, now),
        FileRecord("/w/b", 2, 99.5, now),
        FileRecord("/w/d", 3, 80.0, now),
    ]
    known = {"/w/d": (3, 80.0), "/w/gone": (1, 1.0)}
    fresh, updated = stream_io.select_new(listing, known, now, limit=1)
    assert [r.path for r in fresh] == ["/w/c"]  # b is still being written, d is known, a waits
    assert updated == {"/w/d": (3, 80.0), "/w/c": (1, 90.0)}
    fresh, updated = stream_io.select_new(listing, updated, now + 1, limit=10)
    assert [r.path for r in fresh] == ["/w/a", "/w/b"]
    changed = [FileRecord("/w/a", 5, 101.0, now + 3)]  # rewritten: a new version
    assert stream_io.select_new(changed, updated, now + 3, limit=10)[0] == changed


def test_is_candidate_skips_hidden_and_partial_files():
    assert stream_io.is_candidate("/w/a/spec.fits", "/w")
    assert not stream_io.is_candidate("/w/.staging/spec.fits", "/w")
    assert not stream_io.is_candidate("/w/spec.fits.part", "/w/")
    assert math.isclose(stream_io.parse_rfc3339("1970-01-01T00:00:01.5Z"), 1.5)
