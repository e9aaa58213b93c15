"""What the timers benchmark (bench/timers.py) adds up: the billed quantities of a design,
priced with engine/prices.py; the meter's actor for chosen methods; Lambda time modelled
as bench/bill.py models it."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.bill import ASSUMED_LATENCY_S, DEFAULT_LATENCY_S, FULL_VCPU_MB, billed_requests
from bench.metering import Call, CallMeter
from engine.prices import LIST_PRICES

#: Not measured (moto answers in-process): a Scheduler control-plane call, assumed to take
#: what a DynamoDB transaction does.
SCHEDULER_LATENCY_S = 0.012


@dataclass
class Usage:
    """Billed quantities of one design (or one part of it)."""

    requests: Counter[str] = field(default_factory=Counter)  # "service:Operation" -> calls
    read_units: float = 0.0
    write_units: float = 0.0
    sqs_requests: float = 0.0
    scheduler_invocations: float = 0.0
    lambda_requests: float = 0.0
    lambda_gb_s: float = 0.0
    gb_months: float = 0.0

    def add_calls(self, calls: list[Call]) -> None:
        for c in calls:
            self.requests[f"{c.service}:{c.operation}"] += 1
            if c.capacity is not None:
                self.read_units += c.capacity.read
                self.write_units += c.capacity.write + c.capacity.index_write
            if c.service == "sqs":
                self.sqs_requests += billed_requests(c)

    def scaled(self, k: float) -> Usage:
        return Usage(
            Counter({op: n * k for op, n in self.requests.items()}),
            *(getattr(self, f) * k for f in _AMOUNTS),
        )

    def plus(self, other: Usage) -> Usage:
        requests = Counter(self.requests)
        for op, count in other.requests.items():
            requests[op] += count
        return Usage(requests, *(getattr(self, f) + getattr(other, f) for f in _AMOUNTS))

    def dollars(self) -> dict[str, float]:
        p = LIST_PRICES
        return {
            "DynamoDB reads": self.read_units * p.dynamodb_read_unit,
            "DynamoDB writes": self.write_units * p.dynamodb_write_unit,
            "DynamoDB storage": self.gb_months * p.dynamodb_gb_month,
            "SQS": self.sqs_requests * p.sqs_request,
            "Scheduler invocations": self.scheduler_invocations * p.scheduler_invocation,
            "Scheduler API": sum(n for op, n in self.requests.items() if op.startswith("scheduler:"))
            * p.scheduler_api_request,
            "Lambda requests": self.lambda_requests * p.lambda_request,
            "Lambda GB-s": self.lambda_gb_s * p.lambda_gb_second,
        }

    def total(self) -> float:
        return sum(self.dollars().values())


_AMOUNTS = (
    "read_units", "write_units", "sqs_requests", "scheduler_invocations",
    "lambda_requests", "lambda_gb_s", "gb_months",
)  # fmt: skip


class Attribution:
    """Tags the AWS calls of chosen methods with an actor, and times their CPU outside calls
    (the outermost tagged method gets it)."""

    def __init__(self, meter: CallMeter) -> None:
        self.meter = meter
        self.cpu_s: Counter[str] = Counter()
        self._depth = 0

    def wrap(self, obj: Any, name: str, actor: str) -> None:
        original = getattr(obj, name)

        def tagged(*args: Any, **kwargs: Any) -> Any:
            mark, overhead, t0 = self.meter.mark(), self.meter.overhead_s, time.process_time()
            self._depth += 1
            try:
                with self.meter.acting(actor):
                    return original(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    in_calls = sum(c.seconds for c in self.meter.calls[mark:])
                    spent = time.process_time() - t0 - in_calls - (self.meter.overhead_s - overhead)
                    self.cpu_s[actor] += max(spent, 0.0)

        setattr(obj, name, tagged)


def modelled_gb_s(calls: list[Call], cpu_s: float, memory_mb: int) -> float:
    """Lambda GB-s of some work: its CPU (scaled to the memory's share of a vCPU) plus an
    assumed round trip per AWS call (bench/bill.py's model)."""
    waiting = sum(
        SCHEDULER_LATENCY_S
        if c.service == "scheduler"
        else ASSUMED_LATENCY_S.get(f"{c.service}:{c.operation}", DEFAULT_LATENCY_S)
        for c in calls
    )
    seconds = cpu_s * max(1.0, FULL_VCPU_MB / memory_mb) + waiting
    return seconds * memory_mb / 1024


@contextlib.contextmanager
def undoable_patches() -> Iterator[Callable[[Any, str, Any], None]]:
    """A ``setattr`` whose patches are undone on exit (monkeypatch's, without pytest)."""
    undo: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    try:
        yield patch
    finally:
        for obj, name, value in reversed(undo):
            setattr(obj, name, value)
