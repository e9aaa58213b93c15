"""Durable timers: the due-time index swept once a minute, against EventBridge Scheduler
one-time schedules, priced at 1 M waiting runs a month (issue: "whichever the bench shows
cheaper at 1 M waiting runs").

**The index, measured.** N runs go through the real step handler and the real sweeper
handler on moto, every AWS call metered (:mod:`bench.aws_harness`). Each run reaches a
``wait`` node due 1 h to 30 days later (log-uniform: most waits are short, a few last
weeks); :data:`CANCELLED` of them are cancelled while they wait. Then a month of sweeps:
the clock jumps to each minute in which a wait falls due and the sweeper handler runs
there, then the step queue is drained. The minutes in between would run empty sweeps:
those are measured apart (:data:`EMPTY_SWEEPS` of them) and multiplied. What the index
costs is told apart by wrapping the engine's own methods with the meter's actor (their
code is unchanged): writing the wait item (``open_timer``), the sweeper's wake-up
(``wake_due``: the index queries, the batch read, the run read and the step message), the
step's read of the wait (``get_wait``) and its removal from the index (``close``). The
sweeper's stalled-run half and the step's own work are the same in both designs and left
out, except the sweeper's invocations, charged here in full (it runs anyway for stalled
runs: an upper bound). Lambda time is modelled as :mod:`bench.bill` does: the CPU time of
those methods outside AWS calls, plus an assumed round trip per call. Storage: the wait
item from its write until its TTL (the deadline plus RetentionDays), its index entry
while it waits.

**The Scheduler design, counted.** For the same runs, the calls it would make, made
against moto's EventBridge Scheduler and SQS and metered: CreateSchedule (a one-time
``at()`` schedule, ActionAfterCompletion=DELETE, the step queue as target with the step
message as input) when a run starts waiting, the target's SendMessage when it fires (one
scheduled invocation), DeleteSchedule when a waiting run is cancelled. Its timers need no
wait item and no sweep. Scheduler bills each invocation; its API calls and stored
schedules are free (engine/prices.py). Free tiers are ignored on both sides, as in every
price here.

Extrapolation to :data:`TARGET_RUNS`: the empty-sweep cost times the sweeps of a month,
plus the per-run rest times the runs. The per-run figures at each N show it scales
linearly; a query that returns a few due entries costs what an empty one does, so the
sparse sweeps measured here bound the denser ones of 1 M runs from above.
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.aws_harness import MotoStack, Trace, _quiet, step_memory_mb
from bench.capacity import INDEX_ENTRY_OVERHEAD, Index, Item, item_size
from bench.figure import Figure
from bench.timer_usage import Attribution, Usage, modelled_gb_s, undoable_patches
from engine.stepmessage import StepMessage
from flowforge.local import moto_internals
from flowforge.local.events import LambdaContext
from functions.aws.dynamodb_waits import wait_key

NAME = "timers"
#: Waiting runs measured: full, quick.
SIZES = {False: (1_000, 3_000), True: (100,)}
TARGET_RUNS = 1_000_000
MONTH_S = 30 * 86400
SWEEPS_PER_MONTH = MONTH_S // 60  # rate(1 minute)
#: Waits a sweep finds due at TARGET_RUNS a month (23): the sweeps here find as many.
PER_SWEEP = round(TARGET_RUNS / SWEEPS_PER_MONTH)
SHORTEST_S, LONGEST_S = 3600.0, 30 * 86400.0
#: Share of the waiting runs cancelled while they wait.
CANCELLED = 0.1
EMPTY_SWEEPS = 20
#: Every run starts waiting at this time (2027-01-15T08:00:00Z); the due times follow.
T0 = 1_800_000_000.0
SEED = 14
#: DynamoDB bills 100 bytes of overhead per stored item (and per index entry).
ITEM_OVERHEAD = 100
GB = 1024**3
#: The meter's actors of the index's work.
WRITE, SWEEP, READ, REMOVE = "index: write", "index: sweep", "index: read", "index: remove"
INDEX_ACTORS = (WRITE, SWEEP, READ, REMOVE)
CREATE, FIRE, CANCEL = "scheduler: create", "scheduler: fire", "scheduler: cancel"
#: template.yaml's gsi1 (KEYS_ONLY): the wait item's entry while it waits.
GSI_KEYS_ONLY = Index("gsi1", ("gsi1pk", "gsi1sk"), ("pk", "sk"))


def timer_graph() -> dict[str, Any]:
    return {"name": "bench_timer", "start": "pause", "nodes": {"pause": {"wait": {"until": "due_at"}}}}


def due_times(n: int, rng: random.Random) -> list[float]:
    """``n`` due times, T0 plus log-uniform waits between 1 h and 30 days."""
    low, high = math.log(SHORTEST_S), math.log(LONGEST_S)
    return [T0 + math.exp(rng.uniform(low, high)) for _ in range(n)]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@dataclass
class Measured:
    """One N: the index's and the Scheduler design's usage, split into what a month of
    sweeps costs whatever the runs (``*_fixed``) and what each run adds."""

    runs: int
    due_minutes: int
    index_fixed: Usage  # per month
    index_per_run: Usage
    scheduler_per_run: Usage
    parts: dict[str, Usage]  # the index's per-run usage by part
    seconds: float

    def at(self, runs: int) -> tuple[Usage, Usage]:
        """(index, Scheduler) for ``runs`` waiting runs a month."""
        return self.index_fixed.plus(self.index_per_run.scaled(runs)), self.scheduler_per_run.scaled(runs)


class Schedules:
    """What the Scheduler design would call, against moto's EventBridge Scheduler, metered."""

    ROLE = "arn:aws:iam::123456789012:role/flowforge-timers"  # sqs:SendMessage on the step queue

    def __init__(self, aws: MotoStack) -> None:
        self.meter = aws.meter
        self.client = aws.client("scheduler")
        self.sqs = aws.client("sqs")
        self.queue_arn = aws.queue_arn
        with self.meter.acting("setup"):
            # Stands in for the step queue when a schedule fires (the runs here already woke).
            self.target_url = self.sqs.create_queue(QueueName="bench-scheduler-target")["QueueUrl"]

    @staticmethod
    def name(run_id: str, step: int) -> str:
        return f"ff-{run_id}-{step}"[:64]

    def create(self, run_id: str, step: int, due: float) -> None:
        """When the run starts waiting (in the step function, in place of the wait item)."""
        with self.meter.acting(CREATE):
            self.client.create_schedule(
                Name=self.name(run_id, step),
                ScheduleExpression=f"at({datetime.fromtimestamp(due, UTC):%Y-%m-%dT%H:%M:%S})",
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Target={
                    "Arn": self.queue_arn,
                    "RoleArn": self.ROLE,
                    "Input": StepMessage(run_id, step).to_json(),
                },
            )

    def fire(self, run_id: str, step: int) -> None:
        """The scheduled invocation: the target's SendMessage; then Scheduler deletes the
        schedule itself (ActionAfterCompletion, not billed: done here unmetered)."""
        with self.meter.acting(FIRE):
            self.sqs.send_message(QueueUrl=self.target_url, MessageBody=StepMessage(run_id, step).to_json())
        with self.meter.acting("setup"):
            self.client.delete_schedule(Name=self.name(run_id, step))

    def cancel(self, run_id: str, step: int) -> None:
        """A waiting run is cancelled (in the API function): its schedule goes."""
        with self.meter.acting(CANCEL):
            self.client.delete_schedule(Name=self.name(run_id, step))


