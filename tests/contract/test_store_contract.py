"""The RunStore contract, run against InMemoryRunStore and DynamoRunStore on moto."""

from __future__ import annotations

import dataclasses

import pytest

from engine.errors import ConflictError
from engine.ports import GraphRecord, RunRecord, StepCommit
from engine.step import Cursor

T0 = 1_750_000_000.0


def graph(graph_id: str, created_at: str = "2025-06-15T10:00:00.000Z", **kwargs) -> GraphRecord:
    definition = {"name": "g", "start": "a", "nodes": {"a": {"fn": "t", "params": {"ü": [1, 2.5]}}}}
    return GraphRecord(graph_id=graph_id, definition=definition, created_at=created_at, name="g", **kwargs)


def run(run_id: str = "run1", **overrides) -> RunRecord:
    fields = {
        "run_id": run_id,
        "graph_id": "g1",
        "status": "running",
        "cursor": Cursor("a"),
        "step": 0,
        "state": {"text": '"hello"', "n": "1", "nested": '{"a":[1,2]}'},
        "created_at": "2025-06-15T10:00:00.000Z",
        "updated_at": "2025-06-15T10:00:00.000Z",
        "next_at": T0,
        "expires_at": int(T0) + 86400,
    }
    return RunRecord(**{**fields, **overrides})


def entry(step: int, run_id: str = "run1", **fields) -> dict:
    """Log entry ``step`` as the tick builds it (engine/step.py), committed."""
    return {
        "seq": step,
        "node": "a",
        "attempt": 1,
        "status": "ok",
        "started_at": f"2025-06-15T10:00:0{step}.000Z",
        "duration_ms": 1.25,
        "result": {"n": step + 2},
        "next": "a",
        "error": None,
        **fields,
        "run_id": run_id,
    }


def commit(step: int = 0, run_id: str = "run1", **overrides) -> StepCommit:
    fields = {
        "run_id": run_id,
        "step": step,
        "update": {"n": str(step + 2)},
        "cursor": Cursor("a", step + 1),
        "status": "running",
        "log": entry(step, run_id),
        "updated_at": f"2025-06-15T10:00:0{step + 1}.000Z",
        "next_at": T0 + step + 1,
        "expires_at": int(T0) + 86400,
    }
    return StepCommit(**{**fields, **overrides})


# -- graphs -------------------------------------------------------------------------------
def test_put_and_get_graph_round_trips(store):
    store.put_graph(graph("g1", version=3))
    assert store.get_graph("g1") == graph("g1", version=3)
    assert store.get_graph("missing") is None


def test_put_graph_with_an_existing_id_conflicts_and_keeps_the_first(store):
    store.put_graph(graph("g1"))
    with pytest.raises(ConflictError):
        store.put_graph(dataclasses.replace(graph("g1"), name="other"))
    assert store.get_graph("g1").name == "g"


def test_list_graphs_pages_newest_first(store):
    # GIVEN five graphs, two created in the same millisecond
    stamps = ["10:00:01", "10:00:03", "10:00:02", "10:00:03", "10:00:05"]
    for i, stamp in enumerate(stamps):
        store.put_graph(graph(f"g{i}", created_at=f"2025-06-15T{stamp}.000Z"))

    # WHEN they are listed two at a time
    pages, token = [], None
    while True:
        page, token = store.list_graphs(limit=2, after=token)
        pages.append([g.graph_id for g in page])
        if token is None:
            break

    # THEN every graph comes once, newest first (ties by id, descending)
    assert pages == [["g4", "g3"], ["g1", "g2"], ["g0"]]
    assert store.list_graphs(limit=10)[0][0] == graph("g4", created_at="2025-06-15T10:00:05.000Z")


def test_list_graphs_when_the_last_page_is_full_has_no_next_token(store):
    for i in range(2):
        store.put_graph(graph(f"g{i}", created_at=f"2025-06-15T10:00:0{i}.000Z"))
    page, token = store.list_graphs(limit=2)
    assert [g.graph_id for g in page] == ["g1", "g0"] and token is None


def test_graphs_of_an_owner_are_listed_apart_and_page_within_the_owner(store):
    # GIVEN graphs of the account (no owner) and of two principals, interleaved in time
    owners = [None, "arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/bob"]
    for i in range(6):
        store.put_graph(graph(f"g{i}", created_at=f"2025-06-15T10:00:0{i}.000Z", owner=owners[i % 3]))
    # WHEN each lists, a page at a time THEN each sees only its own, newest first
    first, token = store.list_graphs(limit=1, owner=owners[1])
    second, last = store.list_graphs(limit=1, after=token, owner=owners[1])
    assert [g.graph_id for g in first + second] == ["g4", "g1"] and last is None
    assert {g.owner for g in first + second} == {owners[1]}
    assert [g.graph_id for g in store.list_graphs(owner=owners[2])[0]] == ["g5", "g2"]
    assert [g.graph_id for g in store.list_graphs()[0]] == ["g3", "g0"]
    assert store.get_graph("g4") == graph("g4", created_at="2025-06-15T10:00:04.000Z", owner=owners[1])


