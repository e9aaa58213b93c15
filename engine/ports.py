"""The engine's ports: what the run service needs from storage, a queue and timers.

``engine.memory`` implements them in memory; ``functions.aws`` implements them on
DynamoDB, SQS and EventBridge Scheduler. One contract suite (tests/contract) runs
against both.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.cost import EMPTY, Usage, UsageTally
from engine.logentry import StoredEntry
from engine.records import record
from engine.step import Cursor
from engine.waits import WaitRecord


@dataclass(slots=True)
class GraphRecord:
    """A stored graph definition. Graphs are immutable: runs pin ``graph_id``@``version``."""

    graph_id: str
    definition: dict[str, Any]
    created_at: str
    name: str | None = None
    version: int = 1
    owner: str | None = None
    """The principal it belongs to when graphs are isolated by principal (None: the account's)."""


@dataclass(slots=True)
class RunRecord:
    """A run as stored. ``state`` maps each top-level key to its JSON text."""

    run_id: str
    graph_id: str
    status: str
    cursor: Cursor | None
    step: int
    state: dict[str, str]
    created_at: str
    updated_at: str
    next_at: float
    graph_version: int = 1
    finished_at: str | None = None
    error: dict[str, Any] | None = None
    expires_at: int | None = None
    owner: str | None = None
    """The principal that started it when runs are isolated by principal (None: the account's)."""
    redrive_count: int = 0
    """How many times the run was redriven after failing (``POST /graph/run/{id}/redrive``)."""
    cost: Usage = EMPTY
    """What the run's committed steps used, in billed units (see engine/cost.py)."""


@record
class StepCommit:
    """Run@``step`` → run@``step + 1`` plus log entry ``step``.

    Applied atomically and only if the run is still running at ``step``.
    """

    run_id: str
    step: int
    update: dict[str, str]
    cursor: Cursor | None
    status: str
    log: dict[str, Any]
    updated_at: str
    next_at: float
    error: dict[str, Any] | None = None
    expires_at: int | None = None
    finished_at: str | None = field(default=None)
    redrive_count: int | None = None
    """Set by a redrive (a failed run resumed): the run's redrive count after it."""
    cost: Usage | None = None
    """The run's usage after this step, its own included (None: unchanged, as a redrive)."""


@dataclass(frozen=True, slots=True)
class FanOutRecord:
    """A fan-out node's executions so far, as the store counts them.

    The node started at step ``base``; its executions are log entries ``base`` …
    ``base + executed - 1`` (in commit order), its join the entry after them. ``done``
    counts items (or branches) finished for good, ``failed`` those of them that failed.
    ``updated_at`` is when it is next due (its last claim, or a retry delay after it).
    ``claims`` maps an item's index to its last committed attempt and whether that one
    was final. ``closed_at`` is set when the fan-out was closed before its join (the run
    reached max_steps): the step of the transition that ends it.
    """

    run_id: str
    base: int
    total: int
    executed: int
    done: int
    failed: int
    updated_at: float
    claims: dict[int, tuple[int, bool]] = field(default_factory=dict)
    closed_at: int | None = None
    prior: int | None = None
    """A redriven fan-out: the base of the failed one it resumes. Items that finished
    there without failing are carried over, done from the start (claimed as attempt 0),
    and their values are read from it (or from its own prior) at the join."""
    cost: Usage | None = None
    """What opening it cost (the opening step message's share of its invocation and its
    time, the item messages it sent, the store's reads and writes), counted in the run's
    cost by the join; None where the store's answer leaves it out (a claim's)."""

    @property
    def complete(self) -> bool:
        return self.done >= self.total

    @property
    def carried(self) -> frozenset[int]:
        """The items a redriven fan-out took over from ``prior`` (claimed as attempt 0)."""
        return frozenset(index for index, (attempt, _) in self.claims.items() if attempt == 0)


@dataclass(frozen=True, slots=True)
class Claim:
    """What committing an execution's place in the log came to.

    ``outcome``: ``new`` (this call took step ``step``), ``again`` (this execution had
    taken ``step`` before: a redelivery; ``final`` says how it was committed),
    ``superseded`` (a later attempt of the item is committed), ``closed`` (the fan-out
    was closed) or ``full`` (the run has no step left under max_steps). ``fanout`` is
    the fan-out after the call.
    """

    outcome: str
    step: int | None
    final: bool
    fanout: FanOutRecord | None


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """One committed execution of a fan-out: its log entry and its value."""

    step: int
    index: int
    attempt: int
    status: str
    value: Any
    error: dict[str, Any] | None
    entry: dict[str, Any]
    blob: str | None = None
    """The stored text of a reference (``engine.blobs``) when the value was offloaded:
    ``value`` is then None."""
    cost: Usage = EMPTY
    """What this attempt cost (its message's share of its invocation and its time, the
    messages it sent, its Bedrock tokens; the store adds its reads and writes when it
    writes the record), counted in the run's cost by the join."""


class BlobStore(Protocol):
    """Objects by key: the state values too large to keep in the run (``engine.blobs``).

    Keys are content-addressed (``runs/{run_id}/{sha256}``): a put of a key that exists
    writes the same bytes again, so puts need no condition.
    """

    def put_blob(self, key: str, data: bytes) -> None: ...

    def get_blob(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none."""

    def refresh_blob(self, key: str) -> bool:
        """Write the object again as it is, so that its age, which the store's expiry
        counts from its last write, starts over (S3: a copy onto itself); False if there
        is no such object."""


class WaitStore(Protocol):
    """Waits of runs (engine/waits.py): a callback's record, a timer; each due in a
    due-time index until its run moves past it."""

    def put_wait(self, wait: WaitRecord, *, expires_at: int | None = None) -> WaitRecord:
        """Store ``wait`` unless the run's wait at that step is stored: returns what is
        stored. A withdrawn one is replaced (its step is being run again)."""

    def get_wait(self, run_id: str, step: int) -> WaitRecord | None: ...

    def settle_wait(
        self,
        run_id: str,
        step: int,
        *,
        status: str,
        now: float,
        output: Any = None,
        reason: str | None = None,
    ) -> WaitRecord:
        """Settle a pending wait, once: an answer (``approved``, ``rejected``) only before
        it is due, a timeout (``timed_out``) only once it is; due at once after. A
        withdrawal (``withdrawn``: its node's tool failed first) while it is pending, due or
        not, leaving its due time; a withdrawn wait can still time out. ConflictError
        otherwise (answered, timed out, or unknown)."""

    def heartbeat_wait(self, run_id: str, step: int, *, now: float) -> WaitRecord:
        """Push a pending callback's heartbeat deadline (ConflictError if it is not pending
        or already due)."""

    def close_wait(self, run_id: str, step: int) -> None:
        """Take the wait out of the due-time index (its run moved past it)."""

    def due_waits(self, now: float, limit: int = 100) -> list[WaitRecord]:
        """Waits not closed whose due time is ``now`` or before, earliest first."""


class RunStore(WaitStore, Protocol):
    """Durable graphs, runs, log entries and waits."""

    def put_graph(self, graph: GraphRecord) -> None:
        """Store a new graph; ConflictError if the id exists."""

    def get_graph(self, graph_id: str) -> GraphRecord | None: ...

    def list_graphs(
        self, limit: int = 50, after: str | None = None, *, owner: str | None = None
    ) -> tuple[list[GraphRecord], str | None]:
        """The graphs of ``owner`` (None: those without one), newest first; returns the
        page and a token for the next one (or None)."""

    def create_run(self, run: RunRecord) -> None:
        """Store a new run; ConflictError if the id exists."""

    def list_runs(
        self, limit: int = 50, after: str | None = None, *, owner: str | None = None
    ) -> tuple[list[RunRecord], str | None]:
        """Runs as they are now, newest first (by ``created_at``); the page and a token
        for the next one (or None)."""

    def get_run(self, run_id: str, *, step: int | None = None) -> RunRecord | None:
        """The run as stored. With ``step``, the caller is about to execute that step and
        will commit it with :meth:`commit_step`: a store may then answer with what it last
        wrote or read of the run, if that was the run running at ``step`` — a commit made
        on a stale answer conflicts, so at worst the tool runs once for nothing."""

    def commit_step(self, commit: StepCommit) -> StepCommit:
        """Apply ``commit`` atomically; ConflictError if the run is not running at its step.

        Returns the commit as stored: a store that counts what storing costs adds it to
        ``commit.cost`` (the run's usage), in the same write."""

    def list_logs(self, run_id: str, after: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        """Log entries with ``seq > after``, in order, as ``GET /graph/state`` serves them
        (:meth:`~engine.logentry.StoredEntry.fields`)."""

    def list_entries(self, run_id: str, after: int = -1, limit: int = 1000) -> list[StoredEntry]:
        """The same entries as stored: each the text of its WebSocket message (the replay
        sends it as it is)."""

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        error: dict[str, Any] | None,
        now: str,
        step: int | None = None,
    ) -> None:
        """Move a running run to a terminal ``status`` (cancel, dead letter).

        ConflictError if the run is not running (or not at ``step`` when given).
        """

    # -- running runs per principal (engine/running.py) --------------------------------------
    def hold_run(self, owner: str, run_id: str, cap: int, now: float) -> bool:
        """Count ``run_id`` among the runs ``owner`` holds, at ``now``, if it holds fewer
        than ``cap`` (or holds this one already); False at the cap. Atomic: of two racing
        for the last place, one gets it."""

    def held_runs(self, owner: str) -> dict[str, float]:
        """The runs ``owner`` holds, with when each was counted."""

    def release_runs(self, owner: str, run_ids: list[str]) -> None:
        """Stop counting ``run_ids`` for ``owner`` (ids it does not hold are ignored)."""

    def stalled_runs(self, due_before: float, limit: int = 100) -> list[tuple[str, int]]:
        """(run_id, step) of running runs whose next step was due before ``due_before``
        and that were not re-sent after it (:meth:`claim_resend`)."""

    def claim_resend(self, run_id: str, now: float, window_s: float) -> bool:
        """Record that a stalled run's next step is being re-sent ``now``; False (nothing
        recorded) if it was re-sent less than ``window_s`` ago, so re-sends of a run stay
        one per stall window however many senders see it stalled."""

    def redrive_run(self, run_id: str, build: Callable[[RunRecord, int], StepCommit]) -> RunRecord:
        """Resume a failed run: ``build(run, step)`` makes the transition that does it, where
        ``step`` is the transition it takes (the run's next slot; a finish from outside
        took one without a log entry). Committed only if the run is still failed with
        that slot free; ConflictError otherwise (a racing redrive took it). Returns the
        run after it. ``build`` may raise to refuse."""

    # -- fan-outs (map and parallel nodes) ---------------------------------------------------
    def open_fanout(
        self,
        run_id: str,
        base: int,
        total: int,
        now: float,
        *,
        prior: int | None = None,
        carried: Collection[int] = (),
        cost: Usage = EMPTY,
    ) -> FanOutRecord:
        """Start counting the executions of the fan-out the run reached at step ``base``
        (or return it as it stands if it was started before). A redriven fan-out names
        the failed one it resumes (``prior``) and the items ``carried`` over from it: done
        from the start. ``cost``: what opening it cost so far; the store adds what it
        spends (the read of the run for this step, the fan-out's write) and keeps it."""

    def latest_fanout(self, run_id: str) -> FanOutRecord | None:
        """The run's fan-out with the highest base (None: it never reached one)."""

    def get_fanout(self, run_id: str, base: int) -> FanOutRecord | None: ...

    def claim_execution(
        self,
        run_id: str,
        base: int,
        index: int,
        attempt: int,
        *,
        final: bool,
        failed: bool,
        now: float,
        limit: int,
        total: int,
    ) -> Claim:
        """Take the next log step for attempt ``attempt`` of item ``index``, once.

        At most ``limit`` executions are counted (the run's remaining steps); a claim
        past it is ``full``. A final claim adds to ``done`` (and ``failed``). ``total`` is
        the fan-out's size, as when it was opened.
        """

    def put_execution(self, run_id: str, base: int, record: ExecutionRecord, now: float) -> None:
        """Write the claimed execution's log entry and value at ``record.step`` (once:
        a second write of the same step does nothing). The store adds what writing it
        costs to its ``cost``."""

    def tally(self) -> AbstractContextManager[UsageTally]:
        """Count what the store's calls in this thread spend within the block — reads,
        and the writes of claims — into a tally (fan-out steps, whose work no slot
        commit of their own counts: engine/fanout_service.py)."""

    def list_executions(self, run_id: str, base: int, count: int) -> list[ExecutionRecord]:
        """The fan-out's executions written so far among its first ``count``, in step order."""

    def close_fanout(self, run_id: str, base: int, now: float) -> int | None:
        """Stop the fan-out taking executions; the step its ending transition takes
        (the same on every call), or None if there is no such fan-out."""


#: Item messages one request of :meth:`StepQueue.send_items` carries at most (SQS's
#: SendMessageBatch takes 10 entries): a fan-out opened ``width`` items wide costs
#: ``ceil(width / SEND_BATCH_MAX)`` requests, not one per item.
SEND_BATCH_MAX = 10


class StepQueue(Protocol):
    """Delivers step messages ``(run_id, step)`` at least once, after an optional delay.

    An item message ``(run_id, step, item, attempt)`` runs one attempt of one item (or
    branch) of the fan-out the run reached at ``step``.
    """

    def send_step(self, run_id: str, step: int, delay_s: float = 0.0) -> None: ...

    def send_item(self, run_id: str, step: int, item: int, attempt: int, delay_s: float = 0.0) -> None: ...

    def send_items(self, run_id: str, step: int, items: Sequence[tuple[int, int]]) -> None:
        """Send the item messages ``(item, attempt)`` of the fan-out at ``step``, without
        delay, in as few requests as the queue allows (:data:`SEND_BATCH_MAX` items each):
        a fan-out opens, or is resent, many items at once, and each request is billed
        and is a round trip.

        All or an error: a send that fails part-way raises once the queue has given up,
        so the caller's message is redelivered — the fan-out's stalled path then re-sends
        every item that is due, and a duplicate item message finds its attempt claimed.
        """


class Timers(Protocol):
    """Durable timers beyond the step queue's longest delay: the step message
    ``(run_id, step)`` is sent to the step queue at ``due_at`` (epoch seconds), once the
    timer fires, and never before. A ``wait`` node's run waits on one (engine/waits.py).

    A timer is named by its run and step: making it again (a redelivered step) leaves the
    one there as it is, and firing it removes it.
    """

    def schedule(self, run_id: str, step: int, due_at: float) -> None:
        """Make the timer of ``(run_id, step)``, due at ``due_at`` (nothing if it exists)."""

    def cancel(self, run_id: str, step: int) -> None:
        """Remove the timer of ``(run_id, step)``: best effort, nothing if there is none
        (it fired, or was never made). Its message would only be a stale duplicate."""
