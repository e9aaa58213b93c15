"""A tool's output with text UTF-8 cannot encode (a lone surrogate) fails its run at once.

Such text cannot be stored, logged or sent over the WebSocket: it used to raise
UnicodeEncodeError in the step handler, taken for an infrastructure failure, so the
tool ran on every delivery until the dead-letter queue failed the run.
"""

from __future__ import annotations

import json

import pytest

from engine import default_registry

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

#: What the test tool returns, by name: valid, or a lone surrogate in a key or a value.
OUTPUTS = {
    "valid": {"fine": True},
    "value": {"text": "ok \ud800"},
    "key": {"k\udfff": 1},
    "nested_key": {"doc": {"a": [{"b\udc00": 1}]}},
}


@default_registry.tool("test_surrogate_output")
async def surrogate_output(state, ctx):
    """Return ``OUTPUTS[params.kind]``."""
    return OUTPUTS[ctx.params["kind"]]


@default_registry.tool("test_surrogate_error")
async def surrogate_error(state, ctx):
    """Fail with a message holding a lone surrogate."""
    raise ValueError("cannot read \ud800 here")


def run_once(service, pump, node: dict):
    graph = {"start": "a", "nodes": {"a": node}}
    run_id = service.start_run(service.create_graph(graph).graph_id, {"kept": 1}).run_id
    pump.drain()
    return service.get_run(run_id), service.store.list_logs(run_id)


@pytest.mark.parametrize("kind", ["value", "key", "nested_key"])
def test_a_tool_returning_a_lone_surrogate_fails_the_run_at_the_first_delivery(service, pump, kind):
    # GIVEN a node whose tool returns text UTF-8 cannot encode, with retries allowed
    node = {"fn": "test_surrogate_output", "params": {"kind": kind}, "retry": {"max_attempts": 3}}

    # WHEN the run's steps are delivered
    run, logs = run_once(service, pump, node)

    # THEN its one delivery fails the run, naming the key, and nothing of the update is kept
    assert len(pump.delivered) == 1
    assert run.status == "failed" and run.state == {"kept": "1"}
    assert run.error["type"] == "InvalidStateError"
    assert "not valid UTF-8" in run.error["message"] and "lone surrogate" in run.error["message"]
    assert logs[-1]["status"] == "failed" and logs[-1]["result"] == {}
    json.dumps(logs[-1], ensure_ascii=False).encode()  # the entry itself is UTF-8 text


def test_a_tool_error_message_with_a_lone_surrogate_is_logged_escaped(service, pump):
    # GIVEN a tool whose exception message holds a lone surrogate
    # WHEN its run is delivered
    run, logs = run_once(service, pump, {"fn": "test_surrogate_error"})

    # THEN the run fails with the tool's error, the surrogate escaped, at the first delivery
    assert len(pump.delivered) == 1
    assert run.status == "failed"
    assert run.error == {"node": "a", "type": "ValueError", "message": "cannot read \\ud800 here"}
    assert logs[-1]["error"] == run.error


@default_registry.tool("test_surrogate_item")
async def surrogate_item(state, ctx):
    """The item back, or, for the item ``"bad"``, text with a lone surrogate."""
    return "x\ud800" if ctx.item == "bad" else ctx.item


FAN_OUT = {
    "start": "m",
    "nodes": {
        "m": {"map": {"items": "xs", "fn": "test_surrogate_item", "results": "ys", "tolerated_failures": 1},
              "next": "p"},
        "p": {"parallel": ["good", "bad"]},
        "good": {"fn": "test_surrogate_output", "params": {"kind": "valid"}},
        "bad": {"fn": "test_surrogate_output", "params": {"kind": "key"}},
    },
}  # fmt: skip


def test_a_map_item_or_branch_returning_a_lone_surrogate_fails_that_execution_once(service, pump):
    # GIVEN a map whose item "bad" returns a lone surrogate (one failure tolerated), then
    # a parallel node whose branch "bad" returns one in a key
    graph, state = FAN_OUT, {"xs": ["a", "bad", "c"]}
    run_id = service.start_run(service.create_graph(graph).graph_id, state).run_id

    # WHEN the run's messages are delivered
    pump.drain()

    # THEN each message was delivered once: the bad item failed (tolerated), the bad
    # branch failed the parallel node, each with a clear InvalidToolResult
    assert len(pump.delivered) == len(set(map(str, pump.delivered)))
    run = service.get_run(run_id)
    assert run.status == "failed" and run.error["node"] == "p"
    failed = [
        e
        for e in service.store.list_logs(run_id)
        if e["status"] == "failed" and ("index" in e or "branch" in e)
    ]
    assert [(e.get("index"), e.get("branch")) for e in failed] == [(1, None), (None, "bad")]
    for entry in failed:
        assert entry["error"]["type"] == "InvalidToolResult" and "lone surrogate" in entry["error"]["message"]
