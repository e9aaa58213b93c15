"""The :class:`~engine.ports.StepQueue` on SQS: a :class:`~engine.stepmessage.StepMessage`
as the message body, its delay as ``DelaySeconds``; a fan-out's item messages sent
together with ``SendMessageBatch``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from engine.errors import StoreUnavailableError
from engine.ports import SEND_BATCH_MAX
from engine.stepmessage import StepMessage
from functions.aws.adapter import AwsAdapter

#: SQS DelaySeconds range; a longer retry delay is re-deferred by the step handler.
MAX_DELAY_S = 900
#: The bytes of message bodies one SendMessageBatch may carry in all (item messages are
#: a few dozen bytes each: ten of them are far below it, and below the 64 KB SQS bills
#: a request per).
MAX_BATCH_BYTES = 256 * 1024


def delay_seconds(delay_s: float) -> int:
    """A delay as SQS takes it: whole seconds, rounded up, within [0, 900]."""
    return min(MAX_DELAY_S, max(0, math.ceil(delay_s)))


def batches(
    entries: Sequence[dict[str, Any]], max_entries: int = SEND_BATCH_MAX, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[list[dict[str, Any]]]:
    """``entries`` (SendMessageBatch's, in order) cut into batches SQS takes: at most
    ``max_entries`` each, and their bodies at most ``max_bytes`` together."""
    batch: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        length = len(entry["MessageBody"].encode())
        if batch and (len(batch) >= max_entries or size + length > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += length
    if batch:
        yield batch


class SqsStepQueue(AwsAdapter):
    """Sends step messages; the client is built on first use."""

    def __init__(self, queue_url: str, client_factory: Callable[[], Any]) -> None:
        super().__init__(client_factory)
        self.queue_url = queue_url

    def send_step(self, run_id: str, step: int, delay_s: float = 0.0) -> None:
        self._send(StepMessage(run_id, step), delay_s)

    def send_item(self, run_id: str, step: int, item: int, attempt: int, delay_s: float = 0.0) -> None:
        self._send(StepMessage(run_id, step, item=item, attempt=attempt), delay_s)

    def send_items(self, run_id: str, step: int, items: Sequence[tuple[int, int]]) -> None:
        """One ``SendMessageBatch`` per :data:`~engine.ports.SEND_BATCH_MAX` items, in
        order. SQS answers a batch entry by entry, so a batch can half succeed: the
        entries it failed are sent once more (a duplicate is harmless: the item's claim
        is taken once), and any still failing raise :class:`StoreUnavailableError` —
        the caller's message is redelivered, and the fan-out's stalled path re-sends
        whatever is due, as after a crash between two sends."""
        entries = [
            {
                # Unique within the call (and its retry): the item's place in ``items``.
                "Id": str(position),
                "MessageBody": StepMessage(run_id, step, item=item, attempt=attempt).to_json(),
                "DelaySeconds": 0,
            }
            for position, (item, attempt) in enumerate(items)
        ]
        for batch in batches(entries):
            failed = self._send_batch(batch)
            if failed:
                failed = self._send_batch([entry for entry in batch if entry["Id"] in failed])
            if failed:
                lost = ", ".join(
                    f"item {items[int(id_)][0]} attempt {items[int(id_)][1]} ({code})"
                    for id_, code in sorted(failed.items(), key=lambda kv: int(kv[0]))
                )
                raise StoreUnavailableError(
                    f"run {run_id!r} step {step}: SQS did not take these item messages, sent twice: {lost}"
                )

    def _send_batch(self, entries: list[dict[str, Any]]) -> dict[str, str]:
        """Send one batch; the error code of each entry SQS failed, by entry Id."""
        response = self._call("send_message_batch", QueueUrl=self.queue_url, Entries=entries)
        return {failure["Id"]: failure.get("Code", "?") for failure in response.get("Failed") or ()}

    def _send(self, message: StepMessage, delay_s: float) -> None:
        self._call(
            "send_message",
            QueueUrl=self.queue_url,
            MessageBody=message.to_json(),
            DelaySeconds=delay_seconds(delay_s),
        )
