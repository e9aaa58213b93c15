"""A run that is still moving is never deleted by the table's TTL.

``expires_at`` used to be set once, when the run started: a run living longer than the
retention lost its run item and slots to TTL while it was still running.
"""

from __future__ import annotations

import pytest

from tests.functional.tools import sequential_summarization

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

DAY = 86_400


def expiries(aws, table: str, run_id: str) -> dict[str, int]:
    """``expires_at`` of each item of the run, by sort key."""
    items = aws.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"RUN#{run_id}"}},
        ConsistentRead=True,
    )["Items"]
    return {item["sk"]["S"]: int(item["expires_at"]["N"]) for item in items}


def test_a_run_longer_than_the_retention_keeps_what_it_needs(service, pump, aws, stack, clock):
    service.retention_s = DAY
    graph, state = sequential_summarization()
    run_id = service.start_run(service.create_graph(graph).graph_id, state).run_id

    # each step comes 0.4 days after the last: the run lives for days on a 1-day retention
    while service.get_run(run_id).status == "running":
        clock.advance(0.4 * DAY)
        pump.step_once()
        run = service.store.get_run(run_id)
        stored = expiries(aws, stack["table"], run_id)
        # the run item and every slot a reader folds onto it outlive this moment
        applied = int(
            aws.client("dynamodb").get_item(
                TableName=stack["table"], Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}}
            )["Item"]["applied"]["N"]
        )
        needed = {"RUN"} | {f"LOG#{seq:010d}" for seq in range(applied, run.step)}
        assert min(stored[key] for key in needed) > clock() + 0.4 * DAY

    assert run.status == "completed" and run.step * 0.4 * DAY > 3 * DAY  # it lived for days
    assert run.expires_at == pytest.approx(clock() + DAY, abs=1)