def test_a_runs_owner_survives_its_commits_and_snapshots(store):
    owner = "arn:aws:sts::123456789012:assumed-role/Deployer/ci"
    store.create_run(run(owner=owner))
    for step in range(6):  # past a snapshot
        store.commit_step(commit(step))
    assert store.get_run("run1").owner == owner


def test_runs_of_an_owner_are_listed_apart(store):
    alice, bob = "arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/bob"
    for i, owner in enumerate([alice, None, bob, alice]):
        store.create_run(run(f"r{i}", owner=owner, created_at=f"2025-06-15T10:00:0{i}.000Z"))
    first, token = store.list_runs(limit=1, owner=alice)
    second, last = store.list_runs(limit=1, after=token, owner=alice)
    assert [r.run_id for r in first + second] == ["r3", "r0"] and last is None
    assert [r.run_id for r in store.list_runs(owner=bob)[0]] == ["r2"]
    assert [r.run_id for r in store.list_runs()[0]] == ["r1"]


# -- runs ---------------------------------------------------------------------------------
def test_create_and_get_run_round_trips(store):
    store.create_run(run())
    assert store.get_run("run1") == run()
    assert store.get_run("missing") is None


def test_create_run_with_an_existing_id_conflicts(store):
    store.create_run(run())
    with pytest.raises(ConflictError):
        store.create_run(run(graph_id="other"))
    assert store.get_run("run1").graph_id == "g1"


def test_list_runs_pages_newest_first_each_as_it_is_now(store):
    # GIVEN four runs, two started in the same millisecond; one has made a step since its
    # last snapshot, one was cancelled
    stamps = ["10:00:01", "10:00:03", "10:00:02", "10:00:03"]
    for i, stamp in enumerate(stamps):
        store.create_run(run(f"r{i}", created_at=f"2025-06-15T{stamp}.000Z"))
    store.commit_step(commit(0, run_id="r2"))
    store.finish_run("r0", status="cancelled", error=None, now="2025-06-15T10:01:00.000Z")

    # WHEN they are listed two at a time
    pages, token, listed = [], None, []
    while True:
        page, token = store.list_runs(limit=2, after=token)
        pages.append([r.run_id for r in page])
        listed += page
        if token is None:
            break

    # THEN every run comes once, newest first (ties by id, descending), as it is now
    assert pages == [["r3", "r1"], ["r2", "r0"]]
    now = {r.run_id: r for r in listed}
    assert now["r2"] == store.get_run("r2") and now["r2"].step == 1
    assert now["r0"].status == "cancelled"
    assert store.list_runs(limit=10, after="not a token") == ([], None)


def test_commit_step_advances_the_run_and_appends_its_log_entry(store):
    # GIVEN a running run at step 0
    store.create_run(run())

    # WHEN step 0 is committed
    store.commit_step(commit(0))

    # THEN the run is at step 1 with the update applied, and log entry 0 exists
    stored = store.get_run("run1")
    assert stored.step == 1
    assert stored.cursor == Cursor("a", 1)
    assert stored.state == {"text": '"hello"', "n": "2", "nested": '{"a":[1,2]}'}
    assert (stored.status, stored.next_at, stored.updated_at) == (
        "running",
        T0 + 1,
        "2025-06-15T10:00:01.000Z",
    )
    assert stored.created_at == run().created_at and stored.error is None and stored.finished_at is None
    assert store.list_logs("run1") == [commit(0).log]


def test_commit_step_updates_only_the_keys_it_names(store):
    store.create_run(run())
    odd_keys = {"a.b": '"dotted"', "#x": "[]", ":y": "null", "ü": '"ñ"', "n": "7"}
    store.commit_step(commit(0, update=odd_keys))
    assert store.get_run("run1").state == {"text": '"hello"', "nested": '{"a":[1,2]}', **odd_keys}


def test_commit_step_with_a_large_update_keeps_the_other_keys(store):
    # More keys than one DynamoDB update expression could name one by one.
    store.create_run(run())
    update = {f"key_{i}": str(i) for i in range(120)}
    store.commit_step(commit(0, update=update))
    assert store.get_run("run1").state == {**run().state, **update}
    assert store.get_run("run1").step == 1


@pytest.mark.parametrize("step", [1, 2, -1])
def test_commit_at_the_wrong_step_conflicts_and_writes_nothing(store, step):
    store.create_run(run())
    with pytest.raises(ConflictError):
        store.commit_step(commit(step, log={**commit(0).log, "seq": 0}))
    assert store.get_run("run1") == run()
    assert store.list_logs("run1") == []


def test_the_same_commit_twice_conflicts_the_second_time(store):
    store.create_run(run())
    store.commit_step(commit(0))
    with pytest.raises(ConflictError):
        store.commit_step(commit(0, update={"n": "99"}))
    assert store.get_run("run1").state["n"] == "2"
    assert [entry["seq"] for entry in store.list_logs("run1")] == [0]


