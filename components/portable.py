"""Paths as a reader on another machine can use them: what a shipped file (a benchmark's JSON,
a report, a model card) records of where its inputs were, without the folders of the machine
that made it.

A path inside a known root is written relative to it, under the root's name: the checkout
(plain relative paths, e.g. ``serving/models/default/7``), the workspace folder beside it
(``../shared/real-sdss/...``), an installed package (``site-packages/ppxf/spectra/...``), the
template and reference-data cache (``$STELLARPOP_CACHE/ppxf-8.2.6/...``) and any folder given
(a run folder, ``RUN/...``). Any other absolute path keeps its last two parts only.
"""

from __future__ import annotations

import os
import site
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]  # the checkout (an editable install runs from it)
# The workspace folder beside the checkout (real spectra for benchmarks; absent on a clone).
WORKSPACE, WORKSPACE_PREFIX = REPO.parent / "shared", "../shared"


def _cache_root() -> str:
    return os.environ.get("STELLARPOP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "stellarpop")


def default_roots() -> list[tuple[str, str]]:
    """(prefix, absolute folder) pairs, most specific first (a venv inside the checkout before it)."""
    packages = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    roots = {"$STELLARPOP_CACHE": _cache_root(), WORKSPACE_PREFIX: str(WORKSPACE)}
    return [*roots.items(), *(("site-packages", p) for p in sorted(packages)), ("", str(REPO))]


def portable_path(path: str, roots: Mapping[str, str] | None = None) -> str:
    """``path`` relative to the first root (``{prefix: folder}``, tried in order, then
    :func:`default_roots`) that holds it, under the root's prefix; an absolute path in none of
    them as ``.../PARENT/NAME``; a relative path unchanged."""
    if not os.path.isabs(path):
        return path
    full = os.path.normpath(path)
    for prefix, root in [*(roots or {}).items(), *default_roots()]:
        root = os.path.normpath(os.path.abspath(root))
        if full == root or full.startswith(root.rstrip(os.sep) + os.sep):
            rel = os.path.relpath(full, root)
            return (prefix if rel == "." else os.path.join(prefix, rel)) if prefix else rel
    return os.path.join("...", *Path(full).parts[-2:])


def portable(value: Any, roots: Mapping[str, str] | None = None) -> Any:
    """``value`` (JSON-like: dicts, lists, strings, numbers) with every absolute path string
    replaced by :func:`portable_path`."""
    if isinstance(value, str):
        return portable_path(value, roots) if value.startswith(os.sep) else value
    if isinstance(value, Mapping):
        return {k: portable(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, roots) for v in value]
    return value
