"""The Timers contract (engine/ports.py), in memory and on EventBridge Scheduler (moto,
fired as Scheduler would: flowforge/local/timers.py): a timer sends its step message at
its time and never before, once; making it again keeps the first; a cancel removes it,
and cancelling one that is not there is no error."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.errors import StoreUnavailableError
from engine.memory import InMemoryStepQueue, InMemoryTimers
from flowforge.local.timers import ScheduleFirer
from functions.aws.scheduler import SchedulerTimers, at_expression, parse_at, schedule_name


@dataclass
class TimersUnderTest:
    """Timers, and a way to fire those due now and take the step messages they sent."""

    timers: Any
    fire: Callable[[], list[tuple[str, int]]]


@pytest.fixture(params=["memory", "scheduler"])
def timers(request, clock) -> TimersUnderTest:
    if request.param == "memory":
        memory, queue = InMemoryTimers(), InMemoryStepQueue()

        def fire_memory():
            memory.fire_due(queue, clock())
            return [(m.run_id, m.step) for m in iter(queue.pop, None)]

        return TimersUnderTest(memory, fire_memory)
    stack = request.getfixturevalue("stack")
    session = request.getfixturevalue("aws")
    scheduler, sqs = session.client("scheduler"), session.client("sqs")
    adapter = SchedulerTimers(
        stack["schedule_group"],
        stack["queue_arn"],
        stack["env"]["FLOWFORGE_SCHEDULER_ROLE_ARN"],
        lambda: scheduler,
    )
    firer = ScheduleFirer(scheduler, sqs, stack["schedule_group"])

    def fire_scheduler():
        firer.fire_due(clock())
        taken = []
        while messages := sqs.receive_message(QueueUrl=stack["queue_url"], MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            for message in messages:
                body = json.loads(message["Body"])
                taken.append((body["run_id"], body["step"]))
                sqs.delete_message(QueueUrl=stack["queue_url"], ReceiptHandle=message["ReceiptHandle"])
        return taken

    return TimersUnderTest(adapter, fire_scheduler)


def test_a_timer_sends_its_step_message_at_its_time_once(timers, clock):
    timers.timers.schedule("r1", 3, clock() + 3600)
    timers.timers.schedule("r2", 1, clock() + 7200)

    clock.advance(3599)
    assert timers.fire() == []
    clock.advance(1)
    assert timers.fire() == [("r1", 3)]
    assert timers.fire() == []  # fired once: it is gone
    clock.advance(3600)
    assert timers.fire() == [("r2", 1)]


def test_making_a_timer_again_keeps_the_first(timers, clock):
    timers.timers.schedule("r1", 3, clock() + 3600)
    timers.timers.schedule("r1", 3, clock() + 3605)  # a redelivered step, a few seconds later

    clock.advance(3600)
    assert timers.fire() == [("r1", 3)]
    clock.advance(5)
    assert timers.fire() == []


def test_a_cancelled_timer_sends_nothing_and_a_missing_one_is_no_error(timers, clock):
    timers.timers.schedule("r1", 3, clock() + 3600)
    timers.timers.schedule("r1", 5, clock() + 3600)
    timers.timers.cancel("r1", 3)
    timers.timers.cancel("r1", 3)
    timers.timers.cancel("never", 1)

    clock.advance(3600)
    assert timers.fire() == [("r1", 5)]
    timers.timers.cancel("r1", 5)  # fired: gone already


# -- the adapter's own rules -------------------------------------------------------------
def test_a_schedule_is_never_early_and_named_within_schedulers_limits():
    assert at_expression(1_750_000_000.0) == "at(2025-06-15T15:06:40)"
    assert at_expression(1_750_000_000.2) == "at(2025-06-15T15:06:41)"  # rounded up
    assert parse_at(at_expression(1_750_000_000.2)) == 1_750_000_001.0
    assert parse_at("rate(5 minutes)") is None
    assert schedule_name("a" * 32, 7) == "a" * 32 + "-7"
    long = schedule_name("r" * 64, 123456)
    assert len(long) <= 64 and long.endswith("-123456")
    assert long != schedule_name("s" * 64, 123456)


def test_schedulers_errors_become_the_engines(aws, stack, monkeypatch):
    scheduler = aws.client("scheduler")
    adapter = SchedulerTimers("no-such-group", stack["queue_arn"], "arn:aws:iam::1:role/r", lambda: scheduler)

    def throttled(**_):
        raise ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "CreateSchedule"
        )

    monkeypatch.setattr(scheduler, "create_schedule", throttled)
    with pytest.raises(StoreUnavailableError):  # the step message comes back: tried again
        adapter.schedule("r1", 1, 2_000_000_000.0)
    adapter.cancel("r1", 1)  # a group (or schedule) that is not there: nothing to delete
