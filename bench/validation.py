"""Graph validation: CPU time to validate the largest graphs the API accepts.

``compile_graph`` runs once per ``POST /graph/create``, inside the API Lambda. Three
graphs of about 200 KB each (under the 256 KiB cap): 200 nodes with long ids that form a
valid chain of branches; the same with every one of their 2,000 branch targets
misspelt (each unknown name gets a "did you mean" search, within its budget); and 500
nodes, the node cap, with an unknown tool each. Each sample is the CPU time of one
validation; the target is well under a second.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from typing import Any

from bench.figure import Figure, Target
from engine import GraphValidationError, Registry, compile_graph

NAME = "validation"
TARGET = Target("<=", 250)  # ms of CPU per validation
RUNS, QUICK_RUNS = 7, 3


def _registry() -> Registry:
    registry = Registry()

    @registry.tool("step")
    def step(state, ctx):
        return {}

    @registry.condition("ready")
    def ready(state):
        return True

    return registry


def _branching(misspelt: bool) -> dict[str, Any]:
    ids = [f"node_{i:03d}_" + "abcdefghij" * 5 for i in range(200)]
    nodes = {}
    for i, nid in enumerate(ids):
        target = ids[(i + 1) % len(ids)]
        nodes[nid] = {
            "fn": "step",
            "branches": [
                {"when": "ready", "next": f"{target[:-3]}x{k}y" if misspelt else target} for k in range(10)
            ],
        }
    return {"start": ids[0], "nodes": nodes}


def _many_unknown_tools() -> dict[str, Any]:
    nodes = {f"n{i:03d}_" + "p" * 40: {"fn": f"tool_{i:03d}_" + "q" * 40} for i in range(500)}
    ids = list(nodes)
    for a, b in itertools.pairwise(ids):
        nodes[a]["next"] = b
    return {"start": ids[0], "nodes": nodes}


GRAPHS = {
    "200 nodes x 10 branches, valid": lambda: _branching(misspelt=False),
    "200 nodes x 10 unknown targets": lambda: _branching(misspelt=True),
    "500 nodes, each an unknown tool": _many_unknown_tools,
}


def _cpu_ms(graph: dict[str, Any], registry: Registry) -> float:
    started = time.process_time()
    with contextlib.suppress(GraphValidationError):
        compile_graph(graph, registry)
    return (time.process_time() - started) * 1000


def run(quick: bool) -> list[Figure]:
    registry = _registry()
    figures = []
    for name, build in GRAPHS.items():
        graph = build()
        samples = [_cpu_ms(graph, registry) for _ in range(QUICK_RUNS if quick else RUNS)]
        print(f"   {name}: {sorted(samples)[len(samples) // 2]:.1f} ms", flush=True)
        figures.append(Figure(NAME, f"validate: {name}", "ms", samples, TARGET))
    return figures
