"""On DynamoDB: a log entry's stored text is the WebSocket frame, byte for byte, live and
replayed; entries stored in the previous shape (the tick's dict as JSON) still go out as
they did (engine/logentry.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.logstream import Subscription
from functions.broadcast.app import handler as broadcast_handler
from tests.functional.pump import LambdaContext, load_event
from tests.functional.test_websocket import assert_complete, counting, summarization, ws

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
__all__ = ["ws"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def slots(ws, run_id: str) -> list[dict[str, Any]]:
    """The run's slots that hold a log entry (a step's, a map item's), in seq order."""
    items = ws.dynamodb.query(
        TableName=ws.table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :log)",
        ExpressionAttributeValues={":pk": {"S": f"RUN#{run_id}"}, ":log": {"S": "LOG#"}},
        ConsistentRead=True,
    )["Items"]
    return [item for item in items if item["kind"]["S"] in ("log", "exec")]


def entry_frames(ws, connection_id: str) -> list[bytes]:
    return [data for data in ws.api.posted[connection_id] if b'"done":true' not in data]


def test_the_stored_entry_text_is_the_frame_live_and_replayed(ws):
    # GIVEN the summarization workflow followed live by one client
    graph, state = summarization()
    run_id = ws.start(graph, state)
    ws.connect("live")
    ws.subscribe("live", run_id)
    # WHEN it runs, each slot reaching the broadcaster through the table's stream, and a
    # second client replays it after it ended
    ws.finish()
    ws.connect("replay")
    ws.subscribe("replay", run_id)
    # THEN both received each slot's stored entry text as the frame, byte for byte
    stored = [item["entry"]["S"].encode() for item in slots(ws, run_id)]
    assert len(stored) >= 4 and any(b'"index":' in text for text in stored)
    assert entry_frames(ws, "live") == stored
    assert entry_frames(ws, "replay") == stored
    assert_complete(ws, "replay", run_id)


def previous_shape(item: dict[str, Any]) -> str:
    """The slot's entry as the previous version stored it: the tick's dict with run_id."""
    message = json.loads(item["entry"]["S"])
    entry = {
        "seq": message["seq"],
        "node": message["node"],
        "attempt": message["attempt"],
        "status": message["status"],
        "started_at": message["ts"],
        "duration_ms": message["duration_ms"],
        "result": message["result"],
        "next": message["next"],
        "error": message["error"],
        "run_id": message["run_id"],
    }
    return _dumps(entry)


def test_a_run_stored_in_the_previous_shape_replays_and_reads_as_before(ws):
    # GIVEN a run whose entries were stored before entries were kept as messages
    run_id = ws.start(counting(3))
    ws.finish()
    now = slots(ws, run_id)
    frames, fields = [item["entry"]["S"].encode() for item in now], ws.logs(run_id)
    for item in now:
        ws.dynamodb.update_item(
            TableName=ws.table,
            Key={"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression="SET entry = :old",
            ExpressionAttributeValues={":old": {"S": previous_shape(item)}},
        )
    assert all(item["entry"]["S"].startswith('{"seq":') for item in slots(ws, run_id))
    # WHEN a client replays it, and GET /graph/state reads it
    ws.connect("c1")
    ws.subscribe("c1", run_id)
    # THEN it gets the same frames as from entries stored now, and the same fields
    assert entry_frames(ws, "c1") == frames
    assert ws.logs(run_id) == fields
    assert_complete(ws, "c1", run_id)


def test_a_stream_record_of_the_previous_shape_is_sent_as_before(ws):
    # GIVEN a subscriber to the run of the fixture's stream record, a log item written in
    # the previous shape (in flight in the stream during a deploy)
    event = load_event("stream_log_insert")
    run_id = event["Records"][0]["dynamodb"]["NewImage"]["run_id"]["S"]
    ws.connect("c1")
    now = ws.clock()
    ws.stream.subs.add(Subscription(run_id, "c1", created_at=now, expires_at=int(now) + 7200), 20)
    # WHEN the broadcaster gets it
    assert broadcast_handler(event, LambdaContext()) == {"batchItemFailures": []}
    # THEN the client got the message the broadcaster always sent for it
    assert ws.api.posted["c1"] == [
        b'{"run_id":"3f1c0e0c8c4d4b8e9a7a6f5e4d3c2b1a","seq":0,"node":"split",'
        b'"result":{"chunks":["..."]},"status":"ok","attempt":1,"duration_ms":1.5,'
        b'"ts":"2025-06-15T12:00:02.000Z","next":"summarize","error":null}'
    ]
