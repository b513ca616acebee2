"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

import pytest

from stellarpop.pipeline import fingerprint


@pytest.fixture
def edit_source(monkeypatch, tmp_path):
    """Fingerprints of the project sources as they are now (copies: edits made elsewhere
    meanwhile do not count); ``edit_source(module, line)``: that module's with a line added
    ("" for as it was)."""
    real, copies, originals = fingerprint._source_file, {}, {}

    def source_file(name: str) -> str | None:
        if name not in copies:
            path = real(name)
            originals[name] = open(path).read() if path else None
            copies[name] = path and str(tmp_path / f"{name}.py")
            if path:
                open(copies[name], "w").write(originals[name])
        return copies[name]

    def edit(module: str, line: str = "# edited") -> None:
        source_file(module)
        open(copies[module], "w").write(originals[module] + line)
        fingerprint.code_fingerprint.cache_clear()

    monkeypatch.setattr(fingerprint, "_source_file", source_file)
    fingerprint.code_fingerprint.cache_clear()
    yield edit
    fingerprint.code_fingerprint.cache_clear()
