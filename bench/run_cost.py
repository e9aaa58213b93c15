"""A run's cost estimate against what the benchmark meters for the same run.

Each run keeps its own estimate (``GET /graph/state``'s ``cost``, engine/cost.py). Here
the same runs go through the real handlers on moto with every AWS call metered
(:mod:`bench.aws_harness`): the step handler's calls (the API's start of a run is not
in the estimate, nor here), the event source mapping's ReceiveMessage and DeleteMessageBatch and one Lambda invocation
per batch. DynamoDB units are computed from the items by DynamoDB's rules
(:mod:`bench.capacity`, written apart from the store's own sizing), SQS requests from the
payloads. Lambda time is the wall-clock time of each handler call here, rounded up to the
millisecond as Lambda bills it, times the function's memory size: the estimate times
the function from inside, up to each commit, so it leaves out what follows a message's
last commit.

S3 requests and bytes (state of any size) are the PutObject and GetObject calls of the
start and of the step handler, and the bytes PutObject wrote: a run's estimate counts
the offload of its initial state too.

Workloads: a lone run of the 1 KB loop (chains of ChainMaxSteps steps in one warm
container), 20 concurrent runs of it (batches of 10, each invocation in a fresh
container: reads), the loop with one step per message (ChainMaxSteps=1), and 20
concurrent runs of a loop whose 64 KB payload is offloaded and read by every step (each
fresh container reads it from S3 once). The sum of
the runs' estimates is compared with the metered total, line by line and in dollars
(target: within 5%); both are priced with the one table, engine/prices.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bench.aws_harness import MotoStack, Trace, loop_graph, loop_state, step_memory_mb, summarization
from bench.bill import billed_requests
from bench.figure import Figure, Target
from engine.cost import (
    DYNAMODB_READ_UNITS,
    DYNAMODB_WRITE_UNITS,
    LAMBDA_MB_US,
    LAMBDA_REQUESTS,
    MICRO,
    S3_BYTES,
    S3_GET_REQUESTS,
    S3_PUT_REQUESTS,
    SQS_REQUESTS,
    Usage,
    dollars,
)
from engine.prices import LIST_PRICES

NAME = "runcost"
STATE_BYTES = 1024
#: |estimate - metered| / metered, in %, of the dollars per run.
AGREEMENT_TARGET = Target("<=", 5.0)
#: A payload over the offload threshold: kept in the state bucket.
OFFLOADED_BYTES = 64 * 1024
#: (name, steps per run (0: the summarization example, whose chunks are a map's items),
#: runs, concurrent, ChainMaxSteps (None: the default), state bytes, tool), full and quick.
WORKLOADS = {
    False: [
        ("loop 1 KB, 1 run", 1000, 1, False, None, STATE_BYTES, "bench_count"),
        ("loop 1 KB, 20 runs", 50, 20, True, None, STATE_BYTES, "bench_count"),
        ("loop 1 KB, 1 run, one step per message", 200, 1, False, 1, STATE_BYTES, "bench_count"),
        ("summarization (a map), 1 run", 0, 1, False, None, STATE_BYTES, "bench_count"),
        ("summarization (a map), 5 runs", 0, 5, True, None, STATE_BYTES, "bench_count"),
        ("loop 64 KB offloaded and read, 20 runs", 50, 20, True, None, OFFLOADED_BYTES, "bench_read"),
    ],
    True: [
        ("loop 1 KB, 1 run", 200, 1, False, None, STATE_BYTES, "bench_count"),
        ("loop 1 KB, 20 runs", 10, 20, True, None, STATE_BYTES, "bench_count"),
        ("loop 1 KB, 1 run, one step per message", 30, 1, False, 1, STATE_BYTES, "bench_count"),
        ("summarization (a map), 1 run", 0, 1, False, None, STATE_BYTES, "bench_count"),
        ("loop 64 KB offloaded and read, 20 runs", 10, 20, True, None, OFFLOADED_BYTES, "bench_read"),
    ],
}
LINES = (
    "lambda requests",
    "lambda GB-s",
    "SQS requests",
    "DynamoDB read units",
    "DynamoDB write units",
    "S3 PUT requests",
    "S3 GET requests",
    "S3 bytes",
)


def measure(
    steps: int,
    runs: int,
    *,
    concurrent: bool,
    chain_max_steps: int | None,
    state_bytes: int = STATE_BYTES,
    fn: str = "bench_count",
) -> tuple[Usage, Trace]:
    """The runs' estimates, summed, and the trace of everything metered for them."""
    with MotoStack(container_per_invocation=concurrent, chain_max_steps=chain_max_steps) as aws:
        if steps:
            graph = loop_graph(steps, fn)
            # each run its own payload: content-addressed values are per run anyway
            states = [{**loop_state(state_bytes), "run": n} for n in range(runs)]
        else:
            graph, state = summarization()
            states = [state] * runs
        trace = Trace(f"{graph['name']} x {steps or 'its steps'}", runs)
        run_ids: list[str] = []
        for batch in [states] if concurrent else [[s] for s in states]:
            run_ids += aws.start(graph, batch, trace)
            aws.pump(trace)
        aws.check_completed(run_ids)
        total = Usage()
        for run_id in run_ids:
            run = aws.service.store.get_run(run_id)
            assert run is not None
            total = total + run.cost
        return total, trace


