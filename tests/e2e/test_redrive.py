"""Redrive on the local stack, through real HTTP, WebSocket and CLI clients only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import aiohttp
import pytest

from tests.e2e.test_local_stack import SUMMARIZATION, call, create, messages_until_done, run

pytestmark = pytest.mark.e2e

#: The README's example: chunk_size out of range fails the run at its first node.
FAILING_STATE = {"text": "One. Two. Three.", "chunk_size": 10}


async def failed_run(session: aiohttp.ClientSession, stack) -> str:
    graph_id = await create(session, stack, SUMMARIZATION)
    status, failed = await call(
        session, "POST", f"{stack.url}/graph/run", {"graph_id": graph_id, "state": FAILING_STATE}
    )
    assert status == 200 and failed["status"] == "failed", failed
    assert failed["error"]["node"] == "split" and "chunk_size" in failed["error"]["message"]
    return failed["run_id"]


def test_a_failed_run_redriven_with_a_state_patch_completes_and_streams_again(stack):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            run_id = await failed_run(session, stack)

            # WHEN it is redriven with a patch, then again at once
            url = f"{stack.url}/graph/run/{run_id}/redrive"
            status, redriven = await call(session, "POST", url, {"state_patch": {"chunk_size": 500}})
            assert status == 200, redriven
            assert redriven["status"] == "running" and redriven["redrive_count"] == 1
            again, refused = await call(session, "POST", url, {})

            # THEN a client connecting to the seed's path afterwards gets the whole log,
            # the redrive and what followed it, then done: completed
            async with session.ws_connect(f"{stack.ws_url}/ws/logs/{run_id}") as socket:
                received = await messages_until_done(socket)
            _, view = await call(session, "GET", f"{stack.url}/graph/state/{run_id}")
        assert again == 409 and refused["error"]["code"] == "conflict"
        assert refused["error"]["details"]["status"] in ("running", "completed")
        entries = [m for m in received if not m.get("done")]
        assert [m["seq"] for m in entries] == list(range(len(entries)))
        assert [(m["node"], m["status"]) for m in entries[:3]] == [
            ("split", "failed"), ("split", "redriven"), ("split", "ok")
        ]  # fmt: skip
        assert entries[1]["result"] == {"chunk_size": 500}
        assert received[-1].pop("cost")["estimate"] is True
        assert received[-1] == {"run_id": run_id, "done": True, "status": "completed"}
        assert view["status"] == "completed" and view["redrive_count"] == 1
        assert view["state"]["summary"] and view["state"]["chunk_size"] == 500

    run(scenario(), timeout=40)


def test_the_cli_redrives_a_failed_run_and_follows_it_to_completion(stack):
    async def make_failed():
        async with aiohttp.ClientSession() as session:
            return await failed_run(session, stack)

    run_id = run(make_failed())
    env = {**os.environ, "FLOWFORGE_ENDPOINT": stack.url}
    flowforge = [sys.executable, "-m", "flowforge.cli", "redrive", run_id]

    followed = subprocess.run(
        [*flowforge, "--patch", '{"chunk_size": 500}', "--follow", "--json"],
        env=env, capture_output=True, text=True, timeout=40,
    )  # fmt: skip
    refused = subprocess.run(flowforge, env=env, capture_output=True, text=True, timeout=30)

    assert followed.returncode == 0, followed.stderr
    lines = [json.loads(line) for line in followed.stdout.splitlines()]
    assert (lines[0]["node"], lines[0]["status"], lines[0]["seq"]) == ("split", "redriven", 1)
    assert lines[-1]["done"] is True and lines[-1]["status"] == "completed"
    assert refused.returncode == 3 and "409 conflict" in refused.stderr
    assert "only a failed run can be redriven" in refused.stderr
