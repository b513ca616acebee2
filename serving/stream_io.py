"""What the streaming job (``serving/stream.py``) does outside Beam: the watched files, GCS
notifications, the model versions of a base path, each file's preparation and prediction,
and the output folder. Paths go through Beam's ``FileSystems`` (a folder or ``gs://``).

The output folder OUT::

    predictions/<stem>.csv      a pane's rows: `stellarpop predict`'s columns + model_version,
                                landed (the file's modification time), predicted (UTC ISO 8601)
    dead_letters/<stem>.jsonl   the pane's files that got no row: file, size, landed, stage, reason
    ledger/<stem>.jsonl         every file of the pane (file, size, mtime, outcome, written, ...),
                                written last: the pane's commit
    uncommitted/                outputs of panes whose ledger was never written (a crash between
                                the writes), moved aside at the next start; their files are redone
    runs/<run id>.json          the summary of each local run

``stem`` = ``<window start>_<window end>_<run id>_<pane number>[_late]`` (UTC). A file (path,
size, modification time) that a ledger names is not predicted again by a later run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import posixpath
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from apache_beam.io.filesystems import FileSystems

from stellarpop.schema.preparation import Preparation
from stellarpop.serving import predict

if TYPE_CHECKING:
    from stellarpop.serving.stream_model import LoadedVersion

log = logging.getLogger("stellarpop.serving.stream")

ROW, DEAD = "row", "dead"  # what became of a file: a table row, or a dead letter
PREDICTIONS, DEAD_LETTERS, LEDGER, UNCOMMITTED, RUNS = "predictions", "dead_letters", "ledger", "uncommitted", "runs"
# `stellarpop predict`'s table (predict.write_table), then what streaming adds
STREAM_COLUMNS = predict.TABLE_COLUMNS + ["model_version", "landed", "predicted"]
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")  # still being written by their producer
SETTLE_S = 1.0  # a listed file is taken once unmodified this long (a copy under way keeps changing)


class FileRecord(NamedTuple):
    """A landed file: ``path``, ``size`` (bytes), ``mtime`` (its modification time, s since
    the epoch: ``landed``) and ``seen`` (s, when the job found it: places it in a window)."""

    path: str
    size: int
    mtime: float
    seen: float

    @property
    def key(self) -> tuple:
        return ledger_key(self.path, self.size, self.mtime)


def ledger_key(path: str, size: int, mtime: float) -> tuple:
    return path, int(size), round(float(mtime), 6)


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def iso(t: float) -> str:
    """UTC ISO 8601 with milliseconds, e.g. ``2026-01-02T03:04:05.678Z``."""
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(text: str) -> float:
    """``2026-01-02T03:04:05.6Z`` (GCS's ``updated``) -> s since the epoch."""
    head, _, rest = text.strip().replace("Z", "+00:00").partition(".")
    if rest:  # fromisoformat (3.10) takes 3 or 6 fraction digits only
        digits = len(rest) - len(rest.lstrip("0123456789"))
        head = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    return dt.datetime.fromisoformat(head).timestamp()


# --- discovery ---


def is_candidate(path: str, root: str) -> bool:
    """A file under ``root`` to predict: no part of its path below ``root`` starts with
    ``.`` (a hidden staging name) and no partial-download suffix (``.tmp``, ``.part``, ...)."""
    relative = path[len(root.rstrip("/")) :].lstrip("/")
    return not any(part.startswith(".") for part in relative.split("/")) and not relative.endswith(TEMP_SUFFIXES)


def list_files(root: str, seen: float) -> list[FileRecord]:
    """The candidate files anywhere under ``root``."""
    matched = FileSystems.match([posixpath.join(root, "**")])[0].metadata_list
    return [
        FileRecord(m.path, m.size_in_bytes, m.last_updated_in_seconds, seen)
        for m in matched
        if is_candidate(m.path, root)
    ]


def select_new(listing: list[FileRecord], known: dict, now: float, limit: int) -> tuple[list[FileRecord], dict]:
    """The settled files of a listing whose (size, mtime) ``known`` lacks, oldest first, at
    most ``limit`` (the rest wait for the next poll); and ``known`` updated with them and
    pruned to the listed paths."""
    fresh = sorted(
        (r for r in listing if now - r.mtime >= SETTLE_S and known.get(r.path) != (r.size, r.mtime)),
        key=lambda r: (r.mtime, r.path),
    )[:limit]
    listed = {r.path for r in listing}
    updated = {path: version for path, version in known.items() if path in listed}
    updated.update({r.path: (r.size, r.mtime) for r in fresh})
    return fresh, updated


def record_from_notification(data: bytes, attributes: dict, root: str, seen: float) -> FileRecord | None:
    """A GCS Pub/Sub notification (payload JSON_API_V1) -> the object it announces; None for
    other events (deletes, metadata updates) and for objects outside ``root`` or hidden."""
    if attributes.get("eventType") != "OBJECT_FINALIZE":
        return None
    meta = json.loads(data.decode("utf-8")) if data else {}
    path = f"gs://{attributes.get('bucketId') or meta.get('bucket')}/{attributes.get('objectId') or meta.get('name')}"
    if not path.startswith(root.rstrip("/") + "/") or not is_candidate(path, root):
        return None
    updated = meta.get("updated") or attributes.get("eventTime")
    return FileRecord(path, int(meta.get("size", 0)), parse_rfc3339(updated) if updated else seen, seen)


def stat(path: str) -> tuple[int, float] | None:
    """(size, mtime) of a file now; None if it is gone."""
    if is_local(path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime
    found = FileSystems.match([path])[0].metadata_list
    return (found[0].size_in_bytes, found[0].last_updated_in_seconds) if found else None


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path to read ``path`` from (the readers open local files): itself, or a
    temporary copy of a remote object with the same suffix."""
    if is_local(path):
        yield path
        return
    suffix = "".join(posixpath.basename(path).partition(".")[1:])
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp, FileSystems.open(path) as src:
        while chunk := src.read(1 << 20):
            tmp.write(chunk)
        tmp.flush()
        yield tmp.name


# --- one file: prepared as `stellarpop predict` does, predicted by one version ---


def dead_letter(record: FileRecord, stage: str, reason: str) -> tuple:
    return (
        DEAD,
        record,
        {
            "file": record.path,
            "size": record.size,
            "landed": iso(record.mtime),
            "seen": iso(record.seen),
            "stage": stage,
            "reason": reason,
        },
    )


def prepare_record(record: FileRecord, preparation: Preparation) -> tuple | None:
    """``(record, row, serialized Example)``, a dead letter, or None when the file changed
    after it was listed (a later listing or notification carries the new version)."""
    try:
        with local_copy(record.path) as local:
            row, serialized = predict.prepare_file(local, preparation)
    except Exception as err:  # noqa: BLE001 - a remote object gone, a failed download
        local, row, serialized = record.path, {"error": f"{record.path}: {type(err).__name__}: {err}"}, None
    now = stat(record.path)
    if now is None:
        return dead_letter(record, "removed", "the file was removed before it could be read")
    if now[0] != record.size or abs(now[1] - record.mtime) > 1e-3:
        return None
    if serialized is None:
        return dead_letter(record, "prepare", row["error"].removeprefix(f"{local}: "))
    row["file"] = record.path
    return record, row, serialized


def predict_prepared(ready: list[tuple], version: LoadedVersion) -> list[tuple]:
    """``(ROW, record, row)`` per prepared file, all by ``version``; a batch the model rejects
    is retried file by file, and a file it still rejects becomes a dead letter."""
    try:
        values: list = version.predict([s for _, _, s in ready])
    except Exception:  # noqa: BLE001 - find the file(s) the model rejects
        values = []
        for _, _, serialized in ready:
            try:
                values += version.predict([serialized])
            except Exception as err:  # noqa: BLE001
                values.append(f"{type(err).__name__}: {err}")
    predicted, out = iso(time.time()), []
    for (record, row, _), value in zip(ready, values):
        if isinstance(value, str):
            out.append(dead_letter(record, "inference", value))
            continue
        row.update(predict.output_values({k: [v] for k, v in value.items()}, 0, row.get("snr_r")))
        row.update(model_version=version.number, landed=iso(record.mtime), predicted=predicted)
        out.append((ROW, record, row))
    return out


# --- the output folder ---


def pane_stem(start: float, end: float, run_id: str, number: int, late: bool) -> str:
    def stamp(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"

    return f"{stamp(start)}_{stamp(end)}_{run_id}_{number:06d}" + ("_late" if late else "")


def _write(path: str, data: bytes) -> None:
    """A whole file: locally under a hidden temporary name, fsync'ed, renamed (never seen half
    written); remotely at once (a GCS object appears whole)."""
    if not is_local(path):
        with FileSystems.create(path) as fh:
            fh.write(data)
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename survives a power cut
    finally:
        os.close(fd)


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")


def write_pane(output: str, stem: str, rows: list[dict], dead: list[dict], ledger: list[dict]) -> None:
    """A pane's rows (CSV), dead letters (JSONL), then its ledger, the commit, whose entries
    get ``written``: when the rows were in place (s since the epoch)."""
    import pandas as pd

    if rows:
        buffer = io.StringIO()
        pd.DataFrame(rows, columns=STREAM_COLUMNS).to_csv(buffer, index=False, float_format="%.6g")
        _write(posixpath.join(output, PREDICTIONS, stem + ".csv"), buffer.getvalue().encode("utf-8"))
    if dead:
        _write(posixpath.join(output, DEAD_LETTERS, stem + ".jsonl"), _jsonl(dead))
    written = time.time()
    _write(posixpath.join(output, LEDGER, stem + ".jsonl"), _jsonl([dict(e, written=written) for e in ledger]))


def _names(output: str, folder: str, suffix: str) -> dict[str, str]:
    """``{stem: path}`` of ``output/folder/*suffix`` (temporaries, ``.tmp-*``, included)."""
    found = FileSystems.match([posixpath.join(output, folder, "*" + suffix)])[0].metadata_list
    return {posixpath.basename(m.path)[: -len(suffix)]: m.path for m in found}


def recover(output: str) -> list[str]:
    """Before a run: delete half-written temporaries and move the outputs of panes without a
    ledger into ``uncommitted/``; returns the moved paths."""
    committed = set(_names(output, LEDGER, ".jsonl"))
    moved = []
    for folder, suffix in ((PREDICTIONS, ".csv"), (DEAD_LETTERS, ".jsonl"), (LEDGER, ".jsonl")):
        for stem, path in _names(output, folder, suffix).items():
            if stem.startswith(".tmp-"):
                FileSystems.delete([path])
            elif stem not in committed:
                target = posixpath.join(output, UNCOMMITTED, folder, posixpath.basename(path))
                if is_local(target):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                FileSystems.rename([path], [target])
                moved.append(target)
    if moved:
        log.warning("moved the outputs of %d uncommitted panes to %s", len(moved), posixpath.join(output, UNCOMMITTED))
    return moved


def _read_jsonl(path: str) -> list[dict]:
    with FileSystems.open(path) as fh:
        return [json.loads(line) for line in fh.read().decode("utf-8").splitlines() if line.strip()]


def _committed(output: str, folder: str, suffix: str) -> list[str]:
    ledgers = {s for s in _names(output, LEDGER, ".jsonl") if not s.startswith(".tmp-")}
    return [path for stem, path in sorted(_names(output, folder, suffix).items()) if stem in ledgers]


def read_ledger(output: str, run_id: str | None = None) -> list[dict]:
    """The committed ledger entries (of one run if ``run_id`` is given)."""
    return [
        e
        for path in _committed(output, LEDGER, ".jsonl")
        if run_id is None or f"_{run_id}_" in path
        for e in _read_jsonl(path)
    ]


def committed_keys(output: str) -> set[tuple]:
    """The files (ledger keys) already predicted or dead-lettered into ``output``."""
    return {ledger_key(e["file"], e["size"], e["mtime"]) for e in read_ledger(output)}


def read_predictions(output: str):
    """Every committed row of ``output``, one DataFrame with ``STREAM_COLUMNS``."""
    import pandas as pd

    frames = [pd.read_csv(path) for path in _committed(output, PREDICTIONS, ".csv")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STREAM_COLUMNS)


def read_dead_letters(output: str) -> list[dict]:
    return [r for path in _committed(output, DEAD_LETTERS, ".jsonl") for r in _read_jsonl(path)]


def write_run_summary(output: str, summary: dict) -> str:
    path = posixpath.join(output, RUNS, f"{summary['run_id']}.json")
    _write(path, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path
