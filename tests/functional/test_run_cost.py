"""A run's cost estimate on moto against every AWS call metered (bench/metering.py).

The step handler's clients are metered as the benchmarks meter them: DynamoDB units from
the items by DynamoDB's billing rules, SQS requests by payload. The event source
mapping's part — one ReceiveMessage, one DeleteMessageBatch and one Lambda invocation per
batch — is counted from the deliveries. ``GET /graph/state`` must answer exactly those
counts: duplicates and a crash before a commit add nothing (the estimate covers
committed work), and nothing is counted twice.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

import tests.functional.tools  # noqa: F401  (registers the test tools once)
from bench.bill import billed_requests
from bench.capacity import Index
from bench.metering import CallMeter
from engine import default_registry
from flowforge.local import moto_internals
from functions.api.app import handler as api_handler
from functions.runtime import build_app, current_app, set_app
from functions.settings import Settings
from functions.step import app as step_app
from tests.functional import fixtures
from tests.functional.crashes import FaultyStore
from tests.functional.pump import LambdaContext, QueuePump

aws, clock, stack = fixtures.aws, fixtures.clock, fixtures.stack
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
REGION = "us-east-1"
EVENTS = Path(__file__).resolve().parents[1] / "events"


@default_registry.tool("cost_count")
async def cost_count(state, ctx) -> dict[str, Any]:
    """Adds one to ``i``."""
    return {"i": state["i"] + 1}


def loop(steps: int) -> dict[str, Any]:
    return {
        "name": "cost_loop",
        "start": "count",
        "nodes": {
            "count": {
                "fn": "cost_count",
                "loop_condition": {"var": "i", "gte": steps},
                "max_iterations": steps,
            }
        },
    }


@pytest.fixture
def meter(stack, aws, clock, monkeypatch):
    """The functions' App on moto with every client metered, on the test's clock."""
    for name, value in stack["env"].items():
        monkeypatch.setenv(name, value)
    table = aws.client("dynamodb").describe_table(TableName=stack["table"])["Table"]
    keys = tuple(k["AttributeName"] for k in table["KeySchema"])
    indexes = tuple(
        Index(i["IndexName"], tuple(k["AttributeName"] for k in i["KeySchema"]), keys)
        for i in table.get("GlobalSecondaryIndexes", [])
    )
    meter = CallMeter(lambda t, k: moto_internals.stored_item(t, k, REGION), keys, indexes)
    session = boto3.session.Session(region_name=REGION)
    app = build_app(Settings.from_env(), functools.cache(lambda name: meter.attach(session.client(name))))
    app.service.clock = clock
    set_app(app)
    yield meter
    set_app(None)


@pytest.fixture
def pump(meter, stack, aws, clock) -> QueuePump:
    """Lone-run deliveries: a batch of one message per invocation (the pump's own SQS
    calls stand for the event source mapping's: they are not metered)."""
    return QueuePump(aws.client("sqs"), stack["queue_url"], clock, step_app.handler, batch_size=1)


def get_state(run_id: str) -> dict[str, Any]:
    event = json.loads((EVENTS / "api_http_v2.json").read_text())
    path = f"/graph/state/{run_id}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = "GET"
    event["routeKey"] = f"GET {path}"
    event["queryStringParameters"] = {"logs": "false"}
    event["rawQueryString"] = "logs=false"
    response = api_handler(event, LambdaContext.api())
    assert response["statusCode"] == 200, response["body"]
    return json.loads(response["body"])


def metered(meter: CallMeter, mark: int, invocations: int) -> dict[str, float]:
    """What AWS bills for the handler's calls since ``mark``, and the event source
    mapping's receive, delete and invocation for each of ``invocations`` batches."""
    calls = [c for c in meter.calls[mark:] if c.actor == "setup"]
    return {
        "lambda_requests": invocations,
        "sqs_requests": sum(billed_requests(c) for c in calls if c.service == "sqs") + 2 * invocations,
        "read_units": sum(c.capacity.read for c in calls if c.capacity),
        "write_units": sum(c.capacity.write + c.capacity.index_write for c in calls if c.capacity),
    }


def estimated(view: dict[str, Any]) -> dict[str, float]:
    lines = view["cost"]["breakdown"]
    return {
        "lambda_requests": lines["lambda"]["requests"],
        "sqs_requests": lines["sqs"]["requests"],
        "read_units": lines["dynamodb"]["read_units"],
        "write_units": lines["dynamodb"]["write_units"],
    }


def start(steps: int, state_bytes: int = 600) -> str:
    service = current_app().service
    graph_id = service.create_graph(loop(steps)).graph_id
    return service.start_run(graph_id, {"i": 0, "pad": "x" * state_bytes}).run_id


def drain_in_fresh_containers(pump: QueuePump, app: Any) -> int:
    """Deliver the queue, each invocation in a fresh container; how many invocations."""
    invocations = 0
    while pump.step_once():
        invocations += 1
        app.service.store.forget()
    return invocations


def test_the_cost_in_get_state_is_what_aws_metered_for_the_run(meter, pump):
    # GIVEN a 30-step run, chained (ChainMaxSteps 10: three chains, reads between them as
    # a fresh container would), every call the step handler makes metered
    app = current_app()
    app.settings = dataclasses.replace(app.settings, chain_max_steps=10)
    run_id = start(30)
    mark = meter.mark()

    # WHEN the queue is drained, each invocation in a fresh container
    invocations = drain_in_fresh_containers(pump, app)

    # THEN GET /graph/state's cost has exactly the metered requests and units
    billed = metered(meter, mark, invocations)
    view = get_state(run_id)
    assert view["status"] == "completed"
    assert estimated(view) == billed
    assert view["cost"]["breakdown"]["dynamodb"]["read_units"] > 0  # the reads between chains
    # AND Lambda time (512 MB, as measured), a total, and the word that it is an estimate
    assert view["cost"]["breakdown"]["lambda"]["gb_seconds"] > 0
    assert view["cost"]["usd"] == pytest.approx(
        sum(line["usd"] for line in view["cost"]["breakdown"].values())
    )
    assert view["cost"]["estimate"] is True


def test_duplicates_and_a_crash_before_a_commit_are_not_counted(meter, pump, clock):
    # GIVEN one step per message, and a clean run's cost as the yardstick
    app = current_app()
    app.settings = dataclasses.replace(app.settings, chain_max_steps=1)
    clean = start(6)
    mark = meter.mark()
    invocations = 0
    while pump.step_once():
        invocations += 1
    billed = metered(meter, mark, invocations)
    yardstick = estimated(get_state(clean))
    assert yardstick == billed

    # WHEN the same run is made with every message delivered twice (the duplicate finds
    # its step taken) and a crash after step 3's tool ran, before its commit
    store = app.service.store = FaultyStore(app.service.store)
    store.crash_before_commit.add(3)
    run_id = start(6)
    mark = meter.mark()
    pump.duplicate = True
    invocations = pump.drain()

    # THEN AWS billed more (the duplicates' and the crashed invocation's calls)...
    billed = metered(meter, mark, invocations)
    assert billed["lambda_requests"] > yardstick["lambda_requests"] and billed["read_units"] > 0
    assert store.commits[(run_id, 3)] == 1
    # ...but the run's cost counts each committed step once: the clean run's figures
    assert estimated(get_state(run_id)) == yardstick


def start_map(state: dict[str, Any]) -> str:
    from tests.functional.test_fanout_loop import map_graph  # registers its tools

    service = current_app().service
    return service.start_run(service.create_graph(map_graph(tolerated=1)).graph_id, state).run_id


MAP_STATE = {"xs": [1, 2, 3, "x", 5, 6, 7]}


def test_a_map_and_a_parallel_node_cost_what_aws_metered_retries_included(meter, pump):
    # GIVEN a map over 7 items (one fails twice: a retried attempt, then tolerated) and
    # two parallel branches: item messages, each execution committed on its own
    app = current_app()
    run_id = start_map(MAP_STATE)
    mark = meter.mark()

    # WHEN the queue is drained, each invocation in a fresh container
    invocations = drain_in_fresh_containers(pump, app)

    # THEN the run's cost counts every execution, the fan-outs' openings and joins: the
    # metered requests and units, exactly
    billed = metered(meter, mark, invocations)
    view = get_state(run_id)
    assert view["status"] == "completed" and view["state"]["ys"][3] is None
    assert invocations > 10
    assert estimated(view) == billed


def test_a_map_run_delivered_twice_costs_what_the_clean_run_cost(meter, pump):
    # GIVEN the clean map run's cost as the yardstick
    clean = start_map(MAP_STATE)
    pump.drain()
    yardstick = estimated(get_state(clean))

    # WHEN the same run is made with every message delivered twice (the duplicate's
    # claim finds its attempt taken and writes nothing)
    run_id = start_map(MAP_STATE)
    pump.duplicate = True
    pump.drain()

    # THEN the run's cost counts each execution once
    view = get_state(run_id)
    assert view["status"] == "completed"
    assert estimated(view) == yardstick
