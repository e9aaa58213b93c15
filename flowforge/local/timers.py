"""EventBridge Scheduler's delivery, locally: moto stores one-time schedules but never
fires them.

:class:`ScheduleFirer` does what Scheduler does with a due ``at()`` schedule of a group:
sends its target's ``Input`` to its target queue (the step queue: a timer's step
message, functions/aws/scheduler.py), then deletes it (``ActionAfterCompletion=DELETE``).
The local stack runs it every second (:class:`TimerLoop`); the functional tests and the
benchmarks call it at their virtual clock's time.

A restart of the local stack loses moto's schedules (and its queues' messages): the
stack arms the timers of the runs the journal restored waiting again
(:meth:`engine.service.RunService.resume`), from each run's due time — a schedule again
beyond 15 minutes, a delayed message within.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.aws.scheduler import parse_at

log = logging.getLogger("flowforge.local")

#: How often the local stack looks for due schedules (Scheduler fires within a minute of
#: a schedule's time with its flexible window off; locally, within a second).
TICK_S = 1.0


class ScheduleFirer:
    """Fires the due one-time schedules of ``group``."""

    def __init__(
        self, scheduler: Any, sqs: Any, group: str, queue_urls: dict[str, str] | None = None
    ) -> None:
        """``queue_urls``: the URL of each target queue's ARN, where known (else looked up)."""
        self.scheduler, self.sqs, self.group = scheduler, sqs, group
        #: A schedule's time and target by (name, last modified): read once per version.
        self._known: dict[tuple[str, Any], tuple[float | None, dict[str, Any], str | None]] = {}
        self._queue_urls: dict[str, str] = dict(queue_urls or {})

    def fire_due(self, now: float) -> list[str]:
        """Deliver every schedule of the group due by ``now``; their names."""
        fired = []
        listed = self._list()
        self._known = {key: value for key, value in self._known.items() if key in listed}
        for key in sorted(listed, key=lambda k: self._entry(k)[0] or 0.0):
            due, target, after = self._entry(key)
            if due is None or due > now:
                continue
            self.sqs.send_message(
                QueueUrl=self._queue_url(target["Arn"]), MessageBody=target.get("Input", "")
            )
            if after == "DELETE":
                with contextlib.suppress(self.scheduler.exceptions.ResourceNotFoundException):
                    self.scheduler.delete_schedule(Name=key[0], GroupName=self.group)
            self._known.pop(key, None)
            fired.append(key[0])
        return fired

    def _list(self) -> set[tuple[str, Any]]:
        listed = set()
        for page in self.scheduler.get_paginator("list_schedules").paginate(GroupName=self.group):
            for summary in page.get("Schedules", []):
                if summary.get("State") != "DISABLED":
                    listed.add((summary["Name"], summary.get("LastModificationDate")))
        return listed

    def _entry(self, key: tuple[str, Any]) -> tuple[float | None, dict[str, Any], str | None]:
        entry = self._known.get(key)
        if entry is None:
            try:
                schedule = self.scheduler.get_schedule(Name=key[0], GroupName=self.group)
            except self.scheduler.exceptions.ResourceNotFoundException:
                return None, {}, None
            entry = (
                parse_at(schedule["ScheduleExpression"]),
                schedule["Target"],
                schedule.get("ActionAfterCompletion"),
            )
            self._known[key] = entry
        return entry

    def _queue_url(self, arn: str) -> str:
        url = self._queue_urls.get(arn)
        if url is None:
            _, _, _, _, account, name = arn.split(":", 5)
            url = self.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            self._queue_urls[arn] = url
        return url


class TimerLoop:
    """The local stack's Scheduler: fires due schedules every ``every_s`` seconds."""

    def __init__(self, firer: ScheduleFirer, clock: Callable[[], float], every_s: float = TICK_S) -> None:
        self.firer, self.clock, self.every_s = firer, clock, every_s
        self._threads = ThreadPoolExecutor(1, thread_name_prefix="timers")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.every_s)
                try:
                    await loop.run_in_executor(self._threads, lambda: self.firer.fire_due(self.clock()))
                except (BotoCoreError, ClientError) as exc:
                    log.warning("firing due schedules failed (tried again in %ss): %s", self.every_s, exc)
        finally:
            self._threads.shutdown(wait=False)
