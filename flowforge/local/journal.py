"""Persistence of the local table: every stream record is journaled, and replayed at start.

moto keeps everything in memory. The stream poller appends each batch of records (key +
new image, or key + nothing for a removal) to ``journal.jsonl`` in one write, then
fsyncs, so a ``kill -9`` loses at most the batch being read. At start the journal is
folded into the table's last known items, compacted, and put back into the table.

Any cut of the journal is a consistent table: a step commits by writing one item (its
slot, see functions/aws/dynamodb_codec.py) and the run item is only a snapshot that
readers complete from the slots after it, so whatever prefix of the writes survived is a
state the table really had. Slots without their run item (impossible unless the journal
was edited) are dropped. Connection items are session state and die with their sockets;
expired items (TTL) are dropped as DynamoDB would.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("flowforge.local")

Item = dict[str, Any]
#: Item kinds the restore keeps (see functions/aws/dynamodb_codec.py). Anything else is
#: WebSocket session state (connections, subscriptions) that cannot outlive its socket.
DURABLE_KINDS = frozenset({"graph", "run", "log", "finish"})
_BATCH_WRITE_MAX = 25


# -- attribute values: boto3 (bytes) <-> JSON (base64), the form events and files use --
def to_wire(value: Any) -> Any:
    """An attribute value (or map of them) from boto3 into JSON-safe form."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    return value


def from_wire(item: Mapping[str, Any]) -> Item:
    """The inverse of :func:`to_wire` for an item (binary attributes back to bytes)."""
    return {name: _value_from_wire(value) for name, value in item.items()}


def _value_from_wire(value: Mapping[str, Any]) -> Any:
    (kind, inner), *_ = value.items()
    if kind == "B":
        return {"B": base64.b64decode(inner)}
    if kind == "BS":
        return {"BS": [base64.b64decode(v) for v in inner]}
    if kind == "M":
        return {"M": from_wire(inner)}
    if kind == "L":
        return {"L": [_value_from_wire(v) for v in inner]}
    return dict(value)


def _key(keys: Mapping[str, Any]) -> str:
    return json.dumps(keys, sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class Restored:
    """What a restore put back, and the runs it must resume (ids of runs whose run item
    says running: the store folds in their later slots to find where each stands)."""

    items: list[Item] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    dropped: int = 0


class Journal:
    """``<data dir>/journal.jsonl``: one JSON line per stream record, ``{"k", "i"}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def load(self) -> dict[str, Item]:
        """The last image of every item (a removal deletes it). A torn last line is skipped."""
        items: dict[str, Item] = {}
        if not self.path.exists():
            return items
        with open(self.path, encoding="utf-8") as stream:
            for number, line in enumerate(stream, 1):
                try:
                    entry = json.loads(line)
                except ValueError:
                    log.warning("%s:%d: skipped an unreadable line (cut by a crash?)", self.path, number)
                    continue
                key = _key(entry["k"])
                if entry.get("i") is None:
                    items.pop(key, None)
                else:
                    items[key] = entry["i"]
        return items

    def compact(self, items: Iterable[Item], key_names: Iterable[str]) -> None:
        """Rewrite the journal as one line per item, atomically (write, fsync, rename)."""
        names = tuple(key_names)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".jsonl.tmp")
        with open(temporary, "w", encoding="utf-8") as stream:
            for item in items:
                keys = {name: item[name] for name in names}
                stream.write(json.dumps({"k": keys, "i": item}, separators=(",", ":")) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self.path)
        _fsync_directory(self.path.parent)

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Journal stream records (JSON-safe, see :func:`to_wire`) in one write, then fsync."""
        lines = [
            json.dumps(
                {"k": r["dynamodb"]["Keys"], "i": r["dynamodb"].get("NewImage")}, separators=(",", ":")
            )
            for r in records
        ]
        if not lines:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _number(item: Item, name: str) -> float | None:
    value = item.get(name)
    return float(value["N"]) if value and "N" in value else None


def _string(item: Item, name: str) -> str | None:
    value = item.get(name)
    return value.get("S") if value else None


def restorable(items: Iterable[Item], now: float | None = None) -> Restored:
    """The items to put back: durable, unexpired, and consistent (see the module docstring)."""
    now = time.time() if now is None else now
    kept: list[Item] = []
    dropped = 0
    for item in items:
        expires_at = _number(item, "expires_at")
        if _string(item, "kind") not in DURABLE_KINDS or (expires_at is not None and expires_at < now):
            dropped += 1
        else:
            kept.append(item)
    runs = {_string(i, "pk"): i for i in kept if _string(i, "kind") == "run"}
    restored = Restored(dropped=dropped)
    for item in kept:
        if _string(item, "kind") in ("log", "finish") and _string(item, "pk") not in runs:
            restored.dropped += 1
            continue
        restored.items.append(item)
    restored.running = [
        _string(run, "run_id") or "" for run in runs.values() if _string(run, "status") == "running"
    ]
    return restored


def put_items(client: Any, table: str, items: list[Item]) -> None:
    """Write ``items`` (JSON-safe form) into ``table`` with BatchWriteItem."""
    for start in range(0, len(items), _BATCH_WRITE_MAX):
        requests = [{"PutRequest": {"Item": from_wire(i)}} for i in items[start : start + _BATCH_WRITE_MAX]]
        pending: dict[str, Any] = {table: requests}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def restore(journal: Journal, client: Any, table: str, key_names: Iterable[str]) -> Restored:
    """Fold and compact the journal, then put its consistent items back into ``table``."""
    restored = restorable(journal.load().values())
    journal.compact(restored.items, key_names)
    put_items(client, table, restored.items)
    return restored
