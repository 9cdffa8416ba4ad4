"""The house's shape, enforced: sub-packages in layers (a lower layer never imports an upper one), no
import cycle between modules, a handful of modules at the top, a docstring on every sub-package and
no module over 400 lines. Imports inside functions count; only `if TYPE_CHECKING:` blocks are exempt
(they never run), so a lazy import is no way around a cycle or a layer."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "i2v_watcher"
# Upper to lower, in the order a job's data flows back up through them: the command line and the
# dashboard use everything; `ops` (status, retry, submit, doctor) uses the services' start-up; each
# service composes the stages of `run`, which take jobs from `work` (found in the `inbox`) and tell the
# `catalog` (the event log, and the index the dashboard reads) what became of them, run through
# `backends`, judged by `judge` and encoded by `media` (ffmpeg), configured by `config`, whose presets
# are `steps`, about a `job`; `explain` words mistakes, `fs` writes safely; `errors`, `faults` and
# `logs` are the floor.
LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli", "spec"},
    {"web"},
    {"ops"},
    {"service"},
    {"run"},
    {"work"},
    {"catalog"},
    {"inbox"},
    {"backends"},
    {"judge"},
    {"media"},
    {"control"},
    {"config"},
    {"steps"},
    {"job"},
    {"explain"},
    {"fs"},
    {"errors", "faults", "logs"},
]
MAX_TOP_MODULES = 8
MIN_SUBPACKAGES = 7
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                if child in known:
                    yield child
                elif base in known:
                    yield base


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {dep for dep in _imported(name, path, known) if dep != name}
            for name, path in known.items()}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the root package: its __init__ imports nothing of ours
    for index, members in enumerate(LAYERS):
        if parts[1] in members:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS in {__file__}")


def test_layers_lower_never_imports_upper() -> None:
    wrong = []
    for module, deps in import_graph().items():
        mine = layer_of(module)
        for dep in deps:
            theirs = layer_of(dep)
            if mine is None or theirs is None:
                continue
            same_package = module.split(".")[1] == dep.split(".")[1]
            if theirs < mine or (theirs == mine and not same_package):
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_layers_have_no_import_cycle() -> None:
    assert _cycles(import_graph()) == []


def test_layers_cycle_finder_finds_a_cycle() -> None:
    """The finder itself, on a graph with one known cycle and a tail."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_layers_shape_of_the_house() -> None:
    top = [path.name for path in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_MODULES, sorted(top)
    subpackages = [path.parent for path in PACKAGE.glob("*/__init__.py")]
    assert len(subpackages) >= MIN_SUBPACKAGES
    for package in subpackages:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc, f"{package.name}/__init__.py says nothing of what the package is"
        assert layer_of(f"i2v_watcher.{package.name}") is not None


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layers_module_size(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines: split it along its ideas"
