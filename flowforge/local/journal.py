"""Persistence of the local table: every write is journaled before it is acknowledged, and
the journal is replayed at start.

moto keeps everything in memory. The moto server (see aws.py) appends the stream records
each DynamoDB write made (key + new image, or key + nothing for a removal) to
``journal.jsonl`` in one write, and answers the request only once an fsync covers them:
what the local stack acknowledged survives a ``kill -9``. fsyncs are shared (group
commit): one covers every append made before it, so concurrent writers wait for one disk
flush, not one each. At start the journal is folded into the table's last known items,
compacted, and put back into the table.

Any cut of the journal is a consistent table: a step commits by writing one item (its
slot, see functions/aws/dynamodb_codec.py) and the run item is only a snapshot that
readers complete from the slots after it, so whatever prefix of the writes survived is a
state the table really had. Items of a run's partition without its run item (impossible
unless the journal was edited) are dropped. Connection items are session state and die
with their sockets; expired items (TTL) are dropped as DynamoDB would. Everything else
is kept: graphs, runs and their slots, the items that list runs, fan-outs and their
executions, waits (a waiting run is answered after a restart as before it), and the
runs each principal holds.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("flowforge.local")

Item = dict[str, Any]
#: Item kinds the restore drops: WebSocket session state (connections, subscriptions)
#: that cannot outlive its socket. Every other item is durable (see
#: functions/aws/dynamodb_codec.py for the layout).
SESSION_KINDS = frozenset({"conn", "sub"})
#: The partition key prefix of a run's items: the run item and whatever belongs to it.
RUN_PARTITION = "RUN#"
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
    says running: the store folds in their later slots to find where each stands), and
    those whose run item says waiting (their timers are armed again: moto's schedules
    and queued messages are not kept)."""

    items: list[Item] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    dropped: int = 0


class JournalError(RuntimeError):
    """The journal could not be written or flushed; nothing after that is acknowledged."""


class Journal:
    """``<data dir>/journal.jsonl``: one JSON line per stream record, ``{"k", "i"}``.

    :meth:`append` writes without waiting for the disk and returns a position;
    :meth:`sync` returns once everything up to a position is on disk. The first write or
    fsync that fails makes every later call raise :class:`JournalError`: after a failed
    fsync the kernel may have dropped the unwritten pages, so a retry could not be trusted.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._written = 0  # appends handed to the OS
        self._synced = 0  # appends known to be on disk
        self._appending = threading.Lock()
        self._syncing = threading.Lock()  # one fsync at a time; those queued behind it often find theirs done
        self._failure: OSError | None = None

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
        self.close()  # later appends must go to the new file
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
        fsync_directory(self.path.parent)

    def append(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Journal stream records (JSON-safe, see :func:`to_wire`) in one write, without
        waiting for the disk; returns the position to :meth:`sync` (with no records: the
        position of everything appended so far)."""
        data = "".join(
            json.dumps(
                {"k": r["dynamodb"]["Keys"], "i": r["dynamodb"].get("NewImage")}, separators=(",", ":")
            )
            + "\n"
            for r in records
        ).encode()
        with self._appending:
            self._raise_if_failed()
            if data:
                try:
                    _write_all(self._open(), data)
                except OSError as exc:
                    self._failure = exc
                    self._raise_if_failed()
                self._written += 1
            return self._written

    @property
    def synced(self) -> int:
        """The position of the appends known to be on disk."""
        return self._synced

    def sync(self, position: int) -> None:
        """Return once every append up to ``position`` is on disk (one fsync covers all
        the appends made before it: concurrent callers share it)."""
        if self._synced >= position:
            return
        with self._syncing:
            if self._synced >= position:
                return  # the fsync we queued behind covered it
            self._raise_if_failed()
            through = self._written  # read before the fsync: these are in the OS already
            try:
                os.fsync(self._fd)  # type: ignore[arg-type]  # position > 0: opened by append
            except OSError as exc:
                self._failure = exc
                self._raise_if_failed()
            self._synced = through

    def commit(self, records: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`append` then :meth:`sync`."""
        self.sync(self.append(records))

    def close(self) -> None:
        """Flush what is not on disk yet, and close the file (a later append reopens it)."""
        with self._appending, self._syncing:
            if self._fd is not None:
                if self._synced < self._written and self._failure is None:
                    os.fsync(self._fd)
                    self._synced = self._written
                os.close(self._fd)
                self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if created:  # the file's name must survive a crash too
                fsync_directory(self.path.parent)
        return self._fd

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise JournalError(
                f"cannot write {self.path}: {self._failure}; restart the local stack"
                " (it replays what the journal holds)"
            ) from self._failure


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (a file created or renamed in it) durable."""
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
        if _string(item, "kind") in SESSION_KINDS or (expires_at is not None and expires_at < now):
            dropped += 1
        else:
            kept.append(item)
    runs = {_string(i, "pk"): i for i in kept if _string(i, "kind") == "run"}
    restored = Restored(dropped=dropped)
    for item in kept:
        pk = _string(item, "pk") or ""
        if pk.startswith(RUN_PARTITION) and pk not in runs:
            restored.dropped += 1  # a run's slot, fan-out, wait or listing without the run
            continue
        restored.items.append(item)
    restored.running = [
        _string(run, "run_id") or "" for run in runs.values() if _string(run, "status") == "running"
    ]
    restored.waiting = [
        _string(run, "run_id") or "" for run in runs.values() if _string(run, "status") == "waiting"
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
