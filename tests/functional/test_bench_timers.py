"""The timers benchmark (bench/timers.py) at a tiny size: it runs the timers through the
real handlers, and what it counts per waiting run is what the Scheduler design does."""

from __future__ import annotations

import pytest

from bench import timers

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
RUNS = 20


def test_the_timers_bench_counts_schedulers_calls_per_waiting_run():
    m = timers.measure(RUNS)

    cancelled = round(RUNS * timers.CANCELLED) / RUNS
    woken = 1 - cancelled
    # a schedule per waiting run, made by its step...
    create = m.parts[timers.CREATE]
    assert dict(create.requests) == {"scheduler:CreateSchedule": pytest.approx(1)}
    assert create.lambda_gb_s > 0
    # ...deleted when a run is cancelled (by the API)...
    assert dict(m.parts[timers.CANCEL].requests) == {"scheduler:DeleteSchedule": pytest.approx(cancelled)}
    # ...and one invocation (an SQS message) per schedule that fires; no DynamoDB at all
    fire = m.parts[timers.FIRE]
    assert dict(fire.requests) == {"sqs:SendMessage": pytest.approx(woken)}
    assert fire.scheduler_invocations == pytest.approx(woken)
    s = m.scheduler_per_run
    assert s.read_units == s.write_units == s.gb_months == 0
    assert 0 < m.at(timers.TARGET_RUNS).total() < timers.RECORDED_INDEX_TOTAL
    assert sum(usd for _, usd in timers.RECORDED_INDEX.values()) == pytest.approx(timers.RECORDED_INDEX_TOTAL)


def test_the_timers_bench_is_in_the_bench_list():
    from bench.__main__ import BENCHMARKS

    assert BENCHMARKS["timers"] == "bench.timers"
