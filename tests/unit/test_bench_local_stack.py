"""The local stack benchmark's figures from run records (bench/local_stack.py measures them)."""

from __future__ import annotations

import pytest

from bench.local_stack import (
    Throughput,
    first_step_latency,
    instant,
    percentile,
    pooled_throughput,
    step_latencies,
    throughput,
)


def entry(seq: int, started_at: str) -> dict:
    return {"seq": seq, "node": "n", "status": "ok", "started_at": started_at, "duration_ms": 0.5}


def run(created_at: str, finished_at: str | None, *starts: str) -> dict:
    logs = [entry(seq, at) for seq, at in enumerate(starts)]
    return {"run_id": created_at, "created_at": created_at, "finished_at": finished_at, "logs": logs}


def test_instant_reads_the_stacks_millisecond_utc_stamps():
    assert (instant("2026-01-02T03:04:05.250Z") - instant("2026-01-02T03:04:05.000Z")).total_seconds() == 0.25
    assert instant("2026-01-02T03:04:05.000Z") == instant("2026-01-02T04:04:05.000+01:00")


def test_percentile_interpolates_between_ranks_like_numpy_linear():
    values = [float(v) for v in range(1, 101)]  # 1..100

    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([10.0, 20.0], 95) == pytest.approx(19.5)
    assert percentile([7.0], 95) == 7.0


def test_percentile_does_not_depend_on_the_order_of_the_values():
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 90) == percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 95)


def test_step_latency_is_the_gap_between_consecutive_node_starts_in_seq_order():
    # GIVEN log entries as the API returns them, here out of order
    logs = [
        entry(2, "2026-01-01T00:00:00.350Z"),
        entry(0, "2026-01-01T00:00:00.100Z"),
        entry(1, "2026-01-01T00:00:00.150Z"),
    ]

    # WHEN their latencies are taken
    latencies = step_latencies(logs)

    # THEN step 1 took 50 ms and step 2 200 ms; step 0 has no previous node
    assert latencies == [0.05, 0.2]


def test_a_run_of_one_step_has_no_step_latency():
    assert step_latencies([entry(0, "2026-01-01T00:00:00.100Z")]) == []


def test_first_step_latency_counts_from_the_runs_creation():
    r = run("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:00.040Z")

    assert first_step_latency(r) == pytest.approx(0.04)


def test_throughput_spans_the_first_creation_to_the_last_finish():
    # GIVEN two overlapping runs of 3 and 2 steps, 2 s from the first start to the last end
    runs = [
        run("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.500Z", *["2026-01-01T00:00:00.100Z"] * 3),
        run("2026-01-01T00:00:00.500Z", "2026-01-01T00:00:02.000Z", *["2026-01-01T00:00:00.600Z"] * 2),
    ]

    # WHEN throughput is taken
    t = throughput(runs)

    # THEN 5 steps and 2 runs in 2 s
    assert (t.steps, t.runs, t.window_s) == (5, 2, pytest.approx(2.0))
    assert t.steps_per_s == pytest.approx(2.5)
    assert t.runs_per_s == pytest.approx(1.0)


def test_runs_one_after_another_add_up_their_windows_not_the_pauses_between_them():
    pooled = pooled_throughput([Throughput(10, 1, 0.5), Throughput(10, 1, 1.5)])

    assert pooled == Throughput(20, 2, 2.0)
    assert pooled.steps_per_s == pytest.approx(10.0)


def test_throughput_refuses_runs_that_have_not_finished():
    unfinished = run("2026-01-01T00:00:00.000Z", None, "2026-01-01T00:00:00.100Z")

    with pytest.raises(ValueError, match="without finished_at"):
        throughput([unfinished])
    with pytest.raises(ValueError, match="no runs"):
        throughput([])
