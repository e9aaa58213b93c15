"""Live logs of a redriven run: the WebSocket streams it again, and ends it again with done."""

from __future__ import annotations

import pytest

from functions.broadcast.app import handler as broadcast_handler
from tests.functional.pump import LambdaContext
from tests.functional.test_websocket import assert_complete, ws

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
__all__ = ["ws"]

FAILS_UNTIL_FIXED = {
    "name": "fails_until_fixed",
    "start": "count",
    "nodes": {
        "count": {"fn": "ws_fn_count", "next": "check"},
        "check": {
            "fn": "ws_fn_count",
            "loop_condition": {"var": "fixed", "truthy": True},
            "max_iterations": 1,
        },
    },
}


def failed_run(ws) -> str:
    run_id = ws.start(FAILS_UNTIL_FIXED)
    ws.finish()
    assert ws.service.get_run(run_id).error["type"] == "LoopLimitExceeded"
    return run_id


def test_a_client_connecting_after_the_redrive_gets_the_new_entries_and_a_new_done(ws):
    # GIVEN a failed run, followed to its done by c1 (as the seed's /ws/logs/<run_id> does)
    run_id = ws.start(FAILS_UNTIL_FIXED)
    ws.connect("c1", run_id=run_id)
    ws.finish()
    assert [d["status"] for d in ws.api.dones("c1")] == ["failed"]

    # WHEN it is redriven with a fix, and c2 connects with ?run_id= after the redrive
    ws.service.redrive(run_id, {"fixed": True})
    ws.connect("c2", run_id=run_id)
    ws.finish()

    # THEN c2 gets every entry — the failure, the redrive, the new ones — then done(completed)
    assert_complete(ws, "c2", run_id)
    statuses = [m.get("status") for m in ws.api.messages("c2")]
    assert statuses == ["ok", "failed", "redriven", "ok", "completed"]
    # and c1, done with the failure, got nothing more
    assert [d["status"] for d in ws.api.dones("c1")] == ["failed"]


def test_a_failure_streamed_after_the_redrive_tells_no_subscriber_the_run_ended(ws):
    # GIVEN a run that failed while c1 followed it, its failure read from the stream but
    # not handled yet (the broadcaster lags)
    run_id = ws.start(FAILS_UNTIL_FIXED)
    ws.connect("c1")
    ws.subscribe("c1", run_id)
    while ws.step(feed=False):
        pass
    lagging = [record for record in ws.feed.poll() if ws.feed.wakes(record)]

    # WHEN it is redriven, c2 subscribes, and only then the broadcaster handles the failure
    ws.service.redrive(run_id, {"fixed": True})
    ws.connect("c2")
    ws.subscribe("c2", run_id)
    broadcast_handler({"Records": lagging}, LambdaContext())
    assert ws.api.dones("c2") == []
    ws.feed.deliver()
    ws.finish()

    # THEN neither was told the run ended before it did: both get it whole, then completed
    assert_complete(ws, "c1", run_id)
    assert_complete(ws, "c2", run_id)


def test_a_run_redriven_and_failing_again_ends_again_with_its_new_error(ws):
    # GIVEN a failed run redriven without a fix, c1 subscribed after the redrive
    run_id = failed_run(ws)
    ws.service.redrive(run_id)
    ws.connect("c1")
    ws.subscribe("c1", run_id, after=2)

    # WHEN it fails again
    ws.finish()

    # THEN c1 gets the new entries and one done with the failure
    assert ws.api.entries("c1") == [3]
    assert [(d["status"], d["error"]["type"]) for d in ws.api.dones("c1")] == [
        ("failed", "LoopLimitExceeded")
    ]
