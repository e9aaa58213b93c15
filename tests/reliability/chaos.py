"""Faults for the distributed step loop: at the AWS calls, and in the delivery itself.

:class:`BotoFaults` hooks the step handler's own boto3 clients (botocore events) and
throws what AWS and Lambda throw at a step: DynamoDB throttling, SQS send errors (a
batch's entries failed one by one included), network errors, and the function dying
before or after each read, write (the slot that commits a step, the snapshot after it)
or send. :class:`ChaosPump` — the functional tests' :class:`QueuePump` with a fault plan
— delivers batches twice, to concurrent workers, out of order, forgets to
acknowledge, loses whole invocations and replays stale messages later.

Every fault is transient: a message that has already been received
:data:`QUIET_AFTER_RECEIVES` times is delivered without faults, so no message reaches
the dead-letter queue (five receives) because of a fault plan. Faults are drawn from a
seeded :class:`random.Random`, so a failing example replays.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError

from tests.functional.pump import QueuePump

QUIET_AFTER_RECEIVES = 3


class LambdaDied(Exception):
    """The step function dying at an injected point (what it was doing is not acknowledged)."""


def client_error(code: str, operation: str, reasons: list[str] | None = None) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": f"injected {code}"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    if reasons is not None:
        response["CancellationReasons"] = [{"Code": reason} for reason in reasons]
    return ClientError(response, operation)


def _throttled(operation: str) -> ClientError:
    return client_error("ProvisionedThroughputExceededException", operation)


def _network(operation: str) -> Exception:
    return EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")


def _died_before(operation: str) -> Exception:
    return LambdaDied(f"died before {operation}")


#: What can go wrong at each AWS call the step handler makes, before the call reaches AWS.
BEFORE_CALL = {
    ("dynamodb", "GetItem"): {
        "dynamodb_throttled": _throttled,
        "network_error": _network,
        "died_before_read": _died_before,
    },
    ("dynamodb", "Query"): {
        "dynamodb_throttled": _throttled,
        "network_error": _network,
        "died_before_read": _died_before,
    },
    ("dynamodb", "PutItem"): {
        "dynamodb_throttled": _throttled,
        "network_error": _network,
        "died_before_write": _died_before,
    },
    ("dynamodb", "UpdateItem"): {  # a fan-out execution's claim
        "dynamodb_throttled": _throttled,
        "network_error": _network,
        "died_before_claim": _died_before,
    },
    ("sqs", "SendMessage"): {
        "sqs_throttled": lambda op: client_error("RequestThrottled", op),
        "sqs_internal_error": lambda op: client_error("InternalError", op),
        "died_before_send": _died_before,
    },
    ("sqs", "SendMessageBatch"): {  # a fan-out's item messages, ten to a request
        "sqs_throttled": lambda op: client_error("RequestThrottled", op),
        "sqs_internal_error": lambda op: client_error("InternalError", op),
        "died_before_send": _died_before,
    },
    ("scheduler", "CreateSchedule"): {  # a long timer's schedule
        "scheduler_throttled": lambda op: client_error("ThrottlingException", op),
        "died_before_schedule": _died_before,
    },
}
#: ... and after AWS did it: the function dies before it can act on the answer.
AFTER_CALL = {
    ("dynamodb", "PutItem"): "died_after_write",
    ("dynamodb", "UpdateItem"): "died_after_claim",
    ("sqs", "SendMessage"): "died_after_send",
    ("sqs", "SendMessageBatch"): "died_after_send",
    ("scheduler", "CreateSchedule"): "died_after_schedule",
}


class FaultPlan:
    """Which faults to inject, how often, and a count of each one injected."""

    def __init__(self, seed: int, rate: float) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.injected: Counter[str] = Counter()
        self.armed = False
        self._lock = threading.Lock()

    def roll(self, kind: str, rate: float | None = None) -> bool:
        """Whether to inject ``kind`` now (and count it if so)."""
        if not self.armed:
            return False
        with self._lock:
            hit = self.rng.random() < (self.rate if rate is None else rate)
            if hit:
                self.injected[kind] += 1
            return hit

    def pick(self, kinds: list[str]) -> str | None:
        """One of ``kinds`` to inject now (counted), or None."""
        if not self.armed:
            return None
        with self._lock:
            if self.rng.random() >= self.rate:
                return None
            kind = self.rng.choice(kinds)
            self.injected[kind] += 1
            return kind

    def randint(self, low: int, high: int) -> int:
        with self._lock:
            return self.rng.randint(low, high)


class BotoFaults:
    """Injects :data:`BEFORE_CALL` / :data:`AFTER_CALL` faults into boto3 clients, and
    counts the step commits DynamoDB accepted per ``(run_id, step)``."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.commits: Counter[tuple[str, int]] = Counter()
        self.fail_next_send = False  # the next SendMessage is throttled, armed or not
        self.last_unsent: list[str] = []  # run ids of the messages that send did not send
        self._lock = threading.Lock()

    def install(self, client: Any, service: str) -> None:
        for (svc, operation), kinds in BEFORE_CALL.items():
            if svc == service:
                client.meta.events.register(f"before-call.{svc}.{operation}", self._before(operation, kinds))
        for (svc, operation), kind in AFTER_CALL.items():
            if svc == service:
                client.meta.events.register(f"after-call.{svc}.{operation}", self._after(operation, kind))
        if service == "sqs":
            events = client.meta.events
            events.register("before-parameter-build.sqs.SendMessageBatch", self._drop_entries)
            events.register("after-call.sqs.SendMessageBatch", self._report_dropped)

    def _drop_entries(self, params, context, **_):
        """A batch that half succeeds: some of its entries are kept from SQS, and its
        answer lists them as ``Failed`` (:meth:`_report_dropped`)."""
        entries = params.get("Entries", [])
        if len(entries) > 1 and self.plan.roll("sqs_batch_entries_failed"):
            dropped = self.plan.randint(1, len(entries) - 1)
            params["Entries"], context["flowforge_dropped"] = entries[dropped:], entries[:dropped]

    def _report_dropped(self, parsed, context, **_):
        for entry in context.get("flowforge_dropped", []):
            failure = {"Id": entry["Id"], "SenderFault": False, "Code": "InternalError"}
            parsed.setdefault("Failed", []).append(failure)

    def _before(self, operation: str, kinds: dict):
        def hook(params, context, **_):
            context["flowforge_body"] = params.get("body")
            if operation == "SendMessage" and self.fail_next_send:
                self.fail_next_send = False
                self.last_unsent = [json.loads(json.loads(params["body"])["MessageBody"])["run_id"]]
                raise client_error("RequestThrottled", operation)
            kind = self.plan.pick(sorted(kinds))
            if kind is not None:
                raise kinds[kind](operation)

        return hook

    def _after(self, operation: str, kind: str):
        def hook(http_response, context, **_):
            if http_response.status_code >= 300:
                return
            if operation == "PutItem":
                self._count_commit(context.get("flowforge_body"))
            if self.plan.roll(kind):
                raise LambdaDied(f"died after {operation} succeeded")

        return hook

    def _count_commit(self, raw: bytes | None) -> None:
        # A step's slot k (its log item, or a fan-out execution's): each one written is a
        # transition made.
        item = json.loads(raw or b"{}")["Item"]
        if item["kind"]["S"] not in ("log", "exec"):
            return
        run_id, step = item["run_id"]["S"], int(item["seq"]["N"])
        with self._lock:
            self.commits[(run_id, step)] += 1


