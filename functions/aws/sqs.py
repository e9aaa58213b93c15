"""The :class:`~engine.ports.StepQueue` on SQS: a :class:`~engine.stepmessage.StepMessage`
as the message body, its delay as ``DelaySeconds``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from engine.stepmessage import StepMessage
from functions.aws.adapter import AwsAdapter

#: SQS DelaySeconds range; a longer retry delay is re-deferred by the step handler.
MAX_DELAY_S = 900


def delay_seconds(delay_s: float) -> int:
    """A delay as SQS takes it: whole seconds, rounded up, within [0, 900]."""
    return min(MAX_DELAY_S, max(0, math.ceil(delay_s)))


class SqsStepQueue(AwsAdapter):
    """Sends step messages; the client is built on first use."""

    def __init__(self, queue_url: str, client_factory: Callable[[], Any]) -> None:
        super().__init__(client_factory)
        self.queue_url = queue_url

    def send_step(self, run_id: str, step: int, delay_s: float = 0.0) -> None:
        self._send(StepMessage(run_id, step), delay_s)

    def send_item(self, run_id: str, step: int, item: int, attempt: int, delay_s: float = 0.0) -> None:
        self._send(StepMessage(run_id, step, item=item, attempt=attempt), delay_s)

    def _send(self, message: StepMessage, delay_s: float) -> None:
        self._call(
            "send_message",
            QueueUrl=self.queue_url,
            MessageBody=message.to_json(),
            DelaySeconds=delay_seconds(delay_s),
        )
