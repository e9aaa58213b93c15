"""Runs that wait, on the local stack, through real HTTP, WebSocket and CLI clients only:
start → waiting → `flowforge approve` → completed; a timer the stack's own queue delays;
timers beyond 15 minutes, the stack's EventBridge Scheduler schedules, across a restart."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import boto3
import pytest

from tests.e2e.test_local_stack import ROOT, call, create, messages_until_done, run, wait_for

pytestmark = pytest.mark.e2e

APPROVAL = json.loads((ROOT / "workflows" / "graphs" / "approval.json").read_text())


def flowforge(stack, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLOWFORGE_ENDPOINT": stack.url}
    return subprocess.run(
        [sys.executable, "-m", "flowforge.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_run_waits_for_approval_and_flowforge_approve_completes_it(stack):
    async def start_waiting():
        async with aiohttp.ClientSession() as session:
            graph_id = await create(session, stack, APPROVAL)
            # a foreground run answers as soon as the run waits
            status, view = await call(
                session, "POST", f"{stack.url}/graph/run", {"graph_id": graph_id, "state": {"topic": "tides"}}
            )
            assert status == 200, view
            return view

    # GIVEN a run waiting at its review node
    view = run(start_waiting())
    run_id = view["run_id"]
    assert view["status"] == "waiting" and view["done"] is False
    waiting = view["waiting"]
    assert waiting["node"] == "review" and waiting["callback_url"].startswith(f"{stack.url}/callbacks/")
    assert [(e["node"], e["status"]) for e in view["logs"]] == [("draft", "ok"), ("review", "waiting")]

    # AND `flowforge runs --waiting` lists it with its callback URL
    listed = flowforge(stack, "runs", "--waiting")
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout and waiting["callback_url"] in listed.stdout

    # WHEN a reviewer approves it with the CLI, by its URL
    approved = flowforge(stack, "approve", waiting["callback_url"], "--output", '{"by": "ann"}')
    again = flowforge(stack, "reject", waiting["callback_url"].rsplit("/", 1)[1], "--reason", "late")

    # THEN the run completes with the output in its state, and the second answer is refused
    assert approved.returncode == 0, approved.stderr
    assert f"{run_id}: approved" in approved.stdout
    assert again.returncode == 3 and "already approved" in again.stderr

    async def finished():
        async with aiohttp.ClientSession() as session:
            done = await wait_for(session, stack, run_id, lambda v: v["done"])
            async with session.ws_connect(f"{stack.ws_url}/ws/logs/{run_id}") as socket:
                return done, await messages_until_done(socket)

    done, messages = run(finished())
    assert done["status"] == "completed"
    assert done["state"]["review"] == {"by": "ann"}
    assert done["state"]["published"] == {"text": "A post about tides.", "review": {"by": "ann"}}
    assert [(m.get("node"), m.get("status")) for m in messages if not m.get("done")] == [
        ("draft", "ok"), ("review", "waiting"), ("review", "ok"), ("publish", "ok")
    ]  # fmt: skip
    last = messages[-1]
    assert {k: v for k, v in last.items() if k != "cost"} == {
        "run_id": run_id,
        "done": True,
        "status": "completed",
    }
    assert last["cost"] == done["cost"]  # the done message carries the run's cost, as GET /graph/state does


def test_the_cli_run_returns_when_the_run_waits_and_a_short_timer_goes_on_by_itself(stack):
    graph = {
        "name": "pause",
        "start": "pause",
        "nodes": {"pause": {"wait": {"seconds": 2}, "next": "after"}, "after": {"fn": "e2e_mark"}},
    }

    async def start():
        async with aiohttp.ClientSession() as session:
            graph_id = await create(session, stack, graph)
            status, view = await call(
                session, "POST", f"{stack.url}/graph/run", {"graph_id": graph_id, "state": {}, "wait_s": 1}
            )
            assert status == 200 and view["status"] == "waiting", view
            assert view["waiting"]["node"] == "pause" and view["waiting"]["until"]
            done = await wait_for(session, stack, view["run_id"], lambda v: v["done"])
            return graph_id, done

    graph_id, done = run(start())
    assert done["status"] == "completed"
    assert [(e["node"], e["status"]) for e in done["logs"]] == [
        ("pause", "waiting"),
        ("pause", "ok"),
        ("after", "ok"),
    ]

    shown = flowforge(stack, "run", graph_id, "--state", "{}")
    assert shown.returncode == 0, shown.stderr
    assert "waiting at node 'pause' until" in shown.stdout


def test_waits_beyond_15_minutes_are_schedules_that_survive_a_restart_and_fire(own_stack):
    # GIVEN runs on the local stack that wait beyond SQS's 15 minutes: 20 minutes, and
    # until a time two hours ahead
    own_stack.start()
    graph = {
        "name": "long_pauses",
        "start": "pause",
        "nodes": {"pause": {"wait": {"seconds": 1200}, "next": "after"}, "after": {"fn": "e2e_mark"}},
    }
    until = {
        "name": "at_time",
        "start": "at_time",
        "nodes": {"at_time": {"wait": {"until": "release_at"}, "next": "after"}, "after": {"fn": "e2e_mark"}},
    }
    release_at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)

    async def start_waiting() -> tuple[str, str]:
        async with aiohttp.ClientSession() as session:
            run_ids = []
            for definition, state in ((graph, {}), (until, {"release_at": release_at.isoformat()})):
                body = {
                    "graph_id": await create(session, own_stack, definition),
                    "state": state,
                    "background": True,
                }
                _, accepted = await call(session, "POST", f"{own_stack.url}/graph/run", body)
                await wait_for(session, own_stack, accepted["run_id"], lambda v: v["status"] == "waiting")
                run_ids.append(accepted["run_id"])
            return run_ids[0], run_ids[1]

    seconds_run, until_run = run(start_waiting())
    scheduler = moto_client(own_stack, "scheduler")
    schedules = {s["Name"]: s for s in group_schedules(scheduler)}
    assert set(schedules) == {f"{seconds_run}-1", f"{until_run}-1"}
    assert schedules[f"{until_run}-1"]["ScheduleExpression"] == f"at({release_at:%Y-%m-%dT%H:%M:%S})"
    for run_id in (seconds_run, until_run):
        target = schedules[f"{run_id}-1"]["Target"]
        assert json.loads(target["Input"]) == {"run_id": run_id, "step": 1}
        assert target["Arn"].endswith(":flowforge-StepQueue")

    # WHEN the stack is killed and started again: the schedules are made again from the
    # runs (moto keeps nothing across a restart; the journal keeps the runs)
    own_stack.kill()
    own_stack.start()
    scheduler = moto_client(own_stack, "scheduler")
    again = {s["Name"]: s["ScheduleExpression"] for s in group_schedules(scheduler)}
    assert again == {name: s["ScheduleExpression"] for name, s in schedules.items()}

    # AND a schedule fires (its time moved to now): the stack delivers it as EventBridge
    # Scheduler would, and deletes it; its run, not due yet, arms its timer again
    original = schedules[f"{seconds_run}-1"]
    fire_now(scheduler, original)
    deadline = time.monotonic() + 20
    while True:
        current = {s["Name"]: s for s in group_schedules(scheduler)}.get(original["Name"])  # None: fired
        if current is not None and current["ScheduleExpression"] == original["ScheduleExpression"]:
            break  # made again, for its run's own time
        assert time.monotonic() < deadline, current
        time.sleep(0.2)

    async def views() -> list[dict]:
        async with aiohttp.ClientSession() as session:
            return [
                (await call(session, "GET", f"{own_stack.url}/graph/state/{r}"))[1]
                for r in (seconds_run, until_run)
            ]

    for view in run(views()):
        assert view["status"] == "waiting"
        assert [(e["node"], e["status"]) for e in view["logs"]] == [(view["current_node"], "waiting")]

    # AND a cancelled waiting run's schedule is deleted
    async def cancel() -> dict:
        async with aiohttp.ClientSession() as session:
            return (await call(session, "POST", f"{own_stack.url}/graph/run/{until_run}/cancel"))[1]

    assert run(cancel())["status"] == "cancelled"
    assert [s["Name"] for s in group_schedules(scheduler)] == [f"{seconds_run}-1"]


GROUP = "flowforge-TimerScheduleGroup"


def moto_client(stack, service: str):
    return boto3.client(
        service,
        endpoint_url=stack.moto_url,
        region_name=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def group_schedules(scheduler) -> list[dict]:
    """The group's schedules, in full (one deleted between the list and its read is left out)."""
    names = [s["Name"] for s in scheduler.list_schedules(GroupName=GROUP)["Schedules"]]
    found = []
    for name in names:
        with contextlib.suppress(scheduler.exceptions.ResourceNotFoundException):
            found.append(scheduler.get_schedule(Name=name, GroupName=GROUP))
    return found


def fire_now(scheduler, schedule: dict) -> None:
    """Move the schedule's time to a second from now, as if its time had come."""
    soon = datetime.now(UTC) + timedelta(seconds=1)
    scheduler.update_schedule(
        Name=schedule["Name"],
        GroupName=GROUP,
        ScheduleExpression=f"at({soon:%Y-%m-%dT%H:%M:%S})",
        ScheduleExpressionTimezone="UTC",
        State="ENABLED",
        FlexibleTimeWindow=schedule["FlexibleTimeWindow"],
        ActionAfterCompletion=schedule["ActionAfterCompletion"],
        Target={k: v for k, v in schedule["Target"].items() if k in ("Arn", "RoleArn", "Input")},
    )
