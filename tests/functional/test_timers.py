"""Durable timers on moto: a short wait is a delayed step message, a long one a due time
the sweeper reads; both forms (seconds, until), cancel, and the sweeper closing waits
whose run moved on."""

from __future__ import annotations

from typing import Any

import pytest

from engine import default_registry
from engine.service import RunService
from engine.step import iso_time
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


def test_a_long_wait_sends_nothing_until_the_sweeper_finds_it_due(service, pump, clock):
    # GIVEN a run that waits two days
    run_id = start(service, cool_off(172800))
    pump.drain()
    assert service.get_run(run_id).status == "waiting"
    assert pump.counts() == {"Messages": 0, "MessagesDelayed": 0, "MessagesNotVisible": 0}

    # WHEN a day passes: the sweeper finds nothing due
    clock.advance(86400)
    assert sweep() == 0
    assert service.get_run(run_id).status == "waiting"

    # AND when the two days have passed, the next sweep wakes it
    clock.advance(86400)
    assert sweep() == 1
    pump.drain()
    assert service.get_run(run_id).status == "completed"
    assert statuses(service, run_id)[-1] == ("remind", "ok")
    assert sweep() == 0


@pytest.mark.parametrize("ahead", [120, 86400 * 3])
def test_a_wait_until_a_time_in_the_state(service, pump, clock, ahead):
    due = clock() + ahead
    release = iso_time(due)
    run_id = start(service, AT_NINE, {"release_at": release})
    pump.drain()  # a short wait is over here (the pump moves the clock over its delay)
    if ahead > 900:
        assert waits(service, run_id)["waiting"] == {"node": "at_nine", "until": release}
        clock.advance(ahead)
        sweep()
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


def test_a_waiting_run_is_cancelled_and_its_timer_changes_nothing(service, pump, clock):
    run_id = start(service, cool_off(7200))
    pump.drain()

    reply = call("POST", f"/graph/run/{run_id}/cancel")
    assert reply.status == 200 and reply.json["status"] == "cancelled"

    clock.advance(7200)
    sweep()  # the due timer's run was cancelled: the sweeper closes it, sends nothing
    pump.drain()
    assert service.get_run(run_id).status == "cancelled"
    assert statuses(service, run_id) == [("cool_off", "waiting")]
    assert service.store.due_waits(clock() + 10**9) == []


def test_a_lost_delayed_message_is_made_up_by_the_sweeper(service, pump, clock, aws, stack):
    # GIVEN a short wait whose delayed message is lost
    run_id = start(service, cool_off(300))
    pump.step_once()
    aws.client("sqs").purge_queue(QueueUrl=stack["queue_url"])

    # WHEN its time comes, the sweeper finds it due in the index
    clock.advance(300)
    assert sweep() == 1
    pump.drain()

    assert service.get_run(run_id).status == "completed"
