"""A queue backlog longer than the stall window does not multiply step messages.

A run is "stalled" when its next step is ``StallAfterSeconds`` overdue. With a backlog of
500 s in the step queue (360 s stall window) every run looks stalled while its message
waits: before re-sends were claimed once per stall window, each sweep (every minute)
added a copy of every waiting run's message, and each stale copy that found its run
stalled added another — 78,278 messages for 2,000 steps in this simulation.

The simulation runs the real :class:`~engine.service.RunService` on the in-memory store
with a virtual clock: every message reaches the step handler 500 s after it was sent
(plus its delay), and the sweeper runs every 60 s.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from engine.memory import InMemoryRunStore
from engine.service import RunService
from tests.functional.tools import sequential_summarization
from tests.reliability import figures

BACKLOG_S = 500.0
SWEEP_EVERY_S = 60.0
STALL_AFTER_S = 360.0


class BackloggedQueue:
    """Step messages that each reach the handler ``BACKLOG_S`` after they were sent."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.heap: list[tuple[float, int, str, int]] = []
        self.order = itertools.count()
        self.sent = 0

    def send_step(self, run_id: str, step: int, delay_s: float = 0.0) -> None:
        self.sent += 1
        heapq.heappush(self.heap, (self.clock() + delay_s + BACKLOG_S, next(self.order), run_id, step))


def simulate(runs: int) -> dict[str, float]:
    now = [0.0]
    queue = BackloggedQueue(lambda: now[0])
    service = RunService(InMemoryRunStore(), queue, stall_after_s=STALL_AFTER_S, clock=lambda: now[0])
    graph, state = sequential_summarization()
    graph_id = service.create_graph(graph).graph_id
    run_ids = [service.start_run(graph_id, state).run_id for _ in range(runs)]
    processed, next_sweep = 0, SWEEP_EVERY_S
    while queue.heap:
        if queue.heap[0][0] >= next_sweep:
            now[0] = next_sweep
            service.sweep(limit=10 * runs)
            next_sweep += SWEEP_EVERY_S
            continue
        now[0], _, run_id, step = heapq.heappop(queue.heap)
        asyncio.run(service.process_step(run_id, step))
        processed += 1
    finished = [service.get_run(run_id) for run_id in run_ids]
    assert {run.status for run in finished} == {"completed"}
    steps = sum(run.step for run in finished)
    return {
        "runs": runs,
        "steps": steps,
        "messages": processed,
        "messages_per_step": round(processed / steps, 2),
    }


@pytest.mark.parametrize("runs", [figures.scaled(20, 200)])
def test_a_backlog_longer_than_the_stall_window_sends_each_stalled_run_once_per_window(runs):
    result = simulate(runs)

    figures.record("backlog", {"backlog_s": BACKLOG_S, "stall_after_s": STALL_AFTER_S, **result})
    # each step's own message, plus at most one re-send per stall window it waited
    assert result["messages_per_step"] <= 3
