"""The :class:`~engine.ports.RunStore` on one DynamoDB table (layout: dynamodb_codec.py).

The step invariant rests on one conditional write: a transition k of a run is the put
of its slot ``LOG#k`` (a step's commit item, or a finish item), which succeeds only if the
slot is empty. A step therefore costs one small write (its log entry and the state keys
it changed) instead of a transaction rewriting the whole run item, which DynamoDB bills
twice, in full, for every step.

The run item is a snapshot: rewritten, with every slot so far folded in, every
:data:`SNAPSHOT_EVERY` steps, when the run ends, and when its due minute (the sweeper
index key) moves. Losing a snapshot write (a crash, throttling) loses nothing: readers
fold the slots after it. Reads are one strongly consistent query that returns the
snapshot and the slots after it, newest first.

The store remembers the last state it read or wrote of each run (a bounded cache per
thread, as per Lambda container). A commit for step k checks against it that the run
was running at step k — the slot's condition then guarantees it still is — and a
snapshot is written from it. The step handler's read of the run it committed a moment
ago is answered from it too, with no request: a container usually gets its run's next
step, and if another took it meanwhile (or a cancel did), the slot is taken and this
commit conflicts. A step looks its run up in the cache once: the commit takes the run
its read found, and a chain's next commit the run the last one left (``_at_step``).
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from engine.cost import DYNAMODB_READ_UNITS, DYNAMODB_WRITE_UNITS, EMPTY, UsageTally
from engine.errors import ConflictError, StateTooLargeError, StoreUnavailableError
from engine.logentry import StoredEntry
from engine.ports import GraphRecord, RunRecord, StepCommit
from engine.step import LIVE, TERMINAL
from engine.transitions import apply_commit
from functions.aws import dynamodb_codec as codec
from functions.aws.adapter import AwsAdapter
from functions.aws.dynamodb_fanout import DynamoFanOuts
from functions.aws.dynamodb_fanout_codec import is_execution
from functions.aws.dynamodb_running import DynamoRunningRuns
from functions.aws.dynamodb_waits import DynamoWaits
from functions.aws.errors import error_code

GSI = "gsi1"
#: A run item is rewritten at least every this many steps: between two snapshots a step
#: writes only its slot, and a read returns the snapshot plus at most this many slots.
#: A rewrite of a run with 1 KB of state costs 2 write units, a read of it and 8 slots of
#: a few hundred bytes 2 read units (a fifth the price): with steps chained, reads are
#: rare and 8 beats 4 (see the README's Performance).
SNAPSHOT_EVERY = 8
#: Runs whose last known state the store keeps (a step handler reads then commits).
CACHED_RUNS = 256
#: A cancel retries this often when steps keep taking the slot it wants.
FINISH_ATTEMPTS = 10
#: Slots that hold a log entry: a step's, and a fan-out execution's.
LOG_KINDS = frozenset({"log", "exec"})
#: BatchGetItem takes at most 100 keys per call.
BATCH_GET_KEYS = 100


@dataclass(frozen=True, slots=True)
class _Folded:
    """A run with its first ``slots`` slots folded in (the next transition takes slot
    ``slots``), and how many its stored snapshot holds."""

    run: RunRecord
    slots: int
    snapshot_slots: int
    snapshot_bucket: str | None  # the snapshot's sweeper index key (None: not indexed)
    #: The stored snapshot as billed: its size and its index entry (a rewrite is billed on
    #: the larger of the old and new item, and on each index entry it changes).
    snapshot_bytes: int = 0
    snapshot_index: codec.Item | None = None
    #: Read units spent reading the run for a step, not yet counted in a commit's cost.
    unpaid_reads: int = 0

    def then(self, slot: codec.Item) -> _Folded:
        """The run after ``slot`` (the next one, or a fan-out's execution after a gap),
        over the same snapshot."""
        return replace(self, run=codec.apply_slot(self.run, slot), slots=codec.step_of(slot) + 1)

    def committed(self, commit: StepCommit) -> _Folded:
        """The run after ``commit`` (whose slot is the next one), over the same snapshot;
        its reads are paid by the commit."""
        return replace(self, run=apply_commit(self.run, commit), slots=self.slots + 1, unpaid_reads=0)

    def snapshot_due(self) -> bool:
        """Whether the run item is rewritten now: the run ended, it is ``SNAPSHOT_EVERY``
        slots behind, or the run's due minute (its sweeper index key) moved."""
        return (
            self.run.status != "running"
            or self.slots - self.snapshot_slots >= SNAPSHOT_EVERY
            or codec.due_bucket_key(self.run.next_at) != self.snapshot_bucket
        )


class DynamoRunStore(DynamoWaits, DynamoFanOuts, DynamoRunningRuns, AwsAdapter):
    """Graphs, runs and log entries in one table; the low-level client is built on first use."""

    def __init__(self, table_name: str, client_factory: Callable[[], Any]) -> None:
        super().__init__(client_factory)
        self.table_name = table_name
        self._local = threading.local()
        self._tallies: ContextVar[UsageTally | None] = ContextVar(f"tally-{id(self)}", default=None)

    # -- graphs -------------------------------------------------------------------------
    def put_graph(self, graph: GraphRecord) -> None:
        self._put_new(codec.graph_item(graph))

    def get_graph(self, graph_id: str) -> GraphRecord | None:
        item = self._get(codec.graph_key(graph_id))
        return codec.graph_from_item(item) if item else None

    def list_graphs(
        self, limit: int = 50, after: str | None = None, *, owner: str | None = None
    ) -> tuple[list[GraphRecord], str | None]:
        """``owner``'s graphs, newest first: one query of their own index partition. The
        token is opaque (the index key of the page's last graph)."""
        items, token = self._index_page(codec.graphs_index_pk(owner), codec.graph_key, limit, after)
        return [codec.graph_from_item(item) for item in self._batch_get(items)], token

    def _index_page(
        self, partition: str, key_of: Callable[[str], codec.Item], limit: int, after: str | None
    ) -> tuple[list[codec.Item], str | None]:
        """Table keys of one page of a gsi1 partition whose sort keys are ``<created_at>#<id>``,
        newest first, and the token of the next page."""
        if limit <= 0:
            return [], None
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": GSI,
            "KeyConditionExpression": "gsi1pk = :pk",
            "ExpressionAttributeValues": {":pk": codec.S(partition)},
            "ScanIndexForward": False,
        }
        if after is not None:
            start = _index_start(after, partition, key_of)
            if start is None:
                return [], None
            params["ExclusiveStartKey"] = start
        # One more than asked for says whether there is a next page.
        found = self._query(params, limit + 1)
        page = found[:limit]
        token = _encode_token(page[-1]["gsi1sk"]["S"]) if len(found) > limit else None
        return list(map(_table_key, page)), token

    # -- runs ---------------------------------------------------------------------------
    def create_run(self, run: RunRecord) -> None:
        # Listed first: a crash in between leaves a listed id without a run, which
        # list_runs skips, never a run missing from the list.
        self._put_new(codec.listed_item(run))
        item = codec.run_item(run, slots=run.step)
        self._put_new(item)
        self._remember(
            _Folded(
                run,
                run.step,
                run.step,
                codec.due_bucket_key(run.next_at),
                codec.billed_bytes(item) + codec.WRITER_BYTES,
                codec.index_entry(item),
            )
        )

    def list_runs(
        self, limit: int = 50, after: str | None = None, *, owner: str | None = None
    ) -> tuple[list[RunRecord], str | None]:
        """``owner``'s runs, newest first, each as it is now: the snapshots of the page in
        one batch, and those still running folded (their snapshot may lag)."""
        listed, token = self._index_page(codec.runs_index_pk(owner), codec.listed_key, limit, after)
        runs = []
        for item in self._batch_get([{**key, "sk": codec.S(codec.RUN_SK)} for key in listed]):
            run: RunRecord | None = codec.run_from_item(item)
            if run is not None and run.status in LIVE:
                folded = self._read_run(run.run_id)
                run = folded.run if folded else None
            if run is not None:
                runs.append(replace(run, state=dict(run.state)))
        return runs, token

    def get_run(self, run_id: str, *, step: int | None = None) -> RunRecord | None:
        """The run now (one query); with ``step``, no read at all if this store last saw
        the run running at ``step`` (see :meth:`engine.ports.RunStore.get_run`)."""
        if step is None:
            known = self._read_run(run_id)
        else:  # a step's read: counted in its commit's cost, and kept for its commit
            known = self._at_step(run_id, step)
        return replace(known.run, state=dict(known.run.state)) if known else None

    def forget(self) -> None:
        """Forget every run this thread knows, as a new Lambda container would."""
        self._cache.clear()
        self._local.stepping = None

    def commit_step(self, commit: StepCommit) -> StepCommit:
        """Take the step's slot (ConflictError if taken; StateTooLargeError if DynamoDB
        cannot store it: the caller fails the run with a small slot instead).

        A commit that carries the run's cost gets what storing it costs added: the read
        of the run for this step, the slot's write units, and the snapshot's rewrite with
        its index writes when one follows (see :meth:`_costed`)."""
        base = self._running_at(commit.run_id, commit.step)
        if base.run.status == "waiting":
            # A wait ends: the run runs again. Its snapshot (waiting: out of the sweeper's
            # index) goes back into the index first, as a redrive's does, so a run whose
            # snapshot write is lost after this slot is still found if it stalls.
            base = self._mark_due(base, commit.next_at)
        if commit.cost is None:
            slot, after = _sized_slot(commit), base.committed(commit)
        else:
            commit, slot, after = self._costed(base, commit)
        self._put_slot(commit.run_id, slot)
        self._remember(after)
        if after.snapshot_due():
            self._snapshot(after)
        return commit

    def _costed(self, base: _Folded, commit: StepCommit) -> tuple[StepCommit, codec.Item, _Folded]:
        """``commit`` with what storing it costs in its cost, its slot, and the run after it.

        The slot and the snapshot hold the cost, so their size depends on it: the write
        units are found by trying the cost's own figures until they agree (a digit more
        seldom moves a write across a kilobyte: usually the second try)."""
        assert commit.cost is not None
        cost = commit.cost + {DYNAMODB_READ_UNITS: base.unpaid_reads} if base.unpaid_reads else commit.cost
        slot = _sized_slot(replace(commit, cost=None))
        slot_bytes = codec.billed_bytes(slot) + codec.WRITER_BYTES
        after = base.committed(commit)
        snapshot = (
            codec.run_item(replace(after.run, cost=EMPTY), after.slots) if after.snapshot_due() else None
        )
        snapshot_bytes = codec.billed_bytes(snapshot)
        index_units = codec.index_write_units(base.snapshot_index, snapshot) if snapshot else 0
        units = 0
        while True:
            text = (cost + {DYNAMODB_WRITE_UNITS: units}).encode()
            extra = len(codec.COST) + len(text.encode())
            needed = codec.write_units(slot_bytes + extra)
            if snapshot is not None:
                needed += codec.write_units(max(snapshot_bytes + extra, base.snapshot_bytes)) + index_units
            if needed <= units:
                break
            units = needed
        commit = replace(commit, cost=cost + {DYNAMODB_WRITE_UNITS: units})
        slot[codec.COST] = codec.S(text)
        _check_size(slot)
        return commit, slot, base.committed(commit)

    def redrive_run(self, run_id: str, build: Callable[[RunRecord, int], StepCommit]) -> RunRecord:
        """Take the failed run's next slot with the redrive's commit (ConflictError if the
        run is not failed, or a racing redrive took the slot).

        First the run item is put in the sweeper's index, due when the redrive is: a
        redrive that dies between its slot and its step message leaves a run the sweeper
        finds stalled, as it would any other (a mark whose slot was never written is
        taken out of the index when the sweeper reads it).
        """
        base = self._read_run(run_id)
        if base is None or base.run.status != "failed":
            raise ConflictError(f"run {run_id!r} is not failed")
        commit = build(replace(base.run, state=dict(base.run.state)), base.slots)
        slot = _sized_slot(commit)
        self._mark_due(base, commit.next_at)
        self._put_slot(run_id, slot)
        after = base.committed(commit)
        self._remember(after)
        self._snapshot(after)
        return replace(after.run, state=dict(after.run.state))

    def _mark_due(self, base: _Folded, due: float) -> _Folded:
        """Put the run item (``base``, not running) in the sweeper's index, due at ``due``,
        before a slot makes the run run again (ConflictError if a newer snapshot is there)."""
        self._call(
            "put_item",
            TableName=self.table_name,
            Item={**codec.run_item(base.run, base.slots), **codec.sweeper_keys(base.run.run_id, due)},
            ConditionExpression="applied <= :applied",
            ExpressionAttributeValues={":applied": codec.N(base.slots)},
        )
        return replace(base, snapshot_slots=base.slots, snapshot_bucket=codec.due_bucket_key(due))

    def list_logs(self, run_id: str, after: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        return [entry.fields() for entry in self.list_entries(run_id, after, limit)]

    def list_entries(self, run_id: str, after: int = -1, limit: int = 1000) -> list[StoredEntry]:
        if limit <= 0:
            return []
        params = self._slots_query(run_id, codec.slot_sk(max(after + 1, 0)), codec.SLOT_LAST_SK)
        # A finish item can only be the last slot: one more than asked covers it.
        items = self._query(params, limit + 1)
        return [codec.entry_from_item(item) for item in items if item["kind"]["S"] in LOG_KINDS][:limit]

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        error: dict[str, Any] | None,
        now: str,
        step: int | None = None,
    ) -> None:
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status!r}")
        for _ in range(FINISH_ATTEMPTS):
            base = self._read_run(run_id)
            if base is None or base.run.status not in LIVE:
                raise ConflictError(f"run {run_id!r} is not running")
            if step is not None and base.run.step != step:
                raise ConflictError(f"run {run_id!r} is not at step {step}")
            item = codec.finish_item(base.run, base.slots, status=status, error=error, now=now)
            try:
                self._put_slot(run_id, item)
            except ConflictError:
                if step is not None:
                    raise
                continue  # a step took the slot first: finish the run where it is now
            after = base.then(item)
            self._remember(after)
            self._snapshot(after)
            return
        raise StoreUnavailableError(f"run {run_id!r} kept moving: not finished after {FINISH_ATTEMPTS} tries")

    def stalled_runs(self, due_before: float, limit: int = 100) -> list[tuple[str, int]]:
        """Running runs due before the cut-off, oldest first.

        The index is eventually consistent and keys runs by the bucket of their due
        time, so candidates are re-read and kept only if really due. A run item is a
        snapshot that may lag its run (a lost snapshot write): candidates that look due
        are folded, and a snapshot that lagged is rewritten, which moves the run's index
        key (or takes an ended run out of the index).
        """
        if limit <= 0:
            return []
        due: list[RunRecord] = []
        for shard in range(codec.RUNNING_SHARDS):
            due += self._stalled_in_shard(shard, due_before, limit)
        due.sort(key=lambda run: run.next_at)
        return [(run.run_id, run.step) for run in due[:limit]]

    def claim_resend(self, run_id: str, now: float, window_s: float) -> bool:
        """One conditional update of the run item (only when a run is re-sent)."""
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=codec.run_key(run_id),
                UpdateExpression="SET resent_at = :now",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(resent_at) OR resent_at <= :cutoff)",
                ExpressionAttributeValues={":now": codec.N(now), ":cutoff": codec.N(now - window_s)},
            )
        except ConflictError:
            return False
        return True

    def _stalled_in_shard(self, shard: int, due_before: float, limit: int) -> list[RunRecord]:
        """The shard's ``limit`` runs due first (more on ties: a bucket is read whole)."""
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": GSI,
            "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk <= :due",
            "ExpressionAttributeValues": {
                ":pk": codec.S(f"RUNNING#{shard}"),
                ":due": codec.S(codec.due_key(due_before)),
            },
        }
        due: list[RunRecord] = []
        last_bucket: str | None = None  # once ``limit`` are found: only ties with it remain
        while True:
            response = self._call("query", **params, Limit=BATCH_GET_KEYS)
            candidates = response.get("Items", [])
            if last_bucket is not None:
                candidates = [c for c in candidates if c["gsi1sk"]["S"] == last_bucket]
            for item in self._batch_get(list(map(_table_key, candidates))):
                if float(item.get("resent_at", {}).get("N", "-inf")) > due_before:
                    continue  # re-sent within the stall window (see claim_resend)
                run = self._current(item)
                if run is not None and run.status == "running" and run.next_at < due_before:
                    due.append(run)
            start = response.get("LastEvaluatedKey")
            if not start or (last_bucket is not None and len(candidates) < len(response.get("Items", []))):
                return due
            if last_bucket is None and len(due) >= limit and candidates:
                last_bucket = candidates[-1]["gsi1sk"]["S"]
            params = {**params, "ExclusiveStartKey": start}

    def _current(self, item: codec.Item) -> RunRecord | None:
        """The run a snapshot that looks due stands for now (folded; its snapshot mended)."""
        snapshot = codec.run_from_item(item)
        # An ended run's snapshot is in the index only when a redrive marked it.
        marked = snapshot.status != "running" and "gsi1pk" in item
        if snapshot.status != "running" and not marked:
            return snapshot
        folded = self._read_run(snapshot.run_id)
        if folded is not None and (folded.slots > folded.snapshot_slots or marked):
            # A mark with no redrive after it (that redrive died or lost) leaves the index.
            self._snapshot(folded, again=marked)
        return folded.run if folded else None

    # -- the fold ---------------------------------------------------------------------------
    def _read_run(self, run_id: str, *, charge: int | None = None) -> _Folded | None:
        """The run now: its snapshot with the slots after it folded in (None if unknown).

        Reads backwards from the run item, one page of about a snapshot's worth of slots,
        more only when a snapshot write was lost. With ``charge`` (a read for step
        ``charge``) its read units are kept for that step's commit to count, if the run is
        at that step: a stale duplicate's read commits nothing, and is not counted.
        """
        known = self._cache.get(run_id)
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :run",
            "ExpressionAttributeValues": {
                ":pk": codec.S(codec.run_pk(run_id)),
                # Snapshots only move forward: slots before a known one are never needed.
                ":first": codec.S(codec.slot_sk(known.snapshot_slots) if known else codec.SLOT_FIRST_SK),
                ":run": codec.S(codec.RUN_SK),
            },
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        response = self._call("query", **params, Limit=SNAPSHOT_EVERY + 2)
        items = response.get("Items", [])
        read = _read_units(items)
        if not items or items[0]["sk"]["S"] != codec.RUN_SK:
            self._drop(run_id)
            return None
        snapshot, slots = items[0], items[1:]
        base = codec.slots_of(snapshot)
        if known is not None and base < known.snapshot_slots:
            # The run item went back (it was restored or rewritten from outside): what
            # this store knew no longer bounds the read.
            self._drop(run_id)
            return self._read_run(run_id, charge=charge)
        start = response.get("LastEvaluatedKey")
        run = codec.run_from_item(snapshot)
        # A run at a fan-out stays there until its join, and its executions change nothing
        # but the step: once the oldest slot read is one of them, so are the slots between
        # it and the snapshot (or they are not written yet). No need to read them.
        fanout = run.cursor.step if run.status == "running" and run.cursor is not None else None
        while (
            start
            and (not slots or codec.step_of(slots[-1]) > base)
            and not (slots and fanout is not None and is_execution(slots[-1], fanout))
        ):
            missing = codec.step_of(slots[-1]) - base if slots else SNAPSHOT_EVERY
            response = self._call("query", **params, ExclusiveStartKey=start, Limit=missing)
            slots += response.get("Items", [])
            read += _read_units(response.get("Items", []))
            start = response.get("LastEvaluatedKey")
        folded = _Folded(
            run,
            base,
            base,
            snapshot.get("gsi1sk", {}).get("S"),
            codec.billed_bytes(snapshot),
            codec.index_entry(snapshot),
        )
        for slot in reversed(slots):
            step = codec.step_of(slot)
            if step < base:
                continue
            if step != folded.slots and not (step > folded.slots and is_execution(slot)):
                raise StoreUnavailableError(f"run {run_id!r}: slot {folded.slots} missing before slot {step}")
            folded = folded.then(slot)
        if charge is not None and charge == folded.slots:
            folded = replace(folded, unpaid_reads=read)
        self._remember(folded)
        return folded

    def _running_at(self, run_id: str, step: int) -> _Folded:
        """The run, known to have been running at ``step`` (ConflictError if it was not).

        That it was is enough: slot ``step`` is still empty only if it still is.
        """
        known = self._at_step(run_id, step)
        if known is None or known.run.status not in LIVE or known.run.step != step:
            raise ConflictError(f"run {run_id!r} is not running at step {step}")
        return known

    def _at_step(self, run_id: str, step: int) -> _Folded | None:
        """The run for step ``step``: what this thread knows if that is the run running at
        ``step``, else read (its read units charged to the step).

        Looked up once per step: the run a step handler reads (``get_run(step=)``) is kept
        as this thread's *stepping* run, and so is each commit's run after it, so the
        commit and a chain's next step take it from there. It is always the cache's entry
        for its run (:meth:`_remember` and :meth:`_drop` keep it so).
        """
        known = getattr(self._local, "stepping", None)
        if known is None or known.run.run_id != run_id:
            known = self._cache.get(run_id)
        if known is None or known.slots != step or known.run.status not in LIVE:
            known = self._read_run(run_id, charge=step)
        self._local.stepping = known
        return known

    def _known_at(self, run_id: str, step: int) -> _Folded | None:
        """What this store last saw of the run, if that was the run running at ``step``."""
        known = self._cache.get(run_id)
        return known if known is not None and known.slots == step and known.run.status in LIVE else None

    def _put_slot(self, run_id: str, item: codec.Item) -> None:
        """Take an empty slot: the transition's commit (ConflictError if it is taken).

        DynamoDB refuses an item it cannot store (over 400 KB) with a ValidationException
        that every retry would meet again: StateTooLargeError, so the run fails at once.
        """
        try:
            self._put_new(item)
        except ConflictError:
            self._drop(run_id)  # what we knew is behind
            raise
        except ClientError as exc:
            if error_code(exc) != "ValidationException":
                raise
            message = exc.response.get("Error", {}).get("Message", "")
            raise StateTooLargeError(
                f"DynamoDB refused the step's record (ValidationException: {message[:200]})"
            ) from exc

    def _snapshot(self, folded: _Folded, *, again: bool = False) -> None:
        """Rewrite the run item as ``folded``, unless a newer snapshot (``again``: as new)
        is already there.

        Best effort: the slots are the commit, and a reader folds what a lost snapshot
        would have held. Only the store's own transient errors are swallowed.
        """
        item = codec.run_item(folded.run, folded.slots)
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=item,
                ConditionExpression="applied <= :applied" if again else "applied < :applied",
                ExpressionAttributeValues={":applied": codec.N(folded.slots)},
            )
        except (ConflictError, StoreUnavailableError):
            return
        self._remember(
            _Folded(
                folded.run,
                folded.slots,
                folded.slots,
                codec.due_bucket_key(folded.run.next_at) if folded.run.status == "running" else None,
                codec.billed_bytes(item),
                codec.index_entry(item),
            )
        )

    @property
    def _tally(self) -> UsageTally | None:
        """The tally this task counts its reads into (see :meth:`tally`), if any: a
        context variable, so each of a batch's messages running alongside on one thread
        counts its own."""
        return self._tallies.get()

    @_tally.setter
    def _tally(self, tally: UsageTally | None) -> None:
        self._tallies.set(tally)

    def _call(self, operation: str, **params: Any) -> Any:
        response = super()._call(operation, **params)
        tally = self._tally
        if tally is not None and operation in ("get_item", "query"):
            found = [response["Item"]] if "Item" in response else response.get("Items", [])
            tally.add({DYNAMODB_READ_UNITS: _read_units(found)})
        return response

    @property
    def _cache(self) -> OrderedDict[str, _Folded]:
        """Per thread, as per Lambda container: what one worker knows, another may not."""
        cache = getattr(self._local, "runs", None)
        if cache is None:
            cache = self._local.runs = OrderedDict()
        return cache

    def _remember(self, folded: _Folded) -> None:
        cache = self._cache
        run_id = folded.run.run_id
        cache[run_id] = folded
        cache.move_to_end(run_id)
        stepping = getattr(self._local, "stepping", None)
        if stepping is not None and stepping.run.run_id == run_id:
            self._local.stepping = folded
        while len(cache) > CACHED_RUNS:
            self._drop(next(iter(cache)))

    def _drop(self, run_id: str) -> None:
        """Forget what this thread knows of ``run_id``."""
        self._cache.pop(run_id, None)
        stepping = getattr(self._local, "stepping", None)
        if stepping is not None and stepping.run.run_id == run_id:
            self._local.stepping = None

    # -- primitives ---------------------------------------------------------------------
    def _slots_query(self, run_id: str, first: str, last: str) -> dict[str, Any]:
        """A strongly consistent query of the run's slots from sort key ``first`` to ``last``."""
        return {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": {
                ":pk": codec.S(codec.run_pk(run_id)),
                ":first": codec.S(first),
                ":last": codec.S(last),
            },
            "ConsistentRead": True,
        }

    def _put_new(self, item: codec.Item) -> None:
        """Put an item that must not exist yet (ConflictError if it does).

        The item carries a token of this write. botocore retries a request whose answer
        was lost (a timeout, a 500): if the first attempt landed, the retry fails the
        condition. The item is then read back, and if it holds this write's token the
        write is ours and succeeded — a step goes on to send its next message instead
        of leaving its run to the sweeper.
        """
        token = uuid.uuid4().hex
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item={**item, codec.WRITER: codec.S(token)},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ConflictError:
            if self._writer_of(item) != token:
                raise

    def _writer_of(self, item: codec.Item) -> str | None:
        """The write token stored at ``item``'s key (a Query: every role that puts may query)."""
        response = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND sk = :sk",
            ExpressionAttributeValues={":pk": item["pk"], ":sk": item["sk"]},
            ProjectionExpression="#writer",
            ExpressionAttributeNames={"#writer": codec.WRITER},
            ConsistentRead=True,
        )
        found = response.get("Items", [])
        return found[0].get(codec.WRITER, {}).get("S") if found else None

    def _get(self, key: codec.Item) -> codec.Item | None:
        response = self._call("get_item", TableName=self.table_name, Key=key, ConsistentRead=True)
        return response.get("Item")

    def _query(self, params: dict[str, Any], limit: int) -> list[codec.Item]:
        """Up to ``limit`` items of a query, following its pages."""
        items: list[codec.Item] = []
        while len(items) < limit:
            response = self._call("query", **params, Limit=limit - len(items))
            items += response.get("Items", [])
            start = response.get("LastEvaluatedKey")
            if not start:
                break
            params = {**params, "ExclusiveStartKey": start}
        return items

    def _batch_get(self, keys: list[codec.Item]) -> list[codec.Item]:
        """The items at ``keys``, in the order of ``keys`` (missing ones skipped)."""
        found: dict[tuple[str, str], codec.Item] = {}
        for chunk in _chunks(keys, BATCH_GET_KEYS):
            request: dict[str, Any] = {self.table_name: {"Keys": chunk, "ConsistentRead": True}}
            for attempt in range(8):
                response = self._call("batch_get_item", RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    found[_key_tuple(item)] = item
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))  # throttled: back off, then retry the rest
            if request:
                raise StoreUnavailableError("batch_get_item: keys left unprocessed after retries")
        return [found[k] for k in map(_key_tuple, keys) if k in found]


