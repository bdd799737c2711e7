"""Subpackages of recsys import downward only: no cycle between them.

The graph is read from the source with ``ast``, so it sees every import: module level, inside
functions (lazy imports are still dependencies) and under ``TYPE_CHECKING``. A node is a
subpackage (``recsys.models``) or a top-level module (``recsys.settings``).
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import recsys

PACKAGE_ROOT = Path(recsys.__file__).parent

#: An edge: (importing node, imported node) -> one place that makes it, "file:line".
Edges = dict[tuple[str, str], str]


def _module_name(path: Path, root: Path) -> tuple[str, ...]:
    parts = ("recsys", *path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported(node: ast.AST, module: tuple[str, ...], is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level == 0:
            return [node.module or ""]
        base = module if is_package else module[:-1]
        base = base[: len(base) - (node.level - 1)]
        return [".".join((*base, *([node.module] if node.module else [])))]
    return []


def subpackage_edges(root: Path = PACKAGE_ROOT) -> Edges:
    edges: Edges = {}
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        source_node = module[1] if len(module) > 1 else "recsys"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for name in _imported(node, module, path.name == "__init__.py"):
                parts = name.split(".")
                if parts[0] != "recsys" or len(parts) < 2 or parts[1] == source_node:
                    continue
                where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
                edges.setdefault((source_node, parts[1]), where)
    return edges


def find_cycle(edges: Edges) -> list[str] | None:
    """One cycle of the graph as a list of nodes (first == last), or None."""
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in edges:
        graph[source].add(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_recsys_subpackages_have_no_import_cycle() -> None:
    edges = subpackage_edges()
    # The walk sees the packages it must: a broken walk would pass vacuously.
    assert {("cli", "training"), ("training", "models"), ("models", "runtime")} <= set(edges)
    cycle = find_cycle(edges)
    if cycle:
        steps = [f"  {a} -> {b}  ({edges[(a, b)]})" for a, b in itertools.pairwise(cycle)]
        raise AssertionError("import cycle between recsys subpackages:\n" + "\n".join(steps))


def test_models_import_neither_training_nor_evaluation() -> None:
    edges = subpackage_edges()
    forbidden = {key: where for key, where in edges.items() if key[0] == "models"}
    assert not {target for _, target in forbidden} & {"training", "evaluation", "registry", "cli"}, forbidden


def test_the_walk_reports_a_planted_cycle(tmp_path: Path) -> None:
    root = tmp_path / "recsys"
    for package, body in {
        "alpha": "from recsys.beta import thing\n",
        "beta": "def lazy():\n    from ..alpha import other\n",
        "gamma": "import recsys.alpha\n",
    }.items():
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / "mod.py").write_text(body)
    (root / "__init__.py").write_text("")
    edges = subpackage_edges(root)
    assert set(edges) == {("alpha", "beta"), ("beta", "alpha"), ("gamma", "alpha")}
    assert find_cycle(edges) == ["alpha", "beta", "alpha"]
