"""The :class:`~engine.ports.StepQueue` on SQS, and the step message both ends agree on."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.aws.adapter import AwsAdapter
from functions.settings import SettingsError

#: SQS DelaySeconds range; a longer retry delay is re-deferred by the step handler.
MAX_DELAY_S = 900


class StepMessage(BaseModel):
    """The body of a step message: execute step ``step`` of run ``run_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    run_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    step: int = Field(ge=0)


def delay_seconds(delay_s: float) -> int:
    """A delay as SQS takes it: whole seconds, rounded up, within [0, 900]."""
    return min(MAX_DELAY_S, max(0, math.ceil(delay_s)))


class SqsStepQueue(AwsAdapter):
    """Sends step messages; the client is built on first use."""

    def __init__(self, queue_url: str | None, client_factory: Callable[[], Any]) -> None:
        super().__init__(client_factory)
        self.queue_url = queue_url

    def send_step(self, run_id: str, step: int, delay_s: float = 0.0) -> None:
        if not self.queue_url:
            raise SettingsError("missing environment variable FLOWFORGE_STEP_QUEUE_URL")
        body = StepMessage(run_id=run_id, step=step).model_dump_json()
        self._call(
            "send_message", QueueUrl=self.queue_url, MessageBody=body, DelaySeconds=delay_seconds(delay_s)
        )
