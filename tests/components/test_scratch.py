"""The run's temporary folder: what goes into it is removed, the previous one restored."""

from __future__ import annotations

import os
import tempfile

import pytest

from stellarpop.components.scratch import scratch_tempdir


def test_everything_made_inside_is_removed_and_the_folder_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", "/elsewhere")
    with pytest.raises(RuntimeError):
        with scratch_tempdir() as scratch:
            assert os.environ["TMPDIR"] == scratch and os.path.dirname(scratch) == str(tmp_path)
            made = tempfile.mkdtemp()
            assert os.path.dirname(made) == scratch
            raise RuntimeError("a failed run cleans up too")
    assert list(tmp_path.iterdir()) == []
    assert tempfile.tempdir == str(tmp_path) and os.environ["TMPDIR"] == "/elsewhere"
