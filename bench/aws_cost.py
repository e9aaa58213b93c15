"""AWS requests and cost per node: real handlers on moto, every AWS call counted.

Workloads, each on a fresh stack from template.yaml:

- the summarization graph with its sample state, runs one after another;
- a 1,000-step loop (one trivial node repeated until ``i`` reaches 1,000, ~1 KB of
  state) as a lone run: every message is an SQS batch of one, handled by the one warm
  container, which knows the run it just committed (no read); its chain runs
  ChainMaxSteps steps, then sends the next message;
- the same loop as 20 concurrent runs of 50 steps: batches of up to 10 records, each
  invocation in a fresh container (every message reads its run: the most a step costs),
  each message chaining its share of the invocation's budget;
- the budget curve: the lone run (200 steps) with ChainMaxSteps from 1 (no chaining) to
  100, for the default's choice.

A node is a step executed: one per record, plus the chained ones (the handler's
``StepsChained`` metric). A chain of N steps is one receive, one delete and one Lambda
invocation, however many nodes it runs: that is what is billed.

Requests are split into the step handler's (FlowForge's code) and the Lambda event
source mapping's (ReceiveMessage and DeleteMessageBatch per batch, amortized per node),
plus one Lambda invocation per batch. DynamoDB request units are computed from the items
by DynamoDB's rules (:mod:`bench.capacity`): moto's ``ConsumedCapacity`` is a
placeholder. Dollars come from :mod:`bench.prices` (:mod:`bench.bill` says how Lambda
time is modelled). Live logs (the stream broadcaster and WebSocket messages) are priced
apart, per subscriber, and are not in the per-node totals.
"""

from __future__ import annotations

import functools
from typing import Any

from bench import prices
from bench.aws_harness import (
    MotoStack,
    Trace,
    loop_graph,
    loop_state,
    run_workload,
    step_memory_mb,
    summarization,
)
from bench.bill import PER_MILLION, Bill, bill, step_functions_per_million
from bench.figure import Figure, Target, format_number

NAME = "aws"
STATE_BYTES = 1024
LOOP_STEPS, QUICK_LOOP_STEPS = 1_000, 200
CONCURRENT_RUNS = 20
CONCURRENT_STEPS, QUICK_CONCURRENT_STEPS = 50, 10
SUMMARIZATION_RUNS, QUICK_SUMMARIZATION_RUNS = 5, 2
LIVE_STEPS, QUICK_LIVE_STEPS = 100, 30
#: Assumed billed duration of a broadcaster invocation for one entry (its calls' round trips).
BROADCAST_BILLED_S = 0.010
#: A lone run's billed requests per node; $ per million nodes at 1 KB of state.
REQUESTS_TARGET = Target("<=", 1.5)
COST_TARGET = Target("<=", 1.0)
#: ChainMaxSteps values whose cost per node the budget curve shows (a lone run).
CHAIN_BUDGETS = (1, 2, 5, 10, 25, 50, 100)

LOOP = "loop 1 KB, 1 run"
CONCURRENT = f"loop 1 KB, {CONCURRENT_RUNS} runs"
SUMMARIZATION = "summarization"


@functools.cache
def loop_trace(steps: int, state_bytes: int = STATE_BYTES) -> Trace:
    """A lone loop run (cached: the scaling benchmark reads the same trace)."""
    return run_workload(
        f"loop {state_bytes} B x {steps}", loop_graph(steps), [loop_state(state_bytes)], concurrent=False
    )


def workloads(quick: bool) -> dict[str, Trace]:
    graph, state = summarization()
    runs = QUICK_SUMMARIZATION_RUNS if quick else SUMMARIZATION_RUNS
    concurrent_steps = QUICK_CONCURRENT_STEPS if quick else CONCURRENT_STEPS
    return {
        SUMMARIZATION: run_workload(SUMMARIZATION, graph, [state] * runs, concurrent=False),
        LOOP: loop_trace(QUICK_LOOP_STEPS if quick else LOOP_STEPS),
        CONCURRENT: run_workload(
            CONCURRENT,
            loop_graph(concurrent_steps),
            [loop_state(STATE_BYTES)] * CONCURRENT_RUNS,
            concurrent=True,
        ),
    }


