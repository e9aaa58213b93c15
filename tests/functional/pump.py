"""Drive the step loop through the real handlers, standing in for the SQS event source mapping.

moto never runs the event source mapping here: :class:`QueuePump` receives from the
queue, builds the Lambda event from a fixture in tests/events, calls the handler,
deletes what it acknowledged and leaves reported failures in flight until their
visibility timeout passes. Time is a :class:`VirtualClock` shared by the service and by
moto's SQS, so DelaySeconds, visibility timeouts, receive counts and the redrive to the
DLQ all behave as moto implements them, without sleeping.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flowforge.local import moto_internals
from flowforge.local.events import LambdaContext, sqs_event

REGION = "us-east-1"
EVENTS = Path(__file__).resolve().parents[1] / "events"


def load_event(name: str) -> dict[str, Any]:
    """A Lambda event from tests/events/<name>.json."""
    return json.loads((EVENTS / f"{name}.json").read_text())


def body(message: dict[str, Any]) -> Any:
    """A received message's body, parsed if it is JSON."""
    try:
        return json.loads(message["Body"])
    except ValueError:
        return message["Body"]


class VirtualClock:
    """Epoch seconds that move only when a test moves them."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def patch_moto(monkeypatch, clock: VirtualClock) -> None:
    """Run moto's SQS on ``clock`` and serialize moto's request handling.

    moto is not thread-safe; real AWS serializes writes to an item, so one request at a
    time is the faithful model for the race tests.
    """
    moto_internals.sqs_on_clock(monkeypatch.setattr, clock)
    moto_internals.one_request_at_a_time(monkeypatch.setattr)


class QueuePump:
    """Deliver a queue's messages to a handler the way Lambda's SQS poller does.

    Hooks: ``duplicate`` delivers every batch twice; ``workers`` > 1 hands each batch to
    that many concurrent invocations (threads); ``drop_ack`` (a predicate on the message
    body) skips the delete of an acknowledged message, as if the function died after its
    work but before returning.
    """

    def __init__(
        self,
        sqs,
        queue_url: str,
        clock: VirtualClock,
        handler: Callable[[dict, Any], Any],
        *,
        batch_size: int = 10,
    ) -> None:
        self.sqs, self.queue_url, self.clock, self.handler = sqs, queue_url, clock, handler
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        self.queue_arn = attributes["QueueArn"]
        self.visibility_timeout = int(attributes.get("VisibilityTimeout", 30))
        self.batch_size = batch_size
        self.duplicate = False
        self.workers = 1
        self.drop_ack: Callable[[dict[str, Any]], bool] | None = None
        self.delivered: list[Any] = []  # every body handed to the handler
        self.invocations = 0
        self._in_flight: dict[str, float] = {}  # message id -> when it is visible again

    # -- the queue ----------------------------------------------------------------------
    def receive(self, max_messages: int | None = None) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max_messages or self.batch_size,
            AttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        messages = response.get("Messages", [])
        for message in messages:  # in flight until deleted or its visibility timeout passes
            self._in_flight[message["MessageId"]] = self.clock() + self.visibility_timeout
        return messages

    def counts(self) -> dict[str, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]  # fmt: skip
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)
        return {
            name.removeprefix("ApproximateNumberOf"): int(v) for name, v in attributes["Attributes"].items()
        }

    # -- delivery -----------------------------------------------------------------------
    def event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return sqs_event(messages, self.queue_arn, REGION)

    def invoke(self, messages: list[dict[str, Any]]) -> set[str]:
        """One invocation; returns the ids it did not acknowledge."""
        self.invocations += 1
        self.delivered += [body(m) for m in messages]
        try:
            response = self.handler(self.event(messages), LambdaContext())
        except Exception:  # the invocation failed: SQS redelivers the whole batch
            return {m["MessageId"] for m in messages}
        return {failure["itemIdentifier"] for failure in (response or {}).get("batchItemFailures", [])}

    def deliver(self, messages: list[dict[str, Any]]) -> set[str]:
        """Hand a received batch to the handler(s); delete what was acknowledged."""
        rounds = 2 if self.duplicate else 1
        failed = {m["MessageId"] for m in messages}
        for _ in range(rounds):
            failed &= self._invoke_workers(messages)
        for message in messages:
            acked = message["MessageId"] not in failed
            if acked and (self.drop_ack is None or not self.drop_ack(body(message))):
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                del self._in_flight[message["MessageId"]]
        return failed

    def _invoke_workers(self, messages: list[dict[str, Any]]) -> set[str]:
        if self.workers == 1:
            return self.invoke(messages)
        results: list[set[str]] = []
        threads = [
            threading.Thread(target=lambda: results.append(self.invoke(messages)))
            for _ in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        # A message is done once any worker acknowledged it.
        return set.intersection(*results) if len(results) == self.workers else set()

    def step_once(self, max_messages: int = 1) -> list[dict[str, Any]]:
        """Receive and deliver one batch now (no waiting); returns the bodies delivered."""
        messages = self.receive(max_messages)
        if messages:
            self.deliver(messages)
        return [body(m) for m in messages]

    def drain(self, max_invocations: int = 500) -> int:
        """Deliver until the queue is empty, moving the clock over delays and timeouts.

        Returns the number of handler invocations made.
        """
        start = self.invocations
        while self.invocations - start < max_invocations:
            messages = self.receive()
            if messages:
                self.deliver(messages)
            elif not self._wait_for_next():
                return self.invocations - start
        raise AssertionError(f"queue not drained after {max_invocations} invocations")

    def _wait_for_next(self) -> bool:
        """Move the clock to the next message that becomes receivable; False if none."""
        counts = self.counts()
        if counts["MessagesDelayed"]:
            self.clock.advance(1)  # DelaySeconds are whole seconds
            return True
        if counts["MessagesNotVisible"]:
            pending = [at for at in self._in_flight.values() if at > self.clock()]
            self.clock.advance(max(0.001, min(pending, default=self.clock() + 1) - self.clock()))
            return True
        return False


# -- an in-memory service's step loop -----------------------------------------------------
def run_queued(service: Any, limit: int = 1000) -> int:
    """Process an in-memory service's queued step messages, as the step Lambda would,
    until the queue is empty (or ``limit``); how many were processed."""
    done = 0
    while done < limit and (message := service.queue.pop()) is not None:
        if message.item is None:
            asyncio.run(service.process_step(message.run_id, message.step))
        else:
            asyncio.run(service.process_item(message.run_id, message.step, message.item, message.attempt))
        done += 1
    return done


@contextmanager
def step_loop(service: Any) -> Iterator[None]:
    """Run an in-memory service's step loop in a thread (while a foreground request waits)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if not run_queued(service, limit=1):
                stop.wait(0.002)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=5)
