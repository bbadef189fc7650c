"""The import graph of a package, read from its source with ``ast``, and the checks of the layer table.

Every import counts: module level, inside functions and ``TYPE_CHECKING`` blocks, relative imports, and
module names written as strings (registries such as ``"pkg.runtime.backends.onnxruntime:Backend"`` that are
imported by name at run time). A module's *part* is the first name below the package (``runtime`` for
``pkg/runtime/backends/base.py``, ``errors`` for ``pkg/errors.py``, the package itself for its
``__init__.py``); the layer table assigns every part a layer.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    """``source`` (a module) imports ``target`` (a module of the same package) at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the package folder ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve(name: str, known: Mapping[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in (``pkg.a.b.Class`` -> ``pkg.a.b``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: Mapping[str, Path], package: str) -> list[Edge]:
    """Every import of a package module by ``module`` (the file ``path``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    string_import = re.compile(rf"^{re.escape(package)}(\.\w+)*(:\w+)?$")
    edges = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package, up level - 1 packages
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # "from pkg import sub" imports the module pkg.sub when there is one
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and string_import.match(node.value):
            targets = [node.value.partition(":")[0]]
        for target in targets:
            resolved = _resolve(target, known) if target.split(".")[0] == package else None
            if resolved is not None and resolved != module:
                edges.append(Edge(module, resolved, path, getattr(node, "lineno", 0)))
    return edges


def import_graph(root: Path) -> list[Edge]:
    """Every import between modules of the package at ``root`` (a folder with ``__init__.py``)."""
    known = module_names(root)
    package = root.name
    return [edge for module, path in known.items() for edge in imports_of(module, path, known, package)]


def part_of(module: str) -> str:
    """``pkg.runtime.backends.base`` -> ``runtime``; ``pkg`` -> ``pkg``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_index(layers: Sequence[tuple[str, Sequence[str]]]) -> dict[str, int]:
    """Part -> its layer's position in the table (0 = the foundation)."""
    index: dict[str, int] = {}
    for position, (_, parts) in enumerate(layers):
        for part in parts:
            if part in index:
                raise ValueError(f"{part} is in two layers")
            index[part] = position
    return index


def upward_imports(edges: Iterable[Edge], layers: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Imports from a lower layer to a higher one, and parts that the table does not place."""
    index = layer_index(layers)
    problems = []
    for edge in edges:
        source, target = part_of(edge.source), part_of(edge.target)
        for part in (source, target):
            if part not in index:
                problems.append(f"{edge}: '{part}' is in no layer of the table")
        if source in index and target in index and index[target] > index[source]:
            problems.append(f"{edge}: layer '{layers[index[source]][0]}' must not import layer "
                            f"'{layers[index[target]][0]}'")
    return sorted(set(problems))


def part_cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Cycles between parts (strongly connected components of two or more parts), each sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        source, target = part_of(edge.source), part_of(edge.target)
        graph.setdefault(source, set())
        graph.setdefault(target, set())
        if source != target:
            graph[source].add(target)
    # Tarjan's algorithm, iterative over a small graph
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return sorted(cycles)


def readme_layers(readme: str) -> list[tuple[str, tuple[str, ...]]]:
    """The layer table of the README's Development section, between ``<!-- layers -->`` and
    ``<!-- /layers -->``: rows ``| N | name | `part`, `part` | ... |``."""
    start, end = readme.find("<!-- layers -->"), readme.find("<!-- /layers -->")
    if start < 0 or end < start:
        raise ValueError("the README has no <!-- layers --> ... <!-- /layers --> table")
    rows = []
    for line in readme[start:end].splitlines():
        match = re.match(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|([^|]+)\|", line)
        if match:
            parts = tuple(re.findall(r"`([\w.]+)`", match.group(3)))
            rows.append((int(match.group(1)), match.group(2), parts))
    rows.sort()
    if [r[0] for r in rows] != list(range(len(rows))):
        raise ValueError(f"the README layer table is not numbered 0..n: {[r[0] for r in rows]}")
    return [(name, parts) for _, name, parts in rows]
