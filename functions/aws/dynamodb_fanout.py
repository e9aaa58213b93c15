"""Fan-out items of :class:`~functions.aws.dynamodb.DynamoRunStore` (engine/fanout_service.py
says what they are for; dynamodb_fanout_codec.py how they are laid out).

An execution is committed in two writes, no transaction: an UpdateItem of the fan-out's
counting item takes the next step for that attempt — conditional on the attempt not
holding one yet, so a duplicate delivery takes nothing and learns the step taken before
from the failed condition's ``ALL_OLD`` — and counts the item done when the attempt was
final; then a PutItem writes the exec slot at that step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.cost import DYNAMODB_READ_UNITS, DYNAMODB_WRITE_UNITS, EMPTY, Usage, UsageTally
from engine.errors import ConflictError
from engine.ports import Claim, ExecutionRecord, FanOutRecord
from functions.aws import dynamodb_codec as codec
from functions.aws import dynamodb_fanout_codec as fc

if TYPE_CHECKING:
    from functions.aws.dynamodb import _Folded


class DynamoFanOuts:
    """The fan-out half of the RunStore contract (mixed into DynamoRunStore)."""

    table_name: str

    if TYPE_CHECKING:  # provided by DynamoRunStore

        @property
        def _cache(self) -> OrderedDict[str, _Folded]: ...

        @property
        def _tally(self) -> UsageTally | None: ...

        @_tally.setter
        def _tally(self, tally: UsageTally | None) -> None: ...

        def _call(self, operation: str, **params: Any) -> Any: ...
        def _put_new(self, item: codec.Item) -> None: ...
        def _get(self, key: codec.Item) -> codec.Item | None: ...
        def _query(self, params: dict[str, Any], limit: int) -> list[codec.Item]: ...
        def _slots_query(self, run_id: str, first: str, last: str) -> dict[str, Any]: ...
        def _known_at(self, run_id: str, step: int) -> _Folded | None: ...
        def _read_run(self, run_id: str) -> _Folded | None: ...
        def _snapshot(self, folded: _Folded) -> None: ...
        def _remember(self, folded: _Folded) -> None: ...

    @contextmanager
    def tally(self) -> Iterator[UsageTally]:
        """Count the read units of this thread's calls within the block (and the claims'
        write units) into a tally: see :meth:`engine.ports.RunStore.tally`."""
        outer, self._tally = self._tally, UsageTally()
        try:
            yield self._tally
        finally:
            self._tally = outer

    def _taken(self) -> Usage:
        return EMPTY if self._tally is None else self._tally.take()

    def open_fanout(
        self,
        run_id: str,
        base: int,
        total: int,
        now: float,
        *,
        prior: int | None = None,
        carried: Collection[int] = (),
        cost: Usage = EMPTY,
    ) -> FanOutRecord:
        """The counting item keeps what opening cost: ``cost``, the read of the run for
        this step, and this call's reads and writes (the item's own, and the snapshot's)."""
        known = self._known_at(run_id, base) or self._read_run(run_id)
        expires_at = known.run.expires_at if known is not None else None
        snapshot = known is not None and known.snapshot_slots < known.slots
        if cost:
            cost = cost + self._taken()
            if known is not None and known.unpaid_reads:
                cost = cost + {DYNAMODB_READ_UNITS: known.unpaid_reads}
                known = replace(known, unpaid_reads=0)
                self._remember(known)
            if snapshot and known is not None:
                cost = cost + {DYNAMODB_WRITE_UNITS: _snapshot_units(known)}
        item = _with_own_units(
            cost, lambda c: fc.fanout_item(run_id, base, total, now, expires_at, prior, carried, c)
        )
        try:
            self._put_new(item)
        except ConflictError:
            found = self.get_fanout(run_id, base)
            assert found is not None, "a fan-out item is never deleted before its run"
            return found
        if snapshot and known is not None:
            # A snapshot at the fan-out's step lets readers skip its executions.
            self._snapshot(known)
        return fc.fanout_from_item(run_id, base, item)

    def latest_fanout(self, run_id: str) -> FanOutRecord | None:
        """One query, read backwards from the end of the run's ``FAN#`` keys."""
        response = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :fan)",
            ExpressionAttributeValues={":pk": codec.S(codec.run_pk(run_id)), ":fan": codec.S("FAN#")},
            ScanIndexForward=False,
            ConsistentRead=True,
            Limit=1,
        )
        items = response.get("Items", [])
        return fc.fanout_from_item(run_id, fc.fanout_base(items[0]), items[0]) if items else None

    def get_fanout(self, run_id: str, base: int) -> FanOutRecord | None:
        item = self._get(fc.fanout_key(run_id, base))
        return fc.fanout_from_item(run_id, base, item) if item else None

    def claim_execution(
        self,
        run_id: str,
        base: int,
        index: int,
        attempt: int,
        *,
        final: bool,
        failed: bool,
        now: float,
        limit: int,
        total: int,
    ) -> Claim:
        code = fc.claim_code(attempt, final, failed)
        try:
            response = self._call(
                "update_item",
                TableName=self.table_name,
                Key=fc.fanout_key(run_id, base),
                UpdateExpression=("SET n = n + :one, c.#i = n + :claim, #at = :now ADD d :d, f :f"),
                ConditionExpression=(
                    "attribute_exists(n) AND attribute_not_exists(fin) AND n < :limit "
                    "AND (attribute_not_exists(c.#i) OR c.#i < :floor)"
                ),
                ExpressionAttributeNames={"#i": str(index), "#at": "at"},
                ExpressionAttributeValues={
                    ":one": codec.N(1),
                    ":claim": codec.N(1 + fc.CLAIM_UNIT * code),
                    ":now": codec.N(now),
                    ":d": codec.N(int(final)),
                    ":f": codec.N(int(final and failed)),
                    ":limit": codec.N(limit),
                    ":floor": codec.N(fc.claim_floor(attempt)),
                },
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ConflictError as exc:
            return self._claim_refused(run_id, base, index, attempt, final, old_item(exc))
        attributes = response["Attributes"]
        offset, _, _ = fc.decode_claim(int(attributes["c"]["M"][str(index)]["N"]))
        if self._tally is not None:
            # An update is billed on the larger of the item before and after: after.
            executed = int(attributes["n"]["N"])
            opened = fc.fanout_item(run_id, base, total, now, int(now) + CLAIM_EXPIRY_SPAN)
            size = fc.claim_item_bytes(codec.billed_bytes(opened) + OPENED_EXTRA_BYTES, min(executed, total))
            self._tally.add({DYNAMODB_WRITE_UNITS: codec.write_units(size)})
        fanout = FanOutRecord(
            run_id,
            base,
            total=total,
            executed=int(attributes["n"]["N"]),
            # An attribute the update left as it was may be missing from UPDATED_NEW (moto):
            # ``d`` is there whenever this claim was final, the only time it can complete the set.
            done=int(attributes.get("d", {"N": "0"})["N"]),
            failed=int(attributes.get("f", {"N": "0"})["N"]),
            updated_at=now,
        )
        return Claim("new", base + offset - 1, final, fanout)

    def _claim_refused(
        self, run_id: str, base: int, index: int, attempt: int, final: bool, old: codec.Item | None
    ) -> Claim:
        """What a claim whose condition failed comes to, from the item as it was."""
        if old is None:
            return Claim("closed", None, final, None)
        fanout = fc.fanout_from_item(run_id, base, old)
        value = old.get("c", {}).get("M", {}).get(str(index))
        if value is not None:
            offset, claimed_attempt, claimed_final = fc.decode_claim(int(value["N"]))
            if claimed_attempt > attempt:
                return Claim("superseded", None, final, fanout)
            if claimed_attempt == attempt:
                return Claim("again", base + offset - 1, claimed_final, fanout)
        if fanout.closed_at is not None:
            return Claim("closed", None, final, fanout)
        return Claim("full", None, final, fanout)

    def put_execution(self, run_id: str, base: int, record: ExecutionRecord, now: float) -> None:
        """The record's cost gets the tally's reads and this write's units added."""
        known = self._cache.get(run_id)
        expires_at = known.run.expires_at if known is not None else None
        cost = record.cost + self._taken() if record.cost else record.cost
        item = _with_own_units(
            cost, lambda c: fc.execution_item(run_id, base, replace(record, cost=c), now, expires_at)
        )
        try:
            self._put_new(item)
        except ConflictError:
            return  # written before: by this execution's first delivery
        cursor = known.run.cursor if known is not None and known.run.status == "running" else None
        if known is not None and cursor is not None and cursor.step == base and known.slots <= record.step:
            run = replace(known.run, step=record.step + 1, next_at=now)
            self._remember(replace(known, run=run, slots=record.step + 1))

    def list_executions(self, run_id: str, base: int, count: int) -> list[ExecutionRecord]:
        if count <= 0:
            return []
        params = self._slots_query(run_id, codec.slot_sk(base), codec.slot_sk(base + count - 1))
        items = self._query(params, count)
        return [fc.execution_from_item(item) for item in items if fc.is_execution(item, base)]

    def close_fanout(self, run_id: str, base: int, now: float) -> int | None:
        try:
            response = self._call(
                "update_item",
                TableName=self.table_name,
                Key=fc.fanout_key(run_id, base),
                UpdateExpression="SET fin = n, n = n + :one, #at = :now",
                ConditionExpression="attribute_exists(n) AND attribute_not_exists(fin)",
                ExpressionAttributeNames={"#at": "at"},
                ExpressionAttributeValues={":one": codec.N(1), ":now": codec.N(now)},
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ConflictError as exc:
            old = old_item(exc)
            return None if old is None else base + int(old["fin"]["N"])
        return base + int(response["Attributes"]["fin"]["N"])


def old_item(exc: ConflictError) -> codec.Item | None:
    """The item as it was when an update's condition failed (ReturnValuesOnConditionCheckFailure)."""
    cause: Any = exc.__cause__
    response = getattr(cause, "response", None) or {}
    return response.get("Item")


#: What a counting item holds besides what :func:`fc.fanout_item` shows at a claim: its
#: write token and its cost (about 40 + 60 bytes).
OPENED_EXTRA_BYTES = codec.WRITER_BYTES + 60
#: A run's expiry is about this many seconds away (its digits count in the item's size).
CLAIM_EXPIRY_SPAN = 10**7


def _with_own_units(cost: Usage, build: Callable[[Usage], codec.Item]) -> codec.Item:
    """The item ``build(cost)`` makes, ``cost`` including the write units of putting it
    (the item holds its cost, so its size depends on it: tried until they agree). With
    no cost to keep, the item as it is."""
    if not cost:
        return build(cost)
    units = 0
    while True:
        item: codec.Item = build(cost + {DYNAMODB_WRITE_UNITS: units})
        needed = codec.write_units(codec.billed_bytes(item) + codec.WRITER_BYTES)
        if needed <= units:
            return item
        units = needed


def _snapshot_units(known: _Folded) -> int:
    """Write units of rewriting the run item as ``known`` (with its index entry)."""
    item = codec.run_item(known.run, known.slots)
    units = codec.write_units(max(codec.billed_bytes(item), known.snapshot_bytes))
    return units + codec.index_write_units(known.snapshot_index, item)
