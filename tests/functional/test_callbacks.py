"""Callback (approval) nodes on moto: stored before the tool runs, answered once through
the API, timed out by the sweeper, heartbeats, and the races between answers, timeouts
and cancels — through the real API, step and sweeper handlers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from engine import default_registry
from engine.service import RunService
from functions.api.app import handler as api_handler
from functions.sweeper import app as sweeper_app
from tests.functional.fixtures import CALLBACK_BASE_URL
from tests.functional.pump import LambdaContext, load_event
from tests.functional.test_api import Reply, api_event, assert_error

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

#: What the notifying tool was given: (token, url) per call.
NOTIFIED: list[tuple[str, str]] = []
#: Set by a test: the tool answers its own callback (an answer that comes before the
#: run starts waiting).
EARLY: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _reset():
    NOTIFIED.clear()
    EARLY.clear()


@default_registry.tool("callbacks_test_notify")
async def notify(state, ctx):
    """Sends the callback's URL to a reviewer (here: records it)."""
    NOTIFIED.append((ctx.callback_token, ctx.callback_url))
    if EARLY:
        EARLY["reply"] = call("POST", f"/callbacks/{ctx.callback_token}", body=EARLY["answer"])
    return {"notified": True}


@default_registry.tool("callbacks_test_publish")
async def publish(state, ctx):
    return {"published": state.get("review")}


REVIEW = {
    "start": "review",
    "nodes": {
        "review": {
            "fn": "callbacks_test_notify",
            "callback": {"timeout_s": 86400, "result": "review"},
            "next": "publish",
            "catch": [
                {"on": ["CallbackTimeout"], "next": "escalate"},
                {"on": ["CallbackRejected"], "next": "revise", "result_key": "rejection"},
            ],
        },
        "publish": {"fn": "callbacks_test_publish"},
        "escalate": {"fn": "callbacks_test_publish"},
        "revise": {"fn": "callbacks_test_publish"},
    },
}
HEARTBEAT = {
    "start": "review",
    "nodes": {
        "review": {
            "callback": {"timeout_s": 3600, "heartbeat_s": 60},
            "catch": [{"on": ["CallbackTimeout"], "next": "escalate"}],
        },
        "escalate": {"fn": "callbacks_test_publish"},
    },
}


# -- helpers --------------------------------------------------------------------------------
def call(method: str, path: str, **kwargs: Any) -> Reply:
    response = api_handler(api_event(method, path, **kwargs), LambdaContext.api())
    return Reply(response["statusCode"], response.get("headers", {}), response["body"])


def start(service: RunService, graph: dict[str, Any], state: dict[str, Any] | None = None) -> str:
    return service.start_run(service.create_graph(graph).graph_id, state or {}).run_id


def sweep() -> int:
    return sweeper_app.handler(load_event("sweeper_schedule"), LambdaContext(function_name="sweeper"))[
        "resent"
    ]


def statuses(service: RunService, run_id: str) -> list[tuple[str, str]]:
    return [(e["node"], e["status"]) for e in service.store.list_logs(run_id)]


def waiting_run(service: RunService, pump, graph=REVIEW) -> tuple[str, str]:
    """A run of ``graph`` waiting at its callback, and the callback's token."""
    run_id = start(service, graph)
    pump.drain()
    run = service.get_run(run_id)
    assert run.status == "waiting"
    token = service.waits.signer.token(run_id, run.step - 1)
    return run_id, token


# -- the happy path ---------------------------------------------------------------------------
def test_a_run_waits_at_its_callback_then_an_approval_completes_it(service, pump):
    # GIVEN a run that reached its callback node
    run_id = start(service, REVIEW, {"draft": "text"})
    pump.drain()

    # THEN the tool got a token and its URL, the run waits, and nothing is queued
    [(token, url)] = NOTIFIED
    assert url == f"{CALLBACK_BASE_URL}/callbacks/{token}"
    assert pump.counts()["Messages"] == 0
    state = call("GET", f"/graph/state/{run_id}").json
    assert state["status"] == "waiting" and state["done"] is False
    assert state["current_node"] == "review"
    assert state["waiting"]["node"] == "review"
    assert state["waiting"]["callback_url"] == url
    assert state["waiting"]["expires_at"].endswith("Z")
    assert [(e["node"], e["status"]) for e in state["logs"]] == [("review", "waiting")]
    assert state["logs"][0]["result"] == {"notified": True}
    # AND the store holds the token's hash, never the token
    stored = service.store.get_wait(run_id, 0)
    assert stored.token_hash and token not in repr(stored)

    # WHEN someone approves it
    reply = call("POST", f"/callbacks/{token}", body={"status": "approved", "output": {"ok": 1}})

    # THEN the answer moved the run on, and the run completes with the output in its state
    assert reply.status == 200, reply.raw
    assert reply.json == {"run_id": run_id, "callback": "approved", "status": "running", "applied": True}
    pump.drain()
    run = service.get_run(run_id)
    assert run.status == "completed"
    assert statuses(service, run_id) == [("review", "waiting"), ("review", "ok"), ("publish", "ok")]
    final = call("GET", f"/graph/state/{run_id}").json
    assert final["state"]["review"] == {"ok": 1} and final["state"]["published"] == {"ok": 1}
    assert final["waiting"] is None


