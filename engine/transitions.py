"""A run's transitions as pure functions: what every store applies.

A run moves on in three ways: a step commits (its node ran: the state update, the next
cursor, the run's status), a fan-out's execution commits (one item or branch of a map or
parallel node ran: only the run's step moves), or the run is finished from outside
(cancelled, or failed by the dead-letter handler). A redrive of a failed run commits
like a step (its commit carries the run's new ``redrive_count``). The in-memory store,
the DynamoDB store's fold and a chain of steps (engine/chain.py) all apply them through
these functions. The in-process runner stores nothing: it follows a step's outcome (its
next cursor and the run's status, what :func:`apply_commit` sets), and the differential
tests compare the two.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.ports import RunRecord, StepCommit
from engine.step import TERMINAL, iso_time

if TYPE_CHECKING:
    from engine.cost import Usage
    from engine.step import StepResult


def step_commit(
    run: RunRecord,
    step: int,
    outcome: StepResult,
    update: dict[str, str],
    done_at: float,
    expires_at: int | None,
    cost: Usage | None = None,
) -> StepCommit:
    """The commit of ``outcome`` (``update``: its per-key JSON): run@step → run@step+1,
    with log entry ``step``, made at ``done_at`` (epoch seconds); ``cost``: the run's
    usage after it (None: unchanged)."""
    stamp = iso_time(done_at)
    status = outcome.run_status
    return StepCommit(
        run.run_id,
        step,
        update,
        outcome.next,
        status,
        outcome.log,
        stamp,
        done_at + outcome.delay_s if outcome.until is None else outcome.until,
        outcome.error if status == "failed" else None,
        expires_at if expires_at is not None else run.expires_at,
        stamp if status in TERMINAL else None,
        None,
        cost,
    )


def apply_commit(run: RunRecord, commit: StepCommit) -> RunRecord:
    """``run`` after step ``commit.step`` (``run`` itself is not changed).

    Built field by field rather than with ``dataclasses.replace`` (a third of the cost, on
    the path of every step): a test fails when RunRecord gains a field this does not name.
    """
    update = commit.update
    # Positional, in RunRecord's field order (tests/unit/test_transitions.py checks it).
    return RunRecord(
        run.run_id,
        run.graph_id,
        commit.status,
        commit.cursor,
        commit.step + 1,
        {**run.state, **update} if update else run.state,
        run.created_at,
        commit.updated_at,
        commit.next_at,
        run.graph_version,
        commit.finished_at,
        commit.error,
        # Each commit pushes the run's expiry forward: a live run never expires.
        commit.expires_at if commit.expires_at is not None else run.expires_at,
        run.owner,
        commit.redrive_count if commit.redrive_count is not None else run.redrive_count,
        commit.cost if commit.cost is not None else run.cost,
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
