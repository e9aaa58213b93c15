"""A run's transitions as pure functions: what every store and the in-process runner apply.

A run moves on in three ways: a step commits (its node ran: the state update, the next
cursor, the run's status), a fan-out's execution commits (one item or branch of a map or
parallel node ran: only the run's step moves), or the run is finished from outside
(cancelled, or failed by the dead-letter handler). A redrive of a failed run commits
like a step (its commit carries the run's new ``redrive_count``). The in-memory store,
the DynamoDB store's fold and the in-process runner all apply them through these
functions.
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
        # Each commit pushes the run's expiry forward: a live run never expires.
        expires_at=commit.expires_at if commit.expires_at is not None else run.expires_at,
        redrive_count=commit.redrive_count if commit.redrive_count is not None else run.redrive_count,
    )


def apply_finish(run: RunRecord, *, status: str, error: dict[str, Any] | None, now: str) -> RunRecord:
    """``run`` ended from outside with ``status`` at ``now`` (``run`` itself is not changed)."""
    return replace(run, status=status, error=error, updated_at=now, finished_at=now, cursor=None)


def apply_execution(run: RunRecord, step: int, *, updated_at: str, next_at: float) -> RunRecord:
    """``run`` after a fan-out's execution took ``step``: the run is at the step after the
    newest execution written (executions may be written a moment out of order), its state
    and cursor unchanged until the join. Nothing once the run has ended."""
    if run.status != "running" or step < run.step:
        return run
    return replace(run, step=step + 1, updated_at=updated_at, next_at=next_at)
