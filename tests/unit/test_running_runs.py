"""A cap on the runs each principal has running or waiting (engine/running.py)."""

from __future__ import annotations

import pytest

import workflows  # noqa: F401 - registers the tools
from engine.errors import ConflictError
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.running import UNSTORED_GRACE_S, TooManyRunningRunsError
from engine.service import RunService
from functions.errors import STATUS_BY_CODE
from tests.functional.pump import run_queued

ALICE = "arn:aws:iam::123456789012:user/alice"
BOB = "arn:aws:iam::123456789012:user/bob"
GRAPH = {"start": "a", "nodes": {"a": {"fn": "split_text"}}}


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def service(cap: int = 2) -> RunService:
    return RunService(
        InMemoryRunStore(), InMemoryStepQueue(), isolated=True, max_running_runs=cap, clock=Clock()
    )


def test_a_principal_at_its_cap_gets_429_and_another_principal_does_not():
    svc = service(cap=2)
    graph = svc.create_graph(GRAPH, ALICE).graph_id
    bobs = svc.create_graph(GRAPH, BOB).graph_id
    svc.start_run(graph, {"text": "One."}, ALICE)
    svc.start_run(graph, {"text": "Two."}, ALICE)
    with pytest.raises(TooManyRunningRunsError) as refused:
        svc.start_run(graph, {"text": "Three."}, ALICE)
    assert refused.value.code == "too_many_runs" and STATUS_BY_CODE["too_many_runs"] == 429
    assert "2 runs running or waiting" in refused.value.message
    assert refused.value.details == {"max_running_runs": 2}
    # the refused run was never stored, and Bob is not held back by Alice's runs
    assert len(svc.store.list_runs(owner=ALICE)[0]) == 2
    svc.start_run(bobs, {"text": "One."}, BOB)


def test_a_run_that_ended_gives_its_place_back_when_the_principal_is_at_the_cap():
    svc = service(cap=1)
    graph = svc.create_graph(GRAPH, ALICE).graph_id
    first = svc.start_run(graph, {"text": "One."}, ALICE)
    with pytest.raises(TooManyRunningRunsError):
        svc.start_run(graph, {"text": "Two."}, ALICE)
    svc.cancel(first.run_id, ALICE)  # ends it: nothing is given back yet...
    second = svc.start_run(graph, {"text": "Two."}, ALICE)  # ...until the cap is met
    assert svc.store.held_runs(ALICE) == {second.run_id: svc.clock()}
    run_queued(svc)  # completes
    svc.start_run(graph, {"text": "Three."}, ALICE)


def test_a_counted_run_never_stored_gives_its_place_back_after_a_grace():
    svc = service(cap=1)
    graph = svc.create_graph(GRAPH, ALICE).graph_id
    svc.store.hold_run(ALICE, "died-before-storing", 1, svc.clock())
    with pytest.raises(TooManyRunningRunsError):  # it may still be on its way
        svc.start_run(graph, {"text": "One."}, ALICE)
    svc.clock.now += UNSTORED_GRACE_S + 1
    svc.start_run(graph, {"text": "One."}, ALICE)


def test_a_refused_start_holds_nothing_and_a_failed_store_gives_the_place_back():
    svc = service(cap=1)
    graph = svc.create_graph(GRAPH, ALICE).graph_id

    def broken(run):
        raise ConflictError("the store refused it")

    svc.store.create_run = broken
    with pytest.raises(ConflictError):
        svc.start_run(graph, {"text": "One."}, ALICE)
    assert svc.store.held_runs(ALICE) == {}


def test_a_redrive_counts_the_run_again():
    svc = service(cap=1)
    graph = svc.create_graph(GRAPH, ALICE).graph_id
    failed = svc.start_run(graph, {"text": "One.", "chunk_size": "x"}, ALICE)
    run_queued(svc)
    assert svc.get_run(failed.run_id).status == "failed"
    other = svc.start_run(graph, {"text": "Two."}, ALICE)  # the failed run's place is given back
    with pytest.raises(TooManyRunningRunsError):
        svc.redrive(failed.run_id, {"chunk_size": 10}, ALICE)
    assert svc.get_run(failed.run_id).status == "failed"  # untouched
    svc.cancel(other.run_id, ALICE)
    svc.redrive(failed.run_id, {"chunk_size": 10}, ALICE)
    assert set(svc.store.held_runs(ALICE)) == {failed.run_id}


def test_without_a_cap_or_an_owner_nothing_is_counted():
    svc = service(cap=0)
    graph = svc.create_graph(GRAPH, ALICE).graph_id
    for _ in range(3):
        svc.start_run(graph, {"text": "One."}, ALICE)
    assert svc.store.held_runs(ALICE) == {}
    shared = RunService(InMemoryRunStore(), InMemoryStepQueue(), max_running_runs=1)
    graph = shared.create_graph(GRAPH).graph_id
    for _ in range(3):
        shared.start_run(graph, {"text": "One."})
