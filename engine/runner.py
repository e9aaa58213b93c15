"""The in-process runner: drive :func:`run_step` to the end of a run, in memory.

Used by tests, the CLI (``flowforge run-local``) and the benchmarks. It applies the same
rules as the distributed step loop — state size cap, JSON-only state, retry delays — so
a workflow behaves the same in both.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from engine.blobs import DEFAULT_MAX_TOTAL_STATE_BYTES, Blobs, MemoryBlobStore
from engine.chain import StopReason, chain_stop
from engine.cost import EMPTY, Usage, bedrock_usage
from engine.fanout import MAX_RESULT_BYTES
from engine.fanout_runner import run_fanout
from engine.graph import CompiledGraph
from engine.state import DEFAULT_MAX_STATE_BYTES, LiveState, StateSize, encode_state
from engine.step import Cursor, enforce_limits, run_step
from engine.waits import CallbackSigner, CallbackTicket, WaitRecord, resume_outcome

Sleep = Callable[[float], Awaitable[Any]]


async def _no_sleep(_: float) -> None:
    return None


@dataclass(slots=True)
class RunResult:
    """A finished run: final state, status, error (if failed) and one log entry per step."""

    run_id: str
    status: str
    state: dict[str, Any]
    logs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    cost: Usage = EMPTY
    """The Bedrock tokens its ``llm`` calls used, noted in their log entries (in process
    nothing else is billed); :func:`engine.cost.price` prices it."""

    @property
    def done(self) -> bool:
        return self.status != "running"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "state": self.state,
            "logs": self.logs,
            "error": self.error,
        }


async def run_graph(
    graph: CompiledGraph,
    state: dict[str, Any] | None = None,
    *,
    run_id: str | None = None,
    sleep: Sleep | None = asyncio.sleep,
    max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
    on_log: Callable[[dict[str, Any]], Any] | None = None,
    now: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    clients: Callable[[str], Any] | None = None,
    answer: Callable[[CallbackRequest], Awaitable[Answer]] | None = None,
    blobs: Blobs | None = None,
    offload: bool = True,
    max_total_state_bytes: int = DEFAULT_MAX_TOTAL_STATE_BYTES,
) -> RunResult:
    """Run ``graph`` from its start node on ``state`` until it completes or fails.

    A ``wait`` node sleeps (``sleep``) until it is due. A callback node asks ``answer``
    (given its node, step, token and the state) how it is answered; without ``answer``
    the run stops there with status ``waiting``.

    ``sleep=None`` skips retry delays (tests). ``on_log`` sees each log entry as it is
    made. ``clients`` (AWS clients by service name) reaches tools as ``ctx.clients``.
    Values over the offload threshold are kept in ``blobs`` (default: in memory, 32 KiB)
    as the step function keeps them in S3 (see engine/blobs.py): ``max_state_bytes``
    caps the state with references in their place, ``max_total_state_bytes`` with the
    values; ``offload=False`` keeps every value in the state. Raises
    :class:`~engine.errors.StateTooLargeError` or
    :class:`~engine.errors.InvalidStateError` when the initial state is unusable.
    """
    run_id = run_id or uuid.uuid4().hex
    if not offload:
        blobs = None
    elif blobs is None:
        blobs = Blobs(MemoryBlobStore())
    offload_update = None if blobs is None else partial(blobs.offload, run_id)
    # The state is kept as the store keeps it, one JSON text per key, and each step gets
    # it freshly decoded (LiveState): a value a tool changes in place without returning it
    # is not an update, here as in the step Lambda.
    stored = encode_state(dict(state or {}))
    if offload_update is not None:
        stored = offload_update(stored)
    size = StateSize(stored, max_state_bytes, max_total_state_bytes if blobs is not None else None)
    live = LiveState(stored, None if blobs is None else blobs.loader(run_id))
    sleep = sleep or _no_sleep
    # Where the run stands: each step's outcome names the next cursor and the run's
    # status (what a store's commit sets, engine/transitions.py), and the chain's
    # predicate says when to pause. Nothing else of a stored run is read in process.
    cursor: Cursor | None = Cursor(graph.start)
    result = RunResult(run_id, "running", live.values)

    def emit(log: dict[str, Any]) -> None:
        result.logs.append(log)
        if "notes" in log:
            result.cost = result.cost + bedrock_usage(log)
        if on_log is not None:
            on_log(log)

    while True:
        assert cursor is not None  # a running run always has a cursor
        before = live.view()
        node = graph.nodes[cursor.node]
        if node.fanout is not None:
            outcome = await run_fanout(
                graph,
                node,
                cursor.step,
                live.view,
                run_id=run_id,
                emit=emit,
                sleep=sleep,
                now=now,
                rng=rng,
                clients=clients,
                offload_text=None if blobs is None else partial(blobs.offload_text, run_id),
                max_result_bytes=MAX_RESULT_BYTES if blobs is None else max_total_state_bytes,
            )
        else:
            ticket = None
            if node.callback is not None:
                token = signer.token(run_id, cursor.step)
                ticket = CallbackTicket(token, signer.url(token), now() + node.callback.timeout_s)
            outcome = await run_step(
                graph, cursor, before, run_id=run_id, now=now, rng=rng, clients=clients, callback=ticket
            )
        outcome, update = enforce_limits(outcome, size, before, offload_update)
        cursor = outcome.next
        live.apply(outcome.update, update)
        emit(outcome.log)
        reason = chain_stop(outcome, graph, None, 0.0)
        if reason is StopReason.ENDED:
            result.status, result.error, result.state = outcome.run_status, outcome.error, live.resolved()
            return result
        if reason is StopReason.DELAYED:
            await sleep(outcome.delay_s)
        if reason is StopReason.WAITING:
            assert outcome.until is not None and cursor is not None
            wait = await _wait(
                graph, run_id, cursor, outcome.log["seq"], outcome.until, live, sleep, now, answer
            )
            if wait is None:
                result.status, result.state = "waiting", live.resolved()
                return result
            resumed = resume_outcome(graph, cursor, live.view(), wait, now())
            resumed, update = enforce_limits(resumed, size, live.view(), offload_update)
            cursor = resumed.next
            live.apply(resumed.update, update)
            emit(resumed.log)
            if chain_stop(resumed, graph, None, 0.0) is StopReason.ENDED:
                result.status, result.error = resumed.run_status, resumed.error
                result.state = live.resolved()
                return result


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """A callback node waiting in-process: what ``run_graph``'s ``answer`` is asked."""

    node: str
    step: int
    token: str
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """How a callback is answered in-process: ``approved`` (with ``output``), ``rejected``
    (with ``reason``) or ``timed_out``."""

    status: str
    output: Any = None
    reason: str | None = None


async def _wait(
    graph: CompiledGraph,
    run_id: str,
    cursor: Cursor,
    step: int,
    until: float,
    live: LiveState,
    sleep: Sleep,
    now: Callable[[], float],
    answer: Callable[[CallbackRequest], Awaitable[Answer]] | None,
) -> WaitRecord | None:
    """How the wait that step ``step`` started ends in-process, the run at ``cursor``
    (None: nobody can answer its callback)."""
    node = graph.nodes[cursor.node]
    if node.callback is None:
        await sleep(max(until - now(), 0.0))
        return WaitRecord(run_id, step, node.id, "timer", until, until)
    if answer is None:
        return None
    given = await answer(CallbackRequest(node.id, step, signer.token(run_id, step), live.resolved()))
    wait = WaitRecord(run_id, step, node.id, "callback", until, until)
    return wait.settled(given.status, now(), given.output, given.reason)


#: In-process callback tokens: the key lives as long as the process.
signer = CallbackSigner(os.urandom(32), "flowforge-local:")


def run_graph_sync(graph: CompiledGraph, state: dict[str, Any] | None = None, **kwargs: Any) -> RunResult:
    """:func:`run_graph` for synchronous callers."""
    return asyncio.run(run_graph(graph, state, **kwargs))
