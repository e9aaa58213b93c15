"""Engine overhead per node: FlowForge's in-process runner, a plain asyncio floor and
LangGraph (with and without its in-memory checkpointer) on the same graph.

The graph is four nodes ``a -> b -> c -> d`` with trivial async tools; ``d`` adds one to
``i`` and repeats until ``i >= N``, so a run executes ``N + 3`` nodes. Every system runs
in the same event loop, in a rotating order within each repetition, so the ratios pair
runs made moments apart. Before each timed run the harness collects the garbage and
runs the same system once on the smallest N, untimed: without it a FlowForge run of
N = 1,000 (7 ms) measured the refilling of the caches after LangGraph's run as much as
its own nodes (8.59 / 7.29 / 7.03 µs per node at N = 100 / 1,000 / 10,000 interleaved,
against 7.01 / 6.74 / 6.95 with FlowForge alone and 7.07 / 6.91 / 6.83 warmed,
back to back).

Figures are CPU time of this process per node: on a small shared machine wall-clock time
measures the neighbours as much as the engine. The wall-clock median is in each note.

Flatness in N is measured apart, on FlowForge alone, so that a noisy machine moves it as
little as possible: every sample runs about :data:`FLAT_BATCH_NODES` nodes (one run of
N = 10,000, ten of N = 1,000, a hundred of N = 100), the sizes take turns in a rotating
order within each repetition, and repetitions go on for :data:`FLAT_BUDGET_S` seconds
(at least :data:`FLAT_MIN_REPEATS`, at most :data:`FLAT_MAX_REPEATS`). The figure pairs
the slowest size's sample with the fastest size's (by their medians) in each repetition;
its note gives the spread of those ratios and the ratio of the two medians.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import math
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
#: Long runs, where a run's own set-up is spread over 1,000 nodes or more: the chained
#: steps' target (a node's own cost, what a step of a long run pays).
LONG_RUN_PER_NODE_TARGET, LONG_RUN_NODES = Target("<=", 8), 1_000
SPEEDUP_TARGET = Target(">=", 30)
#: "Flat in N": the slowest size's µs/node is within 25% of the fastest size's.
FLAT_TARGET = Target("<=", 1.25)
#: Nodes a flatness sample runs, whatever its N: each sample takes about as long.
FLAT_BATCH_NODES = 10_000
FLAT_MIN_REPEATS, FLAT_MAX_REPEATS, FLAT_BUDGET_S = 20, 80, 25.0
QUICK_FLAT = (5, 10, 3.0)

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
    # What exists before the runs (every system's modules and graphs) is frozen out of
    # the collector's scans: one system's import must not slow another's collections
    # (LangGraph's tripled the objects a full collection walks during FlowForge's runs).
    gc.collect()
    gc.freeze()
    try:
        return await _samples(sizes, repeats, systems, runners)
    finally:
        gc.unfreeze()


async def _samples(sizes, repeats, systems, runners) -> tuple[dict[Key, list[float]], dict[Key, list[float]]]:
    cpu: dict[Key, list[float]] = {key: [] for key in runners}
    wall: dict[Key, list[float]] = {key: [] for key in runners}
    names = list(systems)
    for rep in range(max(repeats.values())):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for n in _rotated(sizes, rep):
            if rep >= repeats[n]:
                continue
            for name in order:
                gc.collect()  # each run starts with no garbage left by the previous one
                # ... and warm: a short run of the same system first (untimed) puts its
                # own working set back in the CPU's caches, which the collection and the
                # previous system's run (LangGraph's last half a second) had filled.
                await runners[(name, sizes[0])]()
                wall_s, cpu_s = await runners[(name, n)]()
                cpu[(name, n)].append(cpu_s / (n + 3) * 1e6)
                wall[(name, n)].append(wall_s / (n + 3) * 1e6)
    return cpu, wall


def _rotated(items: tuple[int, ...], rep: int) -> tuple[int, ...]:
    shift = rep % len(items)
    return items[shift:] + items[:shift]


async def _measure_flatness(sizes: tuple[int, ...], limits: tuple[int, int, float]) -> dict[int, list[float]]:
    """FlowForge's CPU µs per node for each N, one sample per repetition, each sample a
    batch of about :data:`FLAT_BATCH_NODES` nodes, the sizes in a rotating order."""
    least, most, budget_s = limits
    runners = {n: _flowforge(n) for n in sizes}
    batches = {n: max(1, math.ceil(FLAT_BATCH_NODES / (n + 3))) for n in sizes}
    for n in sizes:  # warm-up
        await runners[n]()
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    started = time.perf_counter()
    for rep in range(most):
        if rep >= least and time.perf_counter() - started > budget_s:
            break
        for n in _rotated(sizes, rep):
            gc.collect()
            cpu_s = 0.0
            for _ in range(batches[n]):
                cpu_s += (await runners[n]())[1]
            samples[n].append(cpu_s / (batches[n] * (n + 3)) * 1e6)
    return samples


def _flatness(per_size: dict[int, list[float]]) -> Figure:
    """Slowest N ÷ fastest N (by median), paired repetition by repetition, with the spread."""
    medians = {n: statistics.median(values) for n, values in per_size.items()}
    slowest, fastest = max(medians, key=medians.get), min(medians, key=medians.get)
    paired = ratios(per_size[slowest], per_size[fastest])
    q1, _, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else (paired[0],) * 3
    note = (
        f"N={slowest:,} ÷ N={fastest:,}, {len(paired)} interleaved repetitions: "
        f"interquartile {format_number(q1)} to {format_number(q3)}; "
        f"ratio of medians {format_number(medians[slowest] / medians[fastest])}"
    )
    details = {
        "batch_nodes": FLAT_BATCH_NODES,
        "us_per_node_median": {str(n): medians[n] for n in per_size},
        "us_per_node": {str(n): values for n, values in per_size.items()},
    }
    name = f"FlowForge flatness: slowest N ÷ fastest N ({len(per_size)} sizes)"
    return Figure(NAME, name, "x", paired, FLAT_TARGET, note, details)


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
    flat = asyncio.run(
        _measure_flatness(sizes, QUICK_FLAT if quick else (FLAT_MIN_REPEATS, FLAT_MAX_REPEATS, FLAT_BUDGET_S))
    )

    figures: list[Figure] = []
    for system in (FLOWFORGE, FLOOR, LANGGRAPH, LANGGRAPH_SAVER):
        for n in sizes:
            target = None
            if system == FLOWFORGE:
                target = LONG_RUN_PER_NODE_TARGET if n >= LONG_RUN_NODES else PER_NODE_TARGET
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
    figures.append(_flatness(flat))
    return figures
