"""Durable timers on moto: a short wait is a delayed step message, a long one an
EventBridge Scheduler one-time schedule that sends the step message at its time (fired
here as Scheduler would: flowforge/local/timers.py); both forms (seconds, until), cancel,
a crash between a timer and its commit, duplicate deliveries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine import default_registry
from engine.service import RunService
from engine.step import iso_time
from flowforge.local.timers import ScheduleFirer
from functions.aws.scheduler import at_expression, schedule_name
from tests.functional.test_callbacks import call, start, statuses, sweep

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@default_registry.tool("timers_test_remind")
async def remind(state, ctx):
    return {"reminded": True}


def cool_off(seconds: float) -> dict[str, Any]:
    return {
        "start": "cool_off",
        "nodes": {
            "cool_off": {"wait": {"seconds": seconds}, "next": "remind"},
            "remind": {"fn": "timers_test_remind"},
        },
    }


AT_NINE = {
    "start": "at_nine",
    "nodes": {
        "at_nine": {
            "wait": {"until": "release_at"},
            "next": "remind",
            "catch": [{"on": ["InvalidWaitUntil"], "next": "remind", "result_key": "bad_time"}],
        },
        "remind": {"fn": "timers_test_remind"},
    },
}


@pytest.fixture
def scheduler(aws, stack):
    return aws.client("scheduler")


@pytest.fixture
def timers(aws, stack, clock, scheduler):
    """Fires the stack's due schedules at the virtual clock's time, as Scheduler would."""
    firer = ScheduleFirer(scheduler, aws.client("sqs"), stack["schedule_group"])
    return lambda: firer.fire_due(clock())


def schedules(scheduler, stack) -> list[dict[str, Any]]:
    """The timers' schedules, in full."""
    names = [s["Name"] for s in scheduler.list_schedules(GroupName=stack["schedule_group"])["Schedules"]]
    return [scheduler.get_schedule(Name=name, GroupName=stack["schedule_group"]) for name in names]


def waits(service: RunService, run_id: str) -> dict[str, Any]:
    return call("GET", f"/graph/state/{run_id}").json


def test_a_short_wait_is_a_delayed_step_message(service, pump, clock):
    # GIVEN a run that waits 10 minutes
    run_id = start(service, cool_off(600))
    pump.step_once()
    started = clock()

    # THEN it waits, with one delayed message queued
    state = waits(service, run_id)
    assert state["status"] == "waiting"
    assert state["waiting"] == {"node": "cool_off", "until": iso_time(started + 600)}
    assert pump.counts()["MessagesDelayed"] == 1

    # WHEN the queue is drained (moving the clock over the delay)
    pump.drain()

    # THEN the run went on once the 600 s had passed, and not before
    run = service.get_run(run_id)
    assert run.status == "completed"
    assert clock() >= started + 600
    assert statuses(service, run_id) == [("cool_off", "waiting"), ("cool_off", "ok"), ("remind", "ok")]
    assert service.store.due_waits(clock() + 10**9) == []  # closed: out of the index


def test_a_long_wait_is_one_schedule_that_sends_its_step_message_at_its_time(
    service, pump, clock, stack, scheduler, timers
):
    # GIVEN a run that waits two days
    run_id = start(service, cool_off(172800))
    pump.drain()
    started = clock()
    assert service.get_run(run_id).status == "waiting"
    assert pump.counts() == {"Messages": 0, "MessagesDelayed": 0, "MessagesNotVisible": 0}

    # THEN exactly one one-time schedule waits for it: at its time, in UTC, sending the
    # run's next step message to the step queue with the scheduler's role, then deleted
    (schedule,) = schedules(scheduler, stack)
    assert schedule["Name"] == schedule_name(run_id, 1)
    assert schedule["ScheduleExpression"] == at_expression(started + 172800)
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert schedule["ActionAfterCompletion"] == "DELETE"
    target = schedule["Target"]
    assert target["Arn"] == stack["queue_arn"]
    assert target["RoleArn"] == stack["env"]["FLOWFORGE_SCHEDULER_ROLE_ARN"]
    assert json.loads(target["Input"]) == {"run_id": run_id, "step": 1}
    # ... and nothing in the due-time index: the sweeper has nothing to do with it
    assert service.store.get_wait(run_id, 0) is None

    # WHEN a day passes, nothing is due
    clock.advance(86400)
    assert timers() == [] and sweep() == 0
    assert service.get_run(run_id).status == "waiting"

    # AND when the two days have passed, the schedule fires and the run goes on
    clock.advance(86400)
    assert timers() == [schedule_name(run_id, 1)]
    pump.drain()
    assert service.get_run(run_id).status == "completed"
    assert statuses(service, run_id) == [("cool_off", "waiting"), ("cool_off", "ok"), ("remind", "ok")]
    assert schedules(scheduler, stack) == []  # deleted after it fired (ActionAfterCompletion)
    assert timers() == [] and sweep() == 0


