"""Paths as shipped files record them (components/portable.py)."""

from __future__ import annotations

import os

from stellarpop.components import portable as P


def test_paths_under_each_root_are_written_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("STELLARPOP_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "runs" / "v7"
    assert P.portable_path(str(P.REPO / "serving" / "models" / "default" / "7")) == "serving/models/default/7"
    assert P.portable_path(str(tmp_path / "cache" / "ppxf-8.2.6" / "a.fits")) == "$STELLARPOP_CACHE/ppxf-8.2.6/a.fits"
    assert (
        P.portable_path(str(P.WORKSPACE / "any" / "s.fits")) == f"{P.WORKSPACE_PREFIX}/any/s.fits"
    )  # a path, not read
    site = next(p for name, p in P.default_roots() if name == "site-packages")
    assert P.portable_path(os.path.join(site, "ppxf", "spectra", "x.fits")) == "site-packages/ppxf/spectra/x.fits"
    assert P.portable_path(str(run / "artifacts" / "m"), {"RUN": str(run)}) == "RUN/artifacts/m"
    assert P.portable_path(str(run), {"RUN": str(run)}) == "RUN"
    assert P.portable_path("/elsewhere/deep/folder/file.json") == ".../folder/file.json"
    assert P.portable_path("relative/kept.json") == "relative/kept.json"


def test_every_absolute_path_in_a_record_is_replaced():
    record = {
        "model": "/x/y/z/saved",
        "files": ["/a/b/c.fits", "runs/d.fits"],
        "n": 3,
        "unit": "km/s",
        "nested": {"file": str(P.REPO / "docs" / "model_card.md")},
    }
    assert P.portable(record) == {
        "model": ".../z/saved",
        "files": [".../b/c.fits", "runs/d.fits"],
        "n": 3,
        "unit": "km/s",
        "nested": {"file": "docs/model_card.md"},
    }