def test_a_rejection_is_caught_by_the_nodes_catch_rule(service, pump):
    run_id, token = waiting_run(service, pump)

    reply = call("POST", f"/callbacks/{token}", body={"status": "rejected", "reason": "too long"})
    assert reply.status == 200, reply.raw
    pump.drain()

    run = service.get_run(run_id)
    assert run.status == "completed"
    assert statuses(service, run_id) == [("review", "waiting"), ("review", "caught"), ("revise", "ok")]
    rejection = call("GET", f"/graph/state/{run_id}").json["state"]["rejection"]
    assert rejection == {"node": "review", "type": "CallbackRejected", "message": "too long"}


def test_an_uncaught_rejection_fails_the_run_and_retries_do_not_apply(service, pump):
    graph = {
        "start": "review",
        "nodes": {"review": {"fn": "callbacks_test_notify", "callback": {"timeout_s": 3600}, "retry": {}}},
    }
    run_id, token = waiting_run(service, pump, graph)

    call("POST", f"/callbacks/{token}", body={"status": "rejected"})
    pump.drain()

    run = service.get_run(run_id)
    assert run.status == "failed" and run.error["type"] == "CallbackRejected"
    assert len(NOTIFIED) == 1  # the tool did not run again


def test_unknown_tampered_and_malformed_tokens_are_404_and_change_nothing(service, pump):
    run_id, token = waiting_run(service, pump)
    run_id_part, step, mac = token.split(".")
    for bad in (f"{run_id_part}.{step}.{'A' * len(mac)}", f"{run_id_part}.7.{mac}", "nope", f"x.0.{mac}"):
        assert_error(call("POST", f"/callbacks/{bad}", body={"status": "approved"}), 404, "not_found")
        assert_error(call("POST", f"/callbacks/{bad}/heartbeat"), 404, "not_found")
    assert service.get_run(run_id).status == "waiting"


def test_a_bad_answer_is_a_400_and_changes_nothing(service, pump):
    run_id, token = waiting_run(service, pump)
    for body in ({"status": "maybe"}, {"status": "approved", "extra": 1}, {}):
        assert_error(call("POST", f"/callbacks/{token}", body=body), 400, "invalid_request")
    assert service.get_run(run_id).status == "waiting"
    assert service.store.get_wait(run_id, 0).status == "pending"


def test_an_answer_that_comes_while_the_tool_runs_is_applied_when_it_returns(service, pump):
    # GIVEN a tool that answers its own callback before returning (a fast webhook)
    EARLY["answer"] = {"status": "approved", "output": "fast"}

    # WHEN the run reaches the node
    run_id = start(service, REVIEW)
    pump.drain()

    # THEN the answer was accepted while the tool ran, and applied once it returned
    assert EARLY["reply"].status == 200, EARLY["reply"].raw
    assert EARLY["reply"].json["applied"] is False
    assert service.get_run(run_id).status == "completed"
    assert statuses(service, run_id) == [("review", "waiting"), ("review", "ok"), ("publish", "ok")]


