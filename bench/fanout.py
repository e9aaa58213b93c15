"""Fan-outs: what a map costs per item on AWS, and how long it takes in-process.

- **AWS** (real step handler on moto, every call metered as in :mod:`bench.aws_cost`):
  one run whose only node maps a trivial tool over 1,000 items (100 with ``--quick``)
  with ``max_concurrency`` 100, batches of up to 10 messages, each invocation in a fresh
  container (many workers at once). Per item: billed requests, DynamoDB units and $
  (the map's opening and its join included), and the join's own requests and cost
  (reading every execution, committing the join, rewriting the run item).
- **In-process** (``engine.run_graph``): a map of 100 items whose tool sleeps 0.1 s, at
  ``max_concurrency`` 100; the wall time, against the 10 s they take one after another.
- **Through the step function** (on moto, one warm container): a map of 10 items whose
  tool sleeps 0.1 s, at ``max_concurrency`` 10, its item messages reaching the function
  in one batch; the wall time from the step message that opens the map to the join,
  against the 1 s its tools take one after another.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench import prices
from bench.aws_harness import MotoStack, Trace, step_memory_mb
from bench.bill import PER_MILLION, bill
from bench.figure import Figure, Target, format_number
from engine import compile_graph, default_registry, run_graph
from engine.fanout_service import FanOutSteps

NAME = "fanout"
ITEMS, QUICK_ITEMS = 1_000, 100
CONCURRENCY = 100
SLEEP_ITEMS, SLEEP_S = 100, 0.1
REPEATS, QUICK_REPEATS = 5, 2
BATCH_ITEMS = 10
WALL_TARGET = Target("<=", 0.5)


@default_registry.tool("bench_item")
async def bench_item(state, ctx) -> int:
    """A map item: its index doubled."""
    return ctx.index * 2


@default_registry.tool("bench_nap")
async def bench_nap(state, ctx) -> None:
    """A map item that waits ``SLEEP_S`` (an I/O-bound call)."""
    await asyncio.sleep(SLEEP_S)


def map_graph(fn: str, items: int, concurrency: int = CONCURRENCY) -> dict[str, Any]:
    return {
        "name": f"bench_map_{fn}",
        "start": "m",
        "max_steps": items + 10,
        "nodes": {"m": {"map": {"items": "xs", "fn": fn, "results": "ys", "max_concurrency": concurrency}}},
    }


def aws_trace(items: int) -> tuple[Trace, list[Any]]:
    """The map on moto; the trace and the calls its join made."""
    join = FanOutSteps._join
    with MotoStack(container_per_invocation=True) as aws:

        def metered_join(self, *args, **kwargs):
            with aws.meter.acting("join"):
                return join(self, *args, **kwargs)

        FanOutSteps._join = metered_join
        try:
            trace = Trace(f"map of {items}", 1)
            run_ids = aws.start(map_graph("bench_item", items), [{"xs": list(range(items))}], trace)
            aws.pump(trace)
            aws.check_completed(run_ids)
            state = aws.service.get_run(run_ids[0]).state
            if state["ys"] != str([2 * i for i in range(items)]).replace(" ", ""):
                raise RuntimeError("the map's results are wrong")
        finally:
            FanOutSteps._join = join
        return trace, [c for c in aws.meter.calls if c.actor == "join"]


def join_cost(calls: list[Any]) -> tuple[int, float, float, float]:
    """Requests, read units, write units and $ of the join's calls."""
    read = sum(c.capacity.read for c in calls if c.capacity)
    write = sum(c.capacity.write + c.capacity.index_write for c in calls if c.capacity)
    dollars = read * prices.DYNAMODB_PER_READ_UNIT + write * prices.DYNAMODB_PER_WRITE_UNIT
    sends = sum(1 for c in calls if c.service == "sqs")
    return len(calls), read, write, dollars + sends * prices.SQS_STANDARD_PER_REQUEST


