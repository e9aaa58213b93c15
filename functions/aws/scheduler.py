"""The :class:`~engine.ports.Timers` on EventBridge Scheduler: one one-time schedule per
timer, in the stack's schedule group, whose target sends the step message to the step
queue at its time, then deletes itself.

``CreateSchedule`` with ``at(<UTC time>)`` (rounded up to the second: never early),
``FlexibleTimeWindow`` off, ``ActionAfterCompletion=DELETE`` and the step queue as
target, ``Input`` the step message's body, sent with the role Scheduler assumes
(template.yaml: ``TimerSchedulerRole``, allowed ``sqs:SendMessage`` on the step queue
only). The schedule's name is the run's id and the step, so a redelivered step that
creates it again gets ``ConflictException``: it is there already. A cancelled run's
schedule is deleted; one that is not there (fired, never made) is no error.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from engine.errors import FlowForgeError, StoreUnavailableError
from engine.stepmessage import StepMessage
from functions.aws.adapter import AwsAdapter
from functions.aws.errors import error_code, translate

#: A schedule's name: 1 to 64 of these.
_NAME = re.compile(r"[0-9A-Za-z_.-]{1,64}")
#: Scheduler's answers that mean "try again later".
_RETRYABLE = frozenset({"ThrottlingException", "InternalServerException", "ServiceQuotaExceededException"})


def schedule_name(run_id: str, step: int) -> str:
    """The schedule of run ``run_id``'s step ``step``: ``<run_id>-<step>`` (a hash of the
    run id when that would not fit Scheduler's 64 characters)."""
    name = f"{run_id}-{step}"
    if _NAME.fullmatch(name):
        return name
    return f"{hashlib.sha256(run_id.encode()).hexdigest()[:40]}-{step}"


def at_expression(due_at: float) -> str:
    """``at(YYYY-MM-DDTHH:MM:SS)`` in UTC, rounded up to the whole second."""
    moment = datetime.fromtimestamp(math.ceil(due_at), UTC)
    return f"at({moment.strftime('%Y-%m-%dT%H:%M:%S')})"


def parse_at(expression: str) -> float | None:
    """The time of an ``at(...)`` expression in UTC, as epoch seconds (None: not one)."""
    match = re.fullmatch(r"at\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)", expression.strip())
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()


class SchedulerTimers(AwsAdapter):
    """Timers as one-time schedules in ``group``; the client is built on first use."""

    def __init__(self, group: str, queue_arn: str, role_arn: str, client_factory: Callable[[], Any]) -> None:
        super().__init__(client_factory)
        self.group = group
        self.queue_arn = queue_arn
        self.role_arn = role_arn

    def schedule(self, run_id: str, step: int, due_at: float) -> None:
        try:
            self._call(
                "create_schedule",
                Name=schedule_name(run_id, step),
                GroupName=self.group,
                ScheduleExpression=at_expression(due_at),
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Target={
                    "Arn": self.queue_arn,
                    "RoleArn": self.role_arn,
                    "Input": StepMessage(run_id, step).to_json(),
                },
            )
        except ClientError as exc:
            if error_code(exc) != "ConflictException":
                raise
            # made before (a redelivered step): the schedule of this run and step is there

    def cancel(self, run_id: str, step: int) -> None:
        try:
            self._call("delete_schedule", Name=schedule_name(run_id, step), GroupName=self.group)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise

    def _translate(self, exc: ClientError, operation: str, params: dict[str, Any]) -> FlowForgeError | None:
        if error_code(exc) in _RETRYABLE:
            return StoreUnavailableError(f"{operation}: {error_code(exc)}")
        return translate(exc, operation)
