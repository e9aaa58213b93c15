"""A step whose record DynamoDB cannot store fails its run at once, never after 5 deliveries.

DynamoDB refuses an item over 400 KB with a ValidationException, which no retry can
fix: before these checks such a step was taken for an infrastructure failure, its tool
ran on every delivery and the dead-letter queue failed the run as StepDeliveryFailed.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from engine import compile_graph, default_registry, run_graph_sync
from engine.fanout import MAX_RESULT_BYTES
from engine.state import MAX_STATE_KEY_BYTES, decode_state
from functions.aws.dynamodb_codec import MAX_ITEM_BYTES

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

#: U+1F600 and on: four bytes each in UTF-8.
WIDE = 0x1F600


@default_registry.tool("test_wide_keys")
async def wide_keys(state, ctx):
    """``params.keys`` keys of ``params.chars`` four-byte characters each, value 1."""
    return {chr(WIDE + i) * ctx.params["chars"]: 1 for i in range(ctx.params["keys"])}


@default_registry.tool("test_blob")
async def blob(state, ctx):
    """``state['blob']`` set to ``params.size`` characters."""
    return {"blob": "x" * ctx.params["size"]}


def one_node(fn: str, **params) -> dict:
    return {"start": "a", "nodes": {"a": {"fn": fn, "params": params}}}


def run_once(service, pump, graph: dict, state: dict | None = None):
    run_id = service.start_run(service.create_graph(graph).graph_id, state or {"kept": 1}).run_id
    pump.drain()
    return service.get_run(run_id), service.store.list_logs(run_id)


def test_wide_state_keys_fail_the_step_at_the_first_delivery(service, pump):
    # regression: 60 keys of 1,024 four-byte characters are under the 256 KiB state cap, but
    # the step's slot (its update and the log marker listing the keys) was over 400 KB; the
    # tool ran 5 times and the run failed as StepDeliveryFailed
    graph = one_node("test_wide_keys", keys=60, chars=1024)

    run, logs = run_once(service, pump, graph)

    assert len(pump.delivered) == 1
    assert run.status == "failed" and run.state == {"kept": "1"}
    assert run.error["type"] == "InvalidStateError"
    assert run.error["message"].endswith(f"must be 1 to {MAX_STATE_KEY_BYTES} bytes long (UTF-8)")
    assert logs[-1]["status"] == "failed" and logs[-1]["result"] == {}


def test_keys_at_the_byte_limit_are_listed_in_a_bounded_log_marker(service, pump):
    # 60 keys of 1,024 bytes (256 four-byte characters): valid, and the marker that stands
    # for the 61 KB update lists as many key names as fit in its budget
    graph = one_node("test_wide_keys", keys=60, chars=MAX_STATE_KEY_BYTES // 4)

    run, logs = run_once(service, pump, graph)

    assert run.status == "completed" and len(run.state) == 61
    marker = logs[0]["result"]
    assert marker["_truncated"] is True and marker["bytes"] == 60 * (MAX_STATE_KEY_BYTES + 5)
    assert 0 < len(marker["keys"]) < 60
    assert len(json.dumps(marker["keys"], ensure_ascii=False).encode()) <= 4096


def test_a_step_record_over_dynamodbs_item_limit_fails_the_run_at_once(service, pump):
    # the state cap can be configured above what one item holds: the slot is measured
    # before it is written and the step fails the run with StateTooLargeError (without a
    # state bucket, FLOWFORGE_STATE_BUCKET unset: with one the value would be offloaded)
    service.blobs = None
    service.max_state_bytes = 1024 * 1024
    graph = one_node("test_blob", size=MAX_ITEM_BYTES)

    run, logs = run_once(service, pump, graph)

    assert len(pump.delivered) == 1
    assert run.status == "failed" and run.state == {"kept": "1"}
    assert run.error["type"] == "StateTooLargeError" and run.error["node"] == "a"
    assert f"at most {MAX_ITEM_BYTES} bytes" in run.error["message"]
    assert logs[-1]["status"] == "failed" and logs[-1]["result"] == {}


def test_dynamodbs_validation_exception_on_a_slot_fails_the_run_at_once(service, pump, aws):
    # whatever DynamoDB refuses as invalid is refused again on every delivery: the step
    # fails the run at once (here DynamoDB counts the item larger than the slot's estimate)
    refused = []

    def refuse_first_slot(request, **_):
        # raised before moto sees the request: DynamoDB's answer to an item over 400 KB
        body = json.loads(request.body)
        if body.get("Item", {}).get("kind", {}).get("S") == "log" and not refused:
            refused.append(body["Item"]["sk"]["S"])
            error = {
                "Code": "ValidationException",
                "Message": "Item size has exceeded the maximum allowed size",
            }
            raise ClientError({"Error": error}, "PutItem")

    client = service.store.client
    client.meta.events.register_first("before-send.dynamodb.PutItem", refuse_first_slot)
    try:
        run, logs = run_once(service, pump, one_node("test_blob", size=10))
    finally:
        client.meta.events.unregister("before-send.dynamodb.PutItem", refuse_first_slot)

    assert refused == ["LOG#0000000000"] and len(pump.delivered) == 1
    assert run.status == "failed" and run.error["type"] == "StateTooLargeError"
    assert "ValidationException" in run.error["message"]
    assert logs[-1]["status"] == "failed"


@default_registry.tool("test_item_blob")
async def item_blob(state, ctx):
    """``ctx.item`` characters: the item's result (for a branch, ``params.size`` under ``blob``)."""
    return "x" * ctx.item if ctx.item is not None else {"blob": "x" * ctx.params["size"]}


