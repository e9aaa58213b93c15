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
from json import loads
from typing import Any

from engine.fanout_runner import run_fanout
from engine.graph import CompiledGraph
from engine.state import DEFAULT_MAX_STATE_BYTES, StateSize, decode_state, encode_state
from engine.step import Cursor, enforce_limits, run_step

Sleep = Callable[[float], Awaitable[Any]]
#: JSON values that read back as the same Python value, and those that may not.
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({dict, list})


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
    clients: Callable[[str], Any] | None = None,
) -> RunResult:
    """Run ``graph`` from its start node on ``state`` until it completes or fails.

    ``sleep=None`` skips retry delays (tests). ``on_log`` sees each log entry as it is
    made. ``clients`` (AWS clients by service name) reaches tools as ``ctx.clients``. Raises :class:`~engine.errors.StateTooLargeError` or
    :class:`~engine.errors.InvalidStateError` when the initial state is unusable.
    """
    run_id = run_id or uuid.uuid4().hex
    # The state is kept as the store keeps it, one JSON text per key, and each step gets
    # it freshly decoded: a value a tool changes in place without returning it is not an
    # update, here as in the step Lambda.
    stored = encode_state(dict(state or {}))
    size = StateSize(stored, max_state_bytes)
    values = decode_state(stored)
    # Only lists and objects can be changed in place: those are decoded again each step,
    # from their stored text (key -> text).
    mutable = {key: stored[key] for key, value in values.items() if type(value) in _CONTAINERS}
    sleep = sleep or _no_sleep
    cursor: Cursor | None = Cursor(graph.start)
    result = RunResult(run_id, "running", values)

    def fresh() -> dict[str, Any]:
        return {**values, **{key: loads(text) for key, text in mutable.items()}} if mutable else values

    def emit(log: dict[str, Any]) -> None:
        result.logs.append(log)
        if on_log is not None:
            on_log(log)

    while cursor is not None:
        before = fresh()
        if graph.nodes[cursor.node].fanout is not None:
            node = graph.nodes[cursor.node]
            outcome = await run_fanout(
                graph,
                node,
                cursor.step,
                fresh,
                run_id=run_id,
                emit=emit,
                sleep=sleep,
                now=now,
                rng=rng,
                clients=clients,
            )
        else:
            outcome = await run_step(graph, cursor, before, run_id=run_id, now=now, rng=rng, clients=clients)
        outcome, update = enforce_limits(outcome, size, before)
        for key, value in outcome.update.items():
            if type(value) in _SCALARS:
                values[key] = value
                mutable.pop(key, None)
            else:  # as stored: a tuple comes back a list, a container a copy of its own
                values[key] = loads(update[key])
                mutable[key] = update[key]
        log, status, error = outcome.log, outcome.run_status, outcome.error
        emit(log)
        if status != "running":
            result.status, result.error, result.state = status, error, values
            return result
        if outcome.delay_s:
            await sleep(outcome.delay_s)
        cursor = outcome.next
    raise AssertionError("unreachable: a running outcome always has a next cursor")


def run_graph_sync(graph: CompiledGraph, state: dict[str, Any] | None = None, **kwargs: Any) -> RunResult:
    """:func:`run_graph` for synchronous callers."""
    return asyncio.run(run_graph(graph, state, **kwargs))
