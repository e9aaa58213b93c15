"""Wait items of :class:`~functions.aws.dynamodb.DynamoRunStore` (engine/waits.py says
what a wait is, engine/wait_service.py how it is used).

| kind | pk         | sk                | gsi1pk          | gsi1sk          |
|------|------------|-------------------|-----------------|-----------------|
| wait | RUN#<id>   | WAIT#<step:010d>  | WAITING#<0..7>  | due, ms         |

One item per wait, in its run's partition ("WAIT#" sorts after "RUN": outside every
read of the run and its log). It holds a callback's token hash (never the token), its
deadline, heartbeat and answer, or a timer's time. Until its run moves past it, it is
in the due-time index: the sweeper reads the index's entries due by now, once a minute,
so nothing polls per run however long a wait lasts. An answer, a timeout or a
withdrawal (the node's tool failed first) is one conditional UpdateItem (``#status =
pending``, and due or not due yet), so of two racing exactly one settles it; a heartbeat
is one too, and moves the item's index key.
"""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING, Any

from engine.errors import ConflictError
from engine.waits import PENDING, TIMED_OUT, WITHDRAWN, WaitRecord
from functions.aws import dynamodb_codec as codec

WAIT_SK_PREFIX = "WAIT#"
WAITING_SHARDS = 8
GSI = "gsi1"


def wait_key(run_id: str, step: int) -> codec.Item:
    return {
        "pk": codec.S(codec.run_pk(run_id)),
        "sk": codec.S(f"{WAIT_SK_PREFIX}{step:0{codec.SLOT_DIGITS}d}"),
    }


def waiting_shard(run_id: str) -> str:
    return f"WAITING#{zlib.crc32(run_id.encode()) % WAITING_SHARDS}"


def wait_item(wait: WaitRecord, expires_at: int | None) -> codec.Item:
    item = {
        **wait_key(wait.run_id, wait.step),
        "kind": codec.S("wait"),
        "run_id": codec.S(wait.run_id),
        "at": codec.N(wait.step),
        "node": codec.S(wait.node),
        "wait": codec.S(wait.kind),
        "deadline": codec.N(wait.deadline),
        "due": codec.N(wait.due),
        "wstatus": codec.S(wait.status),
        "gsi1pk": codec.S(waiting_shard(wait.run_id)),
        "gsi1sk": codec.S(codec.due_key(wait.due)),
    }
    if wait.heartbeat_s is not None:
        item["heartbeat_s"] = codec.N(wait.heartbeat_s)
    if wait.token_hash is not None:
        item["token_hash"] = codec.S(wait.token_hash)
    if expires_at is not None:
        item["expires_at"] = codec.N(expires_at)
    return item


def wait_from_item(item: codec.Item) -> WaitRecord:
    heartbeat = item.get("heartbeat_s", {}).get("N")
    output = item.get("output", {}).get("S")
    return WaitRecord(
        run_id=item["run_id"]["S"],
        step=int(item["at"]["N"]),
        node=item["node"]["S"],
        kind=item["wait"]["S"],
        deadline=float(item["deadline"]["N"]),
        due=float(item["due"]["N"]),
        status=item["wstatus"]["S"],
        heartbeat_s=float(heartbeat) if heartbeat is not None else None,
        token_hash=item.get("token_hash", {}).get("S"),
        output=json.loads(output) if output is not None else None,
        reason=item.get("reason", {}).get("S"),
        closed="gsi1pk" not in item,
    )


