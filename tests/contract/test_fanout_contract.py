"""The fan-out half of the RunStore contract, on InMemoryRunStore and DynamoRunStore (moto)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.cost import DYNAMODB_WRITE_UNITS, MICRO, SQS_REQUESTS, Usage
from engine.errors import ConflictError
from engine.memory import InMemoryRunStore
from engine.ports import ExecutionRecord
from engine.step import Cursor
from tests.contract.test_store_contract import T0, commit, run


def at_fanout(store, base: int = 1, total: int = 3):
    """A run whose step ``base`` reached a fan-out of ``total`` items, opened."""
    store.create_run(run())
    for step in range(base):
        cursor = Cursor("m", step + 1) if step == base - 1 else Cursor("a", step + 1)
        store.commit_step(commit(step, cursor=cursor))
    return store.open_fanout("run1", base, total, T0 + 10)


def claim(store, index, attempt=1, *, final=True, failed=False, limit=100, base=1, total=3):
    return store.claim_execution(
        "run1", base, index, attempt, final=final, failed=failed, now=T0 + 20, limit=limit, total=total
    )


def record(step, index, attempt=1, status="ok", value=None):
    # As engine/fanout_service.py commits an execution's entry.
    entry = {
        "seq": step,
        "node": "m",
        "index": index,
        "attempt": attempt,
        "status": status,
        "started_at": "2025-06-15T10:00:01.000Z",
        "duration_ms": 0.5,
        "result": value,
        "next": None,
        "error": None,
        "run_id": "run1",
    }
    return ExecutionRecord(step, index, attempt, status, value, None, entry)


def test_open_fanout_starts_counting_and_a_second_open_returns_it_as_it_stands(store):
    opened = at_fanout(store)
    assert (opened.base, opened.total, opened.executed, opened.done, opened.failed) == (1, 3, 0, 0, 0)
    claim(store, 0)
    again = store.open_fanout("run1", 1, 3, T0 + 99)
    assert (again.executed, again.done, again.claims) == (1, 1, {0: (1, True)})
    assert store.get_fanout("run1", 7) is None


def test_claims_take_the_next_steps_once_and_count_final_ones(store):
    at_fanout(store)
    first = claim(store, 2, final=False)
    second = claim(store, 0, failed=True)
    assert (first.outcome, first.step, second.outcome, second.step) == ("new", 1, "new", 2)
    assert (second.fanout.done, second.fanout.failed) == (1, 1)
    fanout = store.get_fanout("run1", 1)
    assert (fanout.executed, fanout.done, fanout.failed) == (2, 1, 1)
    assert fanout.claims == {2: (1, False), 0: (1, True)}
    assert fanout.updated_at == T0 + 20


def test_the_same_attempt_claimed_again_gets_its_step_and_takes_nothing(store):
    at_fanout(store)
    claim(store, 1, final=False)
    again = claim(store, 1, final=True)  # a redelivery whose tool ended otherwise
    assert (again.outcome, again.step, again.final) == ("again", 1, False)
    assert store.get_fanout("run1", 1).executed == 1


def test_an_earlier_attempt_after_a_later_one_is_superseded(store):
    at_fanout(store)
    claim(store, 1, 1, final=False)
    assert claim(store, 1, 2).outcome == "new"
    assert claim(store, 1, 1, final=False).outcome == "superseded"
    assert store.get_fanout("run1", 1).claims == {1: (2, True)}


def test_the_claim_that_completes_the_set_is_the_only_one_that_sees_it_complete(store):
    at_fanout(store, total=3)
    seen = [claim(store, index).fanout.complete for index in (2, 0, 1)]
    assert seen == [False, False, True]
    assert claim(store, 1).fanout.complete  # a redelivery of it sees the set complete too


def test_claims_stop_at_the_limit_and_closing_takes_the_next_step_once(store):
    at_fanout(store)
    assert claim(store, 0, limit=1).outcome == "new"
    assert claim(store, 1, limit=1).outcome == "full"
    assert store.close_fanout("run1", 1, T0 + 30) == 2
    assert store.close_fanout("run1", 1, T0 + 31) == 2
    assert claim(store, 2).outcome == "closed"
    assert store.get_fanout("run1", 1).closed_at == 2
    assert store.close_fanout("run1", 9, T0) is None


def test_executions_are_written_once_listed_in_step_order_and_advance_the_run(store):
    # GIVEN three claimed executions, the middle one written last
    at_fanout(store)
    for index in range(3):
        claim(store, index)
    store.put_execution("run1", 1, record(1, 0, value=[1, {"a": None}]), T0 + 21)
    store.put_execution("run1", 1, record(3, 2, value="c"), T0 + 23)

    # THEN the run is at the step after the newest execution written, with its state unchanged
    folded = store.get_run("run1")
    assert (folded.step, folded.status, folded.cursor, folded.state) == (
        4,
        "running",
        Cursor("m", 1),
        run().state | {"n": "2"},
    )
    assert [e.index for e in store.list_executions("run1", 1, 3)] == [0, 2]

    # WHEN the gap is written, and written again by a redelivery with another value
    store.put_execution("run1", 1, record(2, 1, value="b"), T0 + 22)
    store.put_execution("run1", 1, record(2, 1, value="other"), T0 + 24)

    # THEN every execution is there once, with the value first written, and in the log
    listed = store.list_executions("run1", 1, 3)
    assert [(e.step, e.index, e.value) for e in listed] == [
        (1, 0, [1, {"a": None}]),
        (2, 1, "b"),
        (3, 2, "c"),
    ]
    assert [(e["seq"], e.get("index")) for e in store.list_logs("run1")] == [
        (0, None),
        (1, 0),
        (2, 1),
        (3, 2),
    ]
    assert store.get_run("run1").step == 4


def test_the_join_commits_after_the_executions_and_a_cancel_ends_a_fan_out(store):
    # GIVEN a complete set of two executions
    at_fanout(store, total=2)
    for index in range(2):
        done = claim(store, index, total=2)
        store.put_execution("run1", 1, record(done.step, index), T0 + 21)

    # WHEN the join commits at the step after them
    with pytest.raises(ConflictError):
        store.commit_step(commit(2, cursor=Cursor("a", 3)))
    store.commit_step(commit(3, cursor=Cursor("a", 4)))

    # THEN the run moved on; a late duplicate execution changes nothing
    store.put_execution("run1", 1, record(1, 0, value="late"), T0 + 40)
    after = store.get_run("run1")
    assert (after.step, after.cursor, after.status) == (4, Cursor("a", 4), "running")
    assert [e["seq"] for e in store.list_logs("run1")] == [0, 1, 2, 3]


def test_a_cancel_during_a_fan_out_ends_the_run_and_later_executions_change_nothing(store):
    at_fanout(store)
    first = claim(store, 0)
    store.put_execution("run1", 1, record(first.step, 0), T0 + 21)
    pending = claim(store, 1)  # claimed, not written yet
    store.finish_run("run1", status="cancelled", error=None, now="2025-06-15T11:00:00.000Z")
    store.put_execution("run1", 1, record(pending.step, 1), T0 + 22)
    late = claim(store, 2)
    if late.outcome == "new":
        store.put_execution("run1", 1, record(late.step, 2), T0 + 23)
    stored = store.get_run("run1")
    assert (stored.status, stored.cursor) == ("cancelled", None)


def test_the_cost_of_opening_and_of_each_execution_is_kept_for_the_join(store):
    # GIVEN a run at a fan-out opened with what opening it cost so far
    store.create_run(run())
    store.commit_step(commit(0, cursor=Cursor("m", 1)))
    opened = store.open_fanout("run1", 1, 2, T0 + 10, cost=Usage({SQS_REQUESTS: 2 * MICRO}))

    # WHEN an execution is claimed and written with what its attempt cost, within a tally
    with store.tally() as tally:
        done = claim(store, 0, total=2)
        own = tally.take()
        store.put_execution(
            "run1", 1, replace(record(done.step, 0), cost=Usage({SQS_REQUESTS: MICRO}) + own), T0 + 21
        )

    # THEN the fan-out and the execution keep their costs, each with what the store
    # spent writing it (DynamoDB: the items' write units and the claim's; memory: nothing)
    kept = store.get_fanout("run1", 1).cost
    (execution,) = store.list_executions("run1", 1, 1)
    assert opened.cost == kept and kept.count(SQS_REQUESTS) == 2 * MICRO
    assert execution.cost.count(SQS_REQUESTS) == MICRO
    written = kept.count(DYNAMODB_WRITE_UNITS), execution.cost.count(DYNAMODB_WRITE_UNITS)
    if isinstance(store, InMemoryRunStore):
        assert written == (0, 0) and not own
    else:
        assert written[0] >= 1 and written[1] >= 2  # the exec slot's write and the claim's
        assert own.count(DYNAMODB_WRITE_UNITS) >= 1  # the claim's
    # AND a claim's answer has it or leaves it out (then the join reads the fan-out)
    assert done.fanout is not None and done.fanout.cost in (None, kept)
