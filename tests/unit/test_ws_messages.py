"""What a WebSocket client receives: log entries, the done message, errors, size limits."""

from __future__ import annotations

import json

from engine.logmessages import (
    MAX_MESSAGE_BYTES,
    done_message,
    encode_message,
    error_message,
    log_message,
)
from engine.logstream import RunEnd
from engine.ports import RunRecord

ENTRY = {
    "seq": 3,
    "node": "refine",
    "attempt": 2,
    "status": "ok",
    "started_at": "2025-06-15T12:00:03.000Z",
    "duration_ms": 12.5,
    "result": {"summary": "short"},
    "next": "refine",
    "error": None,
    "run_id": "r1",
}


def run(status: str, step: int, error=None) -> RunRecord:
    return RunRecord("r1", "g1", status, None, step, {}, "t", "t", 0.0, error=error)


def test_a_log_message_carries_every_field_of_the_design():
    # GIVEN a log entry as the step loop stores it
    # WHEN it becomes a message
    message = log_message("r1", ENTRY)

    # THEN it has DESIGN.md §6's fields (seed fields node and result included), ts = started_at
    assert message == {
        "run_id": "r1",
        "seq": 3,
        "node": "refine",
        "result": {"summary": "short"},
        "status": "ok",
        "attempt": 2,
        "duration_ms": 12.5,
        "ts": "2025-06-15T12:00:03.000Z",
        "next": "refine",
        "error": None,
    }


def test_done_message_has_the_error_only_when_the_run_failed():
    # GIVEN a completed and a failed run
    completed = RunEnd.of(run("completed", 5))
    error = {"node": "split", "type": "RuntimeError", "message": "boom"}
    failed = RunEnd.of(run("failed", 1, error))

    # THEN the done messages say so; last_seq counts the run's entries (0..step-1)
    assert done_message("r1", completed.status, completed.error) == {
        "run_id": "r1",
        "done": True,
        "status": "completed",
    }
    assert done_message("r1", failed.status, failed.error) == {
        "run_id": "r1",
        "done": True,
        "status": "failed",
        "error": error,
    }
    assert completed.last_seq == 4
    assert RunEnd.of(run("running", 3)) is None
    assert RunEnd.of(None) is None


def test_error_message_shape():
    assert error_message("not_found", "run 'x' not found") == {
        "error": {"code": "not_found", "message": "run 'x' not found"}
    }
    assert error_message("unknown_action", "m", {"actions": ["subscribe"]})["error"]["details"] == {
        "actions": ["subscribe"]
    }


def test_small_messages_are_sent_unchanged_as_utf8_json():
    data = encode_message(log_message("r1", {**ENTRY, "result": {"text": "héllo ✓"}}))
    assert json.loads(data.decode("utf-8"))["result"] == {"text": "héllo ✓"}
    assert "héllo".encode() in data  # not \\u-escaped: ensure_ascii is off


def test_an_oversized_result_is_replaced_by_a_marker_never_dropped():
    # GIVEN an entry whose result is larger than API Gateway's 128 KB message limit
    result = {"blob": "x" * 200_000}
    # WHEN it is encoded
    data = encode_message(log_message("r1", {**ENTRY, "result": result}))

    # THEN it fits, keeps every other field, and says how big the result was
    message = json.loads(data)
    assert len(data) <= MAX_MESSAGE_BYTES
    assert message["result"] == {"_truncated": True, "bytes": len(json.dumps(result, separators=(",", ":")))}
    assert message["seq"] == 3 and message["node"] == "refine" and message["status"] == "ok"


def test_an_oversized_error_text_is_cut_with_a_marker():
    # GIVEN a failed entry whose exception text alone is 300 KB
    error = {"node": "fetch", "type": "ValueError", "message": "y" * 300_000}
    data = encode_message(log_message("r1", {**ENTRY, "status": "failed", "error": error}))

    # THEN the error keeps its node and type, and a marked, shortened message
    message = json.loads(data)
    assert len(data) <= MAX_MESSAGE_BYTES
    assert message["error"]["node"] == "fetch" and message["error"]["type"] == "ValueError"
    assert message["error"]["_truncated"] is True
    assert message["error"]["message"] == "y" * 1000


def test_a_done_message_with_a_huge_error_still_fits():
    error = {"node": "n", "type": "E", "message": "z" * 200_000}
    data = encode_message(done_message("r1", "failed", error))
    message = json.loads(data)
    assert len(data) <= MAX_MESSAGE_BYTES
    assert message["done"] is True and message["status"] == "failed"
    assert message["error"]["_truncated"] is True


def test_when_nothing_else_helps_only_the_essential_fields_remain():
    # GIVEN a tight limit that even a shortened error does not fit
    message = log_message("r1", {**ENTRY, "error": {"message": "m" * 5000, "extra": "e" * 5000}})
    data = encode_message(message, limit=400)

    # THEN the entry still arrives, identifiable by run and seq, marked as truncated
    decoded = json.loads(data)
    assert len(data) <= 400
    assert decoded["run_id"] == "r1" and decoded["seq"] == 3 and decoded["_truncated"] is True
    assert "error" not in decoded and "result" not in decoded


def test_a_fan_out_executions_message_says_its_index_or_branch():
    from engine.logmessages import log_message

    item = log_message("r1", {"seq": 3, "node": "m", "index": 2, "attempt": 1, "status": "ok", "result": 4})
    branch = log_message(
        "r1", {"seq": 4, "node": "p", "branch": "fetch_news", "attempt": 2, "status": "retry"}
    )
    plain = log_message("r1", {"seq": 5, "node": "m", "attempt": 1, "status": "ok"})
    assert (item["index"], item["node"], item["result"]) == (2, "m", 4)
    assert (branch["branch"], branch["attempt"]) == ("fetch_news", 2)
    assert "index" not in plain and "branch" not in plain


def test_a_tools_notes_reach_the_socket():
    from engine.logmessages import log_message

    notes = {"model_id": "m", "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}
    noted = log_message("r1", {"seq": 0, "node": "ask", "attempt": 1, "status": "ok", "notes": notes})
    assert noted["notes"] == notes
    assert "notes" not in log_message("r1", {"seq": 1, "node": "ask", "attempt": 1, "status": "ok"})
