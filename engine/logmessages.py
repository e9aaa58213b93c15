"""What WebSocket clients receive about a run (DESIGN.md §6), within API Gateway's limits.

- a log entry: ``{"run_id", "seq", "node", "result", "status", "attempt", "duration_ms",
  "ts", "next", "error"}``, one message per entry, in ``seq`` order;
- the end: ``{"run_id", "done": true, "status", "error"?, "cost"}``, once, after every
  entry (``cost``: the run's cost estimate, as ``GET /graph/state`` answers it);
- an answer to a request that cannot be served: ``{"error": {"code", "message", "details"?}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: API Gateway's limit for one WebSocket message (128 KB); kept a little under it.
MAX_MESSAGE_BYTES = 128_000
#: Fields a log message keeps when even its error text is too large to send.
_ESSENTIAL = ("run_id", "seq", "node", "status", "attempt", "duration_ms", "ts", "next", "done")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def log_message(run_id: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """A log entry as clients receive it (DESIGN.md §6); a map item's execution also says
    its ``index``, a parallel branch's its ``branch``; a tool's ``notes`` come along.

    Built once per entry, when it is committed: its JSON is what the store keeps and
    what the WebSocket sends (:func:`engine.logentry.stored_entry`)."""
    message = {
        "run_id": run_id,
        "seq": entry["seq"],
        "node": entry.get("node"),
        "result": entry.get("result"),
        "status": entry.get("status"),
        "attempt": entry.get("attempt"),
        "duration_ms": entry.get("duration_ms"),
        "ts": entry.get("started_at"),
        "next": entry.get("next"),
        "error": entry.get("error"),
    }
    for name in ("index", "branch", "notes"):
        if name in entry:
            message[name] = entry[name]
    return message


def done_message(
    run_id: str, status: str, error: dict[str, Any] | None = None, cost: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The last message of a run: ``{"run_id", "done": true, "status", "error"?, "cost"?}``
    (``cost``: its estimate, :func:`engine.cost.price`)."""
    message: dict[str, Any] = {"run_id": run_id, "done": True, "status": status}
    if error is not None:
        message["error"] = error
    if cost is not None:
        message["cost"] = cost
    return message


def error_message(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """What a client is told when its request cannot be served."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def encode_message(message: dict[str, Any], limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """UTF-8 JSON of ``message``, within ``limit`` bytes.

    Never drops a message: an oversized ``result`` becomes ``{"_truncated": true,
    "bytes": n}``, then a long error text is cut, then only the essential fields remain
    (with ``"_truncated": true``).
    """
    data = _dumps(message).encode()
    if len(data) <= limit:
        return data
    message = dict(message)
    if "result" in message:
        size = len(_dumps(message["result"]).encode())
        message["result"] = {"_truncated": True, "bytes": size}
        data = _dumps(message).encode()
    if len(data) > limit and isinstance(message.get("error"), dict):
        text = str(message["error"].get("message", ""))
        message["error"] = {**message["error"], "message": text[:1000], "_truncated": True}
        data = _dumps(message).encode()
    if len(data) > limit:
        message = {k: message[k] for k in _ESSENTIAL if k in message} | {"_truncated": True}
        data = _dumps(message).encode()
    return data
