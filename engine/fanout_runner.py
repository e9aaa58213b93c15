"""A fan-out node in the in-process runner: its executions as asyncio tasks, then the join.

At most ``max_concurrency`` items run at once (every branch of a parallel node runs at
once); an item's retries wait their delay and run again in its task. Executions are
numbered in the order they finish, as the step Lambda numbers them by its commits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from engine.fanout import (
    MAX_RESULT_BYTES,
    Execution,
    InvalidMapItems,
    fanout_of,
    item_list,
    join,
    max_steps_failure,
    node_failure,
    offload_execution,
    run_execution,
)
from engine.step import Cursor, StepResult

if TYPE_CHECKING:
    from engine.graph import CompiledGraph, CompiledNode


class _MaxStepsReached(Exception):
    """An execution would have taken a step at or past max_steps."""


async def run_fanout(
    graph: CompiledGraph,
    node: CompiledNode,
    base: int,
    fresh_state: Callable[[], Mapping[str, Any]],
    *,
    run_id: str,
    emit: Callable[[dict[str, Any]], Any],
    sleep: Callable[[float], Awaitable[Any]],
    now: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    clients: Callable[[str], Any] | None = None,
    offload_text: Callable[[str], str] | None = None,
    max_result_bytes: int = MAX_RESULT_BYTES,
) -> StepResult:
    """Run the fan-out node ``node`` that the run reached at step ``base``; ``emit`` gets
    each execution's log entry (with its ``seq``) as it finishes. Returns the join.
    ``offload_text`` offloads a large result (its entry shows the reference, as the step
    function's does; see engine/blobs.py)."""
    state = fresh_state()
    if base >= graph.max_steps:
        return max_steps_failure(graph, node, base, state, now=now)
    try:
        total = len(item_list(node, state))
    except InvalidMapItems as exc:
        return node_failure(node, Cursor(node.id, base), state, {}, exc, now())
    finals: dict[int, Execution] = {}
    next_seq = base
    slots = asyncio.Semaphore(fanout_of(node).max_concurrency)

    async def one(index: int) -> None:
        nonlocal next_seq
        attempt = 1
        async with slots:
            while True:
                execution = await run_execution(
                    graph,
                    node,
                    index,
                    attempt,
                    fresh_state(),
                    base=base,
                    run_id=run_id,
                    now=now,
                    rng=rng,
                    clients=clients,
                    max_result_bytes=max_result_bytes,
                )
                if offload_text is not None:
                    execution, _ = offload_execution(execution, offload_text)
                if next_seq >= graph.max_steps:
                    raise _MaxStepsReached
                emit({"seq": next_seq, **execution.entry})
                next_seq += 1
                if execution.final:
                    finals[index] = execution
                    return
                await sleep(execution.delay_s)
                attempt += 1

    tasks = [asyncio.create_task(one(index)) for index in range(total)]
    try:
        await asyncio.gather(*tasks)
    except _MaxStepsReached:
        for task in tasks:  # running ones are abandoned, as the step Lambda ignores them
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return max_steps_failure(graph, node, next_seq, state, now=now)
    return join(graph, node, next_seq, state, finals, total, now=now)
