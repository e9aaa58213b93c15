"""A log entry as stored: the text of its WebSocket log message, built once at commit.

The tick builds a step's entry as a dict (engine/step.py: ``seq``, ``node``, ``attempt``,
``status``, ``started_at``, ``duration_ms``, ``result``, ``next``, ``error``, and the
fields some entries add). When the entry is committed, the store turns it into a
:class:`StoredEntry` once (:func:`stored_entry`, with the run's id):

- ``text``: the log message exactly as WebSocket clients receive it
  (:func:`engine.logmessages.log_message`: ``run_id`` first, ``started_at`` named ``ts``,
  ``index``/``branch``/``notes`` when the entry has them), compact UTF-8 JSON;
- ``extra``: the JSON of the fields the message does not carry (a wait's ``waiting``, a
  resumed wait's ``resumed``, a redrive's ``redrive``), or None — ``GET /graph/state``
  shows them.

From then on the text is never parsed to be sent: the broadcaster and the replay post it
as the frame (:meth:`StoredEntry.frame`). Only an entry over API Gateway's frame bound
(128 KB; a log result is cut at 32 KiB, so hardly ever) is parsed, to be cut down by
:func:`engine.logmessages.encode_message`. ``GET /graph/state`` reads the fields back
(:meth:`StoredEntry.fields`: the tick's names, ``started_at``), as it parsed the stored
JSON before.

Entries stored before this shape (the tick's dict as JSON, ``{"seq":...``: a run started
before a deploy, a local stack's journal) are read by :meth:`StoredEntry.read`, which
builds their message once as the broadcaster used to — the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.logmessages import MAX_MESSAGE_BYTES, encode_message, log_message

#: How every stored entry text of this shape begins (a message's first field is run_id).
MESSAGE_PREFIX = '{"run_id":'
#: The tick's fields a log message carries (``started_at`` under the name ``ts``).
_MESSAGE_FIELDS = frozenset(
    {"run_id", "seq", "node", "result", "status", "attempt", "duration_ms", "started_at", "next", "error"}
)
_OPTIONAL_FIELDS = ("index", "branch", "notes")

T = TypeVar("T")

# As engine.logmessages encodes a message: compact, UTF-8 (not \\u-escaped), no NaN.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """Log entry ``seq`` as a store keeps it (see the module doc)."""

    seq: int
    text: str
    """The log message as WebSocket clients receive it, exactly."""
    extra: str | None = None
    """JSON of the entry's fields the message does not carry (None: it has none)."""

    @classmethod
    def read(cls, run_id: str, seq: int, text: str, extra: str | None = None) -> StoredEntry:
        """An entry as stored: this shape kept as it is, one of the previous shape (the
        tick's dict as JSON, written before this module) built into it."""
        if text.startswith(MESSAGE_PREFIX):
            return cls(seq, text, extra)
        return stored_entry(run_id, json.loads(text), seq)

    def frame(self, limit: int = MAX_MESSAGE_BYTES) -> bytes:
        """The WebSocket frame: the stored text as it is, unless it is over ``limit`` bytes
        (then its result, or its error text, is cut down as any message's is)."""
        data = self.text.encode()
        if len(data) <= limit:
            return data
        return encode_message(json.loads(self.text), limit)

    def fields(self) -> dict[str, Any]:
        """The entry with the tick's field names (``started_at``), every field included:
        what ``GET /graph/state`` serves and ``RunStore.list_logs`` returns."""
        message = json.loads(self.text)
        fields = {"seq": message["seq"], "node": message["node"]}
        for name in ("index", "branch"):
            if name in message:
                fields[name] = message[name]
        fields.update(
            attempt=message["attempt"],
            status=message["status"],
            started_at=message["ts"],
            duration_ms=message["duration_ms"],
            result=message["result"],
            next=message["next"],
            error=message["error"],
        )
        if self.extra is not None:
            fields.update(json.loads(self.extra))
        if "notes" in message:
            fields["notes"] = message["notes"]
        fields["run_id"] = message["run_id"]
        return fields

    @property
    def execution(self) -> bool:
        """Whether this is a map item's or a parallel branch's entry (parsed: asked only
        where the log has a gap, see :func:`upto_open_gap`)."""
        return is_execution(json.loads(self.text))


def is_execution(fields: Mapping[str, Any]) -> bool:
    """Whether a log entry (its fields, or its message) is a map item's or a parallel
    branch's."""
    return "index" in fields or "branch" in fields


def upto_open_gap(
    entries: Sequence[T], after: int, seq: Callable[[T], int], execution: Callable[[T], bool]
) -> list[T]:
    """``entries`` of a live run (seq order, each after ``after``) up to the first gap that
    may still fill.

    A map item or parallel branch takes its seq when it claims its slot and writes its
    entry after: items running side by side can write their entries out of order, so a
    later item's entry can be read before an earlier one's. Such a gap is followed only
    by the fan-out's executions, and fills before the fan-out joins (the join waits for
    every claimed item). A gap followed by any other entry (the join's, a later step's)
    never fills: an attempt that lost its slot. Readers that go on from the last seq they
    hold (the live log, a page of ``GET /graph/state`` that a client then follows) stop
    before an open gap, so the late entry is not skipped.
    """
    expected = after + 1
    for i, entry in enumerate(entries):
        at = seq(entry)
        if at != expected and all(execution(later) for later in entries[i:]):
            return list(entries[:i])
        expected = at + 1
    return list(entries)


def stored_entry(run_id: str, entry: Mapping[str, Any], seq: int | None = None) -> StoredEntry:
    """The stored form of run ``run_id``'s committed entry (the tick's dict): its message
    text and its other fields, each encoded once."""
    text = _dumps(log_message(run_id, entry))
    extra = {
        name: value
        for name, value in entry.items()
        if name not in _MESSAGE_FIELDS and name not in _OPTIONAL_FIELDS
    }
    return StoredEntry(entry["seq"] if seq is None else seq, text, _dumps(extra) if extra else None)
