"""Imports run one way: the schema layer, then components, transforms, pipeline, serving, and
the command line on top; no package imports another that imports it back. Every import counts,
those inside functions too (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("schema", "components", "transforms", "pipeline", "serving")
# (module prefix, layer): the longest matching prefix decides; a module imports its own layer
# or lower ones only. The CLI is the composition root: it may import everything.
LAYERS = (
    ("stellarpop.schema", 0),
    ("stellarpop.components", 1),
    ("stellarpop.transforms", 2),
    ("stellarpop.pipeline", 3),
    ("stellarpop.serving", 4),
    ("stellarpop.pipeline.cli", 5),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["stellarpop", *parts])


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for folder in FOLDERS for p in sorted((REPO / folder).rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """Project modules that ``path`` imports (``from a import b`` gives ``a.b`` when it is a module)."""
    modules, found = _modules(), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t.split(".")[0] == "stellarpop" and t != "stellarpop"}
    return found


def layer(module: str) -> int:
    return max((n for prefix, n in LAYERS if module == prefix or module.startswith(prefix + ".")), default=-1)


def package(module: str, modules: dict[str, Path]) -> str:
    """The package a module belongs to (itself for a package's ``__init__``)."""
    return module if modules[module].name == "__init__.py" else module.rpartition(".")[0]


def test_every_module_is_in_a_layer():
    assert all(layer(m) >= 0 for m in _modules())


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_run_downwards(module):
    path = _modules()[module]
    upward = sorted(i for i in _imports(module, path) if layer(i) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports {upward}"


def test_no_package_imports_another_that_imports_it_back():
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = package(name, modules)
        for target in _imports(name, path):
            if target in modules and package(target, modules) != own:
                graph.setdefault(own, set()).add(package(target, modules))

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            node = todo.pop()
            if node == b:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph.get(node, ())
        return False

    cycles = sorted(
        {tuple(sorted(p)) for p in itertools.permutations(graph, 2) if p[1] in graph[p[0]] and reaches(p[1], p[0])}
    )
    assert not cycles, f"package cycles: {cycles}"


def test_the_checker_sees_what_it_is_for(tmp_path):
    assert (
        layer("stellarpop.pipeline.cli.serve")
        > layer("stellarpop.serving.predict")
        > layer("stellarpop.pipeline.training.export")
    )
    assert layer("stellarpop.schema.features") < layer("stellarpop.components.spectra")
    assert "stellarpop.schema.features" in _imports("stellarpop.components.spectra", REPO / "components" / "spectra.py")
