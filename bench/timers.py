"""Durable timers: EventBridge Scheduler one-time schedules, as the step and API functions
make them, against the due-time index swept once a minute, priced at 1 M waiting runs a
month (issue: "whichever the bench shows cheaper at 1 M waiting runs").

**Scheduler, measured.** N runs go through the real step handler on moto, every AWS call
metered (:mod:`bench.aws_harness`). Each run reaches a ``wait`` node due 1 h to 30 days
later (log-uniform: most waits are short, a few last weeks), and its step makes the
timer's schedule (``CreateSchedule``: ``at()``, ``ActionAfterCompletion=DELETE``, the
step queue as target, the step message as input; functions/aws/scheduler.py) before it
commits the run ``waiting``; :data:`CANCELLED` of them are cancelled while they wait
(``DeleteSchedule``, the API's). Then the clock moves to each minute in which a wait falls
due, the due schedules fire as Scheduler fires them (flowforge/local/timers.py: the
target's ``SendMessage``, one scheduled invocation; then the schedule deletes itself,
which is Scheduler's own work and not billed) and the step queue is drained through the
handler: every run ends completed or cancelled. What the timers cost is told apart by
wrapping the adapter's methods with the meter's actor (``schedule``, ``cancel``) and
metering the fired messages on their own. The step's own work (the commit that makes
the run wait, the one that ends the wait) is the same in both designs and left out; a
run waiting on a schedule reads and writes nothing else. Scheduler bills each invocation;
its API calls and stored schedules are free (engine/prices.py). Lambda time is modelled
as :mod:`bench.bill` does: the CPU time of those methods outside AWS calls, plus an
assumed round trip per call (a Scheduler call: :data:`~bench.timer_usage.SCHEDULER_LATENCY_S`).

**The index, recorded.** Until the timers moved to Scheduler, this benchmark measured the
due-time index on the same harness and workload (:data:`RECORDED_INDEX`, from the
version of this file in commit db748ab, N = 1,000): the wait item written when a run
starts waiting and taken out of the index when it moves on, the sweeper's queries, batch
read, run read and step message, the step's reads of the wait, the item's storage until
its TTL, and a month of sweeps. The index still serves callback timeouts (a callback
needs its wait item anyway), and its code is unchanged; wait nodes no longer use it.

Free tiers are ignored on both sides, as in every price here. Extrapolation to
:data:`TARGET_RUNS`: the per-run usage times the runs (a timer's calls do not depend on
how many others wait).
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

import boto3

from bench.aws_harness import REGION, MotoStack, Trace
from bench.figure import Figure
from bench.timer_usage import Attribution, Usage, modelled_gb_s, undoable_patches
from flowforge.local import moto_internals
from flowforge.local.timers import ScheduleFirer

NAME = "timers"
#: Waiting runs measured: full, quick.
SIZES = {False: (1_000, 3_000), True: (100,)}
TARGET_RUNS = 1_000_000
MONTH_S = 30 * 86400
SWEEPS_PER_MONTH = MONTH_S // 60  # the index's sweeper: rate(1 minute)
#: Waits that fall due in a minute at TARGET_RUNS a month (23): each firing round fires as many.
PER_MINUTE = round(TARGET_RUNS / SWEEPS_PER_MONTH)
SHORTEST_S, LONGEST_S = 3600.0, 30 * 86400.0
#: Share of the waiting runs cancelled while they wait.
CANCELLED = 0.1
#: Every run starts waiting at this time (2027-01-15T08:00:00Z); the due times follow.
T0 = 1_800_000_000.0
SEED = 14
#: The meter's actors of the timers' work.
CREATE, FIRE, CANCEL = "scheduler: create", "scheduler: fire", "scheduler: cancel"
SCHEDULER_ACTORS = (CREATE, FIRE, CANCEL)

#: The due-time index at 1 M waiting runs a month, as this benchmark measured it (commit
#: db748ab, N = 1,000; at N = 3,000 the total was $3.71): quantity and dollars per line.
RECORDED_INDEX: dict[str, tuple[float, float]] = {
    "DynamoDB write units": (4.00e6, 2.50),
    "DynamoDB read units": (4.07e6, 0.51),
    "DynamoDB storage, GB-months": (0.40, 0.10),
    "SQS requests (the sweeper's step messages)": (0.90e6, 0.36),
    "Lambda requests (the sweeper's, 43,200 a month)": (43_200, 0.01),
    "Lambda GB-s (modelled)": (18_117, 0.24),
}
RECORDED_INDEX_TOTAL = 3.72


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
    """One N: the Scheduler design's usage per waiting run, in all and by part."""

    runs: int
    due_minutes: int
    scheduler_per_run: Usage
    parts: dict[str, Usage]  # per run, by actor
    seconds: float

    def at(self, runs: int) -> Usage:
        """Scheduler's usage for ``runs`` waiting runs a month."""
        return self.scheduler_per_run.scaled(runs)


