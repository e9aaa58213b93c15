"""A run's transitions as pure functions: what every store and the in-process runner apply.

A run moves on in two ways: a step commits (its node ran: the state update, the next
cursor, the run's status) or the run is finished from outside (cancelled, or failed by
the dead-letter handler). The in-memory store, the DynamoDB store's fold and the
in-process runner all apply them through these two functions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.ports import RunRecord, StepCommit


def apply_commit(run: RunRecord, commit: StepCommit) -> RunRecord:
    """``run`` after step ``commit.step`` (``run`` itself is not changed)."""
    update = commit.update
    return replace(
        run,
        status=commit.status,
        cursor=commit.cursor,
        step=commit.step + 1,
        state={**run.state, **update} if update else run.state,
        updated_at=commit.updated_at,
        next_at=commit.next_at,
        error=commit.error,
        finished_at=commit.finished_at,
    )


def apply_finish(run: RunRecord, *, status: str, error: dict[str, Any] | None, now: str) -> RunRecord:
    """``run`` ended from outside with ``status`` at ``now`` (``run`` itself is not changed)."""
    return replace(run, status=status, error=error, updated_at=now, finished_at=now, cursor=None)
