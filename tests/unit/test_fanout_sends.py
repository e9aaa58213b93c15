"""What a fan-out sends on the step loop, and what its sends cost: the item messages go
to the queue together (StepQueue.send_items), ten to a request, on the in-memory store
and queue."""

from __future__ import annotations

import asyncio

import pytest

import engine
from engine.cost import MICRO, SQS_REQUESTS
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.ports import SEND_BATCH_MAX
from engine.service import Disposition, RunService

registry = engine.Registry()


@registry.tool
async def double(state, ctx):
    """ctx.item doubled."""
    return 2 * ctx.item


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def map_service(items: int, max_concurrency: int) -> tuple[RunService, InMemoryStepQueue, str, Clock]:
    """A run of a map over ``items`` items, its first step message taken off the queue."""
    queue, clock = InMemoryStepQueue(), Clock()
    service = RunService(InMemoryRunStore(), queue, registry, clock=clock)
    graph = {
        "start": "m",
        "nodes": {
            "m": {"map": {"items": "xs", "fn": "double", "results": "ys", "max_concurrency": max_concurrency}}
        },
    }
    run_id = service.start_run(service.create_graph(graph).graph_id, {"xs": list(range(items))}).run_id
    assert queue.pop() is not None  # the run's first step: the map's opening
    return service, queue, run_id, clock


def drained(queue: InMemoryStepQueue) -> list[tuple[int | None, int]]:
    taken = []
    while (message := queue.pop()) is not None:
        taken.append((message.item, message.attempt))
    return taken


def test_opening_a_map_sends_its_first_items_in_order_and_costs_a_request_per_ten():
    # GIVEN a map of 25 items, 20 at a time
    service, queue, run_id, _ = map_service(25, 20)

    # WHEN its step message opens it
    disposition = asyncio.run(service.process_step(run_id, 0))

    # THEN items 0 to 19 are sent, first attempts, in order
    assert disposition is Disposition.FANNED_OUT
    assert drained(queue) == [(index, 1) for index in range(20)]
    # AND the opening costs two SQS requests (ten item messages to a request), not twenty
    fanout = service.store.get_fanout(run_id, 0)
    assert fanout is not None and fanout.cost is not None
    assert SEND_BATCH_MAX == 10
    assert fanout.cost.count(SQS_REQUESTS) == 2 * MICRO


def test_a_stalled_fanout_resends_its_due_items_together(monkeypatch):
    # GIVEN a map of 25 items, 20 at a time, whose item messages were all lost
    service, queue, run_id, clock = map_service(25, 20)
    asyncio.run(service.process_step(run_id, 0))
    drained(queue)
    batches = []
    send_items = queue.send_items
    monkeypatch.setattr(queue, "send_items", lambda *args: batches.append(args[2]) or send_items(*args))
    monkeypatch.setattr(queue, "send_item", lambda *args: pytest.fail("an item sent alone"))

    # WHEN its step message comes again once it has stalled
    clock.now += service.stall_after_s + 1
    disposition = asyncio.run(service.process_step(run_id, 0))

    # THEN the 20 due items are re-sent, in one call, in order
    assert disposition is Disposition.RESENT
    assert batches == [[(index, 1) for index in range(20)]]
    assert drained(queue) == [(index, 1) for index in range(20)]


def test_a_map_run_ends_with_each_item_run_once():
    # GIVEN a map of 25 items, 20 at a time, opened
    service, queue, run_id, _ = map_service(25, 20)
    asyncio.run(service.process_step(run_id, 0))

    # WHEN every message is processed in turn (items 20..24 follow items 0..4)
    while (message := queue.pop()) is not None:
        if message.item is None:
            asyncio.run(service.process_step(message.run_id, message.step))
        else:
            asyncio.run(service.process_item(message.run_id, message.step, message.item, message.attempt))

    # THEN the run completed with every result
    run = service.get_run(run_id)
    assert run.status == "completed"
    assert service.store.list_logs(run_id)[-1]["result"]["ys"] == [2 * i for i in range(25)]
