"""``sam local`` support: the sample events in events/ parse through the handlers' own
parsers, and env.local.json names exactly the template's functions and variables, with
values pointing at the local stack (``make run``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent, DynamoDBStreamEvent
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
    EventBridgeModel,
    SqsModel,
)
from samtranslator.yaml_helper import yaml_parse

import workflows  # noqa: F401  (registers the summarization tools)
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.service import RunService
from engine.stepmessage import StepMessage
from flowforge.local.dev import DevOptions
from flowforge.local.events import ACCOUNT_ID, LambdaContext
from functions.api.app import handler as api_handler
from functions.aws import dynamodb_codec
from functions.runtime import set_app
from functions.ws.routes import Subscribe, parse_frame
from tests.functional.fixtures import service_app

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def event(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml_parse((ROOT / "template.yaml").read_text())


@pytest.fixture(scope="module")
def env_local() -> dict:
    return json.loads((ROOT / "env.local.json").read_text())


def test_env_local_names_every_template_function_and_only_their_variables(template, env_local):
    functions = {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    assert set(env_local) == set(functions)
    shared = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for logical_id, variables in env_local.items():
        own = set((functions[logical_id]["Properties"].get("Environment") or {}).get("Variables") or {})
        # sam local only overrides variables the template declares: any other name is ignored
        assert set(variables) <= shared | own, f"{logical_id}: {set(variables) - shared - own}"


def test_env_local_points_at_the_local_stacks_resources_and_ports(env_local):
    defaults = DevOptions()
    for variables in env_local.values():
        assert variables["FLOWFORGE_TABLE"] == "flowforge-Table"  # create_resources' default stack name
        assert variables["FLOWFORGE_STEP_QUEUE_URL"].endswith(
            f":{defaults.moto_port}/{ACCOUNT_ID}/flowforge-StepQueue"
        )
        assert variables["FLOWFORGE_WS_ENDPOINT"].endswith(f":{defaults.port}")
        # sam local resolves !Ref StateBucket to the logical id: the local bucket's name instead
        assert variables["FLOWFORGE_STATE_BUCKET"] == "flowforge-statebucket"


@pytest.fixture
def in_memory_service():
    service = RunService(InMemoryRunStore(), InMemoryStepQueue())
    set_app(service_app(service))
    yield service
    set_app(None)


def test_api_events_are_served_by_the_api_handler(in_memory_service):
    context = LambdaContext("ApiFunction", 29)
    created = api_handler(event("api_create_graph"), context)
    assert created["statusCode"] == 201, created["body"]
    listed = api_handler(event("api_list_graphs"), context)
    assert listed["statusCode"] == 200
    assert [g["name"] for g in json.loads(listed["body"])["graphs"]] == ["summarization"]
    missing = api_handler(event("api_get_state"), context)
    assert missing["statusCode"] == 404  # parsed and routed: the run does not exist


@pytest.mark.parametrize("name", ["step_message", "dlq_message"])
def test_queue_events_carry_step_messages(name):
    (record,) = SqsModel.model_validate(event(name)).Records
    message = StepMessage.from_json(record.body)
    assert message.step == 0 and int(record.attributes.ApproximateReceiveCount) >= 1


def test_the_sweeper_event_is_a_scheduled_event():
    assert EventBridgeModel.model_validate(event("sweeper_schedule")).detail_type == "Scheduled Event"


def test_websocket_events_parse_as_the_ws_handler_reads_them():
    connect = event("ws_connect")
    APIGatewayWebSocketConnectEventModel.model_validate(connect)
    assert APIGatewayWebSocketEvent(connect).query_string_parameters["run_id"]
    subscribe = event("ws_subscribe")
    APIGatewayWebSocketMessageEventModel.model_validate(subscribe)
    assert isinstance(parse_frame(APIGatewayWebSocketEvent(subscribe).body), Subscribe)
    disconnect = event("ws_disconnect")
    APIGatewayWebSocketDisconnectEventModel.model_validate(disconnect)
    assert APIGatewayWebSocketEvent(disconnect).request_context.route_key == "$disconnect"


def test_the_broadcast_event_holds_a_log_entry_the_codec_reads():
    (record,) = DynamoDBStreamEvent(event("broadcast_stream")).records
    assert record.event_name.name == "INSERT"
    image = event("broadcast_stream")["Records"][0]["dynamodb"]["NewImage"]
    assert dynamodb_codec.log_from_item(image)["node"] == "split"
