"""How the DynamoDB store keeps a run: one conditional slot write per step, a snapshot now
and then, and readers that fold the slots a lost snapshot would have held.

Every store in these tests is a separate instance, like two Lambda containers: what one
remembers of a run, the other does not.
"""

from __future__ import annotations

import pytest

from engine.errors import ConflictError
from functions.aws import dynamodb_codec as codec
from functions.aws.dynamodb import SNAPSHOT_EVERY, DynamoRunStore
from tests.contract.test_store_contract import T0, commit, run


@pytest.fixture
def table(stack, aws):
    return stack["table"], aws.client("dynamodb")


class Calls:
    """The DynamoDB operations a client made, with their parameters."""

    def __init__(self, client) -> None:
        self.made: list[tuple[str, dict]] = []
        client.meta.events.register("before-parameter-build.dynamodb", self._record)

    def _record(self, model, params, **_):
        self.made.append((model.name, params))

    def names(self) -> list[str]:
        return [name for name, _ in self.made]


class LosesSnapshots:
    """A client whose run item writes fail as throttled; everything else goes through."""

    def __init__(self, client) -> None:
        self.client = client

    def __getattr__(self, name):
        return getattr(self.client, name)

    def put_item(self, **params):
        if params["Item"]["kind"]["S"] == "run" and params.get("ConditionExpression", "").startswith(
            "applied"
        ):
            raise self.client.exceptions.ProvisionedThroughputExceededException(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"}},
                "PutItem",
            )
        return self.client.put_item(**params)


def stored_run_item(table_name, client, run_id="run1"):
    return client.get_item(TableName=table_name, Key=codec.run_key(run_id), ConsistentRead=True)["Item"]


def test_a_step_writes_one_slot_and_the_run_item_every_few_steps(table):
    # GIVEN a run
    table_name, client = table
    store = DynamoRunStore(table_name, lambda: client)
    store.create_run(run())
    calls = Calls(client)

    # WHEN ten steps are read and committed, each within the same due minute
    for step in range(10):
        store.get_run("run1")
        store.commit_step(commit(step, next_at=T0 + step / 100))

    # THEN each step was one read and one slot put; the run item was rewritten every 4th
    writes = [(name, params["Item"]["kind"]["S"]) for name, params in calls.made if name == "PutItem"]
    assert writes.count(("PutItem", "log")) == 10
    assert writes.count(("PutItem", "run")) == 10 // SNAPSHOT_EVERY
    assert calls.names().count("Query") == 10
    assert "TransactWriteItems" not in calls.names() and "UpdateItem" not in calls.names()
    # a slot holds what the step changed, not the whole state
    slot = client.get_item(TableName=table_name, Key={"pk": {"S": "RUN#run1"}, "sk": {"S": codec.slot_sk(9)}})
    assert slot["Item"]["update"] == {"M": {"n": {"S": "11"}}}
    assert codec.slots_of(stored_run_item(table_name, client)) == 8

    # AND another container reads the run as of step 10
    other = DynamoRunStore(table_name, lambda: client)
    assert other.get_run("run1") == run(
        step=10, state={**run().state, "n": "11"}, cursor=commit(9).cursor, next_at=T0 + 0.09,
        updated_at=commit(9).updated_at,
    )  # fmt: skip


def test_lost_snapshots_lose_nothing(table):
    # GIVEN a store whose every run item write is throttled
    table_name, client = table
    store = DynamoRunStore(table_name, lambda: LosesSnapshots(client))
    store.create_run(run())

    # WHEN 3 snapshots' worth of steps commit, the last one ending the run
    steps = 3 * SNAPSHOT_EVERY + 1
    for step in range(steps - 1):
        store.commit_step(commit(step, next_at=T0))
    store.commit_step(
        commit(steps - 1, cursor=None, status="completed", finished_at="2025-06-15T10:01:00.000Z")
    )

    # THEN the run item is still the one created, yet any reader folds the whole run
    assert codec.slots_of(stored_run_item(table_name, client)) == 0
    other = DynamoRunStore(table_name, lambda: client)
    folded = other.get_run("run1")
    assert (folded.status, folded.step, folded.state["n"]) == ("completed", steps, str(steps + 1))
    assert [entry["seq"] for entry in other.list_logs("run1")] == list(range(steps))

    # AND the sweeper, finding the ended run still in its index, mends its run item
    assert other.stalled_runs(due_before=T0 + 10**6) == []
    item = stored_run_item(table_name, client)
    assert (item["status"]["S"], codec.slots_of(item)) == ("completed", steps)
    assert "gsi1pk" not in item


def test_a_run_whose_snapshot_lags_is_due_by_its_real_next_step(table):
    # GIVEN a run whose snapshot write was lost after step 0 moved it on
    table_name, client = table
    store = DynamoRunStore(table_name, lambda: LosesSnapshots(client))
    store.create_run(run(next_at=T0))
    store.commit_step(commit(0, next_at=T0 + 30))

    # WHEN the sweeper looks for runs due before T0 + 10
    sweeper = DynamoRunStore(table_name, lambda: client)

    # THEN the run is not due (its step 1 is due at T0 + 30); before T0 + 40 it is, at step 1
    assert sweeper.stalled_runs(due_before=T0 + 10) == []
    assert sweeper.stalled_runs(due_before=T0 + 40) == [("run1", 1)]


