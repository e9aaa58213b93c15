"""WebSocket connections and their subscriptions on the one table, and the stream changes
that drive delivery.

| kind | pk             | sk             | attributes                                            |
|------|----------------|----------------|-------------------------------------------------------|
| conn | CONN#<conn id> | CONN           | connection_id, connected_at, runs (SS), expires_at    |
| sub  | SUB#<run id>   | CONN#<conn id> | run_id, connection_id, last_seq, ver, created_at,     |
|      |                |                | expires_at, lease?, lease_until?, run_end?, replay?   |

A run's subscribers share one partition, so the broadcaster finds them with one strongly
consistent Query. Both kinds expire with the connection (API Gateway closes it after 2 h).
The lease protocol over these items is explained in :mod:`engine.logstream`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from engine.cost import Usage
from engine.errors import ConflictError
from engine.logstream import Claim, LogStream, RunEnd, Subscription, TooManySubscriptionsError
from engine.step import TERMINAL
from functions.aws import dynamodb_codec as codec
from functions.aws.adapter import AwsAdapter

#: API Gateway closes every WebSocket connection after 2 hours: connections and
#: subscriptions expire (DynamoDB TTL) with it.
CONNECTION_TTL_S = 7200

Item = codec.Item
S, N = codec.S, codec.N
#: Every attribute an expression names is aliased, so none can clash with a reserved word.
_NAMES = {
    f"#{name}": name
    for name in ("last_seq", "ver", "lease", "lease_until", "run_end", "replay", "runs", "kind")
}


def connection_key(connection_id: str) -> Item:
    return {"pk": S(f"CONN#{connection_id}"), "sk": S("CONN")}


def subscription_key(run_id: str, connection_id: str) -> Item:
    return {"pk": S(f"SUB#{run_id}"), "sk": S(f"CONN#{connection_id}")}


def subscription_item(sub: Subscription) -> Item:
    item = {
        **subscription_key(sub.run_id, sub.connection_id),
        "kind": S("sub"),
        "run_id": S(sub.run_id),
        "connection_id": S(sub.connection_id),
        "last_seq": N(sub.last_seq),
        "ver": N(sub.ver),
        "created_at": N(sub.created_at),
        "expires_at": N(sub.expires_at),
    }
    if sub.replay is not None:
        item["replay"] = S(sub.replay)
    if sub.end is not None:
        item["run_end"] = _end_value(sub.end)
    return item


def subscription_from_item(item: Item) -> Subscription:
    end = json.loads(item["run_end"]["S"]) if "run_end" in item else None
    return Subscription(
        run_id=item["run_id"]["S"],
        connection_id=item["connection_id"]["S"],
        last_seq=int(item["last_seq"]["N"]),
        ver=int(item.get("ver", {}).get("N", 0)),
        end=RunEnd(end["status"], end["last_seq"], end.get("error"), Usage.decode(end.get("cost")))
        if end
        else None,
        lease=item["lease"]["S"] if "lease" in item else None,
        lease_until=float(item["lease_until"]["N"]) if "lease_until" in item else 0.0,
        replay=item["replay"]["S"] if "replay" in item else None,
        created_at=float(item.get("created_at", {}).get("N", 0)),
        expires_at=int(item.get("expires_at", {}).get("N", 0)),
    )


def _end_value(end: RunEnd) -> dict[str, str]:
    value = {"status": end.status, "last_seq": end.last_seq, "error": end.error}
    if end.cost:
        value["cost"] = end.cost.encode()
    return S(json.dumps(value))


class DynamoSubscriptionStore(AwsAdapter):
    """The :class:`~engine.logstream.SubscriptionStore` on DynamoDB; client built on first use."""

    def __init__(self, table_name: str, client_factory: Callable[[], Any]) -> None:
        super().__init__(client_factory)
        self.table_name = table_name

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return super()._call(operation, TableName=self.table_name, **params)

    def _update(self, key: Item, expression: str, condition: str | None = None, **values: Any) -> Item | None:
        """One UpdateItem; the new item, or None when ``condition`` does not hold."""
        params: dict[str, Any] = {"Key": key, "UpdateExpression": expression, "ReturnValues": "ALL_NEW"}
        used = f"{expression} {condition or ''}"
        names = {alias: name for alias, name in _NAMES.items() if alias in used}
        if names:
            params["ExpressionAttributeNames"] = names
        if values:
            params["ExpressionAttributeValues"] = {f":{k}": v for k, v in values.items()}
        if condition:
            params["ConditionExpression"] = condition
        try:
            return self._call("update_item", **params)["Attributes"]
        except ConflictError:
            return None

    # -- connections ----------------------------------------------------------------------
    def open_connection(
        self, connection_id: str, now: float, expires_at: int, owner: str | None = None
    ) -> None:
        item = {
            **connection_key(connection_id),
            "kind": S("conn"),
            "connection_id": S(connection_id),
            "connected_at": N(now),
            "expires_at": N(expires_at),
        }
        if owner is not None:
            item["owner"] = S(owner)
        self._call("put_item", Item=item)

    def connection_owner(self, connection_id: str) -> str | None:
        item = self._call("get_item", Key=connection_key(connection_id), ConsistentRead=True).get("Item")
        return item["owner"]["S"] if item and "owner" in item else None

    def close_connection(self, connection_id: str) -> list[str]:
        item = self._call("get_item", Key=connection_key(connection_id), ConsistentRead=True).get("Item")
        runs = sorted(item.get("runs", {}).get("SS", [])) if item else []
        for run_id in runs:
            self._call("delete_item", Key=subscription_key(run_id, connection_id))
        self._call("delete_item", Key=connection_key(connection_id))
        return runs

    # -- subscriptions --------------------------------------------------------------------
    def add(self, sub: Subscription, max_per_connection: int) -> None:
        # Record the run on the connection first, so a disconnect always finds the
        # subscription; the condition caps how many runs one connection follows.
        added = self._update(
            connection_key(sub.connection_id),
            "ADD #runs :run SET #kind = :kind, connection_id = :cid, "
            "connected_at = if_not_exists(connected_at, :now), expires_at = if_not_exists(expires_at, :exp)",
            "attribute_not_exists(#runs) OR size(#runs) < :max OR contains(#runs, :id)",
            run={"SS": [sub.run_id]},
            id=S(sub.run_id),
            kind=S("conn"),
            cid=S(sub.connection_id),
            now=N(sub.created_at),
            exp=N(sub.expires_at),
            max=N(max_per_connection),
        )
        if added is None:
            raise TooManySubscriptionsError(f"a connection may follow at most {max_per_connection} runs")
        self._call("put_item", Item=subscription_item(sub))

    def remove(self, run_id: str, connection_id: str) -> None:
        self._call("delete_item", Key=subscription_key(run_id, connection_id))
        self._forget_run(run_id, connection_id)

    def subscriptions(self, run_id: str) -> list[Subscription]:
        params: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": S(f"SUB#{run_id}")},
            "ConsistentRead": True,
        }
        subs: list[Subscription] = []
        while True:
            page = self._call("query", **params)
            subs += [subscription_from_item(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return subs
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get(self, run_id: str, connection_id: str) -> Subscription | None:
        key = subscription_key(run_id, connection_id)
        item = self._call("get_item", Key=key, ConsistentRead=True).get("Item")
        return subscription_from_item(item) if item else None

    def acquire(
        self, run_id: str, connection_id: str, token: str, now: float, until: float, end: RunEnd | None
    ) -> Claim | None:
        key = subscription_key(run_id, connection_id)
        with_end = {"end": _end_value(end)} if end is not None else {}
        set_end = ", #run_end = :end" if end is not None else ""
        for _ in range(5):
            item = self._update(
                key,
                f"SET #lease = :token, #lease_until = :until{set_end}",
                "attribute_exists(pk) AND (attribute_not_exists(#lease) OR #lease_until < :now)",
                token=S(token),
                until=N(until),
                now=N(now),
                **with_end,
            )
            if item is not None:
                return Claim(subscription_from_item(item), held=True)
            # Taken: signal the holder (it re-checks before letting go).
            item = self._update(
                key,
                f"ADD #ver :one{' SET #run_end = :end' if end else ''}",
                "attribute_exists(pk)",
                one=N(1),
                **with_end,
            )
            if item is None:
                return None
            sub = subscription_from_item(item)
            if sub.leased(now):
                return Claim(sub, held=False)
            # Released between our two writes: the holder may have missed the signal.
        return Claim(sub, held=False)

    def advance(self, run_id: str, connection_id: str, token: str, last_seq: int, until: float) -> bool:
        item = self._update(
            subscription_key(run_id, connection_id),
            "SET #last_seq = :seq, #lease_until = :until",
            "#lease = :token",
            seq=N(last_seq),
            until=N(until),
            token=S(token),
        )
        return item is not None

    def release(
        self,
        run_id: str,
        connection_id: str,
        token: str,
        last_seq: int,
        *,
        expect_ver: int | None,
        replay: str | None,
    ) -> bool:
        values: dict[str, Any] = {"seq": N(last_seq), "token": S(token)}
        condition = "#lease = :token"
        if expect_ver is not None:
            condition += " AND #ver = :ver"
            values["ver"] = N(expect_ver)
        if replay is None:
            expression = "SET #last_seq = :seq REMOVE #lease, #lease_until, #replay"
        else:
            expression = "SET #last_seq = :seq, #replay = :replay REMOVE #lease, #lease_until"
            values["replay"] = S(replay)
        item = self._update(subscription_key(run_id, connection_id), expression, condition, **values)
        return item is not None

    def done(self, run_id: str, connection_id: str, token: str) -> None:
        try:
            self._call(
                "delete_item",
                Key=subscription_key(run_id, connection_id),
                ConditionExpression="#lease = :token",
                ExpressionAttributeNames={"#lease": "lease"},
                ExpressionAttributeValues={":token": S(token)},
            )
        except ConflictError:
            return  # re-subscribed meanwhile: that subscription lives on
        self._forget_run(run_id, connection_id)

    def _forget_run(self, run_id: str, connection_id: str) -> None:
        self._update(
            connection_key(connection_id), "DELETE #runs :run", "attribute_exists(pk)", run={"SS": [run_id]}
        )


# -- the table stream -----------------------------------------------------------------------
#: The BroadcastFunction filter that wakes it for subscriptions owed a replay (``$connect
#: ?run_id=``, a replay handed off when time ran out, a retry while the socket opened).
REPLAY_FILTER_PATTERN = (
    '{"eventName": ["INSERT", "MODIFY"], '
    '"dynamodb": {"NewImage": {"kind": {"S": ["sub"]}, "replay": {"S": [{"exists": true}]}}}}'
)


def apply_change(stream: LogStream, event_name: str, image: Item, deadline: float | None = None) -> str:
    """Act on one stream record (``NewImage`` in DynamoDB JSON); what it was, for logs.

    Checks what the event source filter already selects, so a wider filter (or the local
    stack's stream poller) cannot make it act on the wrong items.
    """
    kind = image.get("kind", {}).get("S")
    if kind in ("log", "finish") and event_name == "INSERT":
        # Every run ends in a slot: the done message goes out from it, never waiting for
        # the run item, a snapshot whose write is best effort.
        run_id, end = image["run_id"]["S"], slot_end(image)
        if end is not None:
            stream.on_run_end(run_id, deadline, end=end)
            return "run_end"
        if kind == "log":
            # The stored text is the message: handed on as it is, never parsed.
            stream.on_log(run_id, codec.entry_from_item(image), deadline)
            return "log"
    if kind == "sub" and event_name in ("INSERT", "MODIFY") and "replay" in image:
        stream.on_replay_due(subscription_from_item(image), deadline)
        return "replay"
    return "ignored"


def slot_end(image: Item) -> RunEnd | None:
    """How the run ended, if this slot (a log or finish item) ended it."""
    status = image.get("status", {}).get("S")
    if status not in TERMINAL:
        return None
    seq = codec.step_of(image)
    error = image.get("error", {}).get("S")
    # Slot k of a step is log entry k; a finish slot k comes after entries 0..k-1.
    last_seq = seq if image["kind"]["S"] == "log" else seq - 1
    # Either slot carries the run's cost after it (a finish slot: unchanged).
    cost = image.get(codec.COST, {}).get("S")
    return RunEnd(status, last_seq, json.loads(error) if error else None, Usage.decode(cost))


def deadline_of(stream: LogStream, context: Any, reserve_s: float = 3.0) -> float | None:
    """When a handler should hand the rest of a replay off: the Lambda's end, less a reserve.

    On the stream's clock, the one its delivery compares against.
    """
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return stream.clock() + remaining() / 1000 - reserve_s
