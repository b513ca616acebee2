"""Fingerprints that put a component's code and data files into TFX's cache key.

TFX reuses a component's earlier outputs when its cache key is unchanged: pipeline name,
component id, executor spec (with the Beam arguments), input artefacts and execution
properties. Module code named by a dotted path and files named by a path are not in it, so
:func:`stamp` puts fingerprints there (:func:`code_fingerprint`: the project source a
component runs, its version and its libraries' versions; :func:`files_fingerprint`: data
files named in the configuration): a changed module re-runs the components that import it,
and their descendants, only.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from stellarpop.components import reference_data
from stellarpop.components.cache_key import CODE_FINGERPRINT
from stellarpop.pipeline.training import export

PROJECT = "stellarpop"


def _imported_names(path: str, package: str) -> Iterable[str]:
    """Every module name an import statement of ``path`` may name (anywhere in the file:
    imports inside functions count); ``from a import b`` gives ``a`` and ``a.b``."""
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            relative = "." * node.level + (node.module or "")
            base = importlib.util.resolve_name(relative, package) if node.level else node.module
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _source_file(name: str) -> str | None:
    """The ``.py`` file of project module ``name``; None for an attribute (``a.b.func``).

    ``find_spec`` imports the parent packages only (their ``__init__``), never ``name``.
    """
    parent = name.rpartition(".")[0]
    parent_spec = importlib.util.find_spec(parent) if parent else None
    if parent and (parent_spec is None or parent_spec.submodule_search_locations is None):
        return None
    spec = importlib.util.find_spec(name)
    return spec.origin if spec and spec.origin and spec.origin.endswith(".py") else None


@functools.cache
def code_fingerprint(module: str) -> str:
    """SHA-256 of the code that ``module`` runs, for a cache key.

    The source of every project module it imports, directly or not (and their packages'
    ``__init__``), the project's version, and the versions of the other distributions
    those modules import (a top-level name shared by several distributions, as
    ``google``, is left out). Pinned reference data (the template library's source SHA-256
    in ``reference_data``) is part of that source.
    """
    files, external, todo = {}, set(), [module]
    while todo:
        name = todo.pop()
        if name in files:
            continue
        path = _source_file(name)
        if path is None:
            continue
        files[name] = path
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        for imported in _imported_names(path, package):
            if imported.split(".")[0] == PROJECT:
                parts = imported.split(".")
                todo += [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
            else:
                external.add(imported.split(".")[0])
    owners = importlib_metadata.packages_distributions()
    dists = {owners[n][0] for n in external if len(set(owners.get(n, []))) == 1}
    versions = {PROJECT: export.package_version(), **{d: importlib_metadata.version(d) for d in dists}}
    digest = hashlib.sha256(json.dumps(versions, sort_keys=True).encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + open(files[name], "rb").read())
    return digest.hexdigest()


def files_fingerprint(config: Any) -> dict[str, str]:
    """{path: SHA-256} of the local files that ``config`` (nested dicts, lists) names, such as
    a template library or instrument files: TFX would only see their paths."""
    if isinstance(config, dict):
        return {k: v for value in config.values() for k, v in files_fingerprint(value).items()}
    if isinstance(config, (list, tuple)):
        return {k: v for value in config for k, v in files_fingerprint(value).items()}
    if isinstance(config, str) and config and os.path.isfile(config):
        return {os.path.abspath(config): reference_data.sha256(Path(config))}
    return {}


def folder_fingerprint(folder: str) -> str:
    """SHA-256 of the names, sizes and modification times of the files under ``folder``."""
    paths = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    stats = sorted((os.path.relpath(p, folder), os.path.getsize(p), os.path.getmtime(p)) for p in paths)
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def stamp(node, *parts: Any):
    """Make ``node``'s cache key depend on ``parts`` (fingerprints): as the execution
    property ``code_fingerprint`` where the component's spec declares one, else in its
    executor spec's ``extra_flags``, which TFX hashes into the key and no executor reads
    (kept by local runs only: the Kubeflow V2 compiler drops them).
    """
    value = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    if CODE_FINGERPRINT in node.spec.PARAMETERS:
        node.exec_properties[CODE_FINGERPRINT] = value
    else:
        node.executor_spec.add_extra_flags([f"--{CODE_FINGERPRINT}={value}"])
    return node
