"""The :class:`~engine.ports.StepQueue` on SQS, and the step message both ends agree on."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from functions.aws.errors import CONNECTION_ERRORS, translate, unreachable
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


class SqsStepQueue:
    """Sends step messages; the client is built on first use."""

    def __init__(self, queue_url: str | None, client_factory: Callable[[], Any]) -> None:
        self.queue_url = queue_url
        self._client_factory = client_factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def send_step(self, run_id: str, step: int, delay_s: float = 0.0) -> None:
        if not self.queue_url:
            raise SettingsError("missing environment variable FLOWFORGE_STEP_QUEUE_URL")
        body = StepMessage(run_id=run_id, step=step).model_dump_json()
        try:
            self.client.send_message(
                QueueUrl=self.queue_url, MessageBody=body, DelaySeconds=delay_seconds(delay_s)
            )
        except ClientError as exc:
            error = translate(exc, "send_message")
            if error is None:
                raise
            raise error from exc
        except CONNECTION_ERRORS as exc:
            raise unreachable(exc, "send_message") from exc
