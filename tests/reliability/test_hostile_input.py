"""Hostile input through the real HTTP and WebSocket handlers, on template.yaml's table.

Every request a client can get wrong is answered with a clear 4xx in the API's one error
shape — never a 5xx, never a stack trace — and leaves nothing behind: no graph, run, log
or subscription item and no step message from a refused request.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from engine import compile_graph, run_graph_sync
from engine.registry import default_registry
from functions.api.app import handler as api_handler
from functions.api.body import MAX_BODY_DEPTH
from tests.reliability import figures
from tests.reliability.api_client import Reply, call

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture(autouse=True)
def counted():
    """Count each case run (one hostile request, frame or connect answered) for the figures."""
    yield
    figures.record("hostile_input", {"cases": 1}, quiet=True)


GRAPH = {
    "name": "hostile",
    "start": "a",
    "nodes": {"a": {"fn": "rel_add", "next": "b"}, "b": {"fn": "rel_noop"}},
}


def deep(levels: int, leaf: str = "1") -> str:
    return "[" * levels + leaf + "]" * levels


def nodes(count: int) -> dict[str, Any]:
    """``count`` nodes chained by ``next`` (compact ids, so the size cap is not what trips)."""
    return {
        f"n{i}": {"fn": "rel_noop", **({"next": f"n{i + 1}"} if i + 1 < count else {})} for i in range(count)
    }


def with_node(**fields: Any) -> dict[str, Any]:
    return {"start": "a", "nodes": {"a": {"fn": "rel_noop", **fields}}}


def branch(when: Any) -> dict[str, Any]:
    return {"start": "a", "nodes": {"a": {"fn": "rel_noop", "branches": [{"when": when, "next": "a"}]}}}


# (id, method, path, request kwargs, status, error code)
CREATE = "/graph/create"
RUN = "/graph/run"
HOSTILE_HTTP = [
    ("malformed-json", "POST", CREATE, {"body": '{"start": "a",'}, 400, "invalid_json"),
    ("trailing-garbage", "POST", CREATE, {"body": '{"start": "a"} rm -rf /'}, 400, "invalid_json"),
    ("nan", "POST", RUN, {"body": '{"graph_id": "g", "state": {"x": NaN}}'}, 400, "invalid_json"),
    ("lone-surrogate", "POST", RUN, {"body": '{"graph_id": "\\ud800"}'}, 400, "invalid_request"),
    ("not-utf8", "POST", CREATE, {"body": b"\xff\xfe{\x00"}, 400, "invalid_json"),
    ("empty-body", "POST", CREATE, {"body": ""}, 400, "invalid_request"),
    ("null-body", "POST", CREATE, {"body": "null"}, 400, "invalid_request"),
    ("array-graph-body", "POST", CREATE, {"json_body": [GRAPH, "junk"]}, 400, "invalid_graph"),
    ("array-run-body", "POST", RUN, {"json_body": [{"graph_id": "<graph>", "background": True}]}, 400, "invalid_request"),
    ("string-body", "POST", RUN, {"json_body": "run it"}, 400, "invalid_request"),
    ("wrong-types-graph", "POST", CREATE, {"json_body": {"start": 1, "nodes": [], "max_steps": "9"}}, 400, "invalid_graph"),
    ("wrong-types-run", "POST", RUN, {"json_body": {"graph_id": 5, "state": [], "background": "yes"}}, 400, "invalid_request"),
    ("unknown-field", "POST", RUN, {"json_body": {"graph_id": "g", "eval": "1"}}, 400, "invalid_request"),
    ("huge-body", "POST", CREATE, {"body": "x" * (6 * 1024 * 1024)}, 413, "body_too_large"),
    ("huge-unicode-body", "POST", RUN, {"body": '{"graph_id": "' + "é" * 3_000_000 + '"}'}, 413, "body_too_large"),
    ("deep-array-body", "POST", CREATE, {"body": deep(10_000)}, 400, "invalid_json"),
    ("deep-object-body", "POST", CREATE, {"body": '{"a":' * 10_000 + "1" + "}" * 10_000}, 400, "invalid_json"),
    ("deep-state", "POST", RUN, {"body": '{"graph_id": "g", "state": {"a": ' + deep(10_000) + "}}"}, 400, "invalid_json"),
    ("deep-params", "POST", CREATE, {"json_body": with_node(params={"p": json.loads(deep(MAX_BODY_DEPTH))})}, 400, "invalid_json"),
    ("10000-nodes", "POST", CREATE, {"json_body": {"start": "n0", "nodes": nodes(10_000)}}, 400, "invalid_graph"),
    ("graph-over-256k", "POST", CREATE, {"json_body": with_node(description="d", params={"p": "x" * 300_000})}, 400, "invalid_graph"),
    ("unicode-node-id", "POST", CREATE, {"json_body": {"start": "ノード", "nodes": {"ノード": {"fn": "rel_noop"}}}}, 400, "invalid_graph"),
    ("unicode-graph-name", "POST", CREATE, {"json_body": {**GRAPH, "name": "grâph 🚀"}}, 400, "invalid_graph"),
    ("rtl-override-node-id", "POST", CREATE, {"json_body": {"start": "a\u202eb", "nodes": {"a\u202eb": {"fn": "rel_noop"}}}}, 400, "invalid_graph"),
    ("unicode-graph-id", "GET", "/graph/" + quote("グラフ"), {}, 404, "not_found"),
    ("unicode-run-id", "GET", "/graph/state/" + quote("実行🚀"), {}, 404, "not_found"),
    ("unicode-run-cancel", "POST", f"/graph/run/{quote('実行')}/cancel", {}, 404, "not_found"),
    ("traversal-graph-id", "GET", "/graph/..%2F..%2Fetc%2Fpasswd", {}, 404, "not_found"),
    ("long-graph-id", "GET", "/graph/" + "g" * 10_000, {}, 400, "invalid_request"),
    ("unicode-run-graph-id", "POST", RUN, {"json_body": {"graph_id": "グラフ"}}, 404, "not_found"),
    ("unknown-tool", "POST", CREATE, {"json_body": with_node(fn="rm_rf")}, 400, "invalid_graph"),
    ("code-as-tool", "POST", CREATE, {"json_body": with_node(fn="__import__('os').system('id')")}, 400, "invalid_graph"),
    ("builtin-as-tool", "POST", CREATE, {"json_body": with_node(fn="print")}, 400, "invalid_graph"),
    ("code-as-condition", "POST", CREATE, {"json_body": branch("__import__('os')")}, 400, "invalid_graph"),
    ("code-as-loop-condition", "POST", CREATE, {"json_body": with_node(loop_condition="exec('1')")}, 400, "invalid_graph"),
    ("dunder-operator", "POST", CREATE, {"json_body": branch({"var": "a", "__eq__": 1})}, 400, "invalid_graph"),
    ("eval-operator", "POST", CREATE, {"json_body": branch({"var": "a", "eval": "1 + 1"})}, 400, "invalid_graph"),
    ("code-rule", "POST", CREATE, {"json_body": branch({"lambda": "state: True"})}, 400, "invalid_graph"),
    ("var-not-a-path", "POST", CREATE, {"json_body": branch({"var": ["__class__"], "eq": 1})}, 400, "invalid_graph"),
    ("deep-rule", "POST", CREATE, {"json_body": branch(json.loads('{"not":' * 40 + '{"var": "a", "exists": true}' + "}" * 40))}, 400, "invalid_graph"),
    # values under the offload threshold stay in the run: together over its 256 KiB cap
    ("state-over-limit", "POST", RUN, {"json_body": {"graph_id": "<graph>", "state": {f"k{i}": "x" * 30_000 for i in range(10)}}}, 413, "state_too_large"),
    # one value offloaded to the state bucket, but over the whole state's cap
    ("state-over-total", "POST", RUN, {"json_body": {"graph_id": "<graph>", "state": {"blob": "x" * 5_500_000}}, "total": 4_000_000}, 413, "state_too_large"),
    ("state-not-object", "POST", RUN, {"json_body": {"graph_id": "<graph>", "state": "x"}}, 400, "invalid_request"),
    ("bad-limit", "GET", "/graphs", {"query": {"limit": "-1"}}, 400, "invalid_request"),
    ("limit-not-a-number", "GET", "/graphs", {"query": {"limit": "1e9; drop table"}}, 400, "invalid_request"),
    ("bad-after", "GET", "/graph/state/r1", {"query": {"after": "-5"}}, 400, "invalid_request"),
    ("xml", "POST", CREATE, {"body": "<graph/>", "headers": {"content-type": "application/xml"}}, 415, "unsupported_media_type"),
    ("multipart-no-boundary-create", "POST", CREATE, {"json_body": GRAPH, "headers": {"content-type": "multipart/form-data"}}, 415, "unsupported_media_type"),
    ("multipart-no-boundary-run", "POST", RUN, {"json_body": {"graph_id": "<graph>"}, "headers": {"content-type": "multipart/form-data"}}, 415, "unsupported_media_type"),
    ("multipart-boundary", "POST", CREATE, {"body": "--x\r\n\r\n--x--", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 415, "unsupported_media_type"),
    ("form-encoded-graph", "POST", CREATE, {"json_body": GRAPH, "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type"),
    ("garbage-content-type", "POST", RUN, {"json_body": {"graph_id": "<graph>"}, "headers": {"content-type": ";;/;"}}, 415, "unsupported_media_type"),
    ("surrogate-state-value", "POST", RUN, {"body": '{"graph_id": "<graph>", "state": {"a": "\\ud800"}}'}, 400, "invalid_request"),
    ("surrogate-state-key", "POST", RUN, {"body": '{"graph_id": "<graph>", "state": {"\\udfff": 1}}'}, 400, "invalid_request"),
    ("surrogate-graph-params", "POST", CREATE, {"body": json.dumps(with_node(params={"p": ["ok", "\ud800"]}))}, 400, "invalid_request"),
    ("get-create", "GET", CREATE, {}, 405, "method_not_allowed"),
    ("get-run", "GET", RUN, {}, 405, "method_not_allowed"),
    ("unknown-route", "GET", "/admin", {}, 404, "not_found"),
    ("wrong-method", "DELETE", "/graphs", {}, 405, "method_not_allowed"),
]  # fmt: skip


def stored(stack, aws) -> set[tuple[str, str]]:
    pages = aws.client("dynamodb").get_paginator("scan").paginate(TableName=stack["table"])
    return {(i["pk"]["S"], i["sk"]["S"]) for page in pages for i in page["Items"]}


def queued(stack, aws) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
    attributes = aws.client("sqs").get_queue_attributes(QueueUrl=stack["queue_url"], AttributeNames=names)
    return sum(int(v) for v in attributes["Attributes"].values())


def bucket(stack, aws) -> set[str]:
    listing = aws.client("s3").list_objects_v2(Bucket=stack["bucket"]).get("Contents", [])
    return {o["Key"] for o in listing}


def assert_clear_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    """A 4xx in the API's one error shape, saying something, with no trace."""
    assert reply.status == status, reply.text[:500]
    body = reply.json
    assert set(body) == {"error"} and set(body["error"]) <= {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in reply.text and 'File "' not in reply.text
    return body["error"]


@pytest.mark.parametrize(("method", "path", "request_kwargs", "status", "code"),
                         [case[1:] for case in HOSTILE_HTTP], ids=[case[0] for case in HOSTILE_HTTP])  # fmt: skip
def test_hostile_requests_get_a_clear_4xx_and_store_nothing(
    service, stack, aws, method, path, request_kwargs, status, code
):
    # GIVEN a stored graph (its id replaces "<graph>"), and what the table and the queue hold
    graph_id = service.create_graph(GRAPH).graph_id
    if "json_body" in request_kwargs:
        text = json.dumps(request_kwargs["json_body"]).replace('"<graph>"', json.dumps(graph_id))
        request_kwargs = {**request_kwargs, "json_body": json.loads(text)}
    if isinstance(request_kwargs.get("body"), str):
        request_kwargs = {**request_kwargs, "body": request_kwargs["body"].replace("<graph>", graph_id)}
    if "total" in request_kwargs:  # MaxTotalStateBytes
        service.max_total_state_bytes = request_kwargs.pop("total")
    before, messages, objects = stored(stack, aws), queued(stack, aws), bucket(stack, aws)

    # WHEN the hostile request arrives
    reply = call(api_handler, method, path, **request_kwargs)

    # THEN it is refused with a clear client error, and nothing was stored or queued
    assert_clear_error(reply, status, code)
    assert stored(stack, aws) == before
    assert queued(stack, aws) == messages
    assert bucket(stack, aws) == objects


def test_every_problem_of_a_hostile_graph_is_listed_with_its_path(service):
    # GIVEN a graph mixing code for a tool, code for a condition and an unknown operator
    graph = {
        "start": "a",
        "nodes": {
            "a": {"fn": "__import__('os')", "branches": [{"when": "eval('1')", "next": "b"}]},
            "b": {"fn": "rel_noop", "loop_condition": {"var": "x", "__class__": 1}},
        },
    }

    # WHEN it is posted
    error = assert_clear_error(call(api_handler, "POST", CREATE, json_body=graph), 400, "invalid_graph")

    # THEN every problem is reported at its path, none of it executed
    paths = sorted(d["path"] for d in error["details"])
    assert paths == ["nodes.a.branches.0.when", "nodes.a.fn", "nodes.b.loop_condition"]


def test_a_rule_var_walks_keys_only_never_attributes(service):
    # GIVEN a rule whose var names dunder attributes (valid: a var is a path of keys)
    graph = {
        "start": "probe",
        "nodes": {
            "probe": {
                "fn": "rel_noop",
                "branches": [{"when": {"var": "__class__.__mro__", "exists": True}, "next": "found"}],
            },
            "found": {"fn": "rel_noop"},
        },
    }
    compiled = compile_graph(graph)

    # WHEN runs with and without such keys are made
    plain = run_graph_sync(compiled, {"x": 1}, sleep=None)
    keyed = run_graph_sync(compiled, {"__class__": {"__mro__": 0}}, sleep=None)

    # THEN the state's dict has no "__class__" key (the dict's class is not reached), and a
    # state that has the key matches
    assert [e["node"] for e in plain.logs] == ["probe"]
    assert [e["node"] for e in keyed.logs] == ["probe", "found"]


# -- regression: deep nesting used to exhaust the recursion limit -------------------------
@pytest.mark.parametrize("levels", [MAX_BODY_DEPTH + 1, 900, 10_000])
def test_a_body_nested_past_the_limit_is_400_not_500(service, levels):
    # GIVEN a graph whose params nest ``levels`` deep (500 used to be a 500: the store's copy
    # recursed; 10,000 broke the JSON parser)
    body = '{"start": "a", "nodes": {"a": {"fn": "rel_noop", "params": {"p": ' + deep(levels) + "}}}}"

    # WHEN it is posted
    error = assert_clear_error(call(api_handler, "POST", CREATE, body=body), 400, "invalid_json")

    # THEN the limit is named
    assert error["details"] == {"limit": MAX_BODY_DEPTH}


def test_a_body_at_the_nesting_limit_is_accepted(service):
    state = {"a": json.loads(deep(MAX_BODY_DEPTH - 2))}  # body object + state object + 62 arrays
    graph_id = service.create_graph(GRAPH).graph_id

    reply = call(
        api_handler, "POST", RUN, json_body={"graph_id": graph_id, "state": state, "background": True}
    )

    assert reply.status == 202, reply.text


@default_registry.tool("rel_deep_result")
async def rel_deep_result(state, ctx):
    """Return a value nested 10,000 levels deep (more than JSON encoding can recurse)."""
    value: Any = 1
    for _ in range(10_000):
        value = [value]
    return {"deep": value}


def test_a_tool_returning_a_value_nested_too_deep_fails_the_run_clearly():
    # GIVEN a tool whose update cannot be encoded as JSON (it used to raise RecursionError
    # out of the step: an infrastructure failure, redelivered until the dead-letter queue)
    graph = compile_graph({"start": "a", "nodes": {"a": {"fn": "rel_deep_result"}}})

    # WHEN it runs
    result = run_graph_sync(graph, {}, sleep=None)

    # THEN the run fails at the node with InvalidStateError, its state untouched
    assert result.status == "failed"
    assert result.error["type"] == "InvalidStateError" and "too deeply" in result.error["message"]
    assert result.state == {}


# -- WebSocket ------------------------------------------------------------------------------
HOSTILE_FRAMES = [
    ("not-json", "rm -rf /", "invalid_message"),
    ("null", "null", "invalid_message"),
    ("array", '[{"action": "subscribe"}]', "invalid_message"),
    ("deep-array", deep(10_000), "invalid_message"),
    ("deep-object", '{"action": "subscribe", "run_id": ' + deep(10_000, '"r"') + "}", "invalid_message"),
    ("huge-frame", json.dumps({"action": "subscribe", "run_id": "r" * 200_000}), "invalid_message"),
    ("code-action", '{"action": "__import__(\'os\').system(\'id\')"}', "unknown_action"),
    ("dunder-action", '{"action": "__class__"}', "unknown_action"),
    ("list-action", '{"action": ["subscribe"], "run_id": "abc"}', "unknown_action"),
    ("number-run-id", '{"action": "subscribe", "run_id": 5}', "invalid_message"),
    ("unicode-run-id", '{"action": "subscribe", "run_id": "実行🚀"}', "invalid_message"),
    ("long-run-id", json.dumps({"action": "subscribe", "run_id": "r" * 65}), "invalid_message"),
    ("negative-after", '{"action": "subscribe", "run_id": "abc", "after": -2}', "invalid_message"),
    ("float-after", '{"action": "subscribe", "run_id": "abc", "after": 1.5}', "invalid_message"),
    ("extra-field", '{"action": "subscribe", "run_id": "abc", "eval": "1"}', "invalid_message"),
    ("unknown-run", '{"action": "subscribe", "run_id": "no-such-run"}', "not_found"),
]  # fmt: skip


def sub_items(ws) -> list[dict[str, Any]]:
    return ws.items("sub")


@pytest.mark.parametrize(
    ("frame", "code"), [c[1:] for c in HOSTILE_FRAMES], ids=[c[0] for c in HOSTILE_FRAMES]
)
def test_hostile_frames_are_answered_with_an_error_and_store_nothing(ws, frame, code):
    # GIVEN an open connection
    ws.connect("c1")
    connections = ws.items("conn")

    # WHEN a hostile frame arrives (on $default, where unknown actions land)
    response = ws.send("c1", frame)

    # THEN the route answers 4xx, the client gets one error message under 128 KB, the
    # connection stays open and nothing but the connection is stored
    assert 400 <= response["statusCode"] < 500
    (message,) = ws.api.messages("c1")
    assert message["error"]["code"] == code and message["error"]["message"]
    assert len(ws.api.posted["c1"][0]) < 128_000
    assert "c1" in ws.api.open
    assert sub_items(ws) == [] and ws.items("conn") == connections


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"run_id": "実行"}, 400),
        ({"run_id": "r" * 65}, 400),
        ({"run_id": "abc", "after": "-2"}, 400),
        ({"run_id": "abc", "after": "1e9999"}, 400),
        ({"run_id": "no-such-run"}, 404),
    ],
    ids=["unicode-run-id", "long-run-id", "negative-after", "huge-after", "unknown-run"],
)
def test_hostile_connects_are_refused_with_a_reason_and_store_nothing(ws, query, status):
    response = ws.connect("c1", **query)

    assert response["statusCode"] == status
    assert json.loads(response["body"])["error"]["message"]
    assert ws.items("conn") == [] and sub_items(ws) == []
