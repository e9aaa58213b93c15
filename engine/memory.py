"""In-memory implementations of the ports, for tests, the CLI and benchmarks.

They keep the same contract as the DynamoDB and SQS adapters (checked by the same
contract suite), including conditional commits and copy-on-read, and are thread-safe.
"""

from __future__ import annotations

import copy
import math
import threading
from collections import deque
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

from engine.cost import EMPTY, Usage, UsageTally
from engine.errors import ConflictError
from engine.logentry import StoredEntry, stored_entry
from engine.ports import (
    Claim,
    ExecutionRecord,
    FanOutRecord,
    GraphRecord,
    RunRecord,
    StepCommit,
    StepQueue,
)
from engine.step import LIVE, TERMINAL
from engine.stepmessage import StepMessage
from engine.transitions import apply_commit, apply_execution, apply_finish
from engine.waits import PENDING, TIMED_OUT, WITHDRAWN, WaitRecord


class InMemoryRunStore:
    """A :class:`~engine.ports.RunStore` in a dict, guarded by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._graphs: dict[str, GraphRecord] = {}
        self._runs: dict[str, RunRecord] = {}
        # run -> step -> entry, kept as stored (immutable: read without a copy)
        self._logs: dict[str, dict[int, StoredEntry]] = {}
        self._fanouts: dict[tuple[str, int], FanOutRecord] = {}
        self._executions: dict[tuple[str, int], ExecutionRecord] = {}  # (run, step)
        self._claim_steps: dict[tuple[str, int, int, int], int] = {}  # (run, base, index, attempt)
        self._resent: dict[str, float] = {}  # run id -> when its next step was last re-sent
        # Runs finished from outside (cancel, dead letter): that took a transition number
        # without a log entry, as a finish slot does in DynamoDB.
        self._finished: set[str] = set()
        self._waits: dict[tuple[str, int], WaitRecord] = {}
        self._held: dict[str, dict[str, float]] = {}  # owner -> run id -> when counted

    def put_graph(self, graph: GraphRecord) -> None:
        with self._lock:
            if graph.graph_id in self._graphs:
                raise ConflictError(f"graph {graph.graph_id!r} already exists")
            self._graphs[graph.graph_id] = copy.deepcopy(graph)

    def get_graph(self, graph_id: str) -> GraphRecord | None:
        with self._lock:
            graph = self._graphs.get(graph_id)
            return copy.deepcopy(graph) if graph else None

    def list_graphs(
        self, limit: int = 50, after: str | None = None, *, owner: str | None = None
    ) -> tuple[list[GraphRecord], str | None]:
        with self._lock:
            return _newest_first(self._graphs, limit, after, copy.deepcopy, owner)

    def create_run(self, run: RunRecord) -> None:
        with self._lock:
            if run.run_id in self._runs:
                raise ConflictError(f"run {run.run_id!r} already exists")
            self._runs[run.run_id] = replace(run, state=dict(run.state))
            self._logs[run.run_id] = {}

    def list_runs(
        self, limit: int = 50, after: str | None = None, *, owner: str | None = None
    ) -> tuple[list[RunRecord], str | None]:
        with self._lock:
            return _newest_first(
                self._runs, limit, after, lambda run: replace(run, state=dict(run.state)), owner
            )

    def get_run(self, run_id: str, *, step: int | None = None) -> RunRecord | None:
        with self._lock:
            run = self._runs.get(run_id)
            return replace(run, state=dict(run.state)) if run else None

    def commit_step(self, commit: StepCommit) -> StepCommit:
        entry = stored_entry(commit.run_id, commit.log, commit.step)
        with self._lock:
            run = self._runs.get(commit.run_id)
            if run is None or run.status not in LIVE or run.step != commit.step:
                raise ConflictError(f"run {commit.run_id!r} is not running at step {commit.step}")
            self._runs[commit.run_id] = apply_commit(run, commit)
            self._logs[commit.run_id][commit.step] = entry
        return commit

    def list_logs(self, run_id: str, after: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        return [entry.fields() for entry in self.list_entries(run_id, after, limit)]

    def list_entries(self, run_id: str, after: int = -1, limit: int = 1000) -> list[StoredEntry]:
        with self._lock:
            logs = self._logs.get(run_id, {})
            steps = sorted(step for step in logs if step > after)[: max(limit, 0)]
            return [logs[step] for step in steps]

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        error: dict[str, Any] | None,
        now: str,
        step: int | None = None,
    ) -> None:
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status!r}")
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.status not in LIVE:
                raise ConflictError(f"run {run_id!r} is not running")
            if step is not None and run.step != step:
                raise ConflictError(f"run {run_id!r} is not at step {step}")
            self._runs[run_id] = apply_finish(run, status=status, error=error, now=now)
            self._finished.add(run_id)

    def redrive_run(self, run_id: str, build: Callable[[RunRecord, int], StepCommit]) -> RunRecord:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.status != "failed":
                raise ConflictError(f"run {run_id!r} is not failed")
            step = run.step + 1 if run_id in self._finished else run.step
            commit = build(replace(run, state=dict(run.state)), step)
            self._runs[run_id] = redriven = apply_commit(run, commit)
            self._logs[run_id][commit.step] = stored_entry(commit.run_id, commit.log, commit.step)
            self._finished.discard(run_id)
            return replace(redriven, state=dict(redriven.state))

    def claim_resend(self, run_id: str, now: float, window_s: float) -> bool:
        with self._lock:
            if run_id not in self._runs or now - self._resent.get(run_id, -math.inf) < window_s:
                return False
            self._resent[run_id] = now
            return True

    def hold_run(self, owner: str, run_id: str, cap: int, now: float) -> bool:
        with self._lock:
            held = self._held.setdefault(owner, {})
            if run_id not in held and len(held) >= cap:
                return False
            held.setdefault(run_id, now)
            return True

    def held_runs(self, owner: str) -> dict[str, float]:
        with self._lock:
            return dict(self._held.get(owner, {}))

    def release_runs(self, owner: str, run_ids: list[str]) -> None:
        with self._lock:
            held = self._held.get(owner, {})
            for run_id in run_ids:
                held.pop(run_id, None)

    def stalled_runs(self, due_before: float, limit: int = 100) -> list[tuple[str, int]]:
        with self._lock:
            due = [
                r
                for r in self._runs.values()
                if r.status == "running"
                and r.next_at < due_before
                and self._resent.get(r.run_id, -math.inf) <= due_before
            ]
        due.sort(key=lambda r: r.next_at)
        return [(r.run_id, r.step) for r in due[:limit]]

    # -- waits ---------------------------------------------------------------------------------
    def put_wait(self, wait: WaitRecord, *, expires_at: int | None = None) -> WaitRecord:
        with self._lock:
            stored = self._waits.get((wait.run_id, wait.step))
            if stored is not None and stored.status != WITHDRAWN:
                return stored
            self._waits[(wait.run_id, wait.step)] = wait
            return wait

    def get_wait(self, run_id: str, step: int) -> WaitRecord | None:
        with self._lock:
            return self._waits.get((run_id, step))

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
        with self._lock:
            wait = self._waits.get((run_id, step))
            due = wait is not None and wait.due <= now
            if wait is None or not _may_settle(wait.status, status, due):
                raise ConflictError(f"the wait of run {run_id!r} at step {step} is not pending")
            if status == WITHDRAWN:
                wait = replace(wait, status=WITHDRAWN)
            else:
                wait = wait.settled(status, now, copy.deepcopy(output), reason)
            self._waits[(run_id, step)] = wait
            return wait

    def heartbeat_wait(self, run_id: str, step: int, *, now: float) -> WaitRecord:
        with self._lock:
            wait = self._waits.get((run_id, step))
            if wait is None or wait.status != PENDING or wait.due <= now:
                raise ConflictError(f"the wait of run {run_id!r} at step {step} is not pending")
            self._waits[(run_id, step)] = wait = wait.beat(now)
            return wait

    def close_wait(self, run_id: str, step: int) -> None:
        with self._lock:
            wait = self._waits.get((run_id, step))
            if wait is not None:
                self._waits[(run_id, step)] = replace(wait, closed=True)

    def due_waits(self, now: float, limit: int = 100) -> list[WaitRecord]:
        with self._lock:
            due = [w for w in self._waits.values() if not w.closed and w.due <= now]
        return sorted(due, key=lambda w: w.due)[:limit]

    # -- fan-outs ---------------------------------------------------------------------------
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
        claims = dict.fromkeys(carried, (0, True))
        opened = FanOutRecord(run_id, base, total, 0, len(claims), 0, now, claims, prior=prior, cost=cost)
        with self._lock:
            return self._fanouts.setdefault((run_id, base), opened)

    def latest_fanout(self, run_id: str) -> FanOutRecord | None:
        with self._lock:
            bases = [base for (run, base) in self._fanouts if run == run_id]
            return self._fanouts[(run_id, max(bases))] if bases else None

    def get_fanout(self, run_id: str, base: int) -> FanOutRecord | None:
        with self._lock:
            return self._fanouts.get((run_id, base))

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
        with self._lock:
            fanout = self._fanouts.get((run_id, base))
            if fanout is None or fanout.closed_at is not None:
                return Claim("closed", None, final, fanout)
            claimed = fanout.claims.get(index)
            if claimed is not None and claimed[0] > attempt:
                return Claim("superseded", None, final, fanout)
            if claimed is not None and claimed[0] == attempt:
                return Claim("again", self._claim_steps[(run_id, base, index, attempt)], claimed[1], fanout)
            if fanout.executed >= limit:
                return Claim("full", None, final, fanout)
            step = base + fanout.executed
            fanout = replace(
                fanout,
                executed=fanout.executed + 1,
                done=fanout.done + final,
                failed=fanout.failed + (final and failed),
                updated_at=now,
                claims={**fanout.claims, index: (attempt, final)},
            )
            self._fanouts[(run_id, base)] = fanout
            self._claim_steps[(run_id, base, index, attempt)] = step
            return Claim("new", step, final, fanout)

    def put_execution(self, run_id: str, base: int, record: ExecutionRecord, now: float) -> None:
        with self._lock:
            if (run_id, record.step) in self._executions:
                return
            self._executions[(run_id, record.step)] = copy.deepcopy(record)
            self._logs[run_id][record.step] = stored_entry(run_id, record.entry, record.step)
            run = self._runs[run_id]
            if run.cursor is not None and run.cursor.step == base:
                stamp = record.entry.get("started_at", run.updated_at)
                self._runs[run_id] = apply_execution(run, record.step, updated_at=stamp, next_at=now)

    def tally(self) -> AbstractContextManager[UsageTally]:
        return nullcontext(UsageTally())  # nothing in memory is billed

    def list_executions(self, run_id: str, base: int, count: int) -> list[ExecutionRecord]:
        with self._lock:
            found = (self._executions.get((run_id, step)) for step in range(base, base + count))
            return [copy.deepcopy(record) for record in found if record is not None]

    def close_fanout(self, run_id: str, base: int, now: float) -> int | None:
        with self._lock:
            return self._close(run_id, base)

    def _close(self, run_id: str, base: int) -> int | None:
        fanout = self._fanouts.get((run_id, base))
        if fanout is None:
            return None
        if fanout.closed_at is None:
            fanout = replace(fanout, closed_at=base + fanout.executed, executed=fanout.executed + 1)
            self._fanouts[(run_id, base)] = fanout
        return fanout.closed_at


def _newest_first(
    records: dict[str, Any], limit: int, after: str | None, copied: Any, owner: str | None
) -> tuple[list[Any], str | None]:
    """A page of ``owner``'s ``records`` (by id) newest first, ties by id; the token is the last id."""
    owned = [(record_id, record) for record_id, record in records.items() if record.owner == owner]
    ordered = sorted(owned, key=lambda item: (item[1].created_at, item[0]), reverse=True)
    if after is not None:
        ids = [record_id for record_id, _ in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    page = ordered[:limit]
    token = page[-1][0] if len(ordered) > limit else None
    return [copied(record) for _, record in page], token


class InMemoryStepQueue:
    """A :class:`~engine.ports.StepQueue` that records messages in FIFO order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: deque[StepMessage] = deque()

    def send_step(self, run_id: str, step: int, delay_s: float = 0.0) -> None:
        with self._lock:
            self.messages.append(StepMessage(run_id, step, delay_s))

    def send_item(self, run_id: str, step: int, item: int, attempt: int, delay_s: float = 0.0) -> None:
        with self._lock:
            self.messages.append(StepMessage(run_id, step, delay_s, item=item, attempt=attempt))

    def send_items(self, run_id: str, step: int, items: Sequence[tuple[int, int]]) -> None:
        messages = [StepMessage(run_id, step, item=item, attempt=attempt) for item, attempt in items]
        with self._lock:  # in order, and together: no other send comes in between
            self.messages.extend(messages)

    def pop(self) -> StepMessage | None:
        with self._lock:
            return self.messages.popleft() if self.messages else None

    def __len__(self) -> int:
        return len(self.messages)


class InMemoryTimers:
    """A :class:`~engine.ports.Timers` that holds each timer's due time until someone
    fires it (:meth:`fire_due`, with a queue and the time: a test, a loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.timers: dict[tuple[str, int], float] = {}

    def schedule(self, run_id: str, step: int, due_at: float) -> None:
        with self._lock:
            self.timers.setdefault((run_id, step), due_at)

    def cancel(self, run_id: str, step: int) -> None:
        with self._lock:
            self.timers.pop((run_id, step), None)

    def fire_due(self, queue: StepQueue, now: float) -> list[tuple[str, int]]:
        """Send the step message of each timer due by ``now`` and remove it, earliest first."""
        with self._lock:
            due = sorted((at, key) for key, at in self.timers.items() if at <= now)
            for _, key in due:
                del self.timers[key]
        for _, (run_id, step) in due:
            queue.send_step(run_id, step)
        return [key for _, key in due]


def _may_settle(stored: str, status: str, due: bool) -> bool:
    """The WaitStore contract's rule (see engine/ports.py): a withdrawal while pending, an
    answer while pending and not due, a timeout once due while pending or withdrawn."""
    if status == WITHDRAWN:
        return stored == PENDING
    if status == TIMED_OUT:
        return due and stored in (PENDING, WITHDRAWN)
    return not due and stored == PENDING
