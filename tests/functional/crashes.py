"""Fault injection around the service's ports, and a record of what was committed and sent.

The wrappers delegate everything to the real DynamoDB store and SQS queue; they only
add a crash at a chosen point, or count what succeeded.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from engine.errors import StoreUnavailableError
from engine.ports import StepCommit


class InjectedCrash(Exception):
    """The step Lambda dying at an injected point (its message is not acknowledged)."""


class FaultyStore:
    """A RunStore wrapper: crashes around commit k, or keeps failing, and counts commits.

    ``commits`` counts successful ``commit_step`` calls per (run_id, step): each one is a
    transition and a written log entry, so the invariant is "every count is 1".
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.commits: Counter[tuple[str, int]] = Counter()
        self.crash_before_commit: set[int] = set()  # steps; each crashes once
        self.crash_after_commit: set[int] = set()
        self.unavailable: set[tuple[str, int]] = set()  # (run_id, step) commits that always fail
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def commit_step(self, commit: StepCommit) -> StepCommit:
        step = commit.step
        if (commit.run_id, step) in self.unavailable:
            raise StoreUnavailableError(f"injected: commit {step} throttled, again")
        if self._take(self.crash_before_commit, step):
            raise InjectedCrash(f"crash after the tool ran, before commit {step}")
        stored = self.store.commit_step(commit)
        with self._lock:
            self.commits[(commit.run_id, step)] += 1
        if self._take(self.crash_after_commit, step):
            raise InjectedCrash(f"crash after commit {step}, before the next step was sent")
        return stored

    def _take(self, steps: set[int], step: int) -> bool:
        with self._lock:
            if step in steps:
                steps.discard(step)
                return True
            return False


class CountingQueue:
    """A StepQueue wrapper that counts the messages sent per (run_id, step)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.sent: Counter[tuple[str, int]] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)

    def send_step(self, run_id: str, step: int, delay_s: float = 0.0) -> None:
        self.queue.send_step(run_id, step, delay_s)
        self.sent[(run_id, step)] += 1
