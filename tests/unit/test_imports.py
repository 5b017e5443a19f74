"""No import circles in the package: the module-level import graph, read with ast, has no cycle.

What counts is what runs when a module is imported: imports at module level (also inside classes,
try and if blocks), not those inside functions nor under `if TYPE_CHECKING:`. `from . import x`
imports the module x when x is one; `from .mod import name` imports mod. Importing a module imports
its packages (their __init__) too. A second graph adds the `if TYPE_CHECKING:` imports: what the type
checker reads (a circle there has been cut for the interpreter only).
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sles_ipa_builder

PACKAGE = Path(sles_ipa_builder.__file__).parent
TOP = PACKAGE.name


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    where: str  # file:line
    names: str  # what the line imports


def module_name(path: Path) -> str:
    parts = [TOP, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(body: list[ast.stmt], typing: bool = False) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (typing: and those under
    `if TYPE_CHECKING:`, which only the type checker follows)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.If):
            if typing or not _type_checking(node.test):
                yield from _module_level(node.body, typing)
            yield from _module_level(node.orelse, typing)
        elif isinstance(node, ast.Try | ast.TryStar):
            yield from _module_level(node.body, typing)
            for handler in node.handlers:
                yield from _module_level(handler.body, typing)
            yield from _module_level(node.orelse, typing)
            yield from _module_level(node.finalbody, typing)
        elif isinstance(node, ast.ClassDef | ast.With | ast.For | ast.While):
            yield from _module_level(node.body, typing)
            if isinstance(node, ast.For | ast.While):
                yield from _module_level(node.orelse, typing)


def _with_packages(name: str) -> list[str]:
    """name and the packages above it, inside the package: importing it runs all of them."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def import_graph(typing: bool = False) -> dict[str, list[Edge]]:
    known = modules()
    graph: dict[str, list[Edge]] = {m: [] for m in known}
    for importer, path in known.items():
        is_package = path.name == "__init__.py"
        here = importer.split(".") if is_package else importer.split(".")[:-1]
        tree = ast.parse(path.read_text(), str(path))
        for node in _module_level(tree.body, typing):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base_parts = here[:len(here) - node.level + 1] if node.level else []
                base = ".".join([*base_parts, *(node.module.split(".") if node.module else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in known else base)
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            names = ast.unparse(node)
            for target in targets:
                for mod in _with_packages(target):
                    edge = Edge(importer, mod, where, names)
                    if mod in known and mod != importer and edge not in graph[importer]:
                        graph[importer].append(edge)
    return graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan: the components with more than one module (no module imports itself here)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in graph[v]:
            w = e.imported
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def shortest_cycle(graph: dict[str, list[Edge]], start: str, members: set[str]) -> list[Edge]:
    """The shortest import chain from start back to start within one component."""
    prev: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for e in graph[v]:
            if e.imported not in members or e.imported in prev:
                continue
            prev[e.imported] = e
            if e.imported == start:
                chain = [e]
                while chain[0].importer != start:
                    chain.insert(0, prev[chain[0].importer])
                return chain
            queue.append(e.imported)
    return []


def describe(graph: dict[str, list[Edge]], comp: list[str]) -> str:
    members = set(comp)
    lines = [f"import circle among {len(comp)} modules: {', '.join(comp)}"]
    chain = shortest_cycle(graph, comp[0], members)
    lines.append("  e.g. " + " -> ".join([chain[0].importer, *(e.imported for e in chain)]))
    lines.append("  its edges:")
    lines += [f"    {e.where}: {e.importer} -> {e.imported}  ({e.names})"
              for m in comp for e in graph[m] if e.imported in members]
    return "\n".join(lines)


def test_the_graph_is_read_as_python_imports() -> None:
    graph = import_graph()
    assert f"{TOP}.engine.target" in graph and TOP in graph
    target = {e.imported for e in graph[f"{TOP}.engine.target"]}
    assert {f"{TOP}.engine.namespace", f"{TOP}.engine", f"{TOP}.run"} <= target  # from . import x; from .. import x
    assert f"{TOP}.cache.store" in target  # from ..cache.store import name: the module
    assert not any(e.imported == f"{TOP}.engine.target" for e in graph[f"{TOP}.engine.target"])


def test_no_import_circles() -> None:
    graph = import_graph()
    circles = strongly_connected(graph)
    assert not circles, "\n\n".join(describe(graph, c) for c in circles)


def test_no_import_circles_even_for_the_type_checker() -> None:
    """Type-only imports still tie modules together: a module that names another's types in its signatures
    cannot be read, tested or moved without it."""
    graph = import_graph(typing=True)
    circles = strongly_connected(graph)
    assert not circles, "\n\n".join(describe(graph, c) for c in circles)


def test_strongly_connected_finds_a_circle() -> None:
    def edge(a: str, b: str) -> Edge:
        return Edge(a, b, "x.py:1", "")

    graph = {"a": [edge("a", "b")], "b": [edge("b", "c")], "c": [edge("c", "a"), edge("c", "d")], "d": []}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert [e.importer for e in shortest_cycle(graph, "a", {"a", "b", "c"})] == ["a", "b", "c"]


@pytest.mark.parametrize("source, counted", [
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n", False),
    ("def f() -> None:\n    from . import b\n", False),
    ("try:\n    from . import b\nexcept ImportError:\n    pass\n", True),
    ("from .b import name\n", True),
    ("from . import b\n", True),
])
def test_what_counts_as_a_module_level_import(source: str, counted: bool) -> None:
    tree = ast.parse(source)
    assert any(isinstance(n, ast.ImportFrom) and n.level for n in _module_level(tree.body)) == counted
    assert any(isinstance(n, ast.ImportFrom) and n.level for n in _module_level(tree.body, typing=True)) == (
        counted or "TYPE_CHECKING" in source)
