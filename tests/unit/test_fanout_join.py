"""The join of a fan-out whose set completed while an earlier execution's entry was
still unwritten (claimed by a worker that is slow, or died): it checks again with a
growing delay until the entry is there, then joins; past the stall window the sweeper's
step message takes over."""

from __future__ import annotations

import asyncio

import pytest

from engine import default_registry
from engine.fanout_service import PENDING_CHECK_S, pending_check_delay
from engine.item_reads import SHARED_READ_MAX_AGE_S, ItemReads
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.ports import RunRecord
from engine.service import Disposition, RunService

STALL_AFTER_S = 360.0


@default_registry.tool("join_unit_double")
async def join_unit_double(state, ctx):
    """Twice the item."""
    return ctx.item * 2


GRAPH = {
    "name": "join",
    "start": "fan",
    "nodes": {
        "fan": {"map": {"items": "xs", "fn": "join_unit_double", "results": "ys", "max_concurrency": 2}}
    },
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


class Late:
    """A map of two items whose first item claims its step, then writes its entry only
    when the test says so (a slow worker); the second completes the set."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = InMemoryRunStore()
        self.queue = InMemoryStepQueue()
        self.service = RunService(
            self.store, self.queue, default_registry, clock=self.clock, stall_after_s=STALL_AFTER_S
        )
        graph_id = self.service.create_graph(GRAPH).graph_id
        self.run_id = self.service.start_run(graph_id, {"xs": [1, 2]}).run_id
        self.held: list[tuple] = []
        run = self.queue.pop()
        assert run is not None
        asyncio.run(self.service.process_step(self.run_id, run.step))
        first, second = self.queue.pop(), self.queue.pop()
        assert first is not None and second is not None and len(self.queue) == 0
        put = self.store.put_execution
        self.store.put_execution = lambda *args: self.held.append(args)
        asyncio.run(self.service.process_item(self.run_id, first.step, first.item, first.attempt))
        self.store.put_execution = put
        self.completing = asyncio.run(
            self.service.process_item(self.run_id, second.step, second.item, second.attempt)
        )

    def write_late_entry(self) -> None:
        self.store.put_execution(*self.held.pop())

    def check(self) -> Disposition:
        """Wait for the one check in the queue, then let it run."""
        message = self.queue.pop()
        assert message is not None and message.item is None and len(self.queue) == 0
        self.clock.now += message.delay_s
        return asyncio.run(self.service.process_step(self.run_id, message.step))

    @property
    def status(self) -> str:
        return self.service.get_run(self.run_id).status


def test_a_join_waiting_for_a_slow_entry_checks_again_with_a_growing_delay_then_joins():
    # GIVEN the claim that completed the set found the first item's entry not yet written
    late = Late()
    assert late.completing is Disposition.IN_PROGRESS and late.status == "running"
    opened = late.clock.now

    # WHEN the entry is still missing at the first two checks, and written before the third
    delays = [late.queue.messages[0].delay_s]
    assert late.check() is Disposition.IN_PROGRESS
    delays.append(late.queue.messages[0].delay_s)
    assert late.check() is Disposition.IN_PROGRESS
    delays.append(late.queue.messages[0].delay_s)
    late.write_late_entry()  # (between 2 s and 4 s)
    disposition = late.check()

    # THEN each check waited as long as the join had waited so far, and the third joined
    assert delays == [PENDING_CHECK_S, 1.0, 2.0] and late.clock.now - opened == 4
    assert disposition is Disposition.COMMITTED and late.status == "completed"
    assert late.service.get_run(late.run_id).state["ys"] == "[2,4]"
    assert len(late.queue) == 0


def test_the_checks_stop_at_the_stall_window_and_the_sweeper_resends_the_unwritten_item():
    # GIVEN a join waiting for an entry that is never written (its worker died)
    late = Late()
    opened = late.clock.now

    # WHEN every check finds it missing
    checks = 0
    while len(late.queue):
        assert late.check() is Disposition.IN_PROGRESS
        checks += 1

    # THEN there were a handful of checks (1, 2, 4 … s), the last one within the stall window
    assert checks == 9 and late.clock.now - opened == 256
    # AND once stalled, the sweeper's step message re-sends the claimed, unwritten item
    late.clock.now = opened + STALL_AFTER_S + 61
    assert late.service.sweep() == [(late.run_id, 2)]
    assert late.check() is Disposition.RESENT
    resent = late.queue.pop()
    assert resent is not None and (resent.item, resent.attempt) == (0, 1)


@pytest.mark.parametrize(
    ("waited", "expected"),
    [(0.0, 1.0), (0.4, 1.0), (1.0, 1.0), (3.5, 3.5), (179.0, 179.0), (180.0, None), (400.0, None)],
)
def test_pending_check_delay_doubles_the_wait_and_stops_at_the_stall_window(waited, expected):
    assert pending_check_delay(waited, 360.0) == expected


def test_a_batchs_read_of_a_run_serves_its_items_for_half_a_second_each_a_copy():
    # GIVEN a batch's shared reads and a store that counts its reads of a run
    clock = Clock()
    reads = ItemReads(clock)
    made: list[str] = []

    def read(run_id: str):
        made.append(run_id)
        return RunRecord(run_id, "g", "running", None, 3, {"xs": "[1,2]"}, "t", "t", clock.now)

    # WHEN items of the fan-out at step 3 start within 0.5 s of the first read
    first = reads.run("r1", 3, lambda: read("r1"))
    clock.now += SHARED_READ_MAX_AGE_S
    second = reads.run("r1", 3, lambda: read("r1"))
    # THEN one read served both, each item with a state of its own
    assert made == ["r1"] and first == second and first.state is not second.state

    # AND another run, or another fan-out step of the run, is read on its own
    reads.run("r2", 3, lambda: read("r2"))
    reads.run("r1", 9, lambda: read("r1"))
    assert made == ["r1", "r2", "r1"]

    # AND an item that starts later reads again (a cancel meanwhile is seen), as does an
    # unknown run's
    clock.now += 0.001
    reads.run("r1", 3, lambda: read("r1"))
    assert made == ["r1", "r2", "r1", "r1"]
    assert reads.run("gone", 3, lambda: None) is None
