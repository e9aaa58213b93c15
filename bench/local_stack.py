"""Local stack: latency per step and throughput of runs through ``flowforge dev``, next
to the round trip of a bare DynamoDB GetItem and SQS SendMessage on the same moto.

Each repetition starts a fresh ``python -m flowforge.local`` (what ``make run`` starts)
on free ports with a data directory of its own, so every repetition begins with an
empty table and none is slowed by what earlier ones stored. Over the HTTP API only, it

1. makes one warm-up run (its first step compiles the graph; not counted);
2. times GetItem (strongly consistent, of the warm-up run's item: a bare DynamoDB round
   trip) and SendMessage (a step message's size, to a queue of its own that
   nothing polls) with boto3 against the stack's moto, alternating the two;
3. makes :data:`SEQUENTIAL_RUNS` summarization runs one after another (1 concurrent
   run), then starts :data:`CONCURRENT_RUNS` at once, all with ``"background": true``.

Latency per step comes from what each log entry carries: ``started_at``, when its node
began (milliseconds, the step handler's clock). The latency of step k of a run is
``started_at[k] - started_at[k-1]``: node k-1's tool, its commit (the PutItem of its
slot, and every 4th step of the run item), the SendMessage of step k, the time the
message waits in the queue, the poller's ReceiveMessage and, when another thread
committed step k-1, the step handler's Query of the run — everything from one node of
a run to the next. The wait before step 0 (from the run's ``created_at``) is reported
apart, in the details. Throughput counts log entries (steps) and runs over the window
from the first run's ``created_at`` to the last run's ``finished_at``; for runs made one
after another, their windows are added up. The client polls ``?logs=false`` one request
at a time only to learn that the runs ended, and reads their logs once all have: no
figure depends on when it polls.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from bench.figure import Figure, Target, format_number
from bench.live_logs import follow_runs, replay_starts
from flowforge.local.process import LocalStackProcess
from functions.aws.dynamodb_codec import run_key

NAME = "local"
ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "workflows" / "graphs"
REPETITIONS, QUICK_REPETITIONS = 3, 1
SEQUENTIAL_RUNS, QUICK_SEQUENTIAL_RUNS = 5, 3
CONCURRENT_RUNS = 20
#: Finished runs replayed one at a time, each on a new connection.
REPLAYS = 5
#: The live logs targets: done within 1 s of a run's end, a replay's first entry within 0.5 s.
DONE_LAG_TARGET_MS, REPLAY_START_TARGET_MS = 1000.0, 500.0
#: A lone run's median latency per step over the bare round trips of the same run, and
#: 20 concurrent runs' throughput.
LATENCY_OVER_ROUND_TRIP_TARGET, CONCURRENT_STEPS_PER_S_TARGET = 10.0, 100.0
RTT_CALLS, QUICK_RTT_CALLS = 50, 20
READY_TIMEOUT_S = 60.0
RUNS_TIMEOUT_S = 120.0
#: One poll at a time, this far apart: at most 5 requests/s of the stack's CPU.
POLL_S = 0.2
SETTLE_S = 1.0
#: A full run stops adding repetitions once it would pass this (on a slow or busy machine).
BUDGET_S = 85.0
REGION = "us-east-1"
RTT_QUEUE = "flowforge-bench-rtt"


# -- figures from log entries (pure) ------------------------------------------------------
def instant(stamp: str) -> datetime:
    """An ISO 8601 timestamp (``...Z`` or with an offset); differences of two are exact to
    the microsecond, unlike differences of epoch seconds as floats."""
    return datetime.fromisoformat(stamp)


def percentile(values: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile (1-99), interpolated between the closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def step_latencies(logs: Sequence[Mapping[str, Any]]) -> list[float]:
    """Seconds from each node's start to the next one's, in ``seq`` order (one fewer than
    there are entries)."""
    starts = [instant(entry["started_at"]) for entry in sorted(logs, key=lambda e: e["seq"])]
    return [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(starts)]


@dataclass(frozen=True, slots=True)
class Throughput:
    """Steps (log entries) and runs over a window of wall-clock time."""

    steps: int
    runs: int
    window_s: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.window_s

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.window_s


def throughput(runs: Sequence[Mapping[str, Any]]) -> Throughput:
    """The runs' steps over the window from the first run's ``created_at`` to the last
    run's ``finished_at`` (the stack's clock: when the client polls does not matter)."""
    if not runs:
        raise ValueError("throughput of no runs")
    unfinished = [r.get("run_id") for r in runs if not r.get("finished_at")]
    if unfinished:
        raise ValueError(f"runs without finished_at: {unfinished}")
    last = max(instant(r["finished_at"]) for r in runs)
    window = (last - min(instant(r["created_at"]) for r in runs)).total_seconds()
    if window <= 0:
        raise ValueError(f"runs span {window} s: their timestamps are out of order")
    return Throughput(sum(len(r["logs"]) for r in runs), len(runs), window)


def pooled_throughput(each: Sequence[Throughput]) -> Throughput:
    """Runs measured one after another, their windows laid end to end: the client's
    pauses between runs are not the stack's."""
    return Throughput(sum(t.steps for t in each), sum(t.runs for t in each), sum(t.window_s for t in each))