def test_a_schedule_that_fires_early_is_armed_again(service, pump, clock, aws, stack, scheduler, timers):
    # GIVEN a run waiting an hour on its schedule
    run_id = start(service, cool_off(3600))
    pump.drain()
    due = service.get_run(run_id).next_at

    # WHEN its step message comes ten minutes early (a clock ahead of ours)
    clock.advance(3000)
    aws.client("sqs").send_message(
        QueueUrl=stack["queue_url"], MessageBody=json.dumps({"run_id": run_id, "step": 1})
    )
    pump.step_once()

    # THEN the run goes on waiting, and its timer is armed again for the ten minutes left
    assert service.get_run(run_id).status == "waiting"
    assert pump.counts()["MessagesDelayed"] == 1
    pump.drain()
    assert service.get_run(run_id).status == "completed"
    assert clock() >= due
    assert statuses(service, run_id) == [("cool_off", "waiting"), ("cool_off", "ok"), ("remind", "ok")]
    # the schedule fires later, as a stale duplicate: dropped
    clock.advance(600)
    assert timers() == [schedule_name(run_id, 1)]
    pump.drain()
    assert statuses(service, run_id)[-1] == ("remind", "ok")


def scheduled_then_crashed(service, faults, pump):
    """A run whose first step (a 2-hour wait) made its schedule and died before its commit:
    the store that crashed, and the run (still running: its message comes back)."""
    store, _ = faults
    store.crash_before_commit.add(0)
    run_id = start(service, cool_off(7200))
    pump.step_once()
    assert service.get_run(run_id).status == "running"
    return store, run_id


def test_a_crash_between_the_schedule_and_the_commit_loses_nothing(
    service, faults, pump, clock, stack, scheduler, timers
):
    # GIVEN the step that starts a long wait dies after making its schedule, before its commit
    store, run_id = scheduled_then_crashed(service, faults, pump)
    assert len(schedules(scheduler, stack)) == 1

    # WHEN its message comes back and the step runs again
    pump.drain()

    # THEN the run waits on the one schedule there is (made again: ConflictException, kept)
    assert service.get_run(run_id).status == "waiting"
    (schedule,) = schedules(scheduler, stack)
    assert schedule["Name"] == schedule_name(run_id, 1)

    # AND its time comes: the run goes on once
    clock.advance(7200)
    assert timers() == [schedule_name(run_id, 1)]
    pump.drain()
    assert statuses(service, run_id) == [("cool_off", "waiting"), ("cool_off", "ok"), ("remind", "ok")]
    assert store.commits[(run_id, 0)] == 1 and store.commits[(run_id, 1)] == 1


def test_a_crash_after_the_schedule_with_the_run_never_waiting_sends_a_stale_message(
    service, faults, pump, clock, stack, scheduler, timers
):
    # GIVEN a step that made its schedule and then lost its commit for good (a cancel took the slot)
    _, run_id = scheduled_then_crashed(service, faults, pump)
    assert call("POST", f"/graph/run/{run_id}/cancel").status == 200
    pump.drain()

    # WHEN the schedule fires: its message is a stale one, dropped
    clock.advance(7200)
    assert timers() == [schedule_name(run_id, 1)]
    pump.drain()
    assert service.get_run(run_id).status == "cancelled"
    assert statuses(service, run_id) == []


