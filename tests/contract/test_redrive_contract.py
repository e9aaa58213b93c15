"""The redrive half of the RunStore contract, on InMemoryRunStore and DynamoRunStore (moto)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.errors import ConflictError
from engine.ports import RunRecord
from engine.step import Cursor
from tests.contract.test_fanout_contract import at_fanout, claim
from tests.contract.test_store_contract import T0, commit, entry, run


def failed_at(store, step: int = 1) -> None:
    """run1 failed by its step ``step``'s commit (entries 0..step)."""
    store.create_run(run())
    for k in range(step):
        store.commit_step(commit(k))
    failure = {"node": "a", "type": "ValueError", "message": "no"}
    store.commit_step(
        commit(step, cursor=None, status="failed", error=failure, finished_at="2025-06-15T10:01:00.000Z")
    )


def redrive_build(seen: list[tuple[RunRecord, int]], patch: dict[str, str] | None = None):
    def build(current: RunRecord, step: int):
        seen.append((current, step))
        log = entry(step, status="redriven", attempt=None, result={}, redrive=1)
        return commit(step, update=patch or {}, log=log, redrive_count=current.redrive_count + 1)

    return build


def test_a_failed_run_is_redriven_at_its_next_step_with_a_log_entry(store):
    # GIVEN a run failed by its step 1
    failed_at(store, 1)
    seen: list[tuple[RunRecord, int]] = []

    # WHEN it is redriven
    after = store.redrive_run("run1", redrive_build(seen, {"n": "9"}))

    # THEN the build saw the failed run and step 2; the run runs again at step 3
    assert [(r.status, step) for r, step in seen] == [("failed", 2)]
    assert (after.status, after.step, after.cursor, after.error, after.finished_at) == (
        "running", 3, Cursor("a", 3), None, None
    )  # fmt: skip
    assert after.redrive_count == 1 and after.state["n"] == "9"
    stored = store.get_run("run1")
    assert dataclasses.replace(stored, state=dict(stored.state)) == after
    assert [e["seq"] for e in store.list_logs("run1")] == [0, 1, 2]
    assert store.list_logs("run1")[2]["status"] == "redriven"
    # AND it goes on like any run, keeping its count
    store.commit_step(commit(3, cursor=None, status="completed"))
    assert (store.get_run("run1").status, store.get_run("run1").redrive_count) == ("completed", 1)


def test_a_run_failed_from_outside_is_redriven_after_its_finish(store):
    # GIVEN a run failed by the dead-letter handler at step 1 (a finish: no log entry)
    store.create_run(run())
    store.commit_step(commit(0))
    store.finish_run("run1", status="failed", error={"node": "a"}, now="2025-06-15T10:01:00.000Z", step=1)
    seen: list[tuple[RunRecord, int]] = []

    # WHEN it is redriven
    after = store.redrive_run("run1", redrive_build(seen))

    # THEN the redrive takes the step after the finish's
    assert seen[0][1] == 2 and after.step == 3
    assert [e["seq"] for e in store.list_logs("run1")] == [0, 2]
    store.commit_step(commit(3, cursor=None, status="completed"))
    assert store.get_run("run1").status == "completed"


@pytest.mark.parametrize("ending", ["running", "completed", "cancelled"])
def test_only_a_failed_run_can_be_redriven(store, ending):
    store.create_run(run())
    if ending == "completed":
        store.commit_step(commit(0, cursor=None, status="completed"))
    elif ending == "cancelled":
        store.finish_run("run1", status="cancelled", error=None, now="2025-06-15T10:01:00.000Z")
    with pytest.raises(ConflictError):
        store.redrive_run("run1", redrive_build([]))
    with pytest.raises(ConflictError):
        store.redrive_run("unknown", redrive_build([]))
    assert store.get_run("run1").status == ending and len(store.list_logs("run1")) == (ending == "completed")


def test_a_second_redrive_of_a_redriven_run_conflicts(store):
    failed_at(store, 0)
    store.redrive_run("run1", redrive_build([]))
    with pytest.raises(ConflictError):
        store.redrive_run("run1", redrive_build([]))
    assert store.get_run("run1").redrive_count == 1 and len(store.list_logs("run1")) == 2


def test_a_refusing_build_writes_nothing(store):
    failed_at(store, 0)

    def refuse(current, step):
        raise ConflictError("no")

    with pytest.raises(ConflictError):
        store.redrive_run("run1", refuse)
    assert store.get_run("run1").status == "failed" and len(store.list_logs("run1")) == 1


def test_the_latest_fanout_and_one_that_carries_items_over(store):
    # GIVEN a run at a fan-out of 3 items opened at step 1
    assert store.latest_fanout("nope") is None
    at_fanout(store, base=1, total=3)
    claim(store, 0)
    assert store.latest_fanout("run1").base == 1

    # WHEN a later fan-out carries items 0 and 2 over from it
    opened = store.open_fanout("run1", 6, 3, T0 + 30, prior=1, carried=[0, 2])

    # THEN it starts with them done (attempt 0), naming its prior; it is the latest
    assert (opened.done, opened.executed, opened.prior, opened.carried) == (2, 0, 1, frozenset({0, 2}))
    latest = store.latest_fanout("run1")
    assert (latest.base, latest.prior, latest.claims) == (6, 1, {0: (0, True), 2: (0, True)})
    # AND the item it runs completes the set
    done = store.claim_execution("run1", 6, 1, 1, final=True, failed=False, now=T0 + 40, limit=100, total=3)
    assert done.outcome == "new" and done.fanout.complete
