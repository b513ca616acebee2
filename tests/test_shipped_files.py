"""What the repository ships (docs/, the model under serving/models/, the deploy files) names
no folder of the machine that made it: paths are relative to the checkout or the run folder,
or given as the command that reproduces them (components/portable.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("docs", "serving/models", "serving/deploy", "README.md", "pipeline")
# An absolute path into a machine's own folders (a home, a workspace, a venv, a temp folder).
MACHINE_PATH = re.compile(rb"(?<![\w.~$])/(?:work|root|home|Users|tmp|mnt|opt|var/folders|private)/[\w.-]")


def _files() -> list[Path]:
    found = []
    for name in SHIPPED:
        path = REPO / name
        found += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return found


def test_the_shipped_folders_are_there():
    names = {p.relative_to(REPO).as_posix() for p in _files()}
    assert "docs/model_card.md" in names and any(n.endswith("saved_model.pb") for n in names)
    assert "docs/reports/default-model/index.html" in names


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_machine_path_in_a_shipped_file(path):
    hits = sorted({m.group(0).decode("ascii", "replace") for m in MACHINE_PATH.finditer(path.read_bytes())})
    assert not hits, f"{path.relative_to(REPO)} names machine paths starting {hits}"


def test_the_pattern_finds_what_it_is_for():
    assert MACHINE_PATH.search(b'"model": "/work/exp/v7/artifacts"')
    assert MACHINE_PATH.search(b"/root/.cache/stellarpop/ppxf-8.2.6/spectra/x.fits")
    assert MACHINE_PATH.search(b"<code>/home/ann/runs/x</code>")
    assert not MACHINE_PATH.search(b"serving/models/default/7 and ../elsewhere/spec.fits")
    assert not MACHINE_PATH.search(b"$STELLARPOP_CACHE/ppxf-8.2.6 and ~/.cache/stellarpop, 1e-17 erg/s/cm^2/A")
