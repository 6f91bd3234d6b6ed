"""The shape of the code: no import circles, and no part importing a part above it.

The import graph is read from the source with ``ast`` (every ``import``, lazy ones inside
functions too, except those under ``if TYPE_CHECKING:``), over ``overseer`` and ``node_runtime``.
A module is a node; ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to
``a.b``. Importing ``a.b`` also runs ``a/__init__``: that edge is not drawn, since every
subpackage's ``__init__`` holds only its docstring (checked below) except the few listed in
``_INIT_WITH_CODE``, which import only their own part.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("overseer", "node_runtime")

# The parts, and the parts each may import (besides itself). One table: the architecture.
ALLOWED: dict[str, set[str]] = {
    "foundation": set(),  # overseer.errors, overseer.usage
    "events": {"foundation"},
    "config": {"foundation"},
    "core": {"foundation", "events"},
    "backends": {"foundation", "events", "config", "core"},
    "tools": {"foundation", "events", "config", "core", "backends"},
    "planning": {"foundation", "events", "config", "core", "backends"},
    "node_runtime": set(),
    "nodes": {"foundation", "events", "config", "core", "backends", "tools", "node_runtime"},
    "journal": {"foundation", "events", "config", "core"},
    "engine": {
        "foundation",
        *("events", "config", "core", "backends", "tools", "planning", "nodes", "journal"),
    },
    "batch": {
        "foundation",
        *("events", "config", "core", "backends", "journal", "engine"),
    },
    "interfaces": {
        "foundation",
        *("events", "config", "core", "backends", "tools", "planning", "nodes", "journal"),
        *("engine", "batch"),
    },
    "facade": {"foundation", "events", "config", "core", "backends", "tools", "engine"},
}
# The one edge that goes up: a node run alone builds overseer's tools itself (DESIGN.md), through
# one lazy import at node_runtime's edge.
UPWARD = {("node_runtime._local", "overseer.nodes.standalone")}
_TOP = {
    "overseer": "facade",
    "overseer.__main__": "interfaces",
    "overseer.errors": "foundation",
    "overseer.usage": "foundation",
    "overseer.events": "events",
    "overseer.engine": "engine",
}
_INIT_WITH_CODE = {"overseer", "overseer.config", "node_runtime"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def part_of(module: str) -> str:
    if module in _TOP:
        return _TOP[module]
    if module.startswith("node_runtime"):
        return "node_runtime"
    return module.split(".")[1]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _import_nodes_of(child))
            continue
        yield from _import_nodes_of(node)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _import_nodes(node)


def _targets(node: ast.Import | ast.ImportFrom, here: str) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = here.split(".")[: -node.level] if node.level else []
        base = ".".join([*package, *([base] if base else [])])
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        yield candidate if candidate in MODULES else base


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    return {
        target
        for node in _import_nodes(tree)
        for target in _targets(node, module)
        if target in MODULES and target != module
    }


GRAPH = {module: imports_of(module) for module in MODULES}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return [*stack[stack.index(child) :], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_belongs_to_a_part_in_the_table() -> None:
    unknown = {module: part_of(module) for module in MODULES if part_of(module) not in ALLOWED}
    assert not unknown


def test_there_are_no_import_circles() -> None:
    cycle = _find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    planted = {**GRAPH, "overseer.core.plan": GRAPH["overseer.core.plan"] | {"overseer.engine"}}
    assert _find_cycle(planted) is not None


def test_no_part_imports_a_part_above_it() -> None:
    wrong = [
        f"{module} ({part_of(module)}) imports {target} ({part_of(target)})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if part_of(target) != part_of(module)
        and part_of(target) not in ALLOWED[part_of(module)]
        and (module, target) not in UPWARD
    ]
    assert not wrong, "\n".join(wrong)


def test_lazy_imports_count_as_edges() -> None:
    assert "overseer.nodes.standalone" in GRAPH["node_runtime._local"]


def test_the_table_has_no_circle_between_parts() -> None:
    assert _find_cycle({part: set(allowed) for part, allowed in ALLOWED.items()}) is None


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if MODULES[m].name == "__init__.py" and m.count(".") >= 1)
)
def test_subpackage_inits_say_what_the_part_does_and_hold_no_code(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree)
    assert docstring and "May import" in docstring, f"{module} must say what it may import"
    if module not in _INIT_WITH_CODE:
        assert len(tree.body) == 1, f"{module} holds code; put it in a module of its own"


def test_node_runtime_imports_no_overseer_at_import_time() -> None:
    eager = {
        target
        for module in MODULES
        if module.startswith("node_runtime")
        for node in ast.parse(MODULES[module].read_text(encoding="utf-8")).body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for target in _targets(node, module)
    }
    assert not {target for target in eager if target.startswith("overseer")}
