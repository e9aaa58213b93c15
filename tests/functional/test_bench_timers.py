"""The timers benchmark (bench/timers.py) at a tiny size: it runs, and what it counts per
waiting run is what the due-time index and the Scheduler design do."""

from __future__ import annotations

import pytest

from bench import timers

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
RUNS = 20


def test_the_timers_bench_counts_each_designs_calls_per_waiting_run():
    m = timers.measure(RUNS)

    cancelled = round(RUNS * timers.CANCELLED) / RUNS
    woken = 1 - cancelled
    # the index: one PutItem when the run starts waiting (the item and its index entry)...
    write = m.parts[timers.WRITE]
    assert dict(write.requests) == {"dynamodb:PutItem": pytest.approx(1)}
    assert write.write_units == pytest.approx(2)
    # ...one UpdateItem that takes it out of the index once its run moved on (cancelled
    # runs' waits too, when the sweeper finds them due)...
    remove = m.parts[timers.REMOVE]
    assert dict(remove.requests) == {"dynamodb:UpdateItem": pytest.approx(1)}
    assert remove.write_units == pytest.approx(2)
    # ...and the sweeper wakes each due run with one step message
    assert m.parts[timers.SWEEP].requests["sqs:SendMessage"] == pytest.approx(woken)
    assert m.parts["index: storage"].gb_months > 0
    # a month of empty sweeps: one query per WAITING# shard each, and the invocations
    assert m.index_fixed.requests == {"dynamodb:Query": pytest.approx(8 * timers.SWEEPS_PER_MONTH)}
    assert m.index_fixed.lambda_requests == timers.SWEEPS_PER_MONTH
    # the Scheduler design: a schedule per waiting run, deleted when a run is cancelled,
    # one invocation (an SQS message) per schedule that fires; no DynamoDB at all
    s = m.scheduler_per_run
    assert s.requests["scheduler:CreateSchedule"] == pytest.approx(1)
    assert s.requests["scheduler:DeleteSchedule"] == pytest.approx(cancelled)
    assert s.requests["sqs:SendMessage"] == s.scheduler_invocations == pytest.approx(woken)
    assert s.read_units == s.write_units == 0
    index, scheduler = m.at(timers.TARGET_RUNS)
    assert index.total() > 0 and scheduler.total() > 0


def test_the_timers_bench_is_in_the_bench_list():
    from bench.__main__ import BENCHMARKS

    assert BENCHMARKS["timers"] == "bench.timers"
