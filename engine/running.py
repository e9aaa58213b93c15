"""A cap on the runs each principal has running or waiting (``MaxRunningRunsPerPrincipal``).

With graphs and runs isolated by principal, every run belongs to the principal that
started it. The store keeps, per principal, the runs it holds — the ids of its runs
counted as running, each with when it was counted — and counts a new one only while it
holds fewer than the cap, in one conditional write (so two starts racing for the last
place cannot both take it). A run is counted when it starts and when it is redriven.

Nothing gives a place back when a run ends: there are as many ways to end (the last
step, a failure, a cancel, the dead-letter queue, a wait that times out) as there are
functions. Instead, a principal found at its cap has its places checked: a run that has
ended, or a counted run that does not exist a minute after it was counted (its start
died before storing it), gives its place back, and the new run is counted again. The
check reads each run the principal holds, so it costs up to the cap's number of reads,
and only when the principal is at the cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import FlowForgeError
from engine.step import TERMINAL

if TYPE_CHECKING:
    from engine.service import RunService

#: A counted run not stored this long after it was counted never will be: its start died.
UNSTORED_GRACE_S = 60.0


class TooManyRunningRunsError(FlowForgeError):
    """The principal holds as many running (or waiting) runs as it may."""

    code = "too_many_runs"


def hold(service: RunService, owner: str | None, run_id: str) -> None:
    """Count ``run_id`` among ``owner``'s running runs (TooManyRunningRunsError at the cap).
    Nothing happens without a cap or an owner (runs that belong to the account)."""
    cap = service.max_running_runs
    if not cap or owner is None:
        return
    store, now = service.store, service.clock()
    if store.hold_run(owner, run_id, cap, now):
        return
    ended = []
    for held, since in store.held_runs(owner).items():
        run = store.get_run(held)
        if (run is None and now - since > UNSTORED_GRACE_S) or (run is not None and run.status in TERMINAL):
            ended.append(held)
    if ended:
        store.release_runs(owner, ended)
        if store.hold_run(owner, run_id, cap, now):
            return
    raise TooManyRunningRunsError(
        f"this principal already has {cap} runs running or waiting, its cap "
        "(MaxRunningRunsPerPrincipal): start another when one of them ends, or cancel one",
        details={"max_running_runs": cap},
    )


def release(service: RunService, owner: str | None, run_id: str) -> None:
    """Give back the place ``run_id`` took (a start or a redrive that did not happen)."""
    if service.max_running_runs and owner is not None:
        service.store.release_runs(owner, [run_id])