def first_step_latency(run: Mapping[str, Any]) -> float:
    """Seconds from the run's ``created_at`` (the API stored it) to its first node's start."""
    first = min(run["logs"], key=lambda e: e["seq"])
    return (instant(first["started_at"]) - instant(run["created_at"])).total_seconds()


# -- the stack ------------------------------------------------------------------------------
class StackError(RuntimeError):
    """A run did not end as it should, or the API answered something unexpected."""


class DevServer(LocalStackProcess):
    """``python -m flowforge.local`` on free ports with a data directory of its own."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory / "data", directory / "stack.log", ready_timeout_s=READY_TIMEOUT_S)

    def stop(self) -> None:
        """Kill it: its data directory is thrown away, so there is nothing to shut down
        cleanly (and a clean stop would take seconds of the benchmark's budget)."""
        self.kill()

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, payload = self.request(method, path, body)
        if status != expect:
            raise StackError(f"{method} {path} -> {status} {payload}: {self.log(2000)}")
        return payload


@contextlib.contextmanager
def dev_server() -> Iterator[DevServer]:
    with tempfile.TemporaryDirectory(prefix="flowforge-bench-") as directory:
        server = DevServer(Path(directory))
        try:
            server.start()
            yield server
        finally:
            server.stop()


# -- one repetition --------------------------------------------------------------------------
def run_batch(server: DevServer, graph_id: str, state: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Start ``count`` background runs at once; each one as it ended, with its logs."""
    body = {"graph_id": graph_id, "state": state, "background": True}
    with ThreadPoolExecutor(max_workers=count) as pool:
        accepted = list(pool.map(lambda _: server.call("POST", "/graph/run", body, 202), range(count)))
    deadline = time.monotonic() + RUNS_TIMEOUT_S
    run_ids = [a["run_id"] for a in accepted]
    for run_id in run_ids:
        while server.call("GET", f"/graph/state/{run_id}?logs=false")["status"] == "running":
            if time.monotonic() > deadline:
                raise StackError(f"run {run_id} still running after {RUNS_TIMEOUT_S:g} s")
            time.sleep(POLL_S)
    # Their logs once every run ended: reading them would take the stack's CPU from the
    # runs still going (and their figures come from the stack's own timestamps anyway).
    runs = []
    for run_id in run_ids:
        run = server.call("GET", f"/graph/state/{run_id}")
        if run["status"] != "completed":
            raise StackError(f"run {run_id} ended {run['status']}: {run.get('error')}")
        runs.append(run)
    return runs


def _aws_client(server: DevServer, service: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client(service, endpoint_url=server.moto_url)


def moto_round_trips(server: DevServer, run_id: str, calls: int) -> dict[str, list[float]]:
    """Milliseconds per GetItem and per SendMessage against the stack's moto, alternating."""
    dynamodb, sqs = _aws_client(server, "dynamodb"), _aws_client(server, "sqs")
    (table,) = dynamodb.list_tables()["TableNames"]
    queue_url = sqs.create_queue(QueueName=RTT_QUEUE)["QueueUrl"]
    message = json.dumps({"run_id": run_id, "step": 3})
    requests = {
        "GetItem": lambda: dynamodb.get_item(TableName=table, Key=run_key(run_id), ConsistentRead=True),
        "SendMessage": lambda: sqs.send_message(QueueUrl=queue_url, MessageBody=message),
    }
    times: dict[str, list[float]] = {name: [] for name in requests}
    for i in range(calls + 3):  # the first calls open connections
        for name, send in requests.items():
            began = time.perf_counter()
            send()
            if i >= 3:
                times[name].append((time.perf_counter() - began) * 1e3)
    return times


@dataclass(frozen=True, slots=True)
class Repetition:
    """What one fresh stack measured; per-level fields are keyed by concurrent runs."""

    latencies_ms: dict[int, list[float]]  # every step's latency (step 0 excepted)
    first_steps_ms: dict[int, list[float]]  # each run's created_at to its step 0
    throughput: dict[int, Throughput]
    cpu_ms_per_step: dict[int, float | None]  # the stack's CPU time over the phase ÷ its steps
    round_trips_ms: dict[str, list[float]]
    steps_per_run: int
    done_lags_ms: list[float]  # each followed run's finished_at to its done message
    replay_starts_ms: list[float]  # connecting to a finished run to its first entry


def repetition(quick: bool) -> Repetition:
    graph = json.loads((GRAPHS / "summarization.json").read_text())
    state = json.loads((GRAPHS / "summarization.state.json").read_text())
    with dev_server() as server:
        graph_id = server.call("POST", "/graph/create", graph, 201)["graph_id"]
        (warm,) = run_batch(server, graph_id, state, 1)
        time.sleep(SETTLE_S)  # the broadcaster catches up with the warm-up's log entries
        round_trips = moto_round_trips(server, warm["run_id"], QUICK_RTT_CALLS if quick else RTT_CALLS)
        cpu = [server.cpu_s()]
        sequential = [
            run_batch(server, graph_id, state, 1)[0]
            for _ in range(QUICK_SEQUENTIAL_RUNS if quick else SEQUENTIAL_RUNS)
        ]
        cpu.append(server.cpu_s())
        concurrent = run_batch(server, graph_id, state, CONCURRENT_RUNS)
        cpu.append(server.cpu_s())
        time.sleep(SETTLE_S)  # the broadcaster catches up with the polled runs' entries
        followed = follow_runs(server.url, server.ws_url, graph_id, state, CONCURRENT_RUNS)
        time.sleep(SETTLE_S)
        replays = replay_starts(server.ws_url, [f.run_id for f in followed[:REPLAYS]])
    levels = {1: sequential, CONCURRENT_RUNS: concurrent}
    cpu_ms: dict[int, float | None] = {}
    for (level, runs), before, after in zip(levels.items(), cpu, cpu[1:], strict=False):
        steps = sum(len(r["logs"]) for r in runs)
        cpu_ms[level] = None if before is None or after is None else (after - before) * 1e3 / steps
    return Repetition(
        latencies_ms={
            n: [s * 1e3 for r in runs for s in step_latencies(r["logs"])] for n, runs in levels.items()
        },
        first_steps_ms={n: [first_step_latency(r) * 1e3 for r in runs] for n, runs in levels.items()},
        throughput={
            1: pooled_throughput([throughput([r]) for r in sequential]),
            CONCURRENT_RUNS: throughput(concurrent),
        },
        cpu_ms_per_step=cpu_ms,
        round_trips_ms=round_trips,
        steps_per_run=len(warm["logs"]),
        done_lags_ms=[f.done_lag_s * 1e3 for f in followed],
        replay_starts_ms=[s * 1e3 for s in replays],
    )


# -- figures ---------------------------------------------------------------------------------
def repetitions(quick: bool) -> list[Repetition]:
    """:data:`REPETITIONS` of them, fewer if they would overrun :data:`BUDGET_S`."""
    wanted = QUICK_REPETITIONS if quick else REPETITIONS
    began, reps = time.monotonic(), []
    while len(reps) < wanted:
        t0 = time.monotonic()
        reps.append(repetition(quick))
        took = time.monotonic() - t0
        print(f"   repetition {len(reps)} took {took:.1f}s", flush=True)
        if len(reps) < wanted and time.monotonic() - began + took > BUDGET_S:
            print(f"   stopping at {len(reps)} of {wanted} repetitions: {BUDGET_S:g} s budget", flush=True)
            break
    return reps


def _distribution(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        **{f"p{p}": round(percentile(values, p), 1) for p in (50, 90, 95, 99)},
        "max": round(max(values), 1),
    }


def run(quick: bool) -> list[Figure]:
    reps = repetitions(quick)
    steps, names = reps[0].steps_per_run, list(reps[0].round_trips_ms)
    floor = statistics.median(sum(statistics.median(r.round_trips_ms[n]) for n in names) for r in reps)
    figures = []
    for level in (1, CONCURRENT_RUNS):
        label = f"{level} concurrent run{'s' if level > 1 else ''}"
        runs = reps[0].throughput[level].runs
        latencies = [t for r in reps for t in r.latencies_ms[level]]
        pooled = {
            "latency per step, ms": _distribution(latencies),
            "created_at to step 0, ms": _distribution([t for r in reps for t in r.first_steps_ms[level]]),
        }
        figures += [
            Figure(
                NAME,
                f"summarization, {label}: latency per step, median",
                "ms",
                [statistics.median(r.latencies_ms[level]) for r in reps],
                note=(
                    f"started_at of node k-1 to started_at of node k, {len(latencies)} steps; "
                    f"{' + '.join(names)} alone: {format_number(floor)} ms"
                ),
            ),
            Figure(
                NAME,
                f"summarization, {label}: latency per step, p95",
                "ms",
                [percentile(r.latencies_ms[level], 95) for r in reps],
                note="each repetition's 95th percentile; all repetitions pooled in details",
                details={"pooled": [{"distribution": k, **v} for k, v in pooled.items()]},
            ),
            Figure(
                NAME,
                f"summarization, {label}: steps/s",
                "steps/s",
                [r.throughput[level].steps_per_s for r in reps],
                target=Target(">=", CONCURRENT_STEPS_PER_S_TARGET) if level > 1 else None,
                note=f"{runs} runs of {steps} steps, {'one after another' if level == 1 else 'started at once'}",
            ),
            Figure(
                NAME,
                f"summarization, {label}: runs/s",
                "runs/s",
                [r.throughput[level].runs_per_s for r in reps],
            ),
            Figure(
                NAME,
                f"summarization, {label}: stack CPU per step",
                "ms",
                [c for r in reps if (c := r.cpu_ms_per_step[level]) is not None],
                note="the flowforge dev process and its moto process (moto, handlers, gateway, pollers), client polls included",
            ),
        ]
    floors = [sum(statistics.median(r.round_trips_ms[n]) for n in names) for r in reps]
    figures.append(
        Figure(
            NAME,
            f"summarization, 1 concurrent run: latency per step ÷ {' + '.join(names)}",
            "x",
            [statistics.median(r.latencies_ms[1]) / f for r, f in zip(reps, floors, strict=True)],
            target=Target("<=", LATENCY_OVER_ROUND_TRIP_TARGET),
            note="each repetition's median latency per step over its own bare round trips",
        )
    )
    lags = [t for r in reps for t in r.done_lags_ms]
    figures += [
        Figure(
            NAME,
            f"live logs, {CONCURRENT_RUNS} concurrent runs followed: done after the run's end, p95",
            "ms",
            [percentile(r.done_lags_ms, 95) for r in reps],
            target=Target("<=", DONE_LAG_TARGET_MS),
            note=f"finished_at to the done message at the client, each run on its own connection; "
            f"each repetition's 95th percentile; of {len(lags)} runs median "
            f"{format_number(statistics.median(lags))} ms, slowest {format_number(max(lags))} ms",
            details={"pooled": [{"distribution": "done lag, ms", **_distribution(lags)}]},
        ),
        Figure(
            NAME,
            "live logs: replay of a finished run, first entry",
            "ms",
            [max(r.replay_starts_ms) for r in reps],
            target=Target("<=", REPLAY_START_TARGET_MS),
            note=f"opening ?run_id= to entry 0, {REPLAYS} runs one at a time, the slowest of each repetition",
        ),
    ]
    for name in names:
        calls = [t for r in reps for t in r.round_trips_ms[name]]
        figures.append(
            Figure(
                NAME,
                f"moto {name} round trip",
                "ms",
                [statistics.median(r.round_trips_ms[name]) for r in reps],
                note=f"boto3 against the same stack's moto, idle; p95 of {len(calls)} calls {format_number(percentile(calls, 95))} ms",
            )
        )
    return figures
