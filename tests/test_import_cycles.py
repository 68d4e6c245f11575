"""The import graph among the project's own modules has no cycle (issue 24): every ``import`` and
``from … import`` of a module (at any depth, deferred imports included) is an edge. The trainer
half's ``kmtr`` is in ``PACKAGES`` too.

Nor has the graph of their packages: each subpackage (``kmtr.train``, ``kmtr.eval``, …) or
top-level module (``kmtr.methods``) is one node, so two packages that import each other through
different modules (``kmtr.eval`` → ``kmtr.train`` → ``kmtr.eval``) fail too: each layer imports
only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kspace_sim", "cli", "kmtr")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module → the project modules it imports (a ``from pkg import name`` of a submodule counts the submodule)."""
    files = {_module_name(p): p for pkg in packages for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in files:
                targets = [node.value]  # a module named for importlib (the CLI registers its commands so)
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod and not mod.startswith(t + "."):  # a package's own __init__ is not an edge back
                    graph[mod].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph with each module folded into its package's node: the first two parts of
    its name (``kmtr.train.loop`` → ``kmtr.train``; a top-level module ``kmtr.methods`` stays
    itself; the package root ``kmtr`` is its own node). Edges inside one node are dropped."""

    def node(module: str) -> str:
        return ".".join(module.split(".")[:2])

    out: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        out.setdefault(node(mod), set())
        for t in targets:
            out.setdefault(node(t), set())
            if node(t) != node(mod):
                out[node(mod)].add(node(t))
    return out


def test_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_simulator_the_trainer_and_their_clis():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles: " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_package_graph_folds_modules_into_their_packages():
    modules = {"p.a.x": {"p.b.y"}, "p.a.w": set(), "p.b.y": set(), "p.b.z": {"p.a.w"}, "p.top": {"p.a.x", "p.a.w"}}
    assert package_graph(modules) == {"p.a": {"p.b"}, "p.b": {"p.a"}, "p.top": {"p.a"}}
    assert find_cycles(package_graph(modules)) == [["p.a", "p.b"]]  # no module cycle, a package cycle


def test_no_import_cycles_between_packages():
    cycles = find_cycles(package_graph(import_graph()))
    assert cycles == [], "package import cycles: " + "; ".join(" ↔ ".join(c) for c in cycles)


if __name__ == "__main__":
    for c in find_cycles(import_graph()) + find_cycles(package_graph(import_graph())):
        print(" <-> ".join(c))
