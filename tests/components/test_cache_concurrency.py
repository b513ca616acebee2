"""Filling an empty cache from several processes at once (Beam workers, parallel runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stellarpop.components import reference_data, templates

# Each process builds (or finds) the library and prints its path and SHA-256.
CHILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stderr)
from stellarpop.components import reference_data, templates
lib = templates.load_library()
path = templates.library_path()
print(path, reference_data.sha256(path), lib.templates.shape)
"""


def _fill_concurrently(cache: Path, n: int) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "STELLARPOP_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=900), *p.communicate()) for p in procs]


def _check_one_complete_library(cache: Path, results: list[subprocess.CompletedProcess]) -> str:
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    answers = {r.stdout.strip() for r in results}
    assert len(answers) == 1, answers  # the same path, the same bytes, the full 25 x 6 grid
    assert answers.pop().endswith(", 25, 6)")
    library = cache / templates.LIBRARY_FILE
    assert json.loads(library.with_suffix(".json").read_text())["sha256"] == reference_data.sha256(library)
    assert not list(cache.rglob("*.part")), "temporary files left behind"
    logs = "".join(r.stderr for r in results)
    assert logs.count("building the E-MILES template library") == 1, logs[-3000:]
    return logs


@pytest.mark.slow
def test_processes_on_an_empty_cache_download_and_build_once(tmp_path):
    logs = _check_one_complete_library(tmp_path, _fill_concurrently(tmp_path, 3))
    assert logs.count(f"fetching {reference_data.PPXF_SDIST}") == 1, logs[-3000:]


def test_processes_on_a_cache_holding_only_the_archive_build_once(tmp_path):
    """The archive copied in (no download), then three processes extract and build at once."""
    archive = reference_data.ppxf_sdist()
    (tmp_path / archive.name).write_bytes(archive.read_bytes())
    logs = _check_one_complete_library(tmp_path, _fill_concurrently(tmp_path, 3))
    assert "fetching" not in logs


def test_write_atomic_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "x.txt"

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        reference_data.write_atomic(target, fail)
    assert list(tmp_path.iterdir()) == []
    reference_data.write_atomic(target, lambda tmp: tmp.write_text("whole"))
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]