# -- exactly one answer ----------------------------------------------------------------------
def race(*calls) -> list[Any]:
    """Run the calls at once (each in its own thread); their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("rounds", range(3))
def test_of_two_answers_at_once_exactly_one_wins(service, pump, rounds):
    run_id, token = waiting_run(service, pump)

    approve, reject = race(
        lambda: call("POST", f"/callbacks/{token}", body={"status": "approved", "output": "yes"}),
        lambda: call("POST", f"/callbacks/{token}", body={"status": "rejected", "reason": "no"}),
    )

    assert sorted([approve.status, reject.status]) == [200, 409], (approve.raw, reject.raw)
    loser = approve if approve.status == 409 else reject
    assert assert_error(loser, 409, "conflict")["details"]["status"] in ("approved", "rejected")
    pump.drain()
    log = statuses(service, run_id)
    assert log[:2] == [("review", "waiting"), ("review", "ok" if approve.status == 200 else "caught")]
    assert len(log) == 3  # the wait ended once


def test_an_answer_after_the_timeout_is_409_and_the_run_times_out(service, pump, clock):
    run_id, token = waiting_run(service, pump)
    clock.advance(86400 + 1)

    reply = call("POST", f"/callbacks/{token}", body={"status": "approved"})
    assert assert_error(reply, 409, "conflict")["details"]["status"] == "timed_out"
    assert service.get_run(run_id).status == "waiting"  # untouched by the answer

    assert sweep() == 1
    pump.drain()
    assert statuses(service, run_id) == [("review", "waiting"), ("review", "caught"), ("escalate", "ok")]
    error = call("GET", f"/graph/state/{run_id}").json["state"]["error"]
    assert error["type"] == "CallbackTimeout" and "86400" in error["message"]
    assert_error(call("POST", f"/callbacks/{token}", body={"status": "approved"}), 409, "conflict")


def test_an_answer_racing_the_timeout_exactly_one_wins(service, pump, clock):
    run_id, token = waiting_run(service, pump)
    clock.advance(86400)  # due exactly now: the answer may or may not be in time
    sweep()  # the step message that would time it out is queued

    reply, _ = race(
        lambda: call("POST", f"/callbacks/{token}", body={"status": "approved", "output": 1}),
        lambda: pump.step_once(),
    )
    pump.drain()

    log = statuses(service, run_id)
    assert len(log) == 3 and log[0] == ("review", "waiting")
    if reply.status == 200:
        assert log[1:] == [("review", "ok"), ("publish", "ok")]
    else:
        assert assert_error(reply, 409, "conflict")["details"]["status"] == "timed_out"
        assert log[1:] == [("review", "caught"), ("escalate", "ok")]


def test_an_answer_racing_a_cancel_leaves_the_run_cancelled_and_untouched_when_it_loses(service, pump):
    run_id, token = waiting_run(service, pump)

    answer, cancel = race(
        lambda: call("POST", f"/callbacks/{token}", body={"status": "approved", "output": "late"}),
        lambda: call("POST", f"/graph/run/{run_id}/cancel"),
    )

    assert cancel.status == 200, cancel.raw
    pump.drain()
    run = service.get_run(run_id)
    assert run.status == "cancelled"
    if answer.status == 200:  # the answer moved the run on first; the cancel came after
        assert statuses(service, run_id)[:2] == [("review", "waiting"), ("review", "ok")]
    else:
        assert assert_error(answer, 409, "conflict")["details"]["status"] == "cancelled"
        assert "review" not in call("GET", f"/graph/state/{run_id}").json["state"]
        assert statuses(service, run_id) == [("review", "waiting")]


def test_a_waiting_run_is_cancelled_and_its_callback_then_answers_409(service, pump):
    run_id, token = waiting_run(service, pump)

    assert call("POST", f"/graph/run/{run_id}/cancel").json["status"] == "cancelled"
    reply = call("POST", f"/callbacks/{token}", body={"status": "approved"})

    assert assert_error(reply, 409, "conflict")["details"]["status"] == "cancelled"
    assert service.get_run(run_id).status == "cancelled"
    assert statuses(service, run_id) == [("review", "waiting")]


# -- heartbeats ---------------------------------------------------------------------------------
def test_heartbeats_keep_a_callback_alive_until_one_is_missed(service, pump, clock):
    # GIVEN a run waiting for a callback that expects a heartbeat every 60 s (its first
    # deadline gets a delayed step message: it is within SQS's 15 minutes)
    run_id = start(service, HEARTBEAT)
    pump.step_once()
    token = service.waits.signer.token(run_id, 0)
    assert service.get_run(run_id).status == "waiting"

    for _ in range(3):  # a heartbeat every 50 s: the deadline moves on
        clock.advance(50)
        reply = call("POST", f"/callbacks/{token}/heartbeat")
        assert reply.status == 200, reply.raw
        assert reply.json["callback"] == "pending"
        sweep()
        pump.step_once(10)  # the first deadline's message comes, and finds it pushed back
        assert service.get_run(run_id).status == "waiting"

    clock.advance(61)  # then none comes
    assert_error(call("POST", f"/callbacks/{token}/heartbeat"), 409, "conflict")
    sweep()
    pump.drain()

    assert statuses(service, run_id) == [("review", "waiting"), ("review", "caught"), ("escalate", "ok")]
    error = call("GET", f"/graph/state/{run_id}").json["state"]["error"]
    assert error["type"] == "CallbackTimeout" and "heartbeat" in error["message"]