def storage_gb_months(item: Item, dues: list[float], retention_s: float) -> float:
    """GB-months the runs' wait items keep: each item from its write until its TTL (its
    due time plus the retention), its index entry while it waits."""
    entry = GSI_KEYS_ONLY.entry(item)
    item_bytes = item_size(item) + ITEM_OVERHEAD
    entry_bytes = (item_size(entry) + INDEX_ENTRY_OVERHEAD) if entry is not None else 0
    waited = sum(d - T0 for d in dues)
    return (item_bytes * (waited + len(dues) * retention_s) + entry_bytes * waited) / MONTH_S / GB


def measure(n: int) -> Measured:
    started = time.perf_counter()
    rng = random.Random(SEED + n)
    dues = due_times(n, rng)
    memory_mb = step_memory_mb()
    with MotoStack() as aws, undoable_patches() as patch:
        # moto sorts the whole table for every query: its answers, without that.
        moto_internals.partition_queries(patch)
        moto_internals.index_queries(patch)
        clock = [T0]
        aws.service.clock = lambda: clock[0]
        meter = aws.meter
        tags = Attribution(meter)
        waits, store = aws.service.waits, aws.service.store
        tags.wrap(waits, "open_timer", WRITE)
        tags.wrap(waits, "wake_due", SWEEP)
        tags.wrap(store, "get_wait", READ)
        tags.wrap(waits, "close", REMOVE)
        from functions.sweeper import app as sweeper

        scheduler = Schedules(aws)

        trace = Trace("timers", n)
        run_ids = aws.start(timer_graph(), [{"due_at": iso(d)} for d in dues], trace)
        aws.pump(trace)
        item = aws.item(wait_key(run_ids[0], 0))
        assert item is not None, "the wait item was not written"
        for run_id, due in zip(run_ids, dues, strict=True):
            scheduler.create(run_id, 1, due)
        cancelled = set(rng.sample(range(n), round(n * CANCELLED)))
        clock[0] = T0 + 60
        with meter.acting("api"):
            for i in cancelled:
                aws.service.cancel(run_ids[i])
        for i in cancelled:
            scheduler.cancel(run_ids[i], 1)

        def sweep() -> None:
            with meter.acting("sweeper"), contextlib.redirect_stdout(io.StringIO()), _quiet(sweeper.logger):
                sweeper.handler(
                    {}, LambdaContext(function_name="flowforge-SweeperFunction", memory_limit_in_mb=memory_mb)
                )

        # Each sweep finds the waits that fall due in a minute at TARGET_RUNS a month.
        ordered = sorted(dues)
        minutes = [math.ceil(ordered[min(i + PER_SWEEP, n) - 1] / 60) * 60 for i in range(0, n, PER_SWEEP)]
        for minute in minutes:
            clock[0] = minute
            sweep()
            aws.pump(trace)
        for i, run_id in enumerate(run_ids):
            if i not in cancelled:
                scheduler.fire(run_id, 1)
        for run_id in run_ids:
            run = aws.service.store.get_run(run_id)
            assert run is not None and run.status in ("completed", "cancelled"), (run_id, run and run.status)
        cpu_before = tags.cpu_s[SWEEP]
        empty_mark = meter.mark()
        for k in range(EMPTY_SWEEPS):
            clock[0] = minutes[-1] + 60 * (k + 1)
            sweep()
        empty_calls = [c for c in meter.calls[empty_mark:] if c.actor == SWEEP]
        empty_cpu = (tags.cpu_s[SWEEP] - cpu_before) / EMPTY_SWEEPS
        tags.cpu_s[SWEEP] = cpu_before
        index_calls = [c for c in meter.calls[:empty_mark] if c.actor in INDEX_ACTORS]
        sched_calls = [c for c in meter.calls if c.actor in (CREATE, FIRE, CANCEL)]
        retention_s = aws.service.retention_s or 0.0

    # One empty sweep's index work (the queries of every shard); a month of them, and the
    # sweeper's invocations, are the index's fixed cost.
    empty = Usage()
    empty.add_calls(empty_calls)
    empty = empty.scaled(1 / EMPTY_SWEEPS)
    empty.lambda_gb_s = modelled_gb_s(empty_calls, empty_cpu * EMPTY_SWEEPS, memory_mb) / EMPTY_SWEEPS
    fixed = empty.scaled(SWEEPS_PER_MONTH)
    fixed.lambda_requests = SWEEPS_PER_MONTH
    # Per run: what the index did, less the empty-sweep share of the sweeps that ran.
    parts: dict[str, Usage] = {}
    for actor in INDEX_ACTORS:
        calls = [c for c in index_calls if c.actor == actor]
        part = Usage()
        part.add_calls(calls)
        part.lambda_gb_s = modelled_gb_s(calls, tags.cpu_s[actor], memory_mb)
        if actor == SWEEP:
            part = part.plus(empty.scaled(-len(minutes)))
        parts[actor] = part
    parts["index: storage"] = Usage(gb_months=storage_gb_months(item, dues, retention_s))
    per_run = Usage()
    for part in parts.values():
        per_run = per_run.plus(part)
    sched = Usage()
    sched.add_calls(sched_calls)
    sched.scheduler_invocations = n - len(cancelled)
    sched.lambda_gb_s = modelled_gb_s([c for c in sched_calls if c.service == "scheduler"], 0.0, memory_mb)
    return Measured(
        n,
        len(minutes),
        fixed,
        per_run.scaled(1 / n),
        sched.scaled(1 / n),
        {k: v.scaled(1 / n) for k, v in parts.items()},
        time.perf_counter() - started,
    )


