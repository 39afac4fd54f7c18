"""No import circle in smbridge/: the graph of its modules, read with ``ast``, has no cycle.

Every ``import`` counts, wherever it is: ``from x import y`` where ``y`` is a submodule
(an edge to ``x.y``), relative imports, and imports under ``if TYPE_CHECKING:`` or
inside functions. An edge goes to the module named, not to the packages above it
(importing ``smbridge.codec.frames`` is not an import of ``smbridge.codec`` here).
docs/architecture.md shows which part may import which.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "smbridge"


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(name: str, path: Path, tree: ast.AST) -> Iterator[str]:
    """The dotted names a module imports (submodules named by ``from x import y`` too)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                # ``from . import`` in a package is the package itself; in a module, its parent.
                keep = len(base) - node.level + (1 if is_package else 0)
                prefix = ".".join(base[:keep])
                source = f"{prefix}.{node.module}" if node.module else prefix
            else:
                source = node.module or ""
            yield source
            for alias in node.names:
                yield f"{source}.{alias.name}"


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Each module of the package and the modules of the package it imports."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets: set[str] = set()
        for target in _imported(name, path, tree):
            if target in modules and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        # Iterative, so a long chain cannot hit the recursion limit.
        work: list[tuple[str, Iterator[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, iter(sorted(graph[start]))))
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return sorted(found)


def cycle_in(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """One concrete loop through a circle's modules, first module repeated at the end."""
    members = set(group)
    start = group[0]
    # Breadth-first from the start back to itself, inside the group.
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    return [start]


def describe(graph: dict[str, set[str]]) -> str:
    """Every circle, its modules and one loop through them, one line each."""
    lines = []
    for n, group in enumerate(circles(graph), 1):
        loop = " -> ".join(cycle_in(graph, group))
        lines.append(f"{n}. {', '.join(group)}\n   e.g. {loop}")
    return "\n".join(lines)


def test_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Submodules named by ``from x import y``, relative and TYPE_CHECKING imports are edges."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import a\n")
    (pkg / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from smbridge.b import X\n"
    )
    (pkg / "b.py").write_text("from smbridge import c\n")
    (pkg / "c.py").write_text("from .sub.a import thing\n")
    graph = import_graph(tmp_path)
    assert graph["smbridge.sub"] == {"smbridge.sub.a"}
    assert graph["smbridge.sub.a"] == {"smbridge.b"}
    assert graph["smbridge.b"] == {"smbridge", "smbridge.c"}
    assert graph["smbridge.c"] == {"smbridge.sub.a"}
    assert circles(graph) == [["smbridge.b", "smbridge.c", "smbridge.sub.a"]]
    assert cycle_in(graph, circles(graph)[0]) == [
        "smbridge.b",
        "smbridge.c",
        "smbridge.sub.a",
        "smbridge.b",
    ]


def test_router_and_transports_import_one_way() -> None:
    """The transports, the drain and the resume never import the Router; router imports down."""
    graph = import_graph()
    upward = {
        name: sorted(t for t in targets if t.startswith("smbridge.router"))
        for name, targets in graph.items()
        if name.startswith(("smbridge.transports", "smbridge.roster"))
    }
    assert all(not targets for targets in upward.values()), upward
    assert "smbridge.router.router" not in graph["smbridge.router.resume"]
    for group in circles(graph):
        assert not any(m.startswith(("smbridge.router", "smbridge.transports")) for m in group)


def test_no_import_circle() -> None:
    """No group of modules in smbridge/ imports each other in a loop (TYPE_CHECKING included)."""
    graph = import_graph()
    assert not circles(graph), "import circles in smbridge/:\n" + describe(graph)
