"""The single-table layout: keys, and records to and from DynamoDB attribute values.

| kind   | pk            | sk               | gsi1pk          | gsi1sk                 |
|--------|---------------|------------------|-----------------|------------------------|
| graph  | GRAPH#<id>    | GRAPH            | GRAPH[#<owner>] | <created_at>#<id>      |
| run    | RUN#<id>      | RUN              | RUNNING#<0..7>  | next_at's minute, ms   |
| listed | RUN#<id>      | LISTED           | RUNS[#<owner>]  | <created_at>#<id>      |
| log    | RUN#<id>      | LOG#<step:010d>  |                 |                        |
| finish | RUN#<id>      | LOG#<step:010d>  |                 |                        |
| exec   | RUN#<id>      | LOG#<step:010d>  |                 |                        |
| fanout | RUN#<id>      | FAN#<step:010d>  |                 |                        |

A run is its run item (a snapshot) plus the commit and finish items after it. Slot
``LOG#k`` is the run's transition k: step k's commit item (kind "log": its log entry and
what the step changed: state keys, cursor, status; ``seq`` is k) or a finish item
(cancelled, or failed by the dead-letter handler). A redrive of a failed run is a log
slot too, with ``redrives`` set. Each slot is written once, with a condition that it is
empty, so that write is the commit. The run item is rewritten now
and then with its first ``applied`` slots folded in (see dynamodb.py); a reader folds
the slots from ``applied`` on onto it. A log entry (of a log or exec slot) is kept as
the text of its WebSocket message (``entry``, sent as it is) and, when it has fields the
message does not carry, their JSON (``entry_extra``): see engine/logentry.py.
"RUN" sorts after every "LOG#..." key, so one query read backwards from "RUN" returns
the snapshot first, then the slots newest first.

A map or parallel node reached at step ``b`` has a fanout item ``FAN#b`` that counts its
executions: ``n`` taken so far, ``d`` items done, ``f`` of them failed, and ``c`` each
item's last claim (its step and attempt). Execution ``j`` is the exec slot ``LOG#(b + j)``
(its log entry and value); exec slots change nothing but the run's step, and may be
written a moment after a later one (each is claimed first), so a reader folds them over
gaps. The join is the log slot after them. Their items are built in
dynamodb_fanout_codec.py.

A run's "listed" item, written once when the run is created, lists it newest first
(console, ``GET /runs``); it holds keys only and sorts before the slots, outside every
read of the run. With graphs and runs isolated by principal, a graph and a run carry
their ``owner`` (the caller's ARN), and graphs and listed runs sit in their owner's own
index partitions, so a list reads only the caller's; without isolation nothing has an
owner and nothing changes. Of run items, only running runs carry gsi1 keys, so the sweeper's index holds exactly the runs it may
have to wake. Their sort key is ``next_at`` rounded down to the minute: a lower bound of
when the run is due that changes about once a minute rather than at every step, because
each change of an index key is billed as two index writes (a delete and a put). A run's
state is a map from top-level key to that value's JSON text.
"""

from __future__ import annotations

import json
import math
import zlib
from decimal import Decimal
from typing import Any

from engine.cost import EMPTY, Usage
from engine.logentry import StoredEntry, stored_entry
from engine.ports import GraphRecord, RunRecord, StepCommit
from engine.step import Cursor
from engine.transitions import apply_commit, apply_execution, apply_finish

GRAPH_SK = "GRAPH"
RUN_SK = "RUN"
GRAPHS_GSI_PK = "GRAPH"
LISTED_SK = "LISTED"
RUNS_GSI_PK = "RUNS"
RUNNING_SHARDS = 8
#: Width of the sweeper index's time buckets: a running run's index key moves (two
#: index writes) at most once per bucket, and the sweeper re-reads runs due up to one
#: bucket after its cut-off, then keeps those really due.
DUE_BUCKET_S = 60
SLOT_DIGITS = 10
SLOT_FIRST_SK = "LOG#"
SLOT_LAST_SK = "LOG#" + "9" * SLOT_DIGITS
#: The attribute holding the token of the write that created an item (see dynamodb.py).
WRITER = "writer"
WRITER_BYTES = len(WRITER) + 32  # a uuid4 in hex
#: DynamoDB's item size limit (400 KB), in bytes as it counts them (:func:`item_bytes`).
MAX_ITEM_BYTES = 400 * 1024
#: The attribute holding a run's usage so far (engine/cost.py), on run items and log slots.
COST = "cost"