def test_a_commit_from_a_stale_container_loses_to_the_slot_condition(table):
    # GIVEN two containers that both read the run at step 0
    table_name, client = table
    first, second = (DynamoRunStore(table_name, lambda: client) for _ in range(2))
    first.create_run(run())
    first.get_run("run1")
    second.get_run("run1")

    # WHEN both commit step 0
    first.commit_step(commit(0))
    with pytest.raises(ConflictError):
        second.commit_step(commit(0, update={"n": "99"}))

    # THEN the first commit stands, and the loser reads the run as it is now
    assert second.get_run("run1").state["n"] == "2"
    second.commit_step(commit(1))
    assert first.get_run("run1").step == 2


def test_a_cancel_takes_the_next_slot_and_ends_the_run(table):
    # GIVEN a run two steps in
    table_name, client = table
    store = DynamoRunStore(table_name, lambda: client)
    store.create_run(run())
    for step in range(2):
        store.commit_step(commit(step))

    # WHEN another container cancels it
    DynamoRunStore(table_name, lambda: client).finish_run(
        "run1", status="cancelled", error={"type": "Cancelled"}, now="2025-06-15T10:05:00.000Z"
    )

    # THEN the step that was due next cannot commit, the logs hold the steps only
    with pytest.raises(ConflictError):
        store.commit_step(commit(2))
    assert [entry["seq"] for entry in store.list_logs("run1")] == [0, 1]
    cancelled = DynamoRunStore(table_name, lambda: client).get_run("run1")
    assert (cancelled.status, cancelled.step, cancelled.cursor) == ("cancelled", 2, None)
    assert stored_run_item(table_name, client)["status"] == {"S": "cancelled"}


def test_a_dead_letter_finish_at_a_step_the_run_left_conflicts(table):
    table_name, client = table
    store = DynamoRunStore(table_name, lambda: client)
    store.create_run(run())
    store.commit_step(commit(0))
    with pytest.raises(ConflictError):
        DynamoRunStore(table_name, lambda: client).finish_run(
            "run1", status="failed", error=None, now="t", step=0
        )
    assert store.get_run("run1").status == "running"


def test_the_read_for_the_next_step_is_answered_from_what_the_container_committed(table):
    # GIVEN a container that committed step 0 of a run
    table_name, client = table
    store = DynamoRunStore(table_name, lambda: client)
    store.create_run(run())
    store.get_run("run1")
    store.commit_step(commit(0))
    calls = Calls(client)

    # WHEN it reads the run to execute step 1
    known = store.get_run("run1", step=1)

    # THEN that takes no request, and the run is as committed
    assert calls.made == [] and (known.step, known.state["n"]) == (1, "2")

    # AND when another container made step 1 meanwhile, the commit on that answer conflicts
    other = DynamoRunStore(table_name, lambda: client)
    other.get_run("run1")
    other.commit_step(commit(1))
    assert store.get_run("run1", step=1).step == 1  # still answered from memory
    with pytest.raises(ConflictError):
        store.commit_step(commit(1, update={"n": "99"}))
    assert store.get_run("run1", step=2).state["n"] == "3"  # re-read after the conflict


def test_a_step_read_for_another_step_reads_the_table(table):
    table_name, client = table
    store = DynamoRunStore(table_name, lambda: client)
    store.create_run(run())
    store.commit_step(commit(0))
    calls = Calls(client)
    assert store.get_run("run1", step=5).step == 1
    assert calls.names() == ["Query"]


def test_a_step_looks_its_run_up_once_read_and_commit_together(table, monkeypatch):
    # GIVEN a container that knows a run (it created it) and one running other runs too
    table_name, client = table
    store = DynamoRunStore(table_name, lambda: client)
    store.create_run(run())
    store.create_run(run(run_id="run2"))
    lookups: list[str] = []
    cache_of = DynamoRunStore._cache.fget
    monkeypatch.setattr(DynamoRunStore, "_cache", property(lambda self: _Counting(cache_of(self), lookups)))

    # WHEN the step handler reads the run for step 0 and commits it, then commits two
    # chained steps after it (a chain reads nothing)
    store.get_run("run1", step=0)
    store.commit_step(commit(0))
    store.commit_step(commit(1, next_at=T0 + 1.5))
    store.commit_step(commit(2, next_at=T0 + 2.5))

    # THEN the run was looked up in the cache once, for the read; the commits took it
    # from there
    assert lookups == ["run1"]

    # AND a step of another run looks that run up (once), and the next one of the first
    # run again (once)
    store.get_run("run2", step=0)
    store.commit_step(commit(0, run_id="run2"))
    store.get_run("run1", step=3)
    store.commit_step(commit(3, next_at=T0 + 3.5))
    assert lookups == ["run1", "run2", "run1"]
    assert [e["seq"] for e in store.list_logs("run1")] == [0, 1, 2, 3]


class _Counting:
    """A run cache that records each look-up; reads and writes go to the real one."""

    def __init__(self, cache, lookups: list[str]) -> None:
        self._cache = cache
        self._lookups = lookups

    def get(self, run_id, default=None):
        self._lookups.append(run_id)
        return self._cache.get(run_id, default)

    def __getattr__(self, name):
        return getattr(self._cache, name)

    def __setitem__(self, key, value):
        self._cache[key] = value

    def __len__(self):
        return len(self._cache)

    def __iter__(self):
        return iter(self._cache)
