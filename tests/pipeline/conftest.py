"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

import pytest

from stellarpop.pipeline import pipeline as pipeline_lib


@pytest.fixture
def edit_source(monkeypatch, tmp_path):
    """Fingerprints of the project sources as they are now (copies: edits made elsewhere
    meanwhile do not count); ``edit_source(module, line)``: that module's with a line added
    ("" for as it was)."""
    real, copies, originals = pipeline_lib._source_file, {}, {}

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
        pipeline_lib.code_fingerprint.cache_clear()

    monkeypatch.setattr(pipeline_lib, "_source_file", source_file)
    pipeline_lib.code_fingerprint.cache_clear()
    yield edit
    pipeline_lib.code_fingerprint.cache_clear()
