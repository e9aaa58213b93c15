"""Count every AWS call a boto3 client makes, with botocore's event hooks.

:class:`CallMeter` hooks a client's event system: ``provide-client-params`` asks DynamoDB
for ``ReturnConsumedCapacity="TOTAL"`` and notes the items a write is about to change,
``after-call`` records the call (who made it, the operation, its payload and the request
units by :mod:`bench.capacity`). Who made it is the meter's current ``actor``: the step
handler, the Lambda event source mapping the benchmark stands in for, or the set-up.

The time between the two hooks is the call's round trip (here: botocore plus moto,
in-process); the meter's own work is kept out of it and added up in ``overhead_s`` so
callers can take it out of their own timings.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.capacity import Capacity, Index, Item, item_size, item_write, read_units

#: Reads an item as it is stored, without going through a metered client.
Peek = Callable[[str, Item], Item | None]
_WRITES = {"PutItem", "UpdateItem", "DeleteItem"}
_clock = time.process_time  # moto runs in this thread: CPU time leaves the neighbours out


@dataclass(slots=True)
class Call:
    """One AWS API call as billed."""

    actor: str
    service: str
    operation: str
    seconds: float
    payload_bytes: int = 0
    capacity: Capacity | None = None
    reported_units: float | None = None  # what moto put in ConsumedCapacity, if anything
    failed: bool = False
    item_kind: str | None = None  # a PutItem's item: "run", "log", ... (our table's ``kind``)


@dataclass
class CallMeter:
    """Records the calls of every client it is attached to, tagged with ``actor``."""

    peek: Peek
    table_keys: tuple[str, ...]
    indexes: tuple[Index, ...]
    actor: str = "setup"
    calls: list[Call] = field(default_factory=list)
    overhead_s: float = 0.0

    def attach(self, client: Any) -> Any:
        events = client.meta.events
        events.register("provide-client-params.*.*", self._before)
        events.register("after-call.*.*", self._after)
        return client

    @contextmanager
    def acting(self, actor: str) -> Iterator[None]:
        previous, self.actor = self.actor, actor
        try:
            yield
        finally:
            self.actor = previous

    def mark(self) -> int:
        """A position in ``calls``: ``calls[mark:]`` are the calls made since."""
        return len(self.calls)

    # -- hooks ----------------------------------------------------------------------------
    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        t0 = _clock()
        if model.service_model.service_name == "dynamodb":
            if "ReturnConsumedCapacity" in model.input_shape.members:
                params.setdefault("ReturnConsumedCapacity", "TOTAL")
            context["bench_before"] = self._images(model.name, params)
        context["bench_params"] = params
        if model.name == "PutObject":  # the bytes stored (the body is a stream by after-call)
            body = params.get("Body", b"")
            context["bench_put_bytes"] = len(body) if isinstance(body, bytes | bytearray) else 0
        context["bench_start"] = _clock()
        self.overhead_s += context["bench_start"] - t0

    def _after(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        t0 = _clock()
        seconds = t0 - context.get("bench_start", t0)
        params = context.get("bench_params", {})
        service, operation = model.service_model.service_name, model.name
        failed = http_response.status_code >= 300
        call = Call(self.actor, service, operation, seconds, failed=failed)
        if service == "dynamodb":
            call.capacity = self._capacity(operation, params, parsed, context.get("bench_before", {}), failed)
            call.reported_units = _reported(parsed.get("ConsumedCapacity"))
            if operation == "PutItem":
                call.item_kind = params["Item"].get("kind", {}).get("S")
        elif service == "sqs":
            call.payload_bytes = _sqs_payload(operation, params, parsed)
        elif service == "s3" and operation == "PutObject":
            call.payload_bytes = context.get("bench_put_bytes", 0)
        self.calls.append(call)
        self.overhead_s += _clock() - t0

    # -- DynamoDB capacity ----------------------------------------------------------------
    def _key(self, item: Item) -> Item:
        return {k: item[k] for k in self.table_keys}

    def _images(self, operation: str, params: dict[str, Any]) -> dict[tuple, Item | None]:
        """The stored items a write is about to change, by (table, key)."""
        targets: list[tuple[str, Item]] = []
        if operation in _WRITES:
            key = params.get("Key") or self._key(params["Item"])
            targets.append((params["TableName"], key))
        elif operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                (_kind, op), *_ = entry.items()
                targets.append((op["TableName"], op.get("Key") or self._key(op["Item"])))
        return {_ref(table, key): self.peek(table, key) for table, key in targets}

    def _capacity(self, operation, params, parsed, before, failed) -> Capacity:
        if operation == "GetItem":
            size = item_size(parsed.get("Item"))
            return Capacity(read=read_units(size, consistent=bool(params.get("ConsistentRead"))))
        if operation in ("Query", "Scan"):
            size = sum(item_size(i) for i in parsed.get("Items", []))
            return Capacity(read=read_units(size, consistent=bool(params.get("ConsistentRead"))))
        if operation == "BatchGetItem":
            total = Capacity()
            for table, items in parsed.get("Responses", {}).items():
                consistent = bool(params["RequestItems"][table].get("ConsistentRead"))
                for item in items:
                    total.read += read_units(item_size(item), consistent=consistent)
            return total
        total = Capacity()
        for ref, old in before.items():
            new = old if failed else self.peek(*_unref(ref))
            factor = 2 if operation == "TransactWriteItems" else 1
            total.add(item_write(old, new, self.indexes, factor=factor))
        return total


def _ref(table: str, key: Item) -> tuple:
    return table, tuple(sorted((k, tuple(v.items())) for k, v in key.items()))


def _unref(ref: tuple) -> tuple[str, Item]:
    table, key = ref
    return table, {k: dict(v) for k, v in key}


def _reported(consumed: Any) -> float | None:
    if isinstance(consumed, dict):
        return float(consumed.get("CapacityUnits", 0.0))
    if isinstance(consumed, list) and consumed:
        return sum(float(c.get("CapacityUnits", 0.0)) for c in consumed)
    return None


def _sqs_payload(operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> int:
    """Bytes of message bodies a request carried (SQS bills each started 64 KB)."""
    if operation == "SendMessage":
        return len(params.get("MessageBody", "").encode())
    if operation == "SendMessageBatch":
        return sum(len(e["MessageBody"].encode()) for e in params.get("Entries", []))
    if operation == "ReceiveMessage":
        return sum(len(m["Body"].encode()) for m in parsed.get("Messages", []))
    return 0


def count_operations(calls: list[Call]) -> Counter[str]:
    return Counter(f"{c.service}:{c.operation}" for c in calls)