def describe(b: Bill, trace: Trace) -> str:
    parts = ", ".join(
        f"{n.split(' ', 1)[1].split(':')[1]} {format_number(v)}" for n, v in b.operations.items()
    )
    return f"{trace.nodes} nodes in {len(trace.invocations)} invocations; {parts}; Lambda {format_number(b.lambda_invocations)}"


def figures_for(name: str, trace: Trace, memory_mb: int) -> list[Figure]:
    b = bill(trace, memory_mb)
    at_1kb = name != SUMMARIZATION
    details = {
        "requests": b.breakdown(),
        "dollars": b.cost_rows(),
        "units_per_node": {
            "computed_read": b.read_units,
            "computed_write": b.write_units,
            "computed_index_write": b.index_write_units,
            "moto_reported": b.moto_reported_units,  # placeholders, not sizes: not used
        },
    }
    return [
        Figure(
            NAME,
            f"{name}: billed requests/node",
            "requests",
            [b.requests],
            REQUESTS_TARGET if name == LOOP else None,
            describe(b, trace),
            details,
        ),
        Figure(NAME, f"{name}: requests/node by the step handler", "requests", [b.flowforge_requests]),
        Figure(
            NAME,
            f"{name}: requests/node by the event source mapping",
            "requests",
            [b.esm_requests + b.lambda_invocations],
            note=f"ReceiveMessage + DeleteMessageBatch {format_number(b.esm_requests)}, Lambda invocations "
            f"{format_number(b.lambda_invocations)}",
        ),
        Figure(NAME, f"{name}: DynamoDB read units/node", "RRU", [b.read_units], note="strongly consistent"),
        Figure(
            NAME,
            f"{name}: DynamoDB write units/node",
            "WRU",
            [b.write_units + b.index_write_units],
            note=f"table {format_number(b.write_units)}, index {format_number(b.index_write_units)}",
        ),
        Figure(
            NAME, f"{name}: step handler CPU/node", "µs", b.cpu_us, note="outside AWS calls, this machine"
        ),
        Figure(
            NAME,
            f"{name}: modelled Lambda billed time/node",
            "ms",
            [b.lambda_ms],
            note=f"{memory_mb} MB arm64",
        ),
        Figure(
            NAME,
            f"{name}: $ per million nodes",
            "$",
            [b.total],
            COST_TARGET if at_1kb else None,
            note=_dominant(b),
        ),
    ]


def _dominant(b: Bill) -> str:
    top = sorted(b.dollars.items(), key=lambda kv: kv[1], reverse=True)[:3]
    return "; ".join(f"{name} {format_number(v)}" for name, v in top)


