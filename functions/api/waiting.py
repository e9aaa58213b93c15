"""Foreground runs: wait for a run to finish within a time budget, polling with backoff."""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.ports import RunRecord
from engine.service import RunService
from engine.step import TERMINAL

FIRST_POLL_S = 0.05
MAX_POLL_S = 0.5
#: Time kept back from the Lambda's remaining time to answer before it is killed.
LAMBDA_MARGIN_S = 2.0


def wait_budget(wait_s: float, remaining_ms: int | None) -> float:
    """Seconds to wait: ``wait_s``, but never past the Lambda's deadline minus a margin."""
    if remaining_ms is None:
        return wait_s
    return max(0.0, min(wait_s, remaining_ms / 1000 - LAMBDA_MARGIN_S))


def wait_for_run(
    service: RunService,
    run_id: str,
    budget_s: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> RunRecord | None:
    """The run once it has finished or waits (a callback, a timer), or None if it is
    still running after ``budget_s``.

    Polls the store from every 50 ms, backing off to every 500 ms: short runs answer
    quickly and long ones cost two reads a second.
    """
    clock = service.clock
    deadline = clock() + budget_s
    delay = FIRST_POLL_S
    while True:
        run = service.get_run(run_id)
        if run.status in TERMINAL or run.status == "waiting":
            return run
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(delay, left))
        delay = min(delay * 2, MAX_POLL_S)
