"""Every limit, enforced with the error the README's Limits table promises.

Each limit is checked at its value (accepted) and just past it (refused, with the exact
code and message), through the real API handler on template.yaml's table — or, for the
limits a run meets while it executes, through the step handler and the queue.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine import compile_graph, default_registry, run_graph_sync
from engine.logmessages import MAX_MESSAGE_BYTES, encode_message, log_message
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.model import MAX_DELAY_S, MAX_GRAPH_BYTES, MAX_NODES, MAX_STEPS_CAP, MAX_TIMEOUT_S
from engine.service import RunService
from engine.state import DEFAULT_MAX_STATE_BYTES, MAX_LOG_RESULT_BYTES, MAX_STATE_KEY_BYTES
from engine.step import MAX_ERROR_MESSAGE_CHARS
from functions.api.app import handler as api_handler
from functions.api.body import MAX_BODY_BYTES, MAX_BODY_DEPTH
from functions.api.models import MAX_WAIT_S
from functions.runtime import set_app
from functions.step import app as step_app
from tests.functional.fixtures import service_app
from tests.functional.pump import QueuePump, run_queued
from tests.functional.test_websocket import counting
from tests.reliability import figures
from tests.reliability.api_client import call

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture(autouse=True)
def counted():
    """Count each case run (one limit check) for the figures."""
    yield
    figures.record("limits", {"cases": 1}, quiet=True)


ID_RULE = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"


def node(**fields: Any) -> dict[str, Any]:
    return {"start": "a", "nodes": {"a": {"fn": "rel_noop", **fields}}}


def graph_of_size(size: int) -> dict[str, Any]:
    """A one-node graph whose compact JSON is exactly ``size`` bytes."""
    graph = node(params={"p": ""})
    padding = size - len(json.dumps(graph, separators=(",", ":")))
    return node(params={"p": "x" * padding})


def branch(when: Any) -> dict[str, Any]:
    return node(branches=[{"when": when, "next": "a"}])


def nested_rule(levels: int) -> dict[str, Any]:
    return json.loads('{"not":' * levels + '{"var": "a", "exists": true}' + "}" * levels)


# (limit, graph at the limit, graph past it, error path, error message)
GRAPH_LIMITS = [
    ("graph size", graph_of_size(MAX_GRAPH_BYTES), graph_of_size(MAX_GRAPH_BYTES + 1), "",
     f"definition is {MAX_GRAPH_BYTES + 1} bytes; the limit is {MAX_GRAPH_BYTES}"),
    ("node count", {"start": "n0", "nodes": {f"n{i}": {"fn": "rel_noop", **({"next": f"n{i + 1}"} if i + 1 < MAX_NODES else {})} for i in range(MAX_NODES)}},
     {"start": "n0", "nodes": {f"n{i}": {"fn": "rel_noop"} for i in range(MAX_NODES + 1)}}, "nodes",
     f"{MAX_NODES + 1} nodes; the limit is {MAX_NODES}"),
    ("node id", {"start": "a" * 64, "nodes": {"a" * 64: {"fn": "rel_noop"}}},
     {"start": "a" * 65, "nodes": {"a" * 65: {"fn": "rel_noop"}}}, "nodes." + "a" * 65, f"node id must match {ID_RULE}"),
    ("graph name", {**node(), "name": "g" * 64}, {**node(), "name": "g" * 65}, "name", f"String should match pattern '{ID_RULE}'"),
    ("max_steps", {**node(), "max_steps": MAX_STEPS_CAP}, {**node(), "max_steps": MAX_STEPS_CAP + 1}, "max_steps",
     f"Input should be less than or equal to {MAX_STEPS_CAP}"),
    ("max_iterations", node(max_iterations=10_000), node(max_iterations=10_001), "nodes.a.max_iterations",
     "Input should be less than or equal to 10000"),
    ("retry.max_attempts", node(retry={"max_attempts": 10}), node(retry={"max_attempts": 11}), "nodes.a.retry.max_attempts",
     "Input should be less than or equal to 10"),
    ("retry.interval_s", node(retry={"interval_s": MAX_DELAY_S}), node(retry={"interval_s": MAX_DELAY_S + 1}), "nodes.a.retry.interval_s",
     "Input should be less than or equal to 900"),
    ("retry.max_delay_s", node(retry={"max_delay_s": MAX_DELAY_S}), node(retry={"max_delay_s": MAX_DELAY_S + 1}), "nodes.a.retry.max_delay_s",
     "Input should be less than or equal to 900"),
    ("retry.backoff_rate", node(retry={"backoff_rate": 10}), node(retry={"backoff_rate": 11}), "nodes.a.retry.backoff_rate",
     "Input should be less than or equal to 10"),
    ("timeout_s", node(timeout_s=MAX_TIMEOUT_S), node(timeout_s=MAX_TIMEOUT_S + 1), "nodes.a.timeout_s",
     "Input should be less than or equal to 900"),
    ("branches", branch({"var": "a", "exists": True}) | {"nodes": {"a": {"fn": "rel_noop", "branches": [{"when": {"var": "a", "exists": True}, "next": "a"}] * 50}}},
     {"start": "a", "nodes": {"a": {"fn": "rel_noop", "branches": [{"when": {"var": "a", "exists": True}, "next": "a"}] * 51}}},
     "nodes.a.branches", "List should have at most 50 items after validation, not 51"),
    ("catch", node(catch=[{"next": "a"}] * 20), node(catch=[{"next": "a"}] * 21), "nodes.a.catch",
     "List should have at most 20 items after validation, not 21"),
    ("catch.result_key", node(catch=[{"next": "a", "result_key": "k" * 64}]), node(catch=[{"next": "a", "result_key": "k" * 65}]),
     "nodes.a.catch.0.result_key", "String should have at most 64 characters"),
    ("rule nesting", branch(nested_rule(15)), branch(nested_rule(16)), "nodes.a.branches.0.when" + ".not" * 16,
     "rule nested deeper than 16 levels"),
    ("rule var", branch({"var": "v" * 256, "exists": True}), branch({"var": "v" * 257, "exists": True}),
     "nodes.a.branches.0.when.var", "must be a dotted path such as 'summary.length'"),
    ("node description", node(description="d" * 1000), node(description="d" * 1001), "nodes.a.description",
     "String should have at most 1000 characters"),
    ("graph description", {**node(), "description": "d" * 2000}, {**node(), "description": "d" * 2001}, "description",
     "String should have at most 2000 characters"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("at_limit", "past_limit", "path", "message"),
    [c[1:] for c in GRAPH_LIMITS],
    ids=[c[0] for c in GRAPH_LIMITS],
)
def test_graph_limits(service, at_limit, past_limit, path, message):
    # GIVEN / WHEN a graph at the limit, and one just past it, are posted
    accepted = call(api_handler, "POST", "/graph/create", json_body=at_limit)
    refused = call(api_handler, "POST", "/graph/create", json_body=past_limit)

    # THEN the first is stored, the second refused with the limit at its path
    assert accepted.status == 201, accepted.text[:300]
    assert refused.status == 400, refused.text[:300]
    error = refused.json["error"]
    assert error["code"] == "invalid_graph"
    assert error["details"] == [{"path": path, "message": message}]


# -- requests -----------------------------------------------------------------------------
def greet(service) -> str:
    return service.create_graph({"start": "a", "nodes": {"a": {"fn": "rel_noop"}}}).graph_id


def test_request_body_limit(service):
    graph_id = greet(service)
    padding = MAX_BODY_BYTES - len(json.dumps({"graph_id": graph_id, "background": True, "pad": ""}))
    at_limit = json.dumps({"graph_id": graph_id, "background": True, "pad": "x" * padding})

    # a body of exactly 1 MiB is read (and refused for its unknown field); one byte more is not
    reply = call(api_handler, "POST", "/graph/run", body=at_limit)
    assert (reply.status, reply.json["error"]["code"]) == (400, "invalid_request")
    reply = call(api_handler, "POST", "/graph/run", body=at_limit + " ")
    assert reply.status == 413
    assert reply.json["error"] == {
        "code": "body_too_large", "message": f"request body is over {MAX_BODY_BYTES} bytes", "details": {"limit": MAX_BODY_BYTES}
    }  # fmt: skip


def test_request_nesting_limit(service):
    def state_nested(levels: int) -> str:  # the body object and the state object are 2 levels
        return (
            json.dumps({"graph_id": greet(service), "background": True, "state": {"a": 0}})[:-2]
            + ', "b": '
            + "[" * levels
            + "]" * levels
            + "}}"
        )

    assert call(api_handler, "POST", "/graph/run", body=state_nested(MAX_BODY_DEPTH - 2)).status == 202
    reply = call(api_handler, "POST", "/graph/run", body=state_nested(MAX_BODY_DEPTH - 1))
    assert reply.status == 400
    assert reply.json["error"] == {
        "code": "invalid_json",
        "message": f"request body nests arrays and objects deeper than {MAX_BODY_DEPTH} levels",
        "details": {"limit": MAX_BODY_DEPTH},
    }


def test_initial_state_size_limit(service):
    # on a stack without a state bucket (FLOWFORGE_STATE_BUCKET unset); with one, this
    # value is offloaded and the cap counts its reference (tests/functional/test_state_values.py)
    service.blobs = None
    graph_id = greet(service)
    # counted as compact UTF-8 JSON, with one separator byte per key
    overhead = len(json.dumps({"s": ""}, separators=(",", ":"))) + 1
    at_limit = {"s": "x" * (DEFAULT_MAX_STATE_BYTES - overhead)}
    past_limit = {"s": "x" * (DEFAULT_MAX_STATE_BYTES - overhead + 1)}

    assert (
        call(
            api_handler,
            "POST",
            "/graph/run",
            json_body={"graph_id": graph_id, "state": at_limit, "background": True},
        ).status
        == 202
    )
    reply = call(api_handler, "POST", "/graph/run", json_body={"graph_id": graph_id, "state": past_limit})
    assert reply.status == 413
    assert reply.json["error"] == {
        "code": "state_too_large",
        "message": f"state is {DEFAULT_MAX_STATE_BYTES + 1} bytes serialized; the limit is {DEFAULT_MAX_STATE_BYTES}",
        "details": {"size": DEFAULT_MAX_STATE_BYTES + 1, "limit": DEFAULT_MAX_STATE_BYTES},
    }


@pytest.mark.parametrize("key", ["", "k" * (MAX_STATE_KEY_BYTES + 1)], ids=["empty", "too-long"])
def test_state_key_limit(service, key):
    # regression: an empty key was stored, then every commit that wrote it failed (DynamoDB
    # refuses empty attribute names) until the dead-letter queue failed the run
    graph_id = greet(service)
    assert (
        call(
            api_handler,
            "POST",
            "/graph/run",
            json_body={"graph_id": graph_id, "state": {"k" * MAX_STATE_KEY_BYTES: 1}, "background": True},
        ).status
        == 202
    )

    reply = call(api_handler, "POST", "/graph/run", json_body={"graph_id": graph_id, "state": {key: 1}})

    assert reply.status == 400
    shown = key if len(key) <= 40 else key[:40] + "..."
    assert reply.json["error"] == {
        "code": "invalid_state",
        "message": f"state key {shown!r} must be 1 to {MAX_STATE_KEY_BYTES} bytes long (UTF-8)",
    }


@pytest.mark.parametrize(
    ("method", "path", "query", "message"),
    [
        ("GET", "/graph/" + "g" * 129, None, "path.graph_id: String should have at most 128 characters"),
        ("GET", "/graph/state/" + "r" * 129, None, "path.run_id: String should have at most 128 characters"),
        (
            "POST",
            "/graph/run/" + "r" * 129 + "/cancel",
            None,
            "path.run_id: String should have at most 128 characters",
        ),
        ("GET", "/graphs", {"limit": "101"}, "query.limit: Input should be less than or equal to 100"),
        ("GET", "/graphs", {"limit": "0"}, "query.limit: Input should be greater than or equal to 1"),
        (
            "GET",
            "/graphs",
            {"next_token": "t" * 1025},
            "query.next_token: String should have at most 1024 characters",
        ),
        (
            "GET",
            "/graph/state/r1",
            {"after": "-2"},
            "query.after: Input should be greater than or equal to -1",
        ),
    ],
    ids=["graph-id", "run-id", "cancel-run-id", "page-size", "page-size-0", "next-token", "after"],
)
def test_request_parameter_limits(service, method, path, query, message):
    reply = call(api_handler, method, path, query=query)

    assert reply.status == 400
    assert reply.json["error"]["code"] == "invalid_request"
    assert reply.json["error"]["message"] == f"invalid request: {message}"


def test_foreground_wait_limit(service):
    body = {"graph_id": greet(service), "wait_s": MAX_WAIT_S + 1}

    reply = call(api_handler, "POST", "/graph/run", json_body=body)

    assert reply.status == 400
    assert (
        reply.json["error"]["message"]
        == "invalid request: body.wait_s: Input should be less than or equal to 25"
    )


# -- while a run executes (the step handler on the queue) ----------------------------------
@default_registry.tool("rel_grow")
async def rel_grow(state, ctx):
    """Set ``state[params.key]`` to ``params.size`` characters."""
    return {ctx.params.get("key", "blob"): "x" * ctx.params["size"]}


@default_registry.tool("rel_shout")
async def rel_shout(state, ctx):
    """Fail with an exception message of ``params.size`` characters."""
    raise ValueError("!" * ctx.params["size"])


def run_on_the_queue(service, stack, aws, clock, graph: dict[str, Any], state: dict[str, Any] | None = None):
    pump = QueuePump(aws.client("sqs"), stack["queue_url"], clock, step_app.handler)
    run_id = service.start_run(service.create_graph(graph).graph_id, state or {}).run_id
    pump.drain()
    return service.get_run(run_id), service.store.list_logs(run_id), pump


def test_a_step_that_grows_the_state_past_its_limit_fails_the_run(service, stack, aws, clock):
    service.blobs = None  # without a state bucket: with one, the value would be offloaded
    grow = {"start": "a", "nodes": {"a": {"fn": "rel_grow", "params": {"size": DEFAULT_MAX_STATE_BYTES}}}}

    run, logs, _ = run_on_the_queue(service, stack, aws, clock, grow, {"kept": 1})

    assert run.status == "failed" and run.state == {"kept": "1"}  # the update was not applied
    assert run.error["type"] == "StateTooLargeError" and run.error["node"] == "a"
    assert run.error["message"].endswith(f"bytes serialized; the limit is {DEFAULT_MAX_STATE_BYTES}")
    assert logs[-1]["status"] == "failed" and logs[-1]["result"] == {}


def test_a_log_entry_shows_a_result_up_to_its_limit(service, stack, aws, clock):
    # without a state bucket: with one, a value this large is offloaded and its log entry
    # shows the reference (tests/functional/test_state_values.py)
    service.blobs = None
    size = MAX_LOG_RESULT_BYTES  # "blob":"xx...", is 10 bytes more than size: over the limit
    grow = {
        "start": "a",
        "nodes": {
            "a": {"fn": "rel_grow", "params": {"size": size}, "next": "b"},
            "b": {"fn": "rel_grow", "params": {"key": "c", "size": 10}},
        },
    }

    run, logs, _ = run_on_the_queue(service, stack, aws, clock, grow)

    assert run.status == "completed" and len(json.loads(run.state["blob"])) == size  # the state holds it all
    assert logs[0]["result"] == {"_truncated": True, "bytes": size + 10, "keys": ["blob"]}
    assert logs[1]["result"] == {"c": "x" * 10}


def test_a_failure_message_is_cut_to_its_limit(service, stack, aws, clock):
    # regression: a 500 KB exception text made the step's log entry too large for DynamoDB;
    # the commit failed on every delivery until the dead-letter queue failed the run
    shout = {"start": "a", "nodes": {"a": {"fn": "rel_shout", "params": {"size": 500_000}}}}

    run, logs, pump = run_on_the_queue(service, stack, aws, clock, shout)

    assert run.status == "failed" and run.error["type"] == "ValueError"
    assert (
        run.error["message"]
        == "!" * MAX_ERROR_MESSAGE_CHARS + f"... ({500_000 - MAX_ERROR_MESSAGE_CHARS} more characters)"
    )
    assert logs[0]["error"] == run.error
    assert len(pump.delivered) == 1  # committed at the first delivery


def test_a_tool_update_with_an_empty_key_fails_the_run_clearly(service, stack, aws, clock):
    grow = {"start": "a", "nodes": {"a": {"fn": "rel_grow", "params": {"key": "", "size": 1}}}}

    run, _, pump = run_on_the_queue(service, stack, aws, clock, grow)

    assert run.status == "failed" and run.error["type"] == "InvalidStateError"
    assert run.error["message"] == f"state key '' must be 1 to {MAX_STATE_KEY_BYTES} bytes long (UTF-8)"
    assert len(pump.delivered) == 1


@pytest.mark.parametrize(("max_steps", "steps"), [(5, 5), (25, 25)])
def test_max_steps_fails_the_run_when_reached(max_steps, steps):
    loop = {
        "start": "a",
        "max_steps": max_steps,
        "nodes": {
            "a": {"fn": "rel_add", "loop_condition": {"var": "a", "gte": 10**6}, "max_iterations": 10_000}
        },
    }

    result = run_graph_sync(compile_graph(loop), {}, sleep=None)

    assert result.status == "failed" and len(result.logs) == steps + 1
    assert result.error == {
        "node": "a",
        "type": "MaxStepsExceeded",
        "message": f"run reached max_steps={max_steps}",
    }


def test_max_iterations_fails_the_node_when_reached():
    loop = {
        "start": "a",
        "nodes": {"a": {"fn": "rel_add", "loop_condition": {"var": "a", "gte": 10**6}, "max_iterations": 3}},
    }

    result = run_graph_sync(compile_graph(loop), {}, sleep=None)

    assert [e["status"] for e in result.logs] == ["ok", "ok", "failed"]
    assert result.error == {
        "node": "a",
        "type": "LoopLimitExceeded",
        "message": "loop_condition still false after max_iterations=3",
    }


def test_a_timeout_fails_the_attempt():
    slow = {"start": "a", "nodes": {"a": {"fn": "rel_slow", "params": {"slow_times": 1}, "timeout_s": 0.01}}}

    result = run_graph_sync(compile_graph(slow), {}, sleep=None)

    assert result.error == {"node": "a", "type": "TimeoutError", "message": "node timed out after 0.01s"}


# -- WebSocket ------------------------------------------------------------------------------
def test_websocket_messages_stay_under_128_kb():
    entry = {"seq": 0, "node": "a", "status": "failed", "attempt": 1, "result": {"big": "x" * 200_000},
             "error": {"node": "a", "type": "ValueError", "message": "!" * 200_000}}  # fmt: skip

    data = encode_message(log_message("r1", entry))

    assert len(data) <= MAX_MESSAGE_BYTES
    message = json.loads(data)
    assert message["result"] == {
        "_truncated": True,
        "bytes": len(json.dumps({"big": "x" * 200_000}, separators=(",", ":"))),
    }
    assert message["error"]["_truncated"] is True and len(message["error"]["message"]) == 1000


def test_a_connection_follows_at_most_20_runs(ws):
    run_ids = [ws.start(counting(1)) for _ in range(21)]  # not started: followed until they end
    ws.connect("c1")

    for run_id in run_ids[:20]:
        assert ws.subscribe("c1", run_id) == {"statusCode": 200}
    response = ws.subscribe("c1", run_ids[20])

    assert response["statusCode"] == 429
    assert ws.api.messages("c1")[-1] == {
        "error": {"code": "too_many_subscriptions", "message": "a connection may follow at most 20 runs"}
    }


@pytest.mark.parametrize(("run_id", "status"), [("r" * 64, 404), ("r" * 65, 400)])
def test_websocket_run_id_format(ws, run_id, status):
    assert ws.connect("c1", run_id=run_id)["statusCode"] == status


#: Lambda's limit on a synchronous invocation's response (API Gateway then answers 500).
LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024


def test_a_run_state_response_fits_a_lambda_response():
    # GIVEN a run of 201 steps, 200 of them logging a 31 KiB result (the state stays small)
    service = RunService(InMemoryRunStore(), InMemoryStepQueue())
    graph = {
        "start": "a",
        "max_steps": 300,
        "nodes": {
            "a": {
                "fn": "rel_grow",
                "params": {"size": 31 * 1024},
                "loop_condition": {"var": "never", "exists": True},
                "max_iterations": 200,
                "catch": [{"next": "b"}],
            },
            "b": {"fn": "rel_noop"},
        },
    }
    run_id = service.start_run(service.create_graph(graph).graph_id, {}).run_id
    run_queued(service)
    set_app(service_app(service))
    try:
        # WHEN its state is read, then the pages its logs_next points to
        replies = [call(api_handler, "GET", f"/graph/state/{run_id}")]
        while replies[-1].status == 200 and replies[-1].json.get("logs_next") is not None:
            after = replies[-1].json["logs_next"]
            replies.append(call(api_handler, "GET", f"/graph/state/{run_id}", query={"after": after}))
    finally:
        set_app(None)

    # THEN each answer fits in a Lambda response, and together they hold every entry once
    assert all(r.status == 200 and len(r.text.encode()) <= LAMBDA_RESPONSE_BYTES for r in replies)
    seqs = [entry["seq"] for reply in replies for entry in reply.json["logs"]]
    assert seqs == list(range(service.get_run(run_id).step)) and len(seqs) == 201