Item = dict[str, dict[str, Any]]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def S(value: str) -> dict[str, str]:
    return {"S": value}


def N(value: float) -> dict[str, str]:
    return {"N": str(value) if isinstance(value, int) else repr(float(value))}


NULL = {"NULL": True}


def str_or_null(value: str | None) -> dict[str, Any]:
    return NULL if value is None else S(value)


def json_or_null(value: Any) -> dict[str, Any]:
    return NULL if value is None else S(_dumps(value))


def _str(item: Item, name: str) -> str | None:
    value = item.get(name)
    return value.get("S") if value else None


def _num(item: Item, name: str) -> str | None:
    value = item.get(name)
    return value.get("N") if value else None


def _json(item: Item, name: str) -> Any:
    text = _str(item, name)
    return None if text is None else json.loads(text)


# -- keys -------------------------------------------------------------------------------
def graph_key(graph_id: str) -> Item:
    return {"pk": S(f"GRAPH#{graph_id}"), "sk": S(GRAPH_SK)}


def run_pk(run_id: str) -> str:
    """The partition of a run: its run item and its slots."""
    return f"RUN#{run_id}"


def run_key(run_id: str) -> Item:
    return {"pk": S(run_pk(run_id)), "sk": S(RUN_SK)}


def slot_key(run_id: str, step: int) -> Item:
    return {"pk": S(run_pk(run_id)), "sk": S(slot_sk(step))}


def slot_sk(step: int) -> str:
    """The sort key of the slot that holds transition ``step``."""
    return f"LOG#{step:0{SLOT_DIGITS}d}"


def running_shard(run_id: str) -> str:
    """The sweeper index partition of a running run (spreads writes over 8 keys)."""
    return f"RUNNING#{zlib.crc32(run_id.encode()) % RUNNING_SHARDS}"


def due_key(next_at: float) -> str:
    """``next_at`` as a sortable string: whole milliseconds, zero-padded."""
    return f"{max(0, math.floor(next_at * 1000)):015d}"


def due_bucket_key(next_at: float) -> str:
    """A running run's index sort key: ``next_at`` rounded down to its bucket."""
    return due_key(math.floor(next_at / DUE_BUCKET_S) * DUE_BUCKET_S)


def graphs_index_pk(owner: str | None) -> str:
    """The index partition listing ``owner``'s graphs (None: the account's)."""
    return GRAPHS_GSI_PK if owner is None else f"{GRAPHS_GSI_PK}#{owner}"


def runs_index_pk(owner: str | None) -> str:
    """The index partition listing ``owner``'s runs (None: the account's)."""
    return RUNS_GSI_PK if owner is None else f"{RUNS_GSI_PK}#{owner}"


def graph_index_sk(created_at: str, graph_id: str) -> str:
    return f"{created_at}#{graph_id}"


def listed_key(run_id: str) -> Item:
    return {"pk": S(run_pk(run_id)), "sk": S(LISTED_SK)}


def listed_item(run: RunRecord) -> Item:
    """The item that lists ``run`` in gsi1 under RUNS, newest first."""
    item = {
        **listed_key(run.run_id),
        "kind": S("listed"),
        "gsi1pk": S(runs_index_pk(run.owner)),
        "gsi1sk": S(graph_index_sk(run.created_at, run.run_id)),
    }
    if run.expires_at is not None:
        item["expires_at"] = N(run.expires_at)
    return item


