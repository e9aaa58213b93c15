"""The table and queues of template.yaml, created in moto: by CloudFormation from the
translated stack, and by flowforge.local.stack.create_resources (tests and the local stack)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator

import boto3
import pytest
import yaml
from moto import mock_aws
from moto.server import ThreadedMotoServer
from sam_template import FUNCTIONS, TEMPLATE_PATH, translate, without

from flowforge.local.cloudformation import load_template
from flowforge.local.stack import TemplateError, create_resources
from functions.settings import Settings


@pytest.fixture
def session() -> Iterator[boto3.session.Session]:
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


def describe_table(session, name: str) -> dict:
    dynamodb = session.client("dynamodb")
    table = dynamodb.describe_table(TableName=name)["Table"]
    table["TimeToLive"] = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    return table


def queue_attributes(session, url: str) -> dict:
    return session.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def table_shape(table: dict) -> dict:
    """What template.yaml decides about a table (not names, ARNs or timestamps)."""
    return {
        "keys": table["KeySchema"],
        "attributes": sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
        "billing": table.get("BillingModeSummary", {}).get("BillingMode"),
        "indexes": sorted(
            (i["IndexName"], json.dumps(i["KeySchema"]), i["Projection"]["ProjectionType"])
            for i in table.get("GlobalSecondaryIndexes", [])
        ),
        "stream": table.get("StreamSpecification", {}).get("StreamViewType"),
    }


def deploy_with_cloudformation(session, **parameters: str) -> dict[str, str]:
    """Create the translated stack in moto's CloudFormation; logical id -> physical id.

    Moto's CloudFormation creates no API Gateway v2 API nor CloudWatch alarm, and Lambda
    functions would need their code in S3: those go, with everything that refers to them."""
    cfn = without(translate(**parameters), "AWS::ApiGatewayV2::", "AWS::Lambda::", "AWS::CloudWatch::")
    client = session.client("cloudformation")
    client.create_stack(
        StackName="flowforge",
        TemplateBody=json.dumps(cfn),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    (stack,) = client.describe_stacks(StackName="flowforge")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in client.list_stack_resources(StackName="flowforge")["StackResourceSummaries"]
    }


# -------------------------------------------------------------- through CloudFormation


def test_cloudformation_creates_the_table_and_queues_the_template_describes(session):
    # GIVEN the stack sam deploy would create, in moto's CloudFormation
    physical = deploy_with_cloudformation(session)

    # WHEN we look at what it created
    table = describe_table(session, physical["Table"])
    queue = queue_attributes(session, physical["StepQueue"])
    dlq = queue_attributes(session, physical["StepDeadLetterQueue"])

    # THEN keys, index, queues and redrive are the template's
    assert table_shape(table)["keys"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["gsi1"]
    assert queue["VisibilityTimeout"] == "1800"
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq["QueueArn"],
        "maxReceiveCount": 5,
    }
    assert dlq["MessageRetentionPeriod"] == str(14 * 86400)
    assert {"FunctionLogGroup", "HttpApiAccessLogs", "StepFunctionRole"} <= set(physical)


# --------------------------------------------------------------- create_resources


def test_create_resources_builds_what_cloudformation_builds(session):
    # GIVEN the stack created by CloudFormation
    physical = deploy_with_cloudformation(session)
    deployed = describe_table(session, physical["Table"])

    # WHEN create_resources builds the same template directly
    created = create_resources(session, stack_name="local")

    # THEN the table and queues agree with the deployed ones, and have what moto's
    # CloudFormation does not apply (stream on, TTL, point-in-time recovery)
    table = describe_table(session, created["table"])
    assert {**table_shape(table), "stream": None} == {**table_shape(deployed), "stream": None}
    assert table_shape(table)["stream"] == "NEW_IMAGE"
    assert table["StreamSpecification"]["StreamEnabled"] is True
    assert created["stream_arn"] == table["LatestStreamArn"]
    assert table["TimeToLive"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    backups = session.client("dynamodb").describe_continuous_backups(TableName=created["table"])
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"

    deployed_queue = queue_attributes(session, physical["StepQueue"])
    queue = queue_attributes(session, created["queue_url"])
    for key in ("VisibilityTimeout", "MessageRetentionPeriod", "SqsManagedSseEnabled"):
        assert queue.get(key) == deployed_queue.get(key), key
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": created["dlq_arn"],
        "maxReceiveCount": 5,
    }
    assert queue_attributes(session, created["dlq_url"])["MessageRetentionPeriod"] == "1209600"


def test_create_resources_returns_the_functions_environment(session):
    created = create_resources(session)

    assert created["table"] == "flowforge-Table"
    assert created["queue_url"].endswith("/flowforge-StepQueue")
    assert created["dlq_url"].endswith("/flowforge-StepDeadLetterQueue")
    env = created["env"]
    assert env["FLOWFORGE_TABLE"] == created["table"]
    assert env["FLOWFORGE_STEP_QUEUE_URL"] == created["queue_url"]
    assert env["FLOWFORGE_STALL_AFTER_S"] == "360"
    assert env["FLOWFORGE_MAX_STATE_BYTES"] == "262144"
    assert env["POWERTOOLS_SERVICE_NAME"] == "flowforge"
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    # The WebSocket API exists only in a deployed stack: the caller provides the endpoint.
    assert "FLOWFORGE_WS_ENDPOINT" not in env


def test_create_resources_takes_parameters(session):
    clients = {
        "dynamodb": session.client("dynamodb"),
        "sqs": session.client("sqs"),
        "s3": session.client("s3"),
    }

    created = create_resources(clients, parameters={"StepTimeoutSeconds": "60", "StallAfterSeconds": 30})

    assert queue_attributes(session, created["queue_url"])["VisibilityTimeout"] == "360"
    assert created["env"]["FLOWFORGE_STALL_AFTER_S"] == "30"


def test_create_resources_again_adopts_what_exists(session):
    # GIVEN resources created before (a local stack restarting on its saved data)
    first = create_resources(session)
    session.client("dynamodb").put_item(
        TableName=first["table"], Item={"pk": {"S": "run#1"}, "sk": {"S": "run"}}
    )

    # WHEN they are created again
    second = create_resources(session)

    # THEN the same table and queues are returned, data intact
    assert second == first
    item = session.client("dynamodb").get_item(
        TableName=first["table"], Key={"pk": {"S": "run#1"}, "sk": {"S": "run"}}
    )
    assert "Item" in item


def test_create_resources_updates_a_queue_whose_settings_changed(session):
    first = create_resources(session)

    second = create_resources(session, parameters={"StepTimeoutSeconds": "30"})

    assert second["queue_url"] == first["queue_url"]
    assert queue_attributes(session, first["queue_url"])["VisibilityTimeout"] == "180"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"Nope": "1"}, "unknown parameters: Nope"),
        ({"AuthMode": "OPEN"}, "AuthMode='OPEN' is not one of"),
        ({"StepTimeoutSeconds": "301"}, "StepTimeoutSeconds='301'"),
    ],
)
def test_create_resources_rejects_bad_parameters(session, parameters, message):
    with pytest.raises(TemplateError, match=message):
        create_resources(session, parameters=parameters)


def test_create_resources_refuses_a_property_it_cannot_translate(session, tmp_path):
    # GIVEN a template whose queue has a property create_resources does not know
    template = load_template()
    template["Resources"]["StepQueue"]["Properties"]["MadeUpSetting"] = 1
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(template))

    # WHEN resources are created from it, THEN it says which, rather than silently creating something else
    with pytest.raises(TemplateError, match="StepQueue: queue property MadeUpSetting"):
        create_resources(session, template_path=path)


def test_create_resources_against_a_moto_server():
    # GIVEN a moto server, as the local stack runs it
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        session = boto3.session.Session(region_name="us-east-1")

        # WHEN resources are created through its endpoint
        created = create_resources(
            session, TEMPLATE_PATH, endpoint_url=f"http://{host}:{port}", stack_name="srv"
        )

        # THEN they are there, behind that endpoint
        dynamodb = session.client("dynamodb", endpoint_url=f"http://{host}:{port}")
        assert dynamodb.describe_table(TableName="srv-Table")["Table"]["TableStatus"] == "ACTIVE"
        assert created["queue_url"].startswith(f"http://{host}:{port}/")
    finally:
        server.stop()


def test_the_template_environment_configures_every_function(session):
    # GIVEN the environment template.yaml gives every function
    env = {**create_resources(session)["env"], "FLOWFORGE_WS_ENDPOINT": "https://ws.example/v1"}

    # WHEN a function reads its settings at cold start
    settings = Settings.from_env(env)

    # THEN nothing is missing or malformed, and the values are the template's defaults
    assert settings.table == "flowforge-Table"
    assert settings.step_queue_url and settings.step_queue_url.endswith("/flowforge-StepQueue")
    assert settings.require_ws_endpoint() == "https://ws.example/v1"
    assert settings.stall_after_s == 360
    assert settings.max_state_bytes == 262144
    assert settings.retention_days == 30


@pytest.mark.parametrize("handler", sorted(FUNCTIONS.values()))
def test_every_handler_imports_with_the_template_environment(session, monkeypatch, handler):
    env = {**create_resources(session)["env"], "FLOWFORGE_WS_ENDPOINT": "https://ws.example/v1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module_name, _, attribute = handler.rpartition(".")

    module = importlib.import_module(module_name)

    assert callable(getattr(module, attribute))
