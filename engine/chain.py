"""Chained steps: when a run's next step may run in the invocation that committed the last.

A step message executes one node and commits it. If the run's next step is due at once
and the invocation has budget left, the same invocation executes it too, from the run it
has just committed (no read), committing it with its own conditional write — and so on
until :func:`chain_stop` says why not. Only then is a step message sent. History,
exactly-once transitions and live logs are those of one message per step: only the
queue hops between steps are saved.

:func:`chain_stop` is the one predicate that decides it: the reasons a run cannot go on
at once (it ended, a retry delay, a map or parallel fan-out) come first, then the
invocation's :class:`ChainBudget`. The in-process runner asks the same predicate with no
budget: it goes on after every step except the last, and sleeps out retry delays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from engine.cost import MessageMeter
from engine.step import run_step
from engine.transitions import apply_commit

if TYPE_CHECKING:
    from engine.graph import CompiledGraph
    from engine.ports import RunRecord, StepCommit
    from engine.service import RunService
    from engine.step import StepResult


class StopReason(StrEnum):
    """Why a chain stopped after a commit (logged, and counted as a metric)."""

    ENDED = "ended"  # the run completed or failed
    DELAYED = "delayed"  # a retry delay: the next step is due later
    FAN_OUT = "fan_out"  # the next node is a map or parallel node: its items are messages
    STEPS = "steps"  # the message's share of the invocation's steps is spent
    TIME = "time"  # the message's share of the invocation's seconds is spent
    DEADLINE = "deadline"  # the function's remaining time is too short for the next node
    CONFLICT = "conflict"  # the commit lost its condition: a cancel or another delivery moved the run
    WAITING = "waiting"  # the run waits for a callback's answer or a timer (engine/waits.py)


#: Defaults of the step function's budget (template parameters ChainMaxSteps and
#: ChainMaxSeconds), measured with ``python -m bench aws``: see the README's Performance.
DEFAULT_CHAIN_MAX_STEPS = 100
DEFAULT_CHAIN_MAX_SECONDS = 10.0


@dataclass(slots=True)
class ChainBudget:
    """What one invocation may spend on chained steps, shared by the messages of its batch.

    Each message runs its own step whatever the budget (only the function's remaining
    time can return a message to the queue, see the step handler). A message's chain
    gets an equal share of what is left of ``max_steps`` and of ``max_seconds`` between
    itself and the messages of the batch not started yet, so a long chain never starves
    the rest of its batch. ``deadline`` is when tools must be done (the function's end
    less what a commit and send need); a chain also stops when the next node would not
    fit before it.
    """

    max_steps: int = 1
    max_seconds: float = 0.0
    deadline: float | None = None
    #: A step starts only with at least this long before ``deadline``.
    min_step_s: float = 1.0
    started_at: float = 0.0
    #: Messages of the batch not started yet.
    pending: int = 0
    #: Steps executed in this invocation (each message's own, and chained ones).
    steps: int = 0
    #: Of them, steps executed by chaining.
    chained: int = 0
    #: Where the current message's share ends: a step count, and a time.
    share_steps: int = 1
    share_ends: float = 0.0
    #: Why the last chain stopped (None: none of its steps committed).
    stop: StopReason | None = None
    #: What the invocation spends, for the commits' cost (None: not counted).
    meter: MessageMeter | None = None

    def begin_message(self, now: float) -> None:
        """A message of the batch starts: it takes its share of the steps and seconds left."""
        self.pending = max(self.pending - 1, 0)
        shares = self.pending + 1
        self.share_steps = self.steps + max(self.max_steps - self.steps, 0) // shares
        self.share_ends = now + max(self.max_seconds - (now - self.started_at), 0.0) / shares

    def stop_reason(self, now: float, timeout_s: float | None) -> StopReason | None:
        """Why the budget allows no further step whose node has ``timeout_s``, or None."""
        if self.steps >= self.share_steps:
            return StopReason.STEPS
        if now >= self.share_ends:
            return StopReason.TIME
        if self.deadline is not None:
            left = self.deadline - now
            if left < self.min_step_s or (timeout_s is not None and left < timeout_s):
                return StopReason.DEADLINE
        return None


def chain_stop(
    outcome: StepResult, graph: CompiledGraph, budget: ChainBudget | None, now: float
) -> StopReason | None:
    """Why the run's next step must not run now in this invocation, or None to run it.

    ``outcome`` is the step just committed. Without a ``budget`` (the in-process runner)
    only the run's own reasons count.
    """
    cursor = outcome.next
    if cursor is None:
        return StopReason.ENDED
    if outcome.until is not None:
        return StopReason.WAITING
    if outcome.delay_s > 0:
        return StopReason.DELAYED
    node = graph.nodes[cursor.node]
    if node.fanout is not None:
        return StopReason.FAN_OUT
    if budget is None:
        return None
    return budget.stop_reason(now, node.timeout_s)


async def run_chain(
    service: RunService,
    run: RunRecord,
    graph: CompiledGraph,
    budget: ChainBudget,
    on_commit: Callable[[StepCommit], Any] | None = None,
) -> bool:
    """Execute the run's step, then the next ones while :func:`chain_stop` allows, and
    send the step message of where the chain stopped. Whether the first step committed.

    Whether the chain goes on is asked before each commit (:func:`chain_stop`), so the
    commit can count the step message that follows it. Each next step runs from the run
    this call committed (the transition every store
    applies, :func:`engine.transitions.apply_commit`) and the state it keeps decoded:
    nothing is read. Its commit is conditional like any: a cancel or another delivery
    that moved the run meanwhile makes it conflict, and the chain stops there (whoever
    moved the run sends what follows).
    """
    live = service.live_state(run)
    committed_any = False
    waits = service.waits
    while True:
        cursor = run.cursor
        assert cursor is not None  # the chain goes on only while the run runs or waits
        state = live.view()
        wait = withdrawn = None
        if run.status == "waiting":
            # The wait ends now (answered, timed out, due) or the run goes on waiting.
            resumed = waits.resume(run, graph, state)
            if resumed is None:
                budget.stop = StopReason.WAITING
                return committed_any
            outcome, wait = resumed
        else:
            node = graph.nodes[cursor.node]
            # Stored before the tool runs: an answer that comes meanwhile is kept.
            ticket = waits.open_callback(run, node) if node.callback is not None else None
            outcome = await run_step(
                graph,
                cursor,
                state,
                run_id=run.run_id,
                now=service.clock,
                deadline=budget.deadline,
                clients=service.clients,
                callback=ticket,
            )
            if outcome.until is not None and node.wait is not None:
                waits.arm_timer(run, outcome.until)  # before the commit: see arm_timer
            if ticket is not None and outcome.until is None:
                # The tool failed: an answer accepted meanwhile wins, else the callback goes.
                outcome, withdrawn = waits.after_failure(run, ticket, outcome, state)
        budget.steps += 1
        committed = service.commit(
            run,
            run.step,
            outcome,
            state,
            on_commit,
            meter=budget.meter,
            stop=lambda outcome: chain_stop(outcome, graph, budget, service.clock()),
        )
        if committed is None:
            if withdrawn is not None:
                waits.restore(withdrawn)
            budget.stop = StopReason.CONFLICT
            return committed_any
        outcome, commit, reason = committed
        committed_any = True
        if wait is not None:
            waits.close(wait)
        if withdrawn is not None:
            waits.close(withdrawn)
        if reason is StopReason.WAITING and commit.status == "waiting":
            # An answer may have come while the tool ran: look once before parking.
            run = apply_commit(run, commit)
            live.apply(outcome.update, commit.update)
            if waits.park(run):
                continue
            budget.stop = reason
            return True
        if reason is not None:
            budget.stop = reason
            if outcome.next is not None:
                service.queue.send_step(run.run_id, outcome.next.step, outcome.delay_s)
            return True
        live.apply(outcome.update, commit.update)
        run = apply_commit(run, commit)
        budget.chained += 1
