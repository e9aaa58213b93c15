"""Scaling: what a step costs late in a run and with a bigger state.

1. With the run's history: the steps around step 10 and around step 1,000 of one loop
   run (~1 KB of state) must cost the same: the same AWS requests, the same request
   units, the same CPU time in FlowForge's code. Nothing per step may read or write
   anything that grows with the number of steps already made. Measured one step per
   invocation (chaining off) so steps pair one to one, and again with chaining: the
   requests and request units per node of a lone run's first chain and of its last.
2. With the state's size: the loop with 1 KB, 10 KB and 100 KB of state, where each
   step changes one small key (``i``). The store writes only that key (``SET
   #state.#k``), but DynamoDB bills an UpdateItem on the size of the whole item (the
   larger of before and after), twice inside a transaction, and a strongly consistent
   read per 4 KB: the curve shows what that costs.

Time is the CPU time the step handler spends outside AWS calls; moto's own time (the
stand-in for AWS round trips) is in the notes.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from bench.aws_cost import STATE_BYTES, loop_trace
from bench.aws_harness import Invocation, MotoStack, Trace, loop_graph, loop_state, step_memory_mb
from bench.bill import bill
from bench.figure import Figure, Target, format_number, ratios
from functions.aws.dynamodb import SNAPSHOT_EVERY

NAME = "scaling"
LATE_STEP, QUICK_LATE_STEP = 1_000, 200
EARLY_STEP = 10
WINDOW = 20  # steps compared: 1 to 20, and the 20 before the last
SIZES = (1024, 10 * 1024, 100 * 1024)
SIZE_STEPS, QUICK_SIZE_STEPS = 60, 15
FLAT_TARGET = Target("<=", 1.25)  # late ÷ early CPU per step
EQUAL_TARGET = Target("<=", 1.0)  # late ÷ early requests and request units: no growth at all


@dataclass
class History:
    """Steps of an old run and of a young one, made alternately (paired in time)."""

    old: list[Invocation]
    young: list[Invocation]


def history_trace(late_step: int) -> History:
    """Run a loop of ``late_step`` steps nearly to its end, start a second run, then
    alternate single-record invocations between the two.

    The young run's steps 1..WINDOW pair with the old run's last WINDOW steps before its
    final one (which ends the run: it sends nothing and leaves the sweeper's index).
    """
    graph = loop_graph(late_step)
    # One step per invocation (ChainMaxSteps=1), so the two runs' steps pair one to one;
    # chained steps cost the same at any step (see ``chained_history``).
    with MotoStack(chain_max_steps=1) as aws:
        trace = Trace("history", 2)
        (old_id,) = aws.start(graph, [loop_state(STATE_BYTES)], trace)
        while not trace.invocations or trace.invocations[-1].steps[0] < late_step - WINDOW - 3:
            aws.pump_one(trace, batch_size=1)
        (young_id,) = aws.start(graph, [loop_state(STATE_BYTES)], trace)
        mark = len(trace.invocations)
        for _ in range(2 * WINDOW + 4):
            aws.pump_one(trace, batch_size=1)
        aws.pump(trace)
        aws.check_completed([old_id, young_id])
    alternated = trace.invocations[mark:]
    old_steps = range(late_step - 1 - WINDOW, late_step - 1)
    old = [i for i in alternated if i.run_ids == [old_id] and i.steps[0] in old_steps]
    young = [i for i in alternated if i.run_ids == [young_id] and 1 <= i.steps[0] <= WINDOW]
    if len(old) != WINDOW or len(young) != WINDOW:
        raise RuntimeError(f"expected {WINDOW} alternated steps of each run, got {len(old)} and {len(young)}")
    return History(old, young)


def _per_step(invocations: list[Invocation]) -> dict[str, float]:
    calls = [c for i in invocations for c in (*i.calls, *i.esm_calls)]
    capacity = [c.capacity for c in calls if c.capacity is not None]
    n = len(invocations)
    return {
        "requests": len(calls) / n,
        "units": sum(c.read + c.write + c.index_write for c in capacity) / n,
        "aws_ms": statistics.median(sum(c.seconds for c in i.calls) * 1e3 for i in invocations),
    }


def history(quick: bool) -> list[Figure]:
    late_step = QUICK_LATE_STEP if quick else LATE_STEP
    h = history_trace(late_step)
    young, old = _per_step(h.young), _per_step(h.old)
    figures = []
    for label, invocations, point in (
        (f"steps 1-{WINDOW}", h.young, young),
        (f"steps {h.old[0].steps[0]:,}-{h.old[-1].steps[0]:,}", h.old, old),
    ):
        note = (
            f"AWS requests {format_number(point['requests'])}, request units {format_number(point['units'])}; "
            f"moto {format_number(point['aws_ms'])} ms"
        )
        figures.append(
            Figure(NAME, f"CPU per step, {label}", "µs", [i.cpu_s * 1e6 for i in invocations], note=note)
        )
    at = f"step ~{late_step:,} ÷ step ~{EARLY_STEP}"
    paired = ratios([i.cpu_s for i in h.old], [i.cpu_s for i in h.young])
    figures += [
        Figure(
            NAME,
            f"CPU per step: {at}",
            "x",
            paired,
            FLAT_TARGET,
            note="paired: the two runs' steps alternate",
        ),
        Figure(
            NAME, f"AWS requests per step: {at}", "x", [old["requests"] / young["requests"]], EQUAL_TARGET
        ),
        Figure(NAME, f"request units per step: {at}", "x", [old["units"] / young["units"]], EQUAL_TARGET),
    ]
    return figures


def chained_history(quick: bool) -> list[Figure]:
    """A lone run's chains early and late: the same requests and request units per node.

    Chains of ChainMaxSteps steps begin at different offsets from the run item's rewrite
    (every SNAPSHOT_EVERY steps): the second chain is compared with the latest one that
    begins at the same offset, so both make the same writes if nothing grows with history.
    """
    trace = loop_trace(QUICK_LATE_STEP if quick else LATE_STEP)
    chains = trace.invocations[:-1]  # the last one ends the run (a final rewrite)
    period = SNAPSHOT_EVERY // math.gcd(SNAPSHOT_EVERY, chains[0].nodes)
    late = max(i for i in range(1, len(chains)) if (i - 1) % period == 0)
    early_chain, late_chain = chains[1], chains[late]

    def per_node(invocation: Invocation) -> tuple[float, float]:
        calls = [*invocation.calls, *invocation.esm_calls]
        units = sum(c.capacity.read + c.capacity.write + c.capacity.index_write for c in calls if c.capacity)
        return (len(calls) + 1) / invocation.nodes, units / invocation.nodes  # + its Lambda invocation

    (early_requests, early_units), (late_requests, late_units) = per_node(early_chain), per_node(late_chain)
    label = f"chained, steps {early_chain.steps[0]:,}+ and {late_chain.steps[0]:,}+"
    note = (
        f"{early_chain.nodes} steps a chain; per node: requests {format_number(early_requests)} and "
        f"{format_number(late_requests)}, request units {format_number(early_units)} and {format_number(late_units)}"
    )
    return [
        Figure(NAME, f"{label}: requests per node, late ÷ early", "x", [late_requests / early_requests],
               EQUAL_TARGET, note=note),
        Figure(NAME, f"{label}: request units per node, late ÷ early", "x", [late_units / early_units],
               EQUAL_TARGET),
    ]  # fmt: skip


def state_sizes(quick: bool) -> list[Figure]:
    memory_mb = step_memory_mb()
    steps = QUICK_SIZE_STEPS if quick else SIZE_STEPS
    curve, figures = [], []
    for size in SIZES:
        trace = loop_trace(steps, size)
        b = bill(trace, memory_mb)
        puts = [c for i in trace.invocations for c in i.calls if c.operation == "PutItem" and c.capacity]
        slot = statistics.median(c.capacity.item_bytes[0] for c in puts if c.item_kind == "log")
        snapshots = [c.capacity.item_bytes[0] for c in puts if c.item_kind == "run"]
        run_item = statistics.median(snapshots) if snapshots else 0
        label = f"{size // 1024} KB state"
        curve.append(
            {
                "state": label,
                "slot bytes": slot,
                "run item bytes": run_item,
                "run item writes/step": round(len(snapshots) / steps, 3),
                "RRU/step": round(b.read_units, 3),
                "WRU/step": round(b.write_units + b.index_write_units, 3),
                "$ per million nodes": round(b.total, 3),
                "CPU µs/step": round(statistics.median(b.cpu_us)),
            }
        )
        figures += [
            Figure(
                NAME,
                f"{label}: DynamoDB write units/step",
                "WRU",
                [b.write_units + b.index_write_units],
                note=f"a step's slot {slot:,.0f} B; the run item {run_item:,.0f} B, rewritten every "
                f"{steps / max(len(snapshots), 1):.1f} steps",
            ),
            Figure(NAME, f"{label}: DynamoDB read units/step", "RRU", [b.read_units]),
            Figure(NAME, f"{label}: CPU per step", "µs", b.cpu_us),
            Figure(NAME, f"{label}: $ per million nodes", "$", [b.total]),
        ]
    first, last = curve[0], curve[-1]
    figures.append(
        Figure(
            NAME,
            f"$ per million nodes: {last['state']} ÷ {first['state']}",
            "x",
            [last["$ per million nodes"] / first["$ per million nodes"]],
            note="the whole curve is in details",
            details={"curve": curve},
        )
    )
    return figures


def run(quick: bool) -> list[Figure]:
    return history(quick) + chained_history(quick) + state_sizes(quick)
