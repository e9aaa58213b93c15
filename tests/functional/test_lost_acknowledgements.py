"""A conditional put whose acknowledgement was lost is recognised as this writer's own.

botocore retries a request whose answer it did not get (a timeout, a 500). When the
first attempt had landed, the retry fails the put's condition: before this, a step then
took its own commit for a concurrent one (CONFLICT), sent nothing, and the run waited
for the sweeper (about 7 minutes); a create answered an error for a run it had stored.
"""

from __future__ import annotations

import json

import pytest
from botocore.awsrequest import AWSResponse
from moto.core.botocore_stubber import MockRawResponse

from tests.functional.tools import sequential_summarization

pytestmark = [
    pytest.mark.filterwarnings("ignore:No application metrics to publish"),
    # Steps are named by their message here: one step per message (ChainMaxSteps=1).
    pytest.mark.usefixtures("one_step_per_message"),
]


class LoseAcknowledgement:
    """A botocore hook: the first PutItem of an item of ``kind`` lands (moto, called after
    this hook, stores it) but its answer is a 500, so botocore sends it again."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.lost: list[str] = []

    def __call__(self, request, **_):
        item = json.loads(request.body).get("Item", {})
        if item.get("kind", {}).get("S") != self.kind or self.lost:
            return None
        self.lost.append(item["sk"]["S"])
        error = {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "lost"}
        return AWSResponse(request.url, 500, {}, MockRawResponse(json.dumps(error)))


@pytest.fixture
def lose(service):
    client = service.store.client
    hooks = []

    def arm(kind: str) -> LoseAcknowledgement:
        hook = LoseAcknowledgement(kind)
        client.meta.events.register_first("before-send.dynamodb.PutItem", hook)
        hooks.append(hook)
        return hook

    yield arm
    for hook in hooks:
        client.meta.events.unregister("before-send.dynamodb.PutItem", hook)


def test_a_step_whose_commit_was_acknowledged_late_sends_the_next_step(service, pump, lose):
    graph, state = sequential_summarization()
    run_id = service.start_run(service.create_graph(graph).graph_id, state).run_id
    lost = lose("log")

    pump.drain()

    run = service.get_run(run_id)
    assert lost.lost == ["LOG#0000000000"]
    assert run.status == "completed"  # without the sweeper: each step sent the next
    assert [m["step"] for m in pump.delivered] == list(range(run.step))


def test_a_run_whose_creation_was_acknowledged_late_is_started(service, pump, lose):
    graph, state = sequential_summarization()
    graph_id = service.create_graph(graph).graph_id
    lost = lose("run")

    run = service.start_run(graph_id, state)
    pump.drain()

    assert lost.lost == ["RUN"]
    assert service.get_run(run.run_id).status == "completed"


def test_a_graph_whose_creation_was_acknowledged_late_is_created(service, lose):
    lost = lose("graph")

    record = service.create_graph(sequential_summarization()[0])

    assert lost.lost == ["GRAPH"]
    assert service.get_graph(record.graph_id).definition == record.definition