def _row(design: str, usage: Usage) -> dict[str, Any]:
    usd = usage.dollars()
    return {
        "design": design,
        "requests": round(sum(usage.requests.values())),
        "read units": round(usage.read_units),
        "write units": round(usage.write_units),
        "SQS requests": round(usage.sqs_requests),
        "Scheduler invocations": round(usage.scheduler_invocations),
        "Lambda invocations": round(usage.lambda_requests),
        "Lambda GB-s": round(usage.lambda_gb_s, 1),
        "storage GB-months": round(usage.gb_months, 3),
        **{f"$ {line}": round(v, 4) for line, v in usd.items() if v},
        "$ total": round(usage.total(), 2),
    }


def run(quick: bool) -> list[Figure]:
    figures: list[Figure] = []
    for n in SIZES[quick]:
        m = measure(n)
        index, sched = m.at(TARGET_RUNS)
        per_million = TARGET_RUNS / 1e6
        print(
            f"   {n} waiting runs ({m.due_minutes} sweeps with waits due) in {m.seconds:.0f}s: "
            f"at {TARGET_RUNS:,} a month, index ${index.total():.2f}, Scheduler ${sched.total():.2f}",
            flush=True,
        )
        parts = [
            {"part": name, **{k: v for k, v in _row(name, u.scaled(TARGET_RUNS)).items() if k != "design"}}
            for name, u in m.parts.items()
        ]
        ops = {
            "index, per run": dict(sorted((op, round(c, 3)) for op, c in m.index_per_run.requests.items())),
            "index, per empty sweep": dict(
                sorted((op, round(c / SWEEPS_PER_MONTH, 3)) for op, c in m.index_fixed.requests.items())
            ),
            "Scheduler, per run": dict(
                sorted((op, round(c, 3)) for op, c in m.scheduler_per_run.requests.items())
            ),
        }
        details = {
            "at 1M waiting runs a month": [
                _row("due-time index (measured)", index),
                _row("EventBridge Scheduler (counted)", sched),
            ],
            "index by part, at 1M (per-run parts)": parts,
            "calls": ops,
            "runs measured": n,
            "sweeps with waits due": m.due_minutes,
            "cancelled share": CANCELLED,
            "waits": "log-uniform, 1 h to 30 days",
        }
        note = f"{n} runs measured; Scheduler ${sched.total() / per_million:.2f} per million"
        figures.append(
            Figure(
                NAME,
                f"due-time index, $ per 1M waiting runs a month (N={n})",
                "$",
                [index.total()],
                None,
                note,
                details,
            )
        )
        figures.append(
            Figure(
                NAME,
                f"EventBridge Scheduler, $ per 1M waiting runs a month (N={n})",
                "$",
                [sched.total()],
                None,
                note,
            )
        )
    return figures