# -- helpers ------------------------------------------------------------------------------
def _sized_slot(commit: StepCommit) -> codec.Item:
    """The commit's slot, measured: StateTooLargeError if DynamoDB could not store it."""
    slot = codec.commit_item(commit)
    _check_size(slot)
    return slot


def _check_size(slot: codec.Item) -> None:
    """StateTooLargeError if DynamoDB could not store ``slot``."""
    size = codec.item_bytes(slot) + codec.WRITER_BYTES
    if size > codec.MAX_ITEM_BYTES:
        raise StateTooLargeError(
            f"the step's record (its update and log entry) is {size} bytes; "
            f"DynamoDB stores at most {codec.MAX_ITEM_BYTES} bytes per item",
            details={"size": size, "limit": codec.MAX_ITEM_BYTES},
        )


def _read_units(items: list[codec.Item]) -> int:
    """Read units of one strongly consistent call that returned ``items``."""
    return codec.read_units(sum(map(codec.billed_bytes, items)))


def _table_key(item: codec.Item) -> codec.Item:
    return {"pk": item["pk"], "sk": item["sk"]}


def _key_tuple(item: codec.Item) -> tuple[str, str]:
    return item["pk"]["S"], item["sk"]["S"]


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _encode_token(index_sk: str) -> str:
    return base64.urlsafe_b64encode(index_sk.encode()).decode().rstrip("=")


def _index_start(token: str, partition: str, key_of: Callable[[str], codec.Item]) -> codec.Item | None:
    """The ExclusiveStartKey a list token stands for, or None if it is not one of ours."""
    try:
        index_sk = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    _, sep, item_id = index_sk.partition("#")
    if not sep or not item_id:
        return None
    return {**key_of(item_id), "gsi1pk": codec.S(partition), "gsi1sk": codec.S(index_sk)}
