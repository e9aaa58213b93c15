"""A callback node whose tool fails, on moto through the real API and step handlers.

The callback is stored before the tool runs, so a fast answer can come while it runs.
If the tool then fails (raises, times out: a retry, a catch route or the run's failure),
exactly one of the failure and the answer wins the callback: an answer accepted first
(200) is taken by the node — never dropped — and once the failure has withdrawn the
callback, a late answer is refused (409 ``withdrawn``) and the run is untouched.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine import default_registry
from tests.functional.test_api import assert_error
from tests.functional.test_callbacks import call, start, statuses

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

#: Set by a test: the answer the tool posts to its own callback before it fails.
ANSWER: dict[str, Any] = {}
#: Each call of the tool: its token, and the API's reply to its answer (None: no answer).
CALLS: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _reset():
    ANSWER.clear()
    CALLS.clear()


class MailerDown(Exception):
    """The notifying tool's failure."""


@default_registry.tool("callbacks_test_notify_then_fail")
async def notify_then_fail(state, ctx):
    """Sends the callback's URL, is answered at once (a fast webhook), then fails: its
    mail server dropped the connection after sending."""
    reply = None
    if ANSWER and not CALLS:
        reply = call("POST", f"/callbacks/{ctx.callback_token}", body=ANSWER)
    CALLS.append((ctx.callback_token, reply))
    raise MailerDown("connection reset after DATA")


@default_registry.tool("callbacks_test_after")
async def after(state, ctx):
    return {"after": state.get("review")}


def review(**policy: Any) -> dict[str, Any]:
    node = {
        "fn": "callbacks_test_notify_then_fail",
        "callback": {"timeout_s": 86400, "result": "review"},
        "next": "publish",
        **policy,
    }
    targets = [rule["next"] for rule in policy.get("catch", [])]
    after_nodes = {name: {"fn": "callbacks_test_after"} for name in ("publish", *targets)}
    return {"start": "review", "nodes": {"review": node, **after_nodes}}


RETRY = {"retry": {"max_attempts": 3, "interval_s": 1}}
CATCH = {
    "catch": [
        {"on": ["MailerDown"], "next": "mail_failed"},
        {"on": ["CallbackRejected"], "next": "revise", "result_key": "rejection"},
    ]
}


@pytest.mark.parametrize("policy", [RETRY, CATCH, {}], ids=["retry", "catch", "no-policy"])
def test_an_answer_accepted_while_the_tool_runs_is_taken_when_the_tool_then_fails(service, pump, policy):
    # GIVEN a tool answered while it runs, which then fails
    ANSWER.update({"status": "approved", "output": {"by": "ann"}})

    # WHEN the run reaches the node
    run_id = start(service, review(**policy))
    pump.drain()

    # THEN the accepted answer is the node's: no retry, no catch route, no failure
    (token, reply), *more = CALLS
    assert reply.status == 200, reply.raw
    assert reply.json["applied"] is False  # accepted while the tool ran
    assert more == []  # the tool ran once: the answer made its retry pointless
    run = call("GET", f"/graph/state/{run_id}").json
    assert run["status"] == "completed", run["error"]
    assert run["state"]["review"] == {"by": "ann"} and run["state"]["after"] == {"by": "ann"}
    assert statuses(service, run_id) == [("review", "waiting"), ("review", "ok"), ("publish", "ok")]
    first = service.store.list_logs(run_id)[0]
    assert first["error"]["type"] == "MailerDown"  # what the tool did is not hidden
    assert first["waiting"]["answered"] == "approved"
    # the callback was answered once: a second answer is a 409
    again = call("POST", f"/callbacks/{token}", body={"status": "rejected"})
    assert assert_error(again, 409, "conflict")["details"]["status"] == "approved"


def test_a_rejection_accepted_while_the_tool_runs_is_caught_as_the_nodes_when_the_tool_fails(service, pump):
    ANSWER.update({"status": "rejected", "reason": "off topic"})

    run_id = start(service, review(**CATCH))
    pump.drain()

    assert CALLS[0][1].status == 200
    run = call("GET", f"/graph/state/{run_id}").json
    assert run["status"] == "completed"
    assert run["state"]["rejection"]["type"] == "CallbackRejected"
    assert statuses(service, run_id) == [("review", "waiting"), ("review", "caught"), ("revise", "ok")]


def test_an_answer_after_the_tool_failed_is_409_and_a_retry_sends_a_new_callback(service, pump, clock):
    # GIVEN a tool that fails with no answer, and retries
    run_id = start(service, review(**RETRY))
    pump.step_once()
    ((first, _),) = CALLS
    assert service.get_run(run_id).status == "running"  # its retry is due in 1 s

    # WHEN the first notification is answered after the tool failed
    late = call("POST", f"/callbacks/{first}", body={"status": "approved", "output": "late"})

    # THEN the answer is refused: the caller knows it was not taken
    assert assert_error(late, 409, "conflict")["details"]["status"] == "withdrawn"
    assert service.store.get_wait(run_id, 0).status == "withdrawn"
    assert service.get_run(run_id).status == "running"
    # and the retry stores a new callback, which works once the node waits
    clock.advance(1)
    pump.drain()
    tokens = [token for token, _ in CALLS]
    assert len(tokens) == 3 and len(set(tokens)) == 3
    run = service.get_run(run_id)
    assert run.status == "failed" and run.error["type"] == "MailerDown"
    for token in tokens:
        reply = call("POST", f"/callbacks/{token}", body={"status": "approved"})
        assert assert_error(reply, 409, "conflict")["details"]["status"] == "withdrawn"
    assert [s for _, s in statuses(service, run_id)] == ["retry", "retry", "failed"]


@default_registry.tool("callbacks_test_cancel_then_fail")
async def cancel_then_fail(state, ctx):
    """Its run is cancelled while it runs (someone pressed Cancel), then it fails."""
    CALLS.append((ctx.callback_token, call("POST", f"/graph/run/{ctx.run_id}/cancel")))
    raise MailerDown("connection reset after DATA")


def test_a_withdrawal_a_cancel_beat_puts_the_callback_back_with_its_expiry(service, pump, aws, stack):
    # GIVEN a stack that keeps a run's items for a day, and a callback node whose run is
    # cancelled while its tool runs, which then fails
    service.retention_s = 86_400
    graph = review()
    graph["nodes"]["review"]["fn"] = "callbacks_test_cancel_then_fail"
    run_id = start(service, graph)

    # WHEN the step withdraws the callback and its commit loses to the cancel
    pump.drain()

    # THEN the run is cancelled, the callback pending again (the withdrawal did not
    # happen), and its item still expires with the run's other items
    ((_, cancelled),) = CALLS
    assert cancelled.status == 200 and service.get_run(run_id).status == "cancelled"
    assert service.store.get_wait(run_id, 0).status == "pending"
    item = aws.client("dynamodb").get_item(
        TableName=stack["table"],
        Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "WAIT#0000000000"}},
    )["Item"]
    assert int(item["expires_at"]["N"]) == int(service.store.get_wait(run_id, 0).deadline + 86_400)