class DynamoWaits:
    """The wait half of the RunStore contract (mixed into DynamoRunStore)."""

    table_name: str

    if TYPE_CHECKING:  # provided by DynamoRunStore

        def _call(self, operation: str, **params: Any) -> Any: ...
        def _put_new(self, item: codec.Item) -> None: ...
        def _get(self, key: codec.Item) -> codec.Item | None: ...
        def _batch_get(self, keys: list[codec.Item]) -> list[codec.Item]: ...

    def put_wait(self, wait: WaitRecord, *, expires_at: int | None = None) -> WaitRecord:
        try:
            self._put_new(wait_item(wait, expires_at))
        except ConflictError:
            stored = self.get_wait(wait.run_id, wait.step)
            if stored is None:
                raise
            if stored.status != WITHDRAWN:
                return stored
            try:  # its step is being run again: stored anew, unless someone else did
                self._call(
                    "put_item",
                    TableName=self.table_name,
                    Item=wait_item(wait, expires_at),
                    ConditionExpression="#s = :withdrawn",
                    ExpressionAttributeNames={"#s": "wstatus"},
                    ExpressionAttributeValues={":withdrawn": codec.S(WITHDRAWN)},
                )
            except ConflictError:
                return self.get_wait(wait.run_id, wait.step) or wait
        return wait

    def get_wait(self, run_id: str, step: int) -> WaitRecord | None:
        item = self._get(wait_key(run_id, step))
        return wait_from_item(item) if item is not None and item.get("kind", {}).get("S") == "wait" else None

    def settle_wait(
        self,
        run_id: str,
        step: int,
        *,
        status: str,
        now: float,
        output: Any = None,
        reason: str | None = None,
    ) -> WaitRecord:
        """One conditional UpdateItem: pending, and due (a timeout) or not yet due (an
        answer). It is due at once after, so the sweeper wakes the run if whoever settled
        it dies before the run moves on. A withdrawal: pending, due or not; its due time
        and index key stay (a withdrawn wait can still time out)."""
        names = {"#s": "wstatus"}
        values: dict[str, Any] = {
            ":pending": codec.S(PENDING),
            ":now": codec.N(now),
            ":status": codec.S(status),
            ":key": codec.S(codec.due_key(now)),
        }
        sets = ["#s = :status", "gsi1sk = :key", "due = :now"]
        condition = "#s = :pending AND due > :now"
        if status in (TIMED_OUT, WITHDRAWN):
            sets = ["#s = :status"]  # its index key stays
            values.pop(":key")
        if status == TIMED_OUT:
            condition = "#s IN (:pending, :withdrawn) AND due <= :now"
            values[":withdrawn"] = codec.S(WITHDRAWN)
        elif status == WITHDRAWN:
            condition = "#s = :pending"
            values.pop(":now")
        if output is not None:
            sets.append("#o = :output")
            names["#o"] = "output"
            values[":output"] = codec.S(json.dumps(output, ensure_ascii=False, separators=(",", ":")))
        if reason is not None:
            sets.append("reason = :reason")
            values[":reason"] = codec.S(reason)
        return self._update_wait(
            run_id,
            step,
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression=f"attribute_exists(pk) AND {condition}",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def heartbeat_wait(self, run_id: str, step: int, *, now: float) -> WaitRecord:
        wait = self.get_wait(run_id, step)
        if wait is None or wait.status != PENDING or wait.due <= now:
            raise ConflictError(f"the wait of run {run_id!r} at step {step} is not pending")
        due = wait.beat(now).due
        return self._update_wait(
            run_id,
            step,
            UpdateExpression="SET due = :due, gsi1sk = :key",
            ConditionExpression="#s = :pending AND due > :now",
            ExpressionAttributeNames={"#s": "wstatus"},
            ExpressionAttributeValues={
                ":pending": codec.S(PENDING),
                ":now": codec.N(now),
                ":due": codec.N(due),
                ":key": codec.S(codec.due_key(due)),
            },
        )

    def close_wait(self, run_id: str, step: int) -> None:
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=wait_key(run_id, step),
                UpdateExpression="REMOVE gsi1pk, gsi1sk",
                ConditionExpression="attribute_exists(pk)",
            )
        except ConflictError:
            return

    def due_waits(self, now: float, limit: int = 100) -> list[WaitRecord]:
        """The index's entries due by ``now``, shard by shard, re-read from the table (the
        index holds keys only and is eventually consistent)."""
        keys: list[codec.Item] = []
        for shard in range(WAITING_SHARDS):
            params: dict[str, Any] = {
                "TableName": self.table_name,
                "IndexName": GSI,
                "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk <= :due",
                "ExpressionAttributeValues": {
                    ":pk": codec.S(f"WAITING#{shard}"),
                    ":due": codec.S(codec.due_key(now)),
                },
            }
            response = self._call("query", **params, Limit=limit)
            keys += [{"pk": item["pk"], "sk": item["sk"]} for item in response.get("Items", [])]
        waits = [wait_from_item(item) for item in self._batch_get(keys)]
        due = [w for w in waits if not w.closed and w.due <= now]
        return sorted(due, key=lambda w: w.due)[:limit]

    def _update_wait(self, run_id: str, step: int, **params: Any) -> WaitRecord:
        response = self._call(
            "update_item",
            TableName=self.table_name,
            Key=wait_key(run_id, step),
            ReturnValues="ALL_NEW",
            **params,
        )
        return wait_from_item(response["Attributes"])
