"""Engine overhead per node: FlowForge's in-process runner, a plain asyncio floor and
LangGraph (with and without its in-memory checkpointer) on the same graph.

The graph is four nodes ``a -> b -> c -> d`` with trivial async tools; ``d`` adds one to
``i`` and repeats until ``i >= N``, so a run executes ``N + 3`` nodes. Every system runs
in the same event loop, in a rotating order within each repetition, so the ratios pair
runs made moments apart.

Figures are CPU time of this process per node: on a small shared machine wall-clock time
measures the neighbours as much as the engine. The wall-clock median is in each note.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypedDict

from bench.figure import Figure, Target, format_number, ratios
from engine import Registry, compile_graph, run_graph
from engine.model import MAX_STEPS_CAP

NAME = "engine"
SIZES = (100, 1_000, 10_000)
REPEATS = {100: 30, 1_000: 15, 10_000: 5}
QUICK_SIZES = (100, 1_000)
QUICK_REPEATS = {100: 5, 1_000: 3}
PER_NODE_TARGET = Target("<=", 20)
SPEEDUP_TARGET = Target(">=", 30)
#: "Flat in N": the slowest size's µs/node is within 25% of the fastest size's.
FLAT_TARGET = Target("<=", 1.25)

FLOWFORGE = "FlowForge"
FLOOR = "asyncio floor"
LANGGRAPH = "LangGraph"
LANGGRAPH_SAVER = "LangGraph + InMemorySaver"
MISSING_LANGGRAPH = "not available: pip install -e '.[bench]'"

#: One run of a system: (wall-clock seconds, CPU seconds).
Timed = Callable[[], Awaitable[tuple[float, float]]]


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clocks()
    return wall - start[0], cpu - start[1]


# -- FlowForge ---------------------------------------------------------------------------
async def _ff_noop(state, ctx) -> None:
    return None


async def _ff_count(state, ctx) -> dict[str, Any]:
    return {"i": state["i"] + 1}


def _flowforge(n: int) -> Timed:
    registry = Registry()
    registry.tool("noop")(_ff_noop)
    registry.tool("count")(_ff_count)
    graph = compile_graph(
        {
            "name": "overhead",
            "start": "a",
            "max_steps": MAX_STEPS_CAP,
            "nodes": {
                "a": {"fn": "noop", "next": "b"},
                "b": {"fn": "noop", "next": "c"},
                "c": {"fn": "noop", "next": "d"},
                "d": {"fn": "count", "loop_condition": {"var": "i", "gte": n}, "max_iterations": n},
            },
        },
        registry,
    )

    async def run() -> tuple[float, float]:
        t0 = _clocks()
        result = await run_graph(graph, {"i": 0}, sleep=None)
        elapsed = _since(t0)
        _expect(FLOWFORGE, result.status == "completed" and len(result.logs) == n + 3, result.status)
        return elapsed

    return run


# -- the floor: the same four nodes in a dict, walked by a while loop ---------------------
async def _noop(state) -> None:
    return None


async def _count(state) -> dict[str, Any]:
    return {"i": state["i"] + 1}


def _floor(n: int) -> Timed:
    def done(state):
        return state["i"] >= n

    nodes = {"a": (_noop, "b", None), "b": (_noop, "c", None), "c": (_noop, "d", None)}
    nodes["d"] = (_count, None, done)

    async def run() -> tuple[float, float]:
        t0 = _clocks()
        state: dict[str, Any] = {"i": 0}
        node, executed = "a", 0
        while node is not None:
            fn, successor, until = nodes[node]
            update = await fn(state)
            if update:
                state = {**state, **update}
            executed += 1
            if until is None or until(state):
                node = successor
        elapsed = _since(t0)
        _expect(FLOOR, executed == n + 3, f"{executed} nodes")
        return elapsed

    return run


# -- LangGraph ----------------------------------------------------------------------------
class Counter(TypedDict):
    i: int


def _langgraph(n: int, *, saver: bool) -> Timed:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(Counter)
    for name, fn in (("a", _noop), ("b", _noop), ("c", _noop), ("d", _count)):
        builder.add_node(name, fn)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", "d")
    builder.add_conditional_edges("d", lambda s: END if s["i"] >= n else "d", ["d", END])
    plain = builder.compile()

    async def run() -> tuple[float, float]:
        config: dict[str, Any] = {"recursion_limit": n + 10}
        app = plain
        if saver:
            # A fresh saver per run: checkpoints must not pile up across repetitions.
            app = builder.compile(checkpointer=InMemorySaver())
            config["configurable"] = {"thread_id": "bench"}
        t0 = _clocks()
        out = await app.ainvoke({"i": 0}, config)
        elapsed = _since(t0)
        _expect(LANGGRAPH, out == {"i": n}, out)
        return elapsed

    return run


def _expect(system: str, ok: bool, got: Any) -> None:
    if not ok:
        raise RuntimeError(f"{system} did not run the benchmark graph to the end: {got!r}")


# -- the measurement ----------------------------------------------------------------------
Key = tuple[str, int]  # (system, N)


async def _measure(sizes, repeats, systems) -> tuple[dict[Key, list[float]], dict[Key, list[float]]]:
    """µs per node for every (system, N): CPU time, and wall-clock time."""
    runners = {(name, n): make(n) for name, make in systems.items() for n in sizes}
    for name in systems:  # warm-up: first-call costs are not per-node overhead
        await runners[(name, sizes[0])]()
    cpu: dict[Key, list[float]] = {key: [] for key in runners}
    wall: dict[Key, list[float]] = {key: [] for key in runners}
    names = list(systems)
    for rep in range(max(repeats.values())):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for n in sizes:
            if rep >= repeats[n]:
                continue
            for name in order:
                gc.collect()  # each run starts with no garbage left by the previous one
                wall_s, cpu_s = await runners[(name, n)]()
                cpu[(name, n)].append(cpu_s / (n + 3) * 1e6)
                wall[(name, n)].append(wall_s / (n + 3) * 1e6)
    return cpu, wall


def _wall_note(values: list[float]) -> str:
    median, low, high = (format_number(x) for x in (statistics.median(values), min(values), max(values)))
    return f"wall-clock {median} µs/node (min {low}, max {high})"


def run(quick: bool) -> list[Figure]:
    sizes = QUICK_SIZES if quick else SIZES
    repeats = QUICK_REPEATS if quick else REPEATS
    systems: dict[str, Callable[[int], Timed]] = {FLOWFORGE: _flowforge, FLOOR: _floor}
    if importlib.util.find_spec("langgraph") is not None:
        systems[LANGGRAPH] = lambda n: _langgraph(n, saver=False)
        systems[LANGGRAPH_SAVER] = lambda n: _langgraph(n, saver=True)
    cpu, wall = asyncio.run(_measure(sizes, repeats, systems))

    figures: list[Figure] = []
    for system in (FLOWFORGE, FLOOR, LANGGRAPH, LANGGRAPH_SAVER):
        target = PER_NODE_TARGET if system == FLOWFORGE else None
        for n in sizes:
            name, key = f"{system}, N={n:,}", (system, n)
            if key not in cpu:
                figures.append(Figure(NAME, name, "µs/node", (), note=MISSING_LANGGRAPH))
                continue
            details = {"wall_us_per_node": wall[key], "nodes_per_run": n + 3}
            figures.append(Figure(NAME, name, "µs/node", cpu[key], target, _wall_note(wall[key]), details))
    for label, top, bottom, target in (
        ("LangGraph ÷ FlowForge", LANGGRAPH, FLOWFORGE, SPEEDUP_TARGET),
        ("LangGraph + saver ÷ FlowForge", LANGGRAPH_SAVER, FLOWFORGE, None),
        ("FlowForge ÷ asyncio floor", FLOWFORGE, FLOOR, None),
    ):
        for n in sizes:
            name = f"{label}, N={n:,}"
            if (top, n) not in cpu:
                figures.append(Figure(NAME, name, "x", (), note=MISSING_LANGGRAPH))
                continue
            figures.append(Figure(NAME, name, "x", ratios(cpu[(top, n)], cpu[(bottom, n)]), target))
    paired = min(repeats.values())  # the repetitions in which every size ran
    spread = [
        max(cpu[(FLOWFORGE, n)][rep] for n in sizes) / min(cpu[(FLOWFORGE, n)][rep] for n in sizes)
        for rep in range(paired)
    ]
    name = f"FlowForge flatness: slowest N ÷ fastest N ({len(sizes)} sizes)"
    figures.append(Figure(NAME, name, "x", spread, FLAT_TARGET))
    return figures
