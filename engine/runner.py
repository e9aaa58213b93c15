"""The in-process runner: drive :func:`run_step` to the end of a run, in memory.

Used by tests, the CLI (``flowforge run-local``) and the benchmarks. It applies the same
rules as the distributed step loop — state size cap, JSON-only state, retry delays — so
a workflow behaves the same in both.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.graph import CompiledGraph
from engine.state import DEFAULT_MAX_STATE_BYTES, StateSize, encode_state
from engine.step import Cursor, enforce_limits, run_step

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
) -> RunResult:
    """Run ``graph`` from its start node on ``state`` until it completes or fails.

    ``sleep=None`` skips retry delays (tests). ``on_log`` sees each log entry as it is
    made. Raises :class:`~engine.errors.StateTooLargeError` or
    :class:`~engine.errors.InvalidStateError` when the initial state is unusable.
    """
    run_id = run_id or uuid.uuid4().hex
    state = dict(state or {})
    size = StateSize(encode_state(state), max_state_bytes)
    sleep = sleep or _no_sleep
    cursor: Cursor | None = Cursor(graph.start)
    result = RunResult(run_id, "running", state)
    while cursor is not None:
        outcome = await run_step(graph, cursor, state, run_id=run_id, now=now, rng=rng)
        outcome, _ = enforce_limits(outcome, size, state)
        log, status, error, state = outcome.log, outcome.run_status, outcome.error, outcome.state
        result.logs.append(log)
        if on_log is not None:
            on_log(log)
        if status != "running":
            result.status, result.error, result.state = status, error, state
            return result
        if outcome.delay_s:
            await sleep(outcome.delay_s)
        cursor = outcome.next
    raise AssertionError("unreachable: a running outcome always has a next cursor")


def run_graph_sync(graph: CompiledGraph, state: dict[str, Any] | None = None, **kwargs: Any) -> RunResult:
    """:func:`run_graph` for synchronous callers."""
    return asyncio.run(run_graph(graph, state, **kwargs))
