"""The done message goes out from the slot that ends the run.

It used to come from the run item's stream record, a snapshot whose write is best effort:
when that write was lost, subscribers waited for the sweeper to mend it (about 6 minutes).
"""

from __future__ import annotations

import json

import pytest

from engine.cost import price
from functions.aws.dynamodb import DynamoRunStore
from tests.contract.test_dynamodb_slots import LosesSnapshots
from tests.functional.test_websocket import assert_complete, counting, ws

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
__all__ = ["ws"]


@pytest.fixture
def snapshots_lost(ws):
    """The step loop's store loses every run item write (the slots, the commits, land)."""
    ws.service.store = DynamoRunStore(ws.table, lambda: LosesSnapshots(ws.dynamodb))
    return ws


def followed(ws, steps: int) -> str:
    """A run of ``steps`` steps, followed by connection c1 from its start."""
    run_id = ws.start(counting(steps))
    ws.connect("c1")
    ws.subscribe("c1", run_id)
    return run_id


def test_a_run_whose_final_snapshot_was_lost_still_ends_with_done(snapshots_lost):
    ws = snapshots_lost
    run_id = followed(ws, 3)

    ws.finish()

    assert [item["status"]["S"] for item in ws.items("run")] == ["running"]  # the snapshot lags
    assert_complete(ws, "c1", run_id)


def test_a_cancel_whose_snapshot_was_lost_still_ends_with_done(snapshots_lost):
    ws = snapshots_lost
    run_id = followed(ws, 10)
    ws.step()

    ws.service.cancel(run_id)
    ws.feed.deliver()

    assert ws.api.entries("c1") == [0]
    assert [d["status"] for d in ws.api.dones("c1")] == ["cancelled"]


def test_the_done_message_carries_the_runs_cost_as_get_state_has_it(ws):
    # GIVEN a followed run of 3 steps
    run_id = followed(ws, 3)

    # WHEN it ends
    ws.finish()

    # THEN its done message carries the cost estimate GET /graph/state answers for it
    (done,) = ws.api.dones("c1")
    run = ws.service.get_run(run_id)
    assert done["cost"] == json.loads(json.dumps(price(run.cost)))
    assert done["cost"]["estimate"] is True
    assert done["cost"]["breakdown"]["dynamodb"]["write_units"] >= 3  # a slot per step at least


def test_a_cancelled_runs_done_message_carries_its_cost_so_far(ws):
    # GIVEN a followed run cancelled after its first step
    run_id = followed(ws, 10)
    ws.step()
    cost = ws.service.get_run(run_id).cost
    assert cost

    # WHEN it is cancelled
    ws.service.cancel(run_id)
    ws.feed.deliver()

    # THEN the done message (sent from the finish slot) carries what its steps cost
    (done,) = ws.api.dones("c1")
    assert done["status"] == "cancelled" and done["cost"] == json.loads(json.dumps(price(cost)))
