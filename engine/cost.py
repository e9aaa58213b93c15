"""What a run costs: usage counted as it goes, priced on demand with :mod:`engine.prices`.

A run carries its :class:`Usage` — integer counts of what AWS bills — in every step's
commit: each commit holds the run's total after that step, written by the step's own
conditional write (no request of its own). A duplicate delivery or a crash before the
commit writes nothing, so nothing is counted twice; the estimate covers committed work
(a step whose commit was lost is not in it, nor a delivery that did nothing).

What a step adds (see :func:`step_usage`): its message's share of the Lambda invocation
and of the event source mapping's ReceiveMessage and DeleteMessageBatch (a batch's
records share them equally), the function's time from the message's start (or the
previous commit) to this commit times its memory size, the SendMessage that follows it
where a chain stops, and the tokens of a Bedrock call noted in its log entry. The store
adds what storing it costs (:meth:`engine.ports.RunStore.commit_step`): the slot's write
units, the snapshot rewritten after it and its index writes, and the read of the run
before it.

Counts are integers (exact, and safe as DynamoDB numbers or JSON): shares of a request
in millionths, Lambda time in MB·µs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from engine.prices import LIST_PRICES, PRICES_AS_OF, REGION, PriceTable

#: Requests are counted in millionths: a batch's records share an invocation.
MICRO = 1_000_000

# Counter names (short: they are stored in every step's record).
LAMBDA_REQUESTS = "lq"  # millionths of a request
LAMBDA_MB_US = "lm"  # memory size (MB) x duration (µs)
SQS_REQUESTS = "sq"  # millionths of a request (each started 64 KB of payload is one)
DYNAMODB_READ_UNITS = "dr"  # strongly consistent read request units
DYNAMODB_WRITE_UNITS = "dw"  # write request units, the table's and its index's
S3_PUT_REQUESTS = "s3p"  # PUT, COPY, POST, LIST
S3_GET_REQUESTS = "s3g"  # GET and the others
S3_BYTES = "s3b"  # bytes stored
BEDROCK_PREFIX = "b:"  # "b:<model id>:i" input tokens, "b:<model id>:o" output tokens

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Usage(Mapping[str, int]):
    """Counts of billed units, by counter name; a value, added with ``+``."""

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self._counts = {k: v for k, v in (counts or {}).items() if v}

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, name: str) -> int:
        return self._counts.get(name, 0)

    def __add__(self, other: Mapping[str, int]) -> Usage:
        if not other:
            return self
        if not self._counts:
            return other if isinstance(other, Usage) else Usage(other)
        counts = dict(self._counts)
        for name, value in other.items():
            counts[name] = counts.get(name, 0) + value
        return Usage(counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self._counts == {k: v for k, v in other.items() if v}

    def __hash__(self) -> int:
        return hash(frozenset(self._counts.items()))

    def __repr__(self) -> str:
        return f"Usage({self._counts!r})"

    def encode(self) -> str:
        """Compact JSON text, as stored with a run."""
        return _dumps(self._counts)

    @classmethod
    def decode(cls, text: str | None) -> Usage:
        """The usage :meth:`encode` wrote (an empty one for None or "")."""
        if not text:
            return EMPTY
        data = json.loads(text)
        return cls({str(k): int(v) for k, v in data.items()})


EMPTY = Usage()


def share(total: int, parts: int, index: int) -> int:
    """Part ``index`` of ``total`` split into ``parts`` integers that add up to it exactly."""
    base, extra = divmod(total, parts)
    return base + (1 if index < extra else 0)


def bedrock_usage(log: Mapping[str, Any]) -> Usage:
    """The Bedrock tokens a log entry's notes record (``notes.model_id``, ``notes.usage``)."""
    notes = log.get("notes")
    if not isinstance(notes, dict):
        return EMPTY
    model, usage = notes.get("model_id"), notes.get("usage")
    if not isinstance(model, str) or not isinstance(usage, dict):
        return EMPTY
    counts = {}
    for suffix, key in (("i", "inputTokens"), ("o", "outputTokens")):
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            counts[f"{BEDROCK_PREFIX}{model}:{suffix}"] = value
    return Usage(counts)


