"""The wait half of the RunStore contract (callbacks and timers), on InMemoryRunStore and
DynamoRunStore (moto): stored once, settled once, heartbeats, the due-time index, and
commits of a waiting run."""

from __future__ import annotations

import pytest

from engine.errors import ConflictError
from engine.step import Cursor
from engine.waits import WaitRecord, token_hash
from tests.contract.test_store_contract import T0, commit, run


def callback(step: int = 0, **overrides) -> WaitRecord:
    fields = {
        "run_id": "run1",
        "step": step,
        "node": "a",
        "kind": "callback",
        "deadline": T0 + 3600,
        "due": T0 + 60,
        "heartbeat_s": 60.0,
        "token_hash": token_hash("run1.0.secret-part-of-the-token"),
    }
    return WaitRecord(**{**fields, **overrides})


def test_a_wait_is_stored_once_and_read_back(store):
    assert store.put_wait(callback(), expires_at=int(T0) + 86400) == callback()
    # a redelivered step stores it again: the first one stays
    assert store.put_wait(callback(due=T0 + 5)) == callback()
    assert store.get_wait("run1", 0) == callback()
    assert store.get_wait("run1", 1) is None
    assert store.get_wait("other", 0) is None


def test_an_answer_settles_a_pending_wait_once_and_makes_it_due(store):
    store.put_wait(callback())

    settled = store.settle_wait("run1", 0, status="approved", now=T0 + 10, output={"ok": [1, "ü"]})

    assert settled.status == "approved" and settled.output == {"ok": [1, "ü"]} and settled.due == T0 + 10
    assert store.get_wait("run1", 0) == settled
    for status in ("approved", "rejected", "timed_out"):
        with pytest.raises(ConflictError):
            store.settle_wait("run1", 0, status=status, now=T0 + 11)
    assert store.get_wait("run1", 0) == settled


def test_an_answer_once_due_conflicts_and_a_timeout_before_due_conflicts(store):
    store.put_wait(callback())
    with pytest.raises(ConflictError):
        store.settle_wait("run1", 0, status="timed_out", now=T0 + 59)
    with pytest.raises(ConflictError):
        store.settle_wait("run1", 0, status="rejected", now=T0 + 60, reason="late")

    timed_out = store.settle_wait("run1", 0, status="timed_out", now=T0 + 60)

    assert timed_out.status == "timed_out" and timed_out.due == T0 + 60
    with pytest.raises(ConflictError):
        store.settle_wait("missing", 0, status="approved", now=T0)


def test_a_heartbeat_pushes_the_due_time_up_to_the_deadline(store):
    store.put_wait(callback(heartbeat_s=3000.0, due=T0 + 3000))

    assert store.heartbeat_wait("run1", 0, now=T0 + 50).due == T0 + 3050
    assert store.heartbeat_wait("run1", 0, now=T0 + 3000).due == T0 + 3600  # not past the timeout
    with pytest.raises(ConflictError):
        store.heartbeat_wait("run1", 0, now=T0 + 3600)  # due: too late
    store.settle_wait("run1", 0, status="timed_out", now=T0 + 3600)
    with pytest.raises(ConflictError):
        store.heartbeat_wait("run1", 0, now=T0 + 3600)


def test_due_waits_come_from_the_index_until_closed(store):
    store.put_wait(callback(0))
    store.put_wait(
        callback(5, kind="timer", token_hash=None, heartbeat_s=None, due=T0 + 30, deadline=T0 + 30)
    )
    store.put_wait(callback(0, run_id="run2", due=T0 + 7200))

    assert [(w.run_id, w.step) for w in store.due_waits(T0 + 60)] == [("run1", 5), ("run1", 0)]
    assert store.due_waits(T0 + 29) == []
    store.heartbeat_wait("run1", 0, now=T0 + 59)
    assert [(w.run_id, w.step) for w in store.due_waits(T0 + 60)] == [("run1", 5)]

    store.close_wait("run1", 5)
    store.close_wait("nothing", 3)  # closing what is not there does nothing
    assert store.due_waits(T0 + 60) == []
    assert store.get_wait("run1", 5).closed
    assert [(w.run_id, w.step) for w in store.due_waits(T0 + 7200)] == [("run1", 0), ("run2", 0)]


def test_a_waiting_run_commits_its_next_step_once_and_can_be_cancelled(store):
    # GIVEN a run that waits since its step 0
    store.create_run(run())
    store.commit_step(commit(0, status="waiting", cursor=Cursor("a", 1), next_at=T0 + 3600))
    waiting = store.get_run("run1")
    assert waiting.status == "waiting" and waiting.next_at == T0 + 3600
    assert store.stalled_runs(T0 + 10**6) == []  # a waiting run is never "stalled"

    # WHEN its wait ends (step 1), twice
    store.commit_step(commit(1))
    with pytest.raises(ConflictError):
        store.commit_step(commit(1))

    # THEN it runs again; and a waiting run can be cancelled
    assert store.get_run("run1").status == "running"
    store.commit_step(commit(2, status="waiting", cursor=Cursor("a", 3)))
    store.finish_run("run1", status="cancelled", error=None, now="2025-06-15T10:01:00.000Z")
    assert store.get_run("run1").status == "cancelled"
    with pytest.raises(ConflictError):
        store.commit_step(commit(3))


def test_a_withdrawal_settles_a_pending_callback_once_and_refuses_answers_after(store):
    # GIVEN a stored callback (in the index, due at T0 + 60)
    store.put_wait(callback())

    # WHEN its node's tool fails first: the callback is withdrawn, due or not
    withdrawn = store.settle_wait("run1", 0, status="withdrawn", now=T0 + 10)

    # THEN no answer and no second withdrawal settle it any more
    assert withdrawn.status == "withdrawn" and not withdrawn.resolved
    assert withdrawn.due == T0 + 60 and not withdrawn.closed  # its due time stays
    for status in ("approved", "rejected", "withdrawn"):
        with pytest.raises(ConflictError):
            store.settle_wait("run1", 0, status=status, now=T0 + 11)
    assert store.get_wait("run1", 0) == withdrawn
    # but it can still time out once due (a run that waits on it is never stuck)
    assert store.settle_wait("run1", 0, status="timed_out", now=T0 + 60).status == "timed_out"


def test_an_answered_callback_cannot_be_withdrawn(store):
    store.put_wait(callback())
    store.settle_wait("run1", 0, status="approved", now=T0 + 10, output="yes")

    with pytest.raises(ConflictError):
        store.settle_wait("run1", 0, status="withdrawn", now=T0 + 11)
    assert store.get_wait("run1", 0).status == "approved"


def test_a_withdrawn_callback_is_stored_anew_when_its_step_runs_again(store):
    store.put_wait(callback())
    store.settle_wait("run1", 0, status="withdrawn", now=T0 + 10)

    again = callback(due=T0 + 90, deadline=T0 + 3690)
    assert store.put_wait(again) == again
    assert store.get_wait("run1", 0) == again
    assert store.put_wait(callback(due=T0 + 5)) == again  # pending again: stored once