def test_duplicate_deliveries_make_one_schedule_and_one_transition(
    service, faults, pump, clock, stack, scheduler, timers
):
    store, _ = faults
    pump.duplicate = True  # every batch is delivered twice
    run_id = start(service, cool_off(86400))
    pump.drain()
    assert len(schedules(scheduler, stack)) == 1

    clock.advance(86400)
    assert len(timers()) == 1
    pump.drain()

    assert statuses(service, run_id) == [("cool_off", "waiting"), ("cool_off", "ok"), ("remind", "ok")]
    assert all(count == 1 for count in store.commits.values())


@pytest.mark.parametrize("ahead", [120, 86400 * 3])
def test_a_wait_until_a_time_in_the_state(service, pump, clock, ahead, stack, scheduler, timers):
    due = clock() + ahead
    release = iso_time(due)
    run_id = start(service, AT_NINE, {"release_at": release})
    pump.drain()  # a short wait is over here (the pump moves the clock over its delay)
    if ahead > 900:
        assert waits(service, run_id)["waiting"] == {"node": "at_nine", "until": release}
        assert [s["ScheduleExpression"] for s in schedules(scheduler, stack)] == [at_expression(due)]
        clock.advance(ahead)
        timers()
        pump.drain()
    assert service.get_run(run_id).status == "completed"
    assert clock() >= due  # not before its time
    assert statuses(service, run_id)[:2] == [("at_nine", "waiting"), ("at_nine", "ok")]


def test_a_time_in_the_past_goes_on_at_once_and_a_bad_one_is_caught(service, pump, clock):
    past = start(service, AT_NINE, {"release_at": "2020-01-01T09:00:00Z"})
    bad = start(service, AT_NINE, {"release_at": "tomorrow at nine"})
    missing = start(service, AT_NINE, {})
    pump.drain()

    assert statuses(service, past) == [("at_nine", "ok"), ("remind", "ok")]
    for run_id in (bad, missing):
        assert statuses(service, run_id) == [("at_nine", "caught"), ("remind", "ok")]
    assert waits(service, bad)["state"]["bad_time"]["type"] == "InvalidWaitUntil"


@pytest.mark.parametrize("seconds", [600, 7200])
def test_a_waiting_run_is_cancelled_and_its_timer_changes_nothing(
    service, pump, clock, stack, scheduler, timers, seconds
):
    run_id = start(service, cool_off(seconds))
    pump.step_once()
    assert len(schedules(scheduler, stack)) == (1 if seconds > 900 else 0)

    reply = call("POST", f"/graph/run/{run_id}/cancel")
    assert reply.status == 200 and reply.json["status"] == "cancelled"
    assert schedules(scheduler, stack) == []  # its schedule is deleted with it

    clock.advance(seconds)
    assert timers() == []
    pump.drain()  # a delayed message is a stale duplicate: dropped
    assert service.get_run(run_id).status == "cancelled"
    assert statuses(service, run_id) == [("cool_off", "waiting")]


def test_a_crash_between_a_short_timers_message_and_the_commit_loses_nothing(service, faults, pump, clock):
    # GIVEN a short wait whose step dies after sending its delayed message, before its commit
    store, _ = faults
    store.crash_before_commit.add(0)
    run_id = start(service, cool_off(300))
    pump.step_once()
    assert service.get_run(run_id).status == "running"  # not committed: the message comes back

    # WHEN everything is delivered: the first message again (the step runs again), the
    # early delayed one (a step the run had not reached: dropped), and the second one
    pump.drain()

    # THEN the run waited its 300 s and went on once
    assert service.get_run(run_id).status == "completed"
    assert statuses(service, run_id) == [("cool_off", "waiting"), ("cool_off", "ok"), ("remind", "ok")]
    assert all(count == 1 for count in store.commits.values())
