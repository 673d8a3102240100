"""The package's layout rules (docs/architecture.md), checked on the source.

- No module imports a ``_private`` module or name of another package (``_internal`` is the
  shared helpers' package and may be imported by all; ``_version`` likewise). A feature's
  subpackage (``collector/store/``) belongs to the feature; the package root does not
  lend its privates to the stages.
- No import circle between modules (imports under ``TYPE_CHECKING`` do not count: they do
  not run).
- No module over the size limit: split by job, not by cutting.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "telemetry_client"
NAME = "telemetry_client"
MAX_LINES = 450
SHARED = {"_internal", "_version", "_pipeline"}  # _pipeline: the one wiring place (client, CLI)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package_of(module: str, is_init: bool) -> str:
    """The package a module belongs to: ``telemetry_client.upload`` for its modules;
    top-level modules (client, settings, ...) belong to ``telemetry_client``."""
    if is_init:
        return module
    return module.rpartition(".")[0]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[tuple[str, list[str]]]:
    """(module, names) for every import that runs (skips ``if TYPE_CHECKING:`` blocks)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]
        stack.extend(ast.iter_child_nodes(node))


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, names in _imports(ast.parse(path.read_text())):
            if not target.startswith(NAME):
                continue
            for name in names:
                if f"{target}.{name}" in MODULES:
                    graph[module].add(f"{target}.{name}")
            if target in MODULES:
                graph[module].add(target)
    return graph


def _private_crossings() -> list[str]:
    bad = []
    for module, path in MODULES.items():
        mine = _package_of(module, path.name == "__init__.py")
        for target, names in _imports(ast.parse(path.read_text())):
            if not target.startswith(NAME + ".") and target != NAME:
                continue
            for full in [target] + [f"{target}.{n}" for n in names]:
                parts = full.split(".")
                for i, part in enumerate(parts[1:], start=1):
                    if not part.startswith("_") or part.startswith("__") or part in SHARED:
                        continue
                    owner = ".".join(parts[:i])  # the package that keeps ``part`` private
                    if owner in MODULES and MODULES[owner].name != "__init__.py":
                        owner = owner.rpartition(".")[0]  # a private name of a module
                    inside = owner != NAME and mine.startswith(owner + ".")  # a subpackage
                    if mine != owner and not inside:
                        bad.append(f"{module} imports {full}")
                    break
    return bad


def test_no_private_name_is_imported_from_another_package() -> None:
    assert _private_crossings() == []


def test_no_import_circles() -> None:
    graph = _edges()
    # Package __init__ re-exports are edges too; a circle through them is a real one at import.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                if not nxt.startswith(node + ".") and not (
                    node in nxt and MODULES[node].name == "__init__.py"
                ):
                    cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    # A package's __init__ importing its own submodules, which import the package's
    # siblings, is how packages work; only circles that leave that pattern count.
    real = [c for c in cycles if not _through_own_init(c)]
    assert real == [], "\n".join(" -> ".join(c) for c in real)


def _through_own_init(cycle: list[str]) -> bool:
    for a, b in itertools.pairwise(cycle):
        if MODULES[a].name == "__init__.py" and b.startswith(a + "."):
            return True
    return False


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size_stays_small(module: str) -> None:
    lines = MODULES[module].read_text().count("\n")
    assert lines <= MAX_LINES, f"{module}: {lines} lines (limit {MAX_LINES}); split it by job"