# -- live logs ------------------------------------------------------------------------------
def live_logs(steps: int, subscribers: int, memory_mb: int) -> dict[str, float]:
    """Per node: what the broadcaster does for each new log entry, with ``subscribers``.

    The broadcaster runs on the same stack as the step loop; after each step its log
    item goes through ``apply_change`` as the table stream would deliver it.
    """
    from engine.logstream import LogStream
    from functions.aws.connections import CONNECTION_TTL_S, DynamoSubscriptionStore, apply_change
    from functions.aws.dynamodb import DynamoRunStore
    from functions.aws.dynamodb_codec import run_key, slot_sk
    from functions.aws.push import ApiGatewayPusher

    with MotoStack() as aws:
        table = aws.stack["table"]
        endpoint = "https://abc123.execute-api.us-east-1.amazonaws.com/bench"
        wsapi = aws.meter.attach(_management_client(endpoint))
        dynamodb = aws.client("dynamodb")
        stream = LogStream(
            DynamoRunStore(table, lambda: dynamodb),
            DynamoSubscriptionStore(table, lambda: dynamodb),
            ApiGatewayPusher(lambda: wsapi),
            connection_ttl_s=CONNECTION_TTL_S,
            workers=1,
        )
        trace = Trace("live", 1)
        (run_id,) = aws.start(loop_graph(steps), [loop_state(STATE_BYTES)], trace)
        for i in range(subscribers):
            stream.connect(f"conn{i}")
            stream.subscribe(f"conn{i}", run_id)
        mark = aws.meter.mark()
        for step in range(steps):
            aws.pump_one(trace)
            with aws.meter.acting("broadcast"):
                image = aws.item({"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": slot_sk(step)}})
                apply_change(stream, "INSERT", image)
        with aws.meter.acting("broadcast"):
            apply_change(stream, "MODIFY", aws.item(run_key(run_id)))
        calls = [c for c in aws.meter.calls[mark:] if c.actor == "broadcast"]
    dynamodb = [c for c in calls if c.service == "dynamodb"]
    posts = [c for c in calls if c.operation == "PostToConnection"]
    read = sum(c.capacity.read for c in dynamodb if c.capacity)
    write = sum(c.capacity.write + c.capacity.index_write for c in dynamodb if c.capacity)
    frames = sum(max(1, -(-c.payload_bytes // prices.WEBSOCKET_FRAME_BYTES)) for c in posts)
    # Upper bound: the stream batches records (up to 100); at most one invocation per entry.
    broadcaster = prices.lambda_cost(steps, steps * BROADCAST_BILLED_S, memory_mb)
    return {
        "dynamodb_requests": len(dynamodb) / steps,
        "websocket_messages": frames / steps,
        "dollars": (
            read * prices.DYNAMODB_PER_READ_UNIT
            + write * prices.DYNAMODB_PER_WRITE_UNIT
            + frames * prices.WEBSOCKET_PER_MESSAGE
            + broadcaster
        )
        / steps
        * PER_MILLION,
    }


def _management_client(endpoint: str) -> Any:
    """An @connections client on moto (which accepts and keeps the posts)."""
    import boto3

    return boto3.session.Session().client("apigatewaymanagementapi", endpoint_url=endpoint)


def budget_curve(memory_mb: int, steps: int) -> Figure:
    """$ and requests per node of a lone run for each ChainMaxSteps in :data:`CHAIN_BUDGETS`."""
    curve = []
    for budget in CHAIN_BUDGETS:
        trace = run_workload(
            f"loop x {steps}, ChainMaxSteps={budget}",
            loop_graph(steps),
            [loop_state(STATE_BYTES)],
            concurrent=False,
            chain_max_steps=budget,
        )
        b = bill(trace, memory_mb)
        curve.append(
            {
                "ChainMaxSteps": budget,
                "requests/node": round(b.requests, 3),
                "$ per million nodes": round(b.total, 3),
                "Lambda ms/node": round(b.lambda_ms, 2),
            }
        )
    by_budget = {row["ChainMaxSteps"]: row for row in curve}
    return Figure(
        NAME,
        f"lone run, $ per million nodes by ChainMaxSteps ({steps} steps)",
        "$",
        [row["$ per million nodes"] for row in curve],
        note=", ".join(f"{k}: {format_number(v['$ per million nodes'])}" for k, v in by_budget.items()),
        details={"curve": curve},
    )


def run(quick: bool) -> list[Figure]:
    memory_mb = step_memory_mb()
    traces = workloads(quick)
    figures: list[Figure] = []
    for name, trace in traces.items():
        figures += figures_for(name, trace, memory_mb)
    figures.append(budget_curve(memory_mb, QUICK_LOOP_STEPS))

    loop = bill(traces[LOOP], memory_mb)
    sfn = step_functions_per_million(memory_mb)
    figures += [
        Figure(
            NAME,
            "Step Functions Standard: $ per million nodes",
            "$",
            [sfn],
            note="1 transition + a 1 ms Lambda task",
        ),
        Figure(NAME, f"Step Functions ÷ FlowForge ({LOOP})", "x", [sfn / loop.total]),
    ]
    live_steps = QUICK_LIVE_STEPS if quick else LIVE_STEPS
    for subscribers in (0, 1):
        live = live_logs(live_steps, subscribers, memory_mb)
        label = f"live logs, {subscribers} subscriber{'s' if subscribers != 1 else ''}"
        note = (
            f"broadcaster DynamoDB requests {format_number(live['dynamodb_requests'])}/node, WebSocket messages "
            f"{format_number(live['websocket_messages'])}/node; not in the totals above"
        )
        figures.append(Figure(NAME, f"{label}: $ per million nodes", "$", [live["dollars"]], note=note))
    return figures