def in_process_wall_s() -> float:
    graph = compile_graph(map_graph("bench_nap", SLEEP_ITEMS))
    state = {"xs": list(range(SLEEP_ITEMS))}
    began = time.perf_counter()
    result = asyncio.run(run_graph(graph, state))
    if result.status != "completed" or len(result.state["ys"]) != SLEEP_ITEMS:
        raise RuntimeError(f"the map did not complete: {result.error}")
    return time.perf_counter() - began


def step_function_walls(repeats: int) -> tuple[list[float], int]:
    """Seconds from the map's opening to its join through the step function, each of
    ``repeats`` runs; and the most item messages one invocation got."""
    walls, widest = [], 0
    with MotoStack() as aws:
        for _ in range(repeats):
            trace = Trace(f"map of {BATCH_ITEMS}", 1)
            (run_id,) = aws.start(
                map_graph("bench_nap", BATCH_ITEMS, BATCH_ITEMS), [{"xs": list(range(BATCH_ITEMS))}], trace
            )
            began = time.perf_counter()
            aws.pump(trace)
            walls.append(time.perf_counter() - began)
            aws.check_completed([run_id])
            widest = max(widest, *(len(i.messages) for i in trace.invocations))
    return walls, widest


def run(quick: bool) -> list[Figure]:
    items = QUICK_ITEMS if quick else ITEMS
    memory_mb = step_memory_mb()
    trace, join_calls = aws_trace(items)
    b = bill(trace, memory_mb)
    per_item = trace.nodes / items  # messages per item: the item's own, plus the opening / items
    requests, read, write, dollars = join_cost(join_calls)
    label = f"map of {items:,} items, max_concurrency {CONCURRENCY}"
    operations = ", ".join(
        f"{n.split(' ', 1)[1]} {format_number(v * per_item)}" for n, v in b.operations.items()
    )
    walls = [in_process_wall_s() for _ in range(QUICK_REPEATS if quick else REPEATS)]
    step_walls, widest = step_function_walls(QUICK_REPEATS if quick else REPEATS)
    return [
        Figure(
            NAME,
            f"{label}: billed requests/item",
            "requests",
            [b.requests * per_item],
            note=f"{trace.nodes} messages in {len(trace.invocations)} invocations; {operations}",
            details={"requests": b.breakdown(), "dollars": b.cost_rows()},
        ),
        Figure(
            NAME,
            f"{label}: DynamoDB write units/item",
            "WRU",
            [(b.write_units + b.index_write_units) * per_item],
            note="the claim's UpdateItem is billed on the fan-out item's size, which grows with the items",
        ),
        Figure(NAME, f"{label}: DynamoDB read units/item", "RRU", [b.read_units * per_item]),
        Figure(NAME, f"{label}: $ per million items", "$", [b.total * per_item], note="the join included"),
        Figure(
            NAME,
            f"{label}: the join",
            "requests",
            [requests],
            note=f"{format_number(read)} RRU, {format_number(write)} WRU: ${dollars:.6f} per map "
            f"(${dollars / items * PER_MILLION:.2f} per million items)",
        ),
        Figure(
            NAME,
            f"in-process map of {SLEEP_ITEMS} items sleeping {SLEEP_S} s, max_concurrency {CONCURRENCY}: wall",
            "s",
            walls,
            WALL_TARGET,
            note=f"one after another: {SLEEP_ITEMS * SLEEP_S:.0f} s",
        ),
        Figure(
            NAME,
            f"step function on moto, map of {BATCH_ITEMS} items sleeping {SLEEP_S} s, "
            f"max_concurrency {BATCH_ITEMS}: opening to join",
            "s",
            step_walls,
            note=f"up to {widest} item messages in one invocation; their tools one after another: "
            f"{BATCH_ITEMS * SLEEP_S:g} s",
        ),
    ]


if __name__ == "__main__":
    for figure in run(quick=False):
        print(figure.name, statistics.median(figure.samples) if figure.samples else None, figure.note)