def measure(n: int) -> Measured:
    started = time.perf_counter()
    rng = random.Random(SEED + n)
    dues = due_times(n, rng)
    with MotoStack() as aws, undoable_patches() as patch:
        moto_internals.partition_queries(patch)
        moto_internals.index_queries(patch)
        clock = [T0]
        aws.service.clock = lambda: clock[0]
        meter = aws.meter
        tags = Attribution(meter)
        tags.wrap(aws.service.timers, "schedule", CREATE)
        tags.wrap(aws.service.timers, "cancel", CANCEL)
        # Scheduler's side: its reads of the schedules are not the account's calls (an
        # unmetered client); the target's SendMessage is (the metered SQS client).
        firer = ScheduleFirer(
            boto3.client("scheduler", region_name=REGION),
            aws.sqs,
            aws.stack["schedule_group"],
            {aws.queue_arn: aws.queue_url},
        )

        trace = Trace("timers", n)
        run_ids = aws.start(timer_graph(), [{"due_at": iso(d)} for d in dues], trace)
        aws.pump(trace)
        waiting = [aws.service.store.get_run(r) for r in run_ids]
        assert all(r is not None and r.status == "waiting" for r in waiting), "runs not waiting"
        cancelled = set(rng.sample(range(n), round(n * CANCELLED)))
        clock[0] = T0 + 60
        with meter.acting("api"), contextlib.redirect_stdout(io.StringIO()):
            for i in cancelled:
                aws.service.cancel(run_ids[i])

        # Each round fires the schedules that fall due in a minute at TARGET_RUNS a month.
        ordered = sorted(d for i, d in enumerate(dues) if i not in cancelled)
        minutes = sorted(
            {
                math.ceil(ordered[min(i + PER_MINUTE, len(ordered)) - 1] / 60) * 60
                for i in range(0, len(ordered), PER_MINUTE)
            }
        )
        fired = 0
        for minute in minutes:
            clock[0] = minute
            with meter.acting(FIRE):
                fired += len(firer.fire_due(clock[0]))
            aws.pump(trace)
        assert fired == n - len(cancelled), (fired, n, len(cancelled))
        for run_id in run_ids:
            run = aws.service.store.get_run(run_id)
            assert run is not None and run.status in ("completed", "cancelled"), (run_id, run and run.status)
        calls = [c for c in meter.calls if c.actor in SCHEDULER_ACTORS]

    memory_mb = aws.context.memory_limit_in_mb
    parts: dict[str, Usage] = {}
    for actor in SCHEDULER_ACTORS:
        mine = [c for c in calls if c.actor == actor]
        part = Usage()
        part.add_calls(mine)
        if actor == FIRE:
            part.scheduler_invocations = fired
        else:
            part.lambda_gb_s = modelled_gb_s(mine, tags.cpu_s[actor], memory_mb)
        parts[actor] = part
    per_run = Usage()
    for part in parts.values():
        per_run = per_run.plus(part)
    return Measured(
        n,
        len(minutes),
        per_run.scaled(1 / n),
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


def recorded_index_row() -> dict[str, Any]:
    """The due-time index's recorded figures, as a row."""
    return {
        "design": "due-time index (recorded, commit db748ab)",
        **{f"{line}": quantity for line, (quantity, _) in RECORDED_INDEX.items()},
        **{f"$ {line}": usd for line, (_, usd) in RECORDED_INDEX.items()},
        "$ total": RECORDED_INDEX_TOTAL,
    }


def run(quick: bool) -> list[Figure]:
    figures: list[Figure] = []
    for n in SIZES[quick]:
        m = measure(n)
        sched = m.at(TARGET_RUNS)
        print(
            f"   {n} waiting runs ({m.due_minutes} rounds of due schedules) in {m.seconds:.0f}s: "
            f"at {TARGET_RUNS:,} a month, Scheduler ${sched.total():.2f}, "
            f"the index (recorded) ${RECORDED_INDEX_TOTAL:.2f}",
            flush=True,
        )
        parts = [
            {"part": name, **{k: v for k, v in _row(name, u.scaled(TARGET_RUNS)).items() if k != "design"}}
            for name, u in m.parts.items()
        ]
        details = {
            "at 1M waiting runs a month": [
                _row("EventBridge Scheduler (measured)", sched),
                recorded_index_row(),
            ],
            "Scheduler by part, at 1M": parts,
            "calls per run": dict(
                sorted((op, round(c, 3)) for op, c in m.scheduler_per_run.requests.items())
            ),
            "runs measured": n,
            "rounds of due schedules": m.due_minutes,
            "cancelled share": CANCELLED,
            "waits": "log-uniform, 1 h to 30 days",
        }
        note = f"{n} runs measured; the due-time index: ${RECORDED_INDEX_TOTAL:.2f} per million (recorded)"
        figures.append(
            Figure(
                NAME,
                f"EventBridge Scheduler, $ per 1M waiting runs a month (N={n})",
                "$",
                [sched.total()],
                None,
                note,
                details,
            )
        )
    return figures