def test_commit_on_a_run_that_is_not_running_conflicts_and_writes_nothing(store):
    store.create_run(run())
    store.finish_run("run1", status="cancelled", error={"type": "Cancelled"}, now="t")
    before = store.get_run("run1")
    with pytest.raises(ConflictError):
        store.commit_step(commit(0))
    assert store.get_run("run1") == before
    assert store.list_logs("run1") == []


def test_commit_on_an_unknown_run_conflicts(store):
    with pytest.raises(ConflictError):
        store.commit_step(commit(0, run_id="ghost"))
    assert store.list_logs("ghost") == []


def test_a_final_commit_ends_the_run(store):
    store.create_run(run())
    error = {"node": "a", "type": "ValueError", "message": "bad"}
    store.commit_step(
        commit(0, cursor=None, status="failed", error=error, finished_at="2025-06-15T10:00:01.000Z")
    )
    stored = store.get_run("run1")
    assert (stored.status, stored.cursor, stored.error) == ("failed", None, error)
    assert stored.finished_at == "2025-06-15T10:00:01.000Z"
    assert store.stalled_runs(due_before=T0 + 10**6) == []


def test_list_logs_after_and_limit(store):
    store.create_run(run())
    for step in range(5):
        store.commit_step(commit(step))
    seqs = lambda **kw: [entry["seq"] for entry in store.list_logs("run1", **kw)]  # noqa: E731
    assert seqs() == [0, 1, 2, 3, 4]
    assert seqs(after=1) == [2, 3, 4]
    assert seqs(after=1, limit=2) == [2, 3]
    assert seqs(after=4) == []
    assert seqs(limit=0) == []
    assert store.list_logs("other") == []


# -- finishing ------------------------------------------------------------------------------
def test_finish_run_ends_a_running_run_once(store):
    store.create_run(run())
    error = {"node": "a", "type": "Cancelled", "message": "by request"}
    store.finish_run("run1", status="cancelled", error=error, now="2025-06-15T11:00:00.000Z")
    stored = store.get_run("run1")
    assert (stored.status, stored.error, stored.cursor) == ("cancelled", error, None)
    assert stored.finished_at == stored.updated_at == "2025-06-15T11:00:00.000Z"
    assert stored.state == run().state and stored.step == 0
    with pytest.raises(ConflictError):
        store.finish_run("run1", status="failed", error=None, now="later")
    assert store.get_run("run1").status == "cancelled"


def test_finish_run_at_an_expected_step(store):
    store.create_run(run())
    store.commit_step(commit(0))
    with pytest.raises(ConflictError):
        store.finish_run("run1", status="failed", error=None, now="t", step=0)
    assert store.get_run("run1").status == "running"
    store.finish_run("run1", status="failed", error=None, now="t", step=1)
    assert store.get_run("run1").status == "failed"


def test_finish_run_rejects_unknown_runs_and_non_terminal_statuses(store):
    with pytest.raises(ConflictError):
        store.finish_run("ghost", status="failed", error=None, now="t")
    assert store.get_run("ghost") is None
    store.create_run(run())
    with pytest.raises(ValueError):
        store.finish_run("run1", status="running", error=None, now="t")


# -- the sweeper's view ---------------------------------------------------------------------
def test_stalled_runs_are_the_running_runs_due_before_the_cut_off(store):
    # GIVEN runs due at T0+0..4, one of them finished and one advanced past the cut-off
    for i in range(5):
        store.create_run(run(f"r{i}", next_at=T0 + i))
    store.finish_run("r1", status="cancelled", error=None, now="t")
    store.commit_step(commit(0, run_id="r0", next_at=T0 + 100))

    # WHEN the sweeper asks for runs due before T0+3.5
    stalled = store.stalled_runs(due_before=T0 + 3.5)

    # THEN it gets the running ones, oldest first, at their current step
    assert stalled == [("r2", 0), ("r3", 0)]
    assert store.stalled_runs(due_before=T0 + 3.5, limit=1) == [("r2", 0)]
    assert store.stalled_runs(due_before=T0 + 1000) == [("r2", 0), ("r3", 0), ("r4", 0), ("r0", 1)]
    assert store.stalled_runs(due_before=T0) == []


def test_a_stalled_run_is_re_sent_at_most_once_per_stall_window(store):
    # GIVEN two stalled runs, the first claimed for a re-send at T0+400 (window 360 s)
    store.create_run(run("r0", next_at=T0))
    store.create_run(run("r1", next_at=T0 + 1))
    assert store.claim_resend("r0", T0 + 400, 360) is True

    # THEN nobody claims it again within the window, and sweeps meanwhile skip it
    assert store.claim_resend("r0", T0 + 700, 360) is False
    assert store.stalled_runs(due_before=T0 + 700 - 360) == [("r1", 0)]
    # AND once the window has passed it is stalled (and may be re-sent) again
    assert store.stalled_runs(due_before=T0 + 760 - 360) == [("r0", 0), ("r1", 0)]
    assert store.claim_resend("r0", T0 + 760, 360) is True
    assert store.claim_resend("unknown", T0 + 760, 360) is False