class InvocationMeter:
    """What one step-function invocation spends, handed to the commits it makes.

    The invocation (one Lambda request), the event source mapping's ReceiveMessage
    (``receive_requests``: one per started 64 KB of the batch's bodies) and its
    DeleteMessageBatch are shared equally by the batch's ``records``: each message's
    first commit carries its share (see :meth:`begin_message`).

    Lambda time is the invocation's, shared by the messages running at each moment:
    while ``n`` messages run at once (a map's items, whose tools wait together), each is
    charged ``1/n`` of the time, so what the messages are charged adds up to the time
    billed. A message runs from the invocation's start (the first) or its own start, to
    each commit: a commit carries its part of the time since the one before. What
    follows a message's last commit (its SendMessage, the return) is not timed, nor is
    the time between messages when none runs.
    """

    def __init__(
        self,
        records: int,
        memory_mb: int | None,
        *,
        receive_requests: int = 1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.records = max(records, 1)
        self.memory_mb = memory_mb
        self.receive_requests = receive_requests
        self.clock = clock
        #: Seconds of the invocation's time handed out so far: each running message's part.
        self._shared = 0.0
        self._at = clock()
        self._running = 0
        self._started = 0

    def _now_shared(self) -> float:
        """:attr:`_shared` brought up to now (the time since split among the messages running)."""
        now = self.clock()
        self._shared += (now - self._at) / max(self._running, 1)
        self._at = now
        return self._shared

    def begin_message(self) -> MessageMeter:
        """The batch's next message starts (its share is due with its first commit);
        :meth:`MessageMeter.end` when it is done."""
        shared = self._now_shared()
        # The first message is charged from the invocation's start (the batch's parsing).
        meter = MessageMeter(self, index=self._started, mark=0.0 if self._started == 0 else shared)
        self._started += 1
        self._running += 1
        return meter

    def _end(self) -> None:
        self._now_shared()
        self._running = max(self._running - 1, 0)


class MessageMeter:
    """One message's part of its :class:`InvocationMeter`: what it has spent, per commit."""

    __slots__ = ("_ended", "_index", "_invocation", "_mark")

    def __init__(self, invocation: InvocationMeter, *, index: int, mark: float) -> None:
        self._invocation = invocation
        self._index: int | None = index  # None once its share is charged
        self._mark = mark
        self._ended = False

    def take(self) -> Usage:
        """What the message has spent since its start or its last commit (for a commit)."""
        invocation = self._invocation
        shared = invocation._now_shared() if not self._ended else self._mark
        counts: dict[str, int] = {}
        if invocation.memory_mb:
            counts[LAMBDA_MB_US] = invocation.memory_mb * max(0, round((shared - self._mark) * 1e6))
        self._mark = shared
        if self._index is not None:
            index, records = self._index, invocation.records
            counts[LAMBDA_REQUESTS] = share(MICRO, records, index)
            counts[SQS_REQUESTS] = share((invocation.receive_requests + 1) * MICRO, records, index)
            self._index = None
        return Usage(counts)

    def end(self) -> None:
        """The message is done: it no longer shares the invocation's time."""
        if not self._ended:
            self._ended = True
            self._invocation._end()


class UsageTally:
    """Usage counted by whoever holds it (a store counts its reads into one: see
    :meth:`engine.ports.RunStore.tally`), taken as a whole."""

    __slots__ = ("usage",)

    def __init__(self) -> None:
        self.usage = EMPTY

    def add(self, counts: Mapping[str, int]) -> None:
        self.usage = self.usage + counts

    def take(self) -> Usage:
        usage, self.usage = self.usage, EMPTY
        return usage


def step_usage(log: Mapping[str, Any], *, sends: int) -> Usage:
    """What a step adds to its run besides its invocation's share and time, and what
    storing it costs: ``sends`` step messages sent after its commit, its Bedrock tokens."""
    usage = EMPTY
    if sends:
        usage = usage + {SQS_REQUESTS: sends * MICRO}
    if "notes" in log:
        usage = usage + bedrock_usage(log)
    return usage


# -- pricing ----------------------------------------------------------------------------------
def _usd(value: float) -> float:
    return round(value, 10)


def dollars(usage: Mapping[str, int], prices: PriceTable = LIST_PRICES) -> dict[str, float]:
    """USD by service (lambda, sqs, dynamodb, s3, bedrock), unrounded."""
    count = usage.get
    lambda_requests = count(LAMBDA_REQUESTS, 0) / MICRO
    gb_seconds = count(LAMBDA_MB_US, 0) / 1024 / 1e6
    s3_put, s3_get, s3_bytes = count(S3_PUT_REQUESTS, 0), count(S3_GET_REQUESTS, 0), count(S3_BYTES, 0)
    return {
        "lambda": lambda_requests * prices.lambda_request + gb_seconds * prices.lambda_gb_second,
        "sqs": count(SQS_REQUESTS, 0) / MICRO * prices.sqs_request,
        "dynamodb": count(DYNAMODB_READ_UNITS, 0) * prices.dynamodb_read_unit
        + count(DYNAMODB_WRITE_UNITS, 0) * prices.dynamodb_write_unit,
        # Bytes are priced as one month of S3 Standard storage.
        "s3": s3_put * prices.s3_put_request
        + s3_get * prices.s3_get_request
        + s3_bytes / 1024**3 * prices.s3_gb_month,
        "bedrock": sum((model["usd"] for model in _models(usage, prices).values()), 0.0),
    }


def total_usd(usage: Mapping[str, int], prices: PriceTable = LIST_PRICES) -> float:
    """The estimated cost in USD, unrounded (for comparisons)."""
    return sum(dollars(usage, prices).values())


def price(usage: Mapping[str, int], prices: PriceTable = LIST_PRICES) -> dict[str, Any]:
    """The public shape of a run's cost: ``{"usd", "estimate": true, "breakdown", "prices"}``.

    ``breakdown`` has one entry per service: what was counted and what it costs. A
    Bedrock model the table does not know is counted and marked ``"priced": false``.
    """
    count = usage.get
    usd = dollars(usage, prices)
    models = _models(usage, prices)
    for model in models.values():
        model["usd"] = _usd(model["usd"])
    breakdown: dict[str, dict[str, Any]] = {
        "lambda": {
            "requests": round(count(LAMBDA_REQUESTS, 0) / MICRO, 6),
            "gb_seconds": round(count(LAMBDA_MB_US, 0) / 1024 / 1e6, 9),
        },
        "sqs": {"requests": round(count(SQS_REQUESTS, 0) / MICRO, 6)},
        "dynamodb": {
            "read_units": count(DYNAMODB_READ_UNITS, 0),
            "write_units": count(DYNAMODB_WRITE_UNITS, 0),
        },
        "s3": {
            "put_requests": count(S3_PUT_REQUESTS, 0),
            "get_requests": count(S3_GET_REQUESTS, 0),
            "bytes": count(S3_BYTES, 0),
        },
        "bedrock": {"models": models},
    }
    for name, line in breakdown.items():
        line["usd"] = _usd(usd[name])
    return {
        "usd": _usd(sum(usd.values())),
        "estimate": True,
        "breakdown": breakdown,
        "prices": f"{REGION} list prices as of {PRICES_AS_OF}, unless overridden",
    }


def _models(usage: Mapping[str, int], prices: PriceTable) -> dict[str, dict[str, Any]]:
    """Bedrock tokens and USD by model (a model the table lacks: ``"priced": false``)."""
    models: dict[str, dict[str, Any]] = {}
    for name, value in usage.items():
        if name.startswith(BEDROCK_PREFIX):
            model, _, kind = name[len(BEDROCK_PREFIX) :].rpartition(":")
            tokens = models.setdefault(model, {"input_tokens": 0, "output_tokens": 0})
            tokens["input_tokens" if kind == "i" else "output_tokens"] += value
    for model, tokens in models.items():
        found = prices.model(model)
        if found is None:
            tokens.update(usd=0.0, priced=False)
        else:
            tokens["usd"] = (
                tokens["input_tokens"] / 1000 * found.input_per_1k
                + tokens["output_tokens"] / 1000 * found.output_per_1k
            )
    return models
