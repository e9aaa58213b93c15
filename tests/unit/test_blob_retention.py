"""A run's offloaded values live as long as the run (RunService.keep_values).

The state bucket's lifecycle rule deletes an object ``RetentionDays`` after its last
write, rounded up to the next midnight UTC; the table's TTL deletes a run
``RetentionDays`` after its last step. The blob store here expires objects by that rule
on the service's clock, and reads go to it (no container cache), as another container's
would: a run that lives longer than the retention must still read, and show, what it
offloaded on its first day.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine import default_registry
from engine.blobs import Blobs, MemoryBlobStore, blob_key, parse_ref
from engine.cost import S3_PUT_REQUESTS
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.service import RunService
from engine.waits import CallbackSigner
from tests.functional.pump import VirtualClock, run_queued

DAY = 86_400
RETENTION_S = 30 * DAY
#: Noon UTC, so that a few hours on is still the same day.
NOON = 1_750_075_200.0
TOKENS: list[str] = []


@default_registry.tool("retention_write")
async def retention_write(state, ctx):
    """A value far over the offload threshold."""
    return {"text": "t" * 100_000}


@default_registry.tool("retention_ask")
async def retention_ask(state, ctx):
    TOKENS.append(ctx.callback_token)
    return None


@default_registry.tool("retention_measure")
async def retention_measure(state, ctx):
    """Reads the value written at the start."""
    return {"length": len(state["text"]), "rounds": state.get("rounds", 0) + 1}


def review(name: str, then: str) -> dict[str, Any]:
    return {"fn": "retention_ask", "callback": {"timeout_s": 40 * DAY, "result": name}, "next": then}


#: Write a large value, wait for two answers, then read the value.
TWO_REVIEWS = {
    "start": "write",
    "nodes": {
        "write": {"fn": "retention_write", "next": "first"},
        "first": review("first", "second"),
        "second": review("second", "measure"),
        "measure": {"fn": "retention_measure"},
    },
}
#: Write, wait for one answer, then read the value in a loop of five steps.
ONE_REVIEW_THEN_A_LOOP = {
    "start": "write",
    "nodes": {
        "write": {"fn": "retention_write", "next": "first"},
        "first": review("first", "measure"),
        "measure": {"fn": "retention_measure", "loop_condition": {"var": "rounds", "gte": 5}},
    },
}


class LifecycleBlobStore(MemoryBlobStore):
    """The state bucket with its lifecycle rule: an object is gone ``RETENTION_S`` after
    its last write (a put, or a copy onto itself), at the next midnight UTC."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.written: dict[str, float] = {}

    def expires_at(self, key: str) -> float:
        return (self.written[key] // DAY + 1) * DAY + RETENTION_S

    def _expire(self, key: str) -> None:
        if key in self.objects and self.clock() >= self.expires_at(key):
            del self.objects[key]

    def put_blob(self, key: str, data: bytes) -> None:
        super().put_blob(key, data)
        self.written[key] = self.clock()

    def get_blob(self, key: str) -> bytes | None:
        self._expire(key)
        return super().get_blob(key)

    def refresh_blob(self, key: str) -> bool:
        self._expire(key)
        found = super().refresh_blob(key)
        if found:
            self.written[key] = self.clock()
        return found


@pytest.fixture(autouse=True)
def _tokens():
    TOKENS.clear()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(NOON)


@pytest.fixture
def blob_store(clock) -> LifecycleBlobStore:
    return LifecycleBlobStore(clock)


def container(clock: VirtualClock, blob_store: LifecycleBlobStore, store: InMemoryRunStore | None = None):
    """A service as a stack's functions build it: retention, blobs without a cache."""
    return RunService(
        store or InMemoryRunStore(),
        InMemoryStepQueue(),
        clock=clock,
        retention_s=RETENTION_S,
        blobs=Blobs(blob_store, cache_bytes=0),
        callbacks=CallbackSigner(b"unit-test-key-0123456789", "https://api.example/v1"),
    )


def answer_after(service: RunService, clock: VirtualClock, days: float) -> None:
    """Move the clock on, approve the run's last callback and run what follows."""
    clock.advance(days * DAY)
    service.waits.answer(TOKENS[-1], "approved")
    run_queued(service)


def started(service: RunService, graph: dict[str, Any]) -> tuple[str, str]:
    """A run of ``graph``, run up to its first wait: its id and its value's key."""
    run_id = service.start_run(service.create_graph(graph).graph_id, {}).run_id
    run_queued(service)
    run = service.get_run(run_id)
    assert run.status == "waiting"
    ref = parse_ref(run.state["text"])
    assert ref is not None
    return run_id, blob_key(run_id, ref.sha256)


def test_a_run_answered_after_the_retention_still_reads_its_first_days_value(clock, blob_store):
    # GIVEN a run that offloaded a value on day 0 and waits for an answer
    service = container(clock, blob_store)
    run_id, key = started(service, TWO_REVIEWS)

    # WHEN it is answered on day 20, waits again, and is answered on day 45 (the value
    # was written 45 days before; the run last stepped 25 days before)
    answer_after(service, clock, 20)
    assert service.get_run(run_id).status == "waiting"
    answer_after(service, clock, 25)

    # THEN the step that reads the value finds it whole
    run = service.get_run(run_id)
    assert run.status == "completed", run.error
    assert service.state_value(run, "length") == 100_000
    # it was written again on day 20 and on day 45, once each day: never on day 0
    assert blob_store.refreshes == [key, key]
    # AND it lasts as long as the run: the values route still reads it a day before
    # the run itself expires, RETENTION_S after its last step
    clock.advance(RETENTION_S - DAY)
    assert service.state_value(run, "text") == "t" * 100_000


def test_a_young_run_writes_nothing_again(clock, blob_store):
    # GIVEN a run answered and ended within the day it started
    service = container(clock, blob_store)
    run_id, _ = started(service, TWO_REVIEWS)
    answer_after(service, clock, 0.1)
    answer_after(service, clock, 0.1)

    # THEN its values were only written once: they expire after the run does anyway
    assert service.get_run(run_id).status == "completed"
    assert blob_store.refreshes == []
    assert service.get_run(run_id).cost.get(S3_PUT_REQUESTS) == 1


def test_a_run_started_before_today_writes_a_value_again_once_a_day_per_container(clock, blob_store):
    # GIVEN a run answered the next day that then steps five times through a loop
    service = container(clock, blob_store)
    run_id, key = started(service, ONE_REVIEW_THEN_A_LOOP)
    puts_before = service.get_run(run_id).cost.get(S3_PUT_REQUESTS)
    answer_after(service, clock, 1)

    # THEN its first step wrote the value again, the ones after it did not (this
    # container did today), and the run's cost counts the copy as a PUT
    run = service.get_run(run_id)
    assert run.status == "completed" and service.state_value(run, "rounds") == 5
    assert blob_store.refreshes == [key]
    assert run.cost.get(S3_PUT_REQUESTS) == puts_before + 1


def test_the_values_of_a_run_cancelled_while_running_outlive_it(clock, blob_store):
    # GIVEN a run answered on day 10 that takes one step and is cancelled while running
    service = container(clock, blob_store)
    run_id, key = started(service, ONE_REVIEW_THEN_A_LOOP)
    clock.advance(10 * DAY)
    service.waits.answer(TOKENS[-1], "approved")
    run_queued(service, limit=1)
    assert service.get_run(run_id).status == "running"
    last_step = clock()
    service.cancel(run_id)

    # THEN its value is still there until the run expires, RETENTION_S after its last step
    # (written on day 0, it would have gone on day 31)
    run = service.get_run(run_id)
    assert run.status == "cancelled" and run.expires_at == int(last_step + RETENTION_S)
    assert blob_store.refreshes == [key]
    clock.now = last_step + RETENTION_S - 1
    assert service.state_value(run, "text") == "t" * 100_000


def test_another_container_decides_the_same_and_a_missing_value_fails_nothing(clock, blob_store):
    # GIVEN a run whose value is gone from the store (deleted by hand), answered on
    # day 2 through another container (its own memory of what it wrote again)
    first = container(clock, blob_store)
    run_id, key = started(first, TWO_REVIEWS)
    del blob_store.objects[key]
    second = container(clock, blob_store, first.store)
    second.queue = first.queue

    # WHEN the run goes on to its second wait
    answer_after(second, clock, 2)

    # THEN the commit went through: the copy found nothing, which only the step that
    # reads the value will report
    assert second.get_run(run_id).status == "waiting"
    assert blob_store.refreshes == [key]
    answer_after(second, clock, 0.1)
    run = second.get_run(run_id)
    assert run.status == "failed" and run.error["type"] == "NotFoundError"