# -- graphs -----------------------------------------------------------------------------
def graph_item(graph: GraphRecord) -> Item:
    item = {
        **graph_key(graph.graph_id),
        "kind": S("graph"),
        "graph_id": S(graph.graph_id),
        "definition": S(_dumps(graph.definition)),
        "created_at": S(graph.created_at),
        "version": N(graph.version),
        "gsi1pk": S(graphs_index_pk(graph.owner)),
        "gsi1sk": S(graph_index_sk(graph.created_at, graph.graph_id)),
    }
    if graph.name is not None:
        item["name"] = S(graph.name)
    if graph.owner is not None:
        item["owner"] = S(graph.owner)
    return item


def graph_from_item(item: Item) -> GraphRecord:
    return GraphRecord(
        graph_id=_str(item, "graph_id") or "",
        definition=_json(item, "definition"),
        created_at=_str(item, "created_at") or "",
        name=_str(item, "name"),
        version=int(_num(item, "version") or 1),
        owner=_str(item, "owner"),
    )


# -- runs -------------------------------------------------------------------------------
def cursor_value(cursor: Cursor) -> dict[str, Any]:
    return {
        "M": {
            "node": S(cursor.node),
            "step": N(cursor.step),
            "attempt": N(cursor.attempt),
            "iteration": N(cursor.iteration),
        }
    }


def cursor_from_value(value: dict[str, Any] | None) -> Cursor | None:
    if not value or "M" not in value:
        return None
    fields = value["M"]
    return Cursor(
        node=fields["node"]["S"],
        step=int(fields["step"]["N"]),
        attempt=int(fields["attempt"]["N"]),
        iteration=int(fields["iteration"]["N"]),
    )


def state_value(state: dict[str, str]) -> dict[str, Any]:
    return {"M": {key: S(text) for key, text in state.items()}}


def run_item(run: RunRecord, slots: int) -> Item:
    """The snapshot of ``run`` with slots ``0..slots-1`` folded in."""
    item = {
        **run_key(run.run_id),
        "kind": S("run"),
        "run_id": S(run.run_id),
        "graph_id": S(run.graph_id),
        "graph_version": N(run.graph_version),
        "status": S(run.status),
        "step": N(run.step),
        "applied": N(slots),
        "state": state_value(run.state),
        "created_at": S(run.created_at),
        "updated_at": S(run.updated_at),
        "finished_at": str_or_null(run.finished_at),
        "error": json_or_null(run.error),
        "next_at": N(run.next_at),
    }
    if run.cursor is not None:
        item["cursor"] = cursor_value(run.cursor)
    if run.expires_at is not None:
        item["expires_at"] = N(run.expires_at)
    if run.owner is not None:
        item["owner"] = S(run.owner)
    if run.redrive_count:
        item["redrives"] = N(run.redrive_count)
    if run.cost:
        item[COST] = S(run.cost.encode())
    if run.status == "running":
        item.update(sweeper_keys(run.run_id, run.next_at))
    return item


def sweeper_keys(run_id: str, next_at: float) -> Item:
    """The index keys that put a run item in the sweeper's index, due at ``next_at``."""
    return {"gsi1pk": S(running_shard(run_id)), "gsi1sk": S(due_bucket_key(next_at))}


def run_from_item(item: Item) -> RunRecord:
    expires_at = _num(item, "expires_at")
    return RunRecord(
        run_id=_str(item, "run_id") or "",
        graph_id=_str(item, "graph_id") or "",
        status=_str(item, "status") or "",
        cursor=cursor_from_value(item.get("cursor")),
        step=int(_num(item, "step") or 0),
        state={key: value["S"] for key, value in item.get("state", {}).get("M", {}).items()},
        created_at=_str(item, "created_at") or "",
        updated_at=_str(item, "updated_at") or "",
        next_at=float(_num(item, "next_at") or 0),
        graph_version=int(_num(item, "graph_version") or 1),
        finished_at=_str(item, "finished_at"),
        error=_json(item, "error"),
        expires_at=int(expires_at) if expires_at is not None else None,
        owner=_str(item, "owner"),
        redrive_count=int(_num(item, "redrives") or 0),
        cost=Usage.decode(_str(item, COST)) if COST in item else EMPTY,
    )


