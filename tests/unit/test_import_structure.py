"""The import structure: packages depend on each other one way, and production code never
imports the tests or the benchmarks.

Every import is counted, deferred ones (inside a function) and typing-only ones
included: a cycle hidden in a function body is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("engine", "functions", "flowforge", "workflows")
NOT_PRODUCTION = ("tests", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for top in PRODUCTION for path in sorted((ROOT / top).rglob("*.py"))}


def package_of(module: str) -> str:
    """A package is its own package; a plain module belongs to the one it is in."""
    path = modules()[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imported(module: str) -> set[str]:
    """The modules ``module`` imports (resolved: ``from a import b`` is ``a.b`` if that is one)."""
    path = modules()[module]
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules() else base)
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in modules():
        source = package_of(module)
        for target in imported(module):
            if target in modules():
                destination = package_of(target)
                if destination != source:
                    graph.setdefault(source, set()).add(destination)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_the_packages_and_their_imports():
    # A walk that found nothing would pass everything below.
    graph = package_graph()
    assert "functions.aws" in graph["functions"]
    assert "engine" in graph["functions.aws"]
    assert "flowforge.local" in graph["flowforge"]


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle_between_packages():
    cycle = find_cycle(package_graph())
    assert cycle is None, "packages import each other: " + " -> ".join(cycle or [])


def test_no_production_module_imports_tests_or_bench():
    offenders = sorted(
        f"{module} imports {target}"
        for module in modules()
        for target in imported(module)
        if target.split(".")[0] in NOT_PRODUCTION
    )
    assert offenders == []


def test_the_engine_imports_no_adapter_and_no_aws_sdk():
    offenders = sorted(
        f"{module} imports {target}"
        for module in modules()
        if module.split(".")[0] == "engine"
        for target in imported(module)
        if target.split(".")[0] in ("functions", "flowforge", "boto3", "botocore", "moto")
    )
    assert offenders == []
