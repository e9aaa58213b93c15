"""Runs that wait, on the local stack, through real HTTP, WebSocket and CLI clients only:
start → waiting → `flowforge approve` → completed; a timer the stack's own queue delays."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import aiohttp
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