def slots_of(item: Item) -> int:
    """How many slots a run item (snapshot) has folded in."""
    return int(_num(item, "applied") or 0)


def step_of(item: Item) -> int:
    """The transition a slot holds (its ``seq`` attribute)."""
    return int(item["seq"]["N"])


# -- slots: step commits (kind "log": the log entry and what the step changed) and finishes --
def commit_item(commit: StepCommit) -> Item:
    """Slot ``commit.step``: the step's log entry (its WebSocket message text, built
    here once: engine/logentry.py) and what it changed."""
    item = {
        **slot_key(commit.run_id, commit.step),
        "kind": S("log"),
        "run_id": S(commit.run_id),
        "seq": N(commit.step),
        **entry_attributes(stored_entry(commit.run_id, commit.log, commit.step)),
        "status": S(commit.status),
        "update": state_value(commit.update),
        "updated_at": S(commit.updated_at),
        "finished_at": str_or_null(commit.finished_at),
        "error": json_or_null(commit.error),
        "next_at": N(commit.next_at),
    }
    if commit.cursor is not None:
        item["cursor"] = cursor_value(commit.cursor)
    if commit.expires_at is not None:
        item["expires_at"] = N(commit.expires_at)
    if commit.redrive_count is not None:
        item["redrives"] = N(commit.redrive_count)
    if commit.cost is not None:
        item[COST] = S(commit.cost.encode())
    return item


def finish_item(run: RunRecord, step: int, *, status: str, error: dict[str, Any] | None, now: str) -> Item:
    """Slot ``step`` of ``run``: it ended with ``status`` (cancelled, dead-lettered)."""
    item = {
        **slot_key(run.run_id, step),
        "kind": S("finish"),
        "run_id": S(run.run_id),
        "seq": N(step),
        "status": S(status),
        "error": json_or_null(error),
        "updated_at": S(now),
    }
    if run.expires_at is not None:
        item["expires_at"] = N(run.expires_at)
    if run.cost:  # unchanged: the done message reads it from the slot that ends the run
        item[COST] = S(run.cost.encode())
    return item


def transition_from_item(item: Item) -> StepCommit:
    """The transition a log item records, without its log entry (``log`` is empty):
    folding a run needs the transition only, so the entry's text is not parsed."""
    expires_at = _num(item, "expires_at")
    redrives = _num(item, "redrives")
    return StepCommit(
        run_id=_str(item, "run_id") or "",
        step=step_of(item),
        update={key: value["S"] for key, value in item.get("update", {}).get("M", {}).items()},
        cursor=cursor_from_value(item.get("cursor")),
        status=_str(item, "status") or "",
        log={},
        updated_at=_str(item, "updated_at") or "",
        next_at=float(_num(item, "next_at") or 0),
        error=_json(item, "error"),
        expires_at=int(expires_at) if expires_at is not None else None,
        finished_at=_str(item, "finished_at"),
        redrive_count=int(redrives) if redrives is not None else None,
        cost=Usage.decode(_str(item, COST)) if COST in item else None,
    )


def apply_slot(run: RunRecord, item: Item) -> RunRecord:
    """``run`` after the transition a log, exec or finish item records (``run`` is not changed)."""
    kind = _str(item, "kind")
    if kind == "exec":
        return apply_execution(
            run,
            step_of(item),
            updated_at=_str(item, "updated_at") or "",
            next_at=float(_num(item, "next_at") or 0),
        )
    if kind == "finish":
        return apply_finish(
            run,
            status=_str(item, "status") or "",
            error=_json(item, "error"),
            now=_str(item, "updated_at") or "",
        )
    return apply_commit(run, transition_from_item(item))