FAN_OUT_BLOBS = {
    "start": "m",
    "nodes": {
        "m": {"map": {"items": "sizes", "fn": "test_item_blob", "results": "blobs", "tolerated_failures": 1},
              "retry": {"max_attempts": 3, "interval_s": 0}, "next": "p"},
        "p": {"parallel": ["small", "large"]},
        "small": {"fn": "test_blob", "params": {"size": 10}},
        "large": {"fn": "test_item_blob", "params": {"size": MAX_RESULT_BYTES},
                  "retry": {"max_attempts": 3, "interval_s": 0}},
    },
}  # fmt: skip


def test_a_map_item_or_branch_result_over_the_item_limit_fails_at_its_first_attempt(service, pump):
    # regression: an execution's record over DynamoDB's 400 KB item was refused on every
    # delivery and the dead-letter queue failed the run as StepDeliveryFailed (on a stack
    # without a state bucket: with one, a large result is offloaded, test_blobs.py)
    service.blobs = None
    graph, state = FAN_OUT_BLOBS, {"sizes": [1, MAX_ITEM_BYTES, 2]}
    run_id = service.start_run(service.create_graph(graph).graph_id, state).run_id

    pump.drain()

    # THEN every message was delivered once: the large item failed at its first attempt
    # (tolerated), the large branch failed the parallel node, as in-process
    assert len(pump.delivered) == len({json.dumps(body, sort_keys=True) for body in pump.delivered})
    run, logs = service.get_run(run_id), service.store.list_logs(run_id)
    expected = run_graph_sync(compile_graph(graph), state, sleep=None, offload=False)  # no blob store
    assert (run.status, run.error) == (expected.status, expected.error)
    assert run.status == "failed" and run.error["type"] == "ParallelFailed"
    assert "StateTooLargeError" in run.error["message"]
    failed = [e for e in logs if e["status"] == "failed" and ("index" in e or "branch" in e)]
    assert [(e.get("index"), e.get("branch"), e["attempt"]) for e in failed] == [
        (1, None, 1),
        (None, "large", 1),
    ]
    assert all(e["error"]["type"] == "StateTooLargeError" for e in failed)
    assert decode_state(run.state)["blobs"] == ["x", None, "xx"]