class ChaosPump(QueuePump):
    """A :class:`QueuePump` whose every batch may be duplicated, raced, shuffled, left
    unacknowledged, lost with its invocation, or replayed later as a stale message."""

    def __init__(self, *args: Any, plan: FaultPlan, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.drop_ack = lambda _body: self.plan.roll("ack_lost")
        self._history: list[str] = []  # bodies delivered, for stale replays

    def deliver(self, messages: list[dict[str, Any]]) -> set[str]:
        plan = self.plan
        receives = max(int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)) for m in messages)
        plan.armed = receives < QUIET_AFTER_RECEIVES
        try:
            if len(messages) > 1 and plan.roll("batch_reordered", plan.rate * 3):
                messages = sorted(messages, key=lambda _: plan.randint(0, 1 << 30))
            self.duplicate = plan.roll("batch_delivered_twice", plan.rate * 2)
            self.workers = 2 if plan.roll("concurrent_workers", plan.rate * 2) else 1
            failed = super().deliver(messages)
            self._history += [m["Body"] for m in messages]
            if self._history and plan.roll("stale_replay"):
                old = self._history[plan.randint(0, len(self._history) - 1)]
                self.sqs.send_message(
                    QueueUrl=self.queue_url, MessageBody=old, DelaySeconds=plan.randint(0, 3)
                )
            return failed
        finally:
            plan.armed = False

    def invoke(self, messages: list[dict[str, Any]]) -> set[str]:
        failed = super().invoke(messages)
        if self.plan.roll("invocation_lost"):  # died after the work, before answering
            return {m["MessageId"] for m in messages}
        return failed
