"""A tool's notes: what it adds to its own log entry with :meth:`ToolContext.note`
(e.g. a model call's token usage), checked to be JSON and bounded in size."""

from __future__ import annotations

import json
from typing import Any

from engine.jsontext import lone_surrogate

#: Notes over this many bytes (JSON, UTF-8) are replaced by a marker with their size:
#: a log entry is one DynamoDB item and one WebSocket message.
MAX_NOTES_BYTES = 4096
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def log_notes(notes: dict[str, Any]) -> dict[str, Any]:
    """``notes`` as the log entry keeps them: a copy of the JSON value, or a marker saying
    why not (``{"_invalid": reason}``, ``{"_truncated": true, "bytes": n, "keys": [...]}``)."""
    try:
        text = _dumps(notes)
    except (TypeError, ValueError, RecursionError) as exc:
        return {"_invalid": f"notes are not JSON: {exc}"}
    if reason := lone_surrogate(text):  # no store, log or socket could carry them
        return {"_invalid": f"notes are not valid UTF-8 text ({reason} of their JSON)"}
    size = len(text.encode())
    if size > MAX_NOTES_BYTES:
        return {"_truncated": True, "bytes": size, "keys": sorted(notes)[:32]}
    copied: dict[str, Any] = json.loads(text)
    return copied
