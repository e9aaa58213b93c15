"""Foreground waiting: how long the API polls a run, and how often."""

from __future__ import annotations

import pytest

from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.registry import Registry
from engine.service import RunService
from functions.api.waiting import LAMBDA_MARGIN_S, wait_budget, wait_for_run


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []
        self.on_sleep = lambda: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(clock) -> RunService:
    registry = Registry()

    @registry.tool
    def noop(state, ctx):
        return None

    return RunService(InMemoryRunStore(), InMemoryStepQueue(), registry, clock=clock)


@pytest.fixture
def run_id(service) -> str:
    graph = service.create_graph({"start": "a", "nodes": {"a": {"fn": "noop"}}})
    return service.start_run(graph.graph_id, {}).run_id


@pytest.mark.parametrize(
    ("wait_s", "remaining_ms", "expected"),
    [
        (25.0, None, 25.0),  # no Lambda context: wait as asked
        (25.0, 20_000, 20.0 - LAMBDA_MARGIN_S),  # capped by the Lambda's deadline
        (5.0, 29_000, 5.0),  # asked for less than the deadline allows
        (25.0, 1_000, 0.0),  # no time left: answer at once
    ],
)
def test_wait_budget_never_passes_the_lambda_deadline(wait_s, remaining_ms, expected):
    assert wait_budget(wait_s, remaining_ms) == pytest.approx(expected)


def test_a_run_still_going_is_polled_with_backoff_until_the_budget_ends(service, clock, run_id):
    # GIVEN a run nobody steps
    # WHEN the API waits 2 s for it
    result = wait_for_run(service, run_id, 2.0, sleep=clock.sleep)

    # THEN it gives up after exactly the budget, polling from 50 ms backing off to 500 ms
    assert result is None
    assert clock.sleeps[:5] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5])
    assert max(clock.sleeps) == 0.5
    assert sum(clock.sleeps) == pytest.approx(2.0)


def test_a_run_that_finishes_while_waiting_is_returned(service, clock, run_id):
    # GIVEN a run that is cancelled (finished) during the third sleep
    def finish_on_third_sleep() -> None:
        if len(clock.sleeps) == 3:
            service.cancel(run_id)

    clock.on_sleep = finish_on_third_sleep

    # WHEN the API waits for it
    result = wait_for_run(service, run_id, 25.0, sleep=clock.sleep)

    # THEN it returns the finished run right after
    assert result is not None and result.status == "cancelled"
    assert len(clock.sleeps) == 3


def test_a_zero_budget_checks_once_without_sleeping(service, clock, run_id):
    assert wait_for_run(service, run_id, 0.0, sleep=clock.sleep) is None
    assert clock.sleeps == []