# -- log entries: kept as the text of their WebSocket message (engine/logentry.py) ---------
#: The attribute holding an entry's fields its message does not carry (only when it has some).
ENTRY_EXTRA = "entry_extra"


def entry_attributes(entry: StoredEntry) -> Item:
    """The attributes of a log or exec slot that hold its log entry."""
    if entry.extra is None:
        return {"entry": S(entry.text)}
    return {"entry": S(entry.text), ENTRY_EXTRA: S(entry.extra)}


def entry_from_item(item: Item) -> StoredEntry:
    """The log entry a log or exec slot holds, its text as stored (one written in the
    previous shape is built into this one: engine/logentry.py)."""
    return StoredEntry.read(item["run_id"]["S"], step_of(item), item["entry"]["S"], _str(item, ENTRY_EXTRA))


def log_from_item(item: Item) -> dict[str, Any]:
    """The log entry a log or exec slot holds, as ``GET /graph/state`` serves it."""
    return entry_from_item(item).fields()


# -- sizes --------------------------------------------------------------------------------
def item_bytes(item: Item) -> int:
    """An item's size as DynamoDB counts it against its 400 KB limit, rounded up: names
    and strings in UTF-8 bytes, a number as at most 21 bytes, 3 bytes per map or list
    plus 1 per element."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return min(21, len(inner) + 1)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_bytes(v) + 1 for k, v in inner.items())
    if kind == "L":
        return 3 + sum(_value_bytes(v) + 1 for v in inner)
    if kind in ("SS", "NS"):
        return sum(len(v.encode()) for v in inner)
    return 1  # BOOL, NULL


# -- billing --------------------------------------------------------------------------------
#: What DynamoDB counts per global secondary index entry, besides its attributes.
INDEX_ENTRY_OVERHEAD = 100
WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096


def billed_bytes(item: Item | None) -> int:
    """An item's size as DynamoDB bills it (0 for none): names and strings in UTF-8
    bytes, a number one byte per two significant digits plus one, 3 bytes per map or
    list plus 1 per element (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html)."""
    if not item:
        return 0
    return sum(len(name.encode()) + _billed_value(value) for name, value in item.items())


def _billed_value(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return _number_bytes(inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _billed_value(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(1 + _billed_value(v) for v in inner)
    if kind == "SS":
        return sum(len(v.encode()) for v in inner)
    if kind == "NS":
        return sum(_number_bytes(v) for v in inner)
    return 1  # BOOL, NULL


def _number_bytes(text: str) -> int:
    digits = Decimal(text).normalize().as_tuple().digits
    return math.ceil((len(digits) if any(digits) else 1) / 2) + 1


def write_units(size: int) -> int:
    """Write request units of a write billed on ``size`` bytes (at least one)."""
    return max(1, -(-size // WRITE_UNIT_BYTES))


def read_units(size: int) -> int:
    """Strongly consistent read request units of ``size`` bytes read by one call (at least one)."""
    return max(1, -(-size // READ_UNIT_BYTES))


def index_write_units(before: Item | None, after: Item | None) -> int:
    """Index write units for the table's one index (gsi1) as an item goes from ``before``
    to ``after``: an entry gained or lost is one write, a changed one two."""
    old, new = index_entry(before), index_entry(after)
    if old == new:
        return 0
    return sum(write_units(billed_bytes(entry) + INDEX_ENTRY_OVERHEAD) for entry in (old, new) if entry)


def index_entry(item: Item | None) -> Item | None:
    """``item``'s entry in gsi1 (keys only), or None when it is not in the index."""
    if not item or "gsi1pk" not in item or "gsi1sk" not in item:
        return None
    return {name: item[name] for name in ("pk", "sk", "gsi1pk", "gsi1sk")}


def cost_bytes(item: Item) -> int:
    """The billed bytes of ``item``'s cost attribute (0 without one)."""
    value = item.get(COST)
    return len(COST) + len(value["S"].encode()) if value else 0
