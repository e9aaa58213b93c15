"""The done message goes out from the slot that ends the run.

It used to come from the run item's stream record, a snapshot whose write is best effort:
when that write was lost, subscribers waited for the sweeper to mend it (about 6 minutes).
"""

from __future__ import annotations

import pytest

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


def test_a_run_whose_final_snapshot_was_lost_still_ends_with_done(snapshots_lost):
    ws = snapshots_lost
    run_id = ws.start(counting(3))
    ws.connect("c1")
    ws.subscribe("c1", run_id)

    ws.finish()

    assert [item["status"]["S"] for item in ws.items("run")] == ["running"]  # the snapshot lags
    assert_complete(ws, "c1", run_id)


def test_a_cancel_whose_snapshot_was_lost_still_ends_with_done(snapshots_lost):
    ws = snapshots_lost
    run_id = ws.start(counting(10))
    ws.connect("c1")
    ws.subscribe("c1", run_id)
    ws.step()

    ws.service.cancel(run_id)
    ws.feed.deliver()

    assert ws.api.entries("c1") == [0]
    assert [d["status"] for d in ws.api.dones("c1")] == ["cancelled"]


def test_a_failed_run_ends_with_the_error_of_its_last_slot(ws):
    graph = {
        "start": "count",
        "nodes": {"count": {"fn": "ws_fn_count", "next": "boom"}, "boom": {"fn": "ws_fn_explode"}},
    }
    run_id = ws.start(graph)
    ws.connect("c1")
    ws.subscribe("c1", run_id)

    ws.finish()

    *_, failed, done = ws.api.messages("c1")
    assert done == {"run_id": run_id, "done": True, "status": "failed", "error": failed["error"]}
    assert_complete(ws, "c1", run_id, status="failed")