def estimated(usage: Mapping[str, int]) -> dict[str, float]:
    return {
        "lambda requests": usage.get(LAMBDA_REQUESTS, 0) / MICRO,
        "lambda GB-s": usage.get(LAMBDA_MB_US, 0) / 1024 / 1e6,
        "SQS requests": usage.get(SQS_REQUESTS, 0) / MICRO,
        "DynamoDB read units": usage.get(DYNAMODB_READ_UNITS, 0),
        "DynamoDB write units": usage.get(DYNAMODB_WRITE_UNITS, 0),
        "S3 PUT requests": usage.get(S3_PUT_REQUESTS, 0),
        "S3 GET requests": usage.get(S3_GET_REQUESTS, 0),
        "S3 bytes": usage.get(S3_BYTES, 0),
    }


def metered(trace: Trace, memory_mb: int) -> dict[str, float]:
    # The API's start of a run (its two puts and first message) is not in the estimate
    # (see the README's Cost per run): the step loop's calls are.
    calls = [c for i in trace.invocations for c in i.calls + i.esm_calls]
    capacity = [c.capacity for c in calls if c.capacity is not None]
    # S3: the start's offload is in each run's estimate (the bytes it stores), and so here
    s3 = [c for c in calls + trace.start_calls if c.service == "s3"]
    billed_ms = sum(max(1, math.ceil(i.wall_s * 1000)) for i in trace.invocations)
    return {
        "lambda requests": len(trace.invocations),
        "lambda GB-s": billed_ms / 1000 * memory_mb / 1024,
        "SQS requests": sum(billed_requests(c) for c in calls if c.service == "sqs"),
        "DynamoDB read units": sum(c.read for c in capacity),
        "DynamoDB write units": sum(c.write + c.index_write for c in capacity),
        "S3 PUT requests": sum(1 for c in s3 if c.operation == "PutObject"),
        "S3 GET requests": sum(1 for c in s3 if c.operation == "GetObject"),
        "S3 bytes": sum(c.payload_bytes for c in s3 if c.operation == "PutObject"),
    }


def as_usage(counts: Mapping[str, float]) -> Usage:
    return Usage(
        {
            LAMBDA_REQUESTS: round(counts["lambda requests"] * MICRO),
            LAMBDA_MB_US: round(counts["lambda GB-s"] * 1024 * 1e6),
            SQS_REQUESTS: round(counts["SQS requests"] * MICRO),
            DYNAMODB_READ_UNITS: round(counts["DynamoDB read units"]),
            DYNAMODB_WRITE_UNITS: round(counts["DynamoDB write units"]),
            S3_PUT_REQUESTS: round(counts["S3 PUT requests"]),
            S3_GET_REQUESTS: round(counts["S3 GET requests"]),
            S3_BYTES: round(counts["S3 bytes"]),
        }
    )


def difference(a: float, b: float) -> float:
    """|a - b| / b in %, 0 when both are 0."""
    return 0.0 if a == b else abs(a - b) / abs(b) * 100 if b else math.inf


def compare(name: str, estimate: Usage, trace: Trace, memory_mb: int) -> list[Figure]:
    est, met = estimated(estimate), metered(trace, memory_mb)
    usd_est, usd_met = dollars(estimate, LIST_PRICES), dollars(as_usage(met), LIST_PRICES)
    total_est, total_met = sum(usd_est.values()), sum(usd_met.values())
    # Without Lambda time, what requests and units alone come to (counted the same way on
    # both sides: they must agree exactly).
    counted_est = total_est - _gb_s_usd(est)
    counted_met = total_met - _gb_s_usd(met)
    rows: list[dict[str, Any]] = [
        {
            "line": line,
            "estimate": round(est[line], 6),
            "metered": round(met[line], 6),
            "difference %": round(difference(est[line], met[line]), 3),
        }
        for line in LINES
    ]
    runs = trace.runs
    note = (
        f"per run: estimate ${total_est / runs:.9f}, metered ${total_met / runs:.9f}; "
        f"requests and units alone ${counted_est / runs:.9f} vs ${counted_met / runs:.9f}"
    )
    return [
        Figure(
            NAME,
            f"{name}: estimate vs metered, $ per run",
            "%",
            [difference(total_est, total_met)],
            AGREEMENT_TARGET,
            note,
            {"lines": rows, "usd_per_run": {"estimate": total_est / runs, "metered": total_met / runs}},
        ),
        Figure(
            NAME,
            f"{name}: estimate vs metered, requests and units",
            "%",
            [difference(counted_est, counted_met)],
            note=", ".join(
                f"{r['line']} {r['estimate']:g} vs {r['metered']:g}"
                for r in rows
                if r["line"] != "lambda GB-s"
            ),
        ),
    ]


def _gb_s_usd(counts: Mapping[str, float]) -> float:
    return counts["lambda GB-s"] * LIST_PRICES.lambda_gb_second


def run(quick: bool) -> list[Figure]:
    memory_mb = step_memory_mb()
    figures: list[Figure] = []
    for name, steps, runs, concurrent, budget, state_bytes, fn in WORKLOADS[quick]:
        estimate, trace = measure(
            steps, runs, concurrent=concurrent, chain_max_steps=budget, state_bytes=state_bytes, fn=fn
        )
        figures += compare(name, estimate, trace, memory_mb)
    return figures
