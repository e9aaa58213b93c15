"""The run service: graphs and runs over the ports, and the step loop's one tick.

Everything the Lambda handlers do lives here, behind :class:`~engine.ports.RunStore`
and :class:`~engine.ports.StepQueue`, so the same code runs on DynamoDB/SQS, on moto,
and in memory. The invariant (DESIGN.md §4): transitions happen exactly once, tools at
least once. A step message ``(run_id, k)`` is applied only while the stored run is
running at step ``k``; the commit of run@k→k+1 plus log entry k is conditional, so a
duplicate or concurrent delivery loses the condition and does nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from engine import running
from engine.blobs import DEFAULT_MAX_TOTAL_STATE_BYTES, Blobs
from engine.chain import ChainBudget, StopReason, run_chain
from engine.cost import EMPTY, MessageMeter, Usage, step_usage
from engine.errors import (
    ConflictError,
    FlowForgeError,
    GraphValidationError,
    NotFoundError,
    StateTooLargeError,
)
from engine.logentry import is_execution, upto_open_gap
from engine.logpages import MAX_LOG_PAGE_BYTES, MAX_LOG_PAGE_ENTRIES, LogPage, read_log_page
from engine.ports import GraphRecord, RunRecord, RunStore, StepCommit, StepQueue, Timers
from engine.registry import Registry, default_registry
from engine.state import DEFAULT_MAX_STATE_BYTES, LiveState, StateSize, encode_state
from engine.step import LIVE, Cursor, StepResult, enforce_limits, iso_time, refuse_update
from engine.transitions import step_commit
from engine.wait_service import WaitSteps

if TYPE_CHECKING:
    from engine.graph import CompiledGraph
    from engine.item_reads import ItemReads
    from engine.waits import CallbackSigner


def compile_graph(definition: Any, registry: Registry) -> CompiledGraph:
    """:func:`engine.validate.compile_graph`, imported on first use: only creating a graph
    (and reporting why a stored one no longer loads) needs the graph model (pydantic)."""
    from engine.validate import compile_graph as compile_definition

    return compile_definition(definition, registry)


def load_stored_graph(definition: dict[str, Any], registry: Registry) -> CompiledGraph:
    """The graph a stored definition describes, loaded without validating it again.

    Definitions are validated by ``create_graph`` before they are stored, so the step
    Lambda loads them without pydantic. One that no longer loads (a new deployment
    dropped a tool it names, or the item was edited by hand) is validated in full, so
    the run fails with every problem listed.
    """
    from engine.graph import load_graph  # on first use: the sweeper and DLQ never load a graph

    try:
        return load_graph(definition, registry)
    except (FlowForgeError, LookupError, TypeError, ValueError, AttributeError):
        return compile_graph(definition, registry)


class Disposition(StrEnum):
    """What handling one step message did (for logs, metrics and tests)."""

    COMMITTED = "committed"
    CONFLICT = "conflict"  # lost the conditional commit: someone else made this transition
    STALE = "stale"  # a duplicate of a step already made
    RESENT = "resent"  # a stale duplicate of a stalled run: its continuation was re-sent
    DEFERRED = "deferred"  # arrived before its retry delay was over: re-sent with the rest
    FINISHED = "finished"  # the run already ended (or was cancelled)
    UNKNOWN_RUN = "unknown_run"
    AHEAD = "ahead"  # a step the run has not reached: cannot come from this service
    FANNED_OUT = "fanned_out"  # a map or parallel node sent its first items
    IN_PROGRESS = "in_progress"  # a fan-out's items are still running
    WAITING = "waiting"  # the run waits and its wait may not end yet


class RunService:
    """Creates graphs and runs, executes step messages, cancels, sweeps."""

    def __init__(
        self,
        store: RunStore,
        queue: StepQueue,
        registry: Registry | None = None,
        *,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        stall_after_s: float = 360.0,
        retention_s: int | None = None,
        log_page_bytes: int = MAX_LOG_PAGE_BYTES,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        isolated: bool = False,
        clients: Callable[[str], Any] | None = None,
        callbacks: CallbackSigner | None = None,
        blobs: Blobs | None = None,
        max_total_state_bytes: int = DEFAULT_MAX_TOTAL_STATE_BYTES,
        max_running_runs: int = 0,
        timers: Timers | None = None,
    ) -> None:
        """``isolated``: graphs and runs belong to the principal that created them, and
        the API passes each caller as ``owner``; otherwise they belong to the account.
        ``clients``: the container's AWS clients by service name, for tools
        (``ctx.clients``). ``callbacks`` makes callback tokens and URLs (without it a
        callback node fails with CallbackKeyMissing). ``blobs``: where values over its
        threshold are offloaded (engine/blobs.py); ``max_state_bytes`` then caps the state
        as stored, with references, and ``max_total_state_bytes`` the state with offloaded
        values. Without it every value stays in the run. ``max_running_runs``: how many
        runs running or waiting each owner may have (0: no cap; see engine/running.py).
        ``timers``: the durable timers of ``wait`` nodes due beyond SQS's longest delay
        (EventBridge Scheduler on AWS; default: in memory, fired by whoever holds them)."""
        self.store = store
        self.isolated = isolated
        self.queue = queue
        self.registry = registry or default_registry
        self.max_state_bytes = max_state_bytes
        self.stall_after_s = stall_after_s
        self.retention_s = retention_s
        self.log_page_bytes = log_page_bytes
        self.clock = clock
        self.new_id = new_id
        self.clients = clients
        self.blobs = blobs
        self.max_total_state_bytes = max_total_state_bytes
        self.max_running_runs = max_running_runs
        if timers is None:
            from engine.memory import InMemoryTimers

            timers = InMemoryTimers()
        self.timers = timers
        self._graphs: dict[str, CompiledGraph] = {}  # graphs are immutable: cache forever
        self._graph_owners: dict[str, str | None] = {}
        from engine.fanout_service import FanOutSteps  # it builds on this module's Disposition

        self.fanouts = FanOutSteps(self)
        self.waits = WaitSteps(self, callbacks)

    # -- graphs -------------------------------------------------------------------------
    # ``owner`` (graphs and runs isolated by principal): the caller's principal. Another
    # principal's graph or run is answered exactly as an unknown one; None sees them all.
    def create_graph(self, definition: Any, owner: str | None = None) -> GraphRecord:
        """Validate and store a graph (GraphValidationError lists every problem)."""
        compiled = compile_graph(definition, self.registry)
        record = GraphRecord(
            graph_id=self.new_id(),
            definition=definition,
            created_at=iso_time(self.clock()),
            name=compiled.name,
            owner=owner,
        )
        self.store.put_graph(record)
        self._graphs[record.graph_id] = compiled
        self._graph_owners[record.graph_id] = owner
        return record

    def validate_graph(self, definition: Any) -> CompiledGraph:
        """Validate a graph without storing it (GraphValidationError lists every problem)."""
        return compile_graph(definition, self.registry)

    def get_graph(self, graph_id: str, owner: str | None = None) -> GraphRecord:
        record = self.store.get_graph(graph_id)
        if record is None or not _visible(record.owner, owner):
            raise NotFoundError(f"graph {graph_id!r} not found")
        return record

    def compiled(self, graph_id: str, owner: str | None = None) -> CompiledGraph:
        graph = self._graphs.get(graph_id)
        if graph is None:
            record = self.get_graph(graph_id)
            graph = load_stored_graph(record.definition, self.registry)
            self._graphs[graph_id] = graph
            self._graph_owners[graph_id] = record.owner
        if not _visible(self._graph_owners.get(graph_id), owner):
            raise NotFoundError(f"graph {graph_id!r} not found")
        return graph

    # -- runs ---------------------------------------------------------------------------
    def start_run(self, graph_id: str, state: Any, owner: str | None = None) -> RunRecord:
        """Store a new run at step 0 and enqueue its first step."""
        graph = self.compiled(graph_id, owner)
        run_id = self.new_id()
        encoded = encode_state(state if state is not None else {})
        if self.blobs is not None:  # a state refused by its caps writes nothing to the store
            self.state_size(self.blobs.offload(run_id, encoded, write=False))
        encoded = self.offload(run_id, encoded)
        self.state_size(encoded)
        now = self.clock()
        stamp = iso_time(now)
        run = RunRecord(
            run_id=run_id,
            graph_id=graph_id,
            status="running",
            cursor=Cursor(graph.start),
            step=0,
            state=encoded,
            created_at=stamp,
            updated_at=stamp,
            next_at=now,
            expires_at=self._expiry(now),
            owner=owner,
            cost=Usage(self.blobs.take_usage(run_id)) if self.blobs is not None else EMPTY,
        )
        running.hold(self, owner, run_id)
        try:
            self.store.create_run(run)
        except BaseException:
            running.release(self, owner, run_id)
            raise
        # If this send is lost the sweeper finds the run (next_at = now) and resends it.
        self.queue.send_step(run.run_id, 0)
        return run

    def get_run(self, run_id: str, owner: str | None = None) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None or not _visible(run.owner, owner):
            raise NotFoundError(f"run {run_id!r} not found")
        return run

    def log_page(self, run_id: str, after: int = -1, limit: int = MAX_LOG_PAGE_ENTRIES) -> LogPage:
        """The run's log entries after ``after``: at most ``limit``, within ``log_page_bytes``."""
        return read_log_page(self.store, run_id, after, limit=limit, max_bytes=self.log_page_bytes)

    def shown_log(self, run: RunRecord, after: int = -1, limit: int = MAX_LOG_PAGE_ENTRIES) -> LogPage:
        """The page of the log shown with ``run`` as read: the log is read after the run,
        so entries the run had not reached are left out (status and log tell of one
        moment: a client that follows from the last entry shown would otherwise never
        hear of the status they brought), and so is what lies past a map item's entry
        still to be written (such a client would never get that entry:
        :func:`engine.logentry.upto_open_gap`)."""
        page = self.log_page(run.run_id, after, limit)
        shown = [entry for entry in page.entries if entry["seq"] < run.step]
        if run.status in LIVE:
            shown = upto_open_gap(shown, after, itemgetter("seq"), is_execution)
        return page if len(shown) == len(page.entries) else LogPage(shown, None)

    def cancel(self, run_id: str, owner: str | None = None) -> RunRecord:
        """Cancel a running or waiting run (ConflictError if it already ended); a
        waiting run's timer is deleted."""
        before = self.get_run(run_id, owner)
        stamp = iso_time(self.clock())
        error = {"node": None, "type": "Cancelled", "message": "run cancelled by request"}
        try:
            self.store.finish_run(run_id, status="cancelled", error=error, now=stamp)
        except ConflictError:
            status = self.get_run(run_id).status
            raise ConflictError(
                f"run {run_id!r} is already {status}; only a running run can be cancelled",
                details={"status": status},
            ) from None
        self.waits.cancelled(before)
        return self.get_run(run_id)

    def redrive(
        self, run_id: str, state_patch: dict[str, Any] | None = None, owner: str | None = None
    ) -> RunRecord:
        """Resume a failed run at the node that failed (see engine/redrive.py)."""
        from engine.redrive import redrive  # the API's alone: the step Lambda never loads it

        return redrive(self, run_id, state_patch, owner)

    def progress(self, run: RunRecord) -> dict[str, Any] | None:
        """How far a running map or parallel node is: ``{node, total, done, failed}``
        (None when the run is not at one, or it has not sent its items yet)."""
        if run.status != "running" or run.cursor is None:
            return None
        node = self.compiled(run.graph_id).nodes.get(run.cursor.node)
        if node is None or node.fanout is None:
            return None
        fanout = self.store.get_fanout(run.run_id, run.cursor.step)
        if fanout is None:
            return None
        return {"node": node.id, "total": fanout.total, "done": fanout.done, "failed": fanout.failed}

    def fail_dead_letter(
        self, run_id: str, step: int, receive_count: int | None = None, *, item: int | None = None
    ) -> bool:
        """Fail a run stuck at the step (or item) whose message was given up on; False if
        it had moved on, or is there but not stalled: a dead duplicate must not fail a run
        whose original message is still on its way (the sweeper re-sends a run that does
        stall, and that message reaches the dead-letter queue in its turn)."""
        run = self.store.get_run(run_id)
        if run is None or run.status != "running":
            return False
        # An item message belongs to the fan-out the run reached at ``step`` (executions
        # have moved the run's step on since).
        at_step = run.cursor is not None and run.cursor.step == step if item is not None else run.step == step
        if not at_step:
            return False
        if self.clock() < run.next_at + self.stall_after_s:
            return False
        tries = f" after {receive_count} deliveries" if receive_count else ""
        what = f"item {item} of step {step}" if item is not None else f"step {step}"
        error = {
            "node": run.cursor.node if run.cursor else None,
            "type": "StepDeliveryFailed",
            "message": f"{what} could not be processed{tries}; its message went to the dead-letter queue",
        }
        try:
            self.store.finish_run(
                run_id,
                status="failed",
                error=error,
                now=iso_time(self.clock()),
                step=step if item is None else None,
            )
        except FlowForgeError:
            return False
        return True

    def resume(self, run: RunRecord) -> None:
        """Send what a running run needs to go on when its queued messages were lost (the
        local stack's queue is not persisted): its step message, and the messages of a
        map's or parallel node's unfinished items; for a run that waits on a timer, its
        timer (a delayed message, or a schedule if that is gone). Duplicates are harmless."""
        if run.status == "waiting":
            self.waits.rearm(run)
            return
        self.queue.send_step(run.run_id, run.step)
        self.fanouts.resend_due(run, self.compiled(run.graph_id))

    def sweep(self, limit: int = 100) -> list[tuple[str, int]]:
        """Re-enqueue runs with no progress for ``stall_after_s`` past their due time, and
        wake the waiting runs whose wait is due (the due-time index)."""
        now = self.clock()
        stalled = self.store.stalled_runs(now - self.stall_after_s, limit)
        resent = [(run_id, step) for run_id, step in stalled if self._claim_resend(run_id, now)]
        for run_id, step in resent:
            self.queue.send_step(run_id, step)
        return resent + self.waits.wake_due(limit)

    def _claim_resend(self, run_id: str, now: float) -> bool:
        """Whether to re-send a stalled run now: at most once per stall window, so a queue
        backlog longer than the window does not multiply its messages (each sweep and
        each stale duplicate would otherwise add one more copy)."""
        return self.store.claim_resend(run_id, now, self.stall_after_s)

    # -- state of any size (engine/blobs.py) --------------------------------------------
    def state_size(self, encoded: dict[str, str]) -> StateSize:
        """The size of a stored state, checked against the caps (StateTooLargeError)."""
        total = self.max_total_state_bytes if self.blobs is not None else None
        return StateSize(encoded, self.max_state_bytes, total)

    def offload(self, run_id: str, encoded: dict[str, str]) -> dict[str, str]:
        """``encoded`` with each value over the threshold offloaded (no blobs: as it is)."""
        return encoded if self.blobs is None else self.blobs.offload(run_id, encoded)

    def live_state(self, run: RunRecord) -> LiveState:
        """The run's state decoded, its offloaded values read when a step reads them."""
        return LiveState(run.state, None if self.blobs is None else self.blobs.loader(run.run_id))

    def state_value(self, run: RunRecord, key: str) -> Any:
        """One value of the run's state, read from the blob store if it was offloaded
        (NotFoundError: no such key)."""
        text = run.state.get(key)
        if text is None:
            raise NotFoundError(f"run {run.run_id!r} has no state key {key!r}")
        if self.blobs is None:
            return json.loads(text)
        return self.blobs.resolve(run.run_id, text)

    # -- the step loop ------------------------------------------------------------------
    async def process_step(
        self,
        run_id: str,
        step: int,
        on_commit: Callable[[StepCommit], Any] | None = None,
        *,
        deadline: float | None = None,
        fresh: bool = True,
        budget: ChainBudget | None = None,
    ) -> Disposition:
        """Handle step message ``(run_id, step)``: execute its node and commit, or drop.

        With a ``budget`` (the step function's, per invocation), the steps after it run
        in this call too while :func:`engine.chain.chain_stop` allows, each committed on
        its own (see engine/chain.py); the next step message is sent when the chain stops.
        Without one, one step runs. Returns what became of the message's own step.

        Raises only for infrastructure failures (store or queue unavailable), so the
        message is redelivered. ``on_commit`` sees each commit this call made (the step
        handler's metrics: node duration, run outcome). ``deadline`` (or the budget's)
        caps a node's time (see :func:`engine.step.run_step`); unless ``fresh`` (the
        first step of an invocation), a node whose ``timeout_s`` no longer fits before it
        is re-sent to run in an invocation of its own, rather than cut short.
        """
        if budget is None:
            budget = ChainBudget(deadline=deadline)
        else:
            deadline, fresh = budget.deadline, budget.steps == 0
        # The store may answer from what it just committed (the same container usually
        # handles a run's next step): the commit's condition catches a stale answer.
        run = self.store.get_run(run_id, step=step)
        if run is None:
            return Disposition.UNKNOWN_RUN
        if run.status == "waiting":
            return await self._wake(run, step, on_commit, budget)
        if run.status != "running":
            return Disposition.FINISHED
        now = self.clock()
        if step < run.step:
            if now > run.next_at + self.stall_after_s and self._claim_resend(run_id, now):
                self.queue.send_step(run_id, run.step)
                return Disposition.RESENT
            return Disposition.STALE
        if step > run.step:
            return Disposition.AHEAD
        if run.next_at - now >= 1.0:
            self.queue.send_step(run_id, step, run.next_at - now)
            return Disposition.DEFERRED
        assert run.cursor is not None  # a running run always has a cursor
        try:
            graph = self.compiled(run.graph_id)
        except (NotFoundError, GraphValidationError) as exc:
            return self._fail_unrunnable(run, exc)
        node = graph.nodes[run.cursor.node]
        if node.fanout is not None:
            budget.steps += 1
            return await self.fanouts.step(run, graph, node, budget.meter)
        if (
            not fresh
            and deadline is not None
            and node.timeout_s is not None
            and deadline - now < node.timeout_s
        ):
            self.queue.send_step(run_id, step)
            return Disposition.DEFERRED
        committed = await run_chain(self, run, graph, budget, on_commit)
        return Disposition.COMMITTED if committed else Disposition.CONFLICT

    async def _wake(
        self, run: RunRecord, step: int, on_commit: Callable[[StepCommit], Any] | None, budget: ChainBudget
    ) -> Disposition:
        """A step message for a waiting run: its wait ends if it may (then the chain goes
        on from there), else the run goes on waiting and nothing is sent."""
        if step != run.step:
            return Disposition.STALE
        try:
            graph = self.compiled(run.graph_id)
        except (NotFoundError, GraphValidationError) as exc:
            return self._fail_unrunnable(run, exc)
        committed = await run_chain(self, run, graph, budget, on_commit)
        return Disposition.COMMITTED if committed else Disposition.WAITING

    async def process_item(
        self,
        run_id: str,
        step: int,
        item: int,
        attempt: int,
        meter: MessageMeter | None = None,
        *,
        deadline: float | None = None,
        reads: ItemReads | None = None,
    ) -> Disposition:
        """Handle item message ``(run_id, step, item, attempt)``: one attempt of one item
        (or branch) of the fan-out the run reached at ``step`` (see engine/fanout_service.py).
        ``meter``: the message's part of what the invocation spends, for the run's cost.
        ``deadline`` caps the tool's time, as :meth:`process_step`'s does a node's.
        ``reads``: the batch's reads of runs, shared by the items of one fan-out."""
        return await self.fanouts.process_item(run_id, step, item, attempt, meter, deadline, reads)

    def commit_outcome(
        self,
        run: RunRecord,
        step: int,
        outcome: StepResult,
        state: Mapping[str, Any],
        on_commit: Callable[[StepCommit], Any] | None = None,
        *,
        meter: MessageMeter | None = None,
        spent: Usage = EMPTY,
    ) -> Disposition:
        """Commit ``outcome`` as the run's transition ``step`` and send the next step."""
        committed = self.commit(run, step, outcome, state, on_commit, meter=meter, spent=spent)
        if committed is None:
            return Disposition.CONFLICT
        outcome = committed[0]
        if outcome.next is not None:
            self.queue.send_step(run.run_id, outcome.next.step, outcome.delay_s)
        return Disposition.COMMITTED

    def commit(
        self,
        run: RunRecord,
        step: int,
        outcome: StepResult,
        state: Mapping[str, Any],
        on_commit: Callable[[StepCommit], Any] | None,
        *,
        meter: MessageMeter | None = None,
        stop: Callable[[StepResult], StopReason | None] | None = None,
        spent: Usage = EMPTY,
    ) -> tuple[StepResult, StepCommit, StopReason | None] | None:
        """Commit ``outcome`` as the run's transition ``step`` (None: it lost the
        condition, another delivery or a cancel took the step): the outcome as committed
        (within the limits), its commit, and why the chain stops after it.

        ``stop`` (a chain's) says whether the run's next step runs at once in this
        invocation, asked before the write: where it does not, a step message follows
        the commit, and the commit counts it (None: the chain stops here). The commit
        carries the run's usage with this step's (``meter``'s share and time, what
        ``spent`` adds, the message that follows, Bedrock tokens) and what the store adds.
        """
        offload = None if self.blobs is None else partial(self.blobs.offload, run.run_id)
        outcome, update = enforce_limits(outcome, self.state_size(run.state), state, offload)
        if meter is not None:
            spent = spent + meter.take()
        if self.blobs is not None:  # the S3 requests of this step (and of reads before it)
            if self.retention_s:
                self.keep_values(run, update)
            spent = spent + self.blobs.take_usage(run.run_id)
        reason, commit = self._commit_of(run, step, outcome, update, stop, spent)
        try:
            try:
                commit = self.store.commit_step(commit)
            except StateTooLargeError as exc:
                # The store cannot hold this step's record: fail the run with a small one.
                outcome = refuse_update(outcome, exc, state)
                reason, commit = self._commit_of(run, step, outcome, {}, stop, spent)
                commit = self.store.commit_step(commit)
        except FlowForgeError as exc:
            if exc.code == "conflict":
                return None
            raise
        if on_commit is not None:
            on_commit(commit)
        return outcome, commit, reason

    def keep_values(self, run: RunRecord, update: dict[str, str]) -> int:
        """Keep the run's offloaded values as long as the run, before the commit of a step
        that leaves its state with ``update``; how many were written again.

        The bucket's lifecycle rule deletes an object ``retention_s`` after its last write,
        rounded up to the next midnight UTC; the table's TTL deletes a run ``retention_s``
        after its last step. So a value written on the day of the run's last step is
        deleted after the run. A step of a run started before today writes each value of
        its state again in place (:meth:`Blobs.refresh`), but those this container already
        wrote again today: whatever the run does next — waits, ends, is cancelled or
        redriven — its values outlive it. A run started today writes nothing again: all
        its values were written today.
        """
        now = self.clock()
        today = now - now % 86_400
        if datetime.fromisoformat(run.created_at).timestamp() >= today:  # ISO 8601, Z: UTC
            return 0
        assert self.blobs is not None
        return self.blobs.refresh(run.run_id, [*run.state.values(), *update.values()], now, today)

    def _commit_of(
        self,
        run: RunRecord,
        step: int,
        outcome: StepResult,
        update: dict[str, str],
        stop: Callable[[StepResult], StopReason | None] | None,
        spent: Usage,
    ) -> tuple[StopReason | None, StepCommit]:
        """The commit of ``outcome``: run@step → run@step+1, with log entry ``step``, and
        why the chain stops after it.

        Every commit pushes the run's expiry forward, so a run that is still moving is
        never deleted by the table's TTL (its slots and snapshots carry it).
        """
        reason = stop(outcome) if stop is not None else StopReason.ENDED
        sends = 1 if reason is not None and outcome.next is not None else 0
        cost = run.cost + spent + step_usage(outcome.log, sends=sends)
        done_at = self.clock()
        return reason, step_commit(run, step, outcome, update, done_at, self._expiry(done_at), cost)

    def _fail_unrunnable(self, run: RunRecord, exc: FlowForgeError) -> Disposition:
        error = {
            "node": run.cursor.node if run.cursor else None,
            "type": type(exc).__name__,
            "message": exc.message,
        }
        try:
            self.store.finish_run(
                run.run_id, status="failed", error=error, now=iso_time(self.clock()), step=run.step
            )
        except FlowForgeError as conflict:
            if conflict.code != "conflict":
                raise
            return Disposition.CONFLICT
        return Disposition.COMMITTED

    def _expiry(self, now: float) -> int | None:
        return int(now + self.retention_s) if self.retention_s else None


def _visible(stored_owner: str | None, caller: str | None) -> bool:
    """Whether a graph or run owned by ``stored_owner`` exists for ``caller``."""
    return caller is None or stored_owner == caller
