"""template.yaml, translated offline the way `sam deploy` would: what it deploys."""

from __future__ import annotations

import ast
import json
import re

import pytest
from sam_template import FUNCTIONS, ROOT, references, resources_of_type, sam_template, translate

from flowforge.local.cloudformation import Intrinsics, load_template, parameter_values
from flowforge.local.patterns import compile_filters
from functions.aws.connections import REPLAY_FILTER_PATTERN

HTTP_ROUTES = {
    ("post", "/graph/create"),
    ("get", "/graphs"),
    ("post", "/graph/validate"),
    ("get", "/graph/{graph_id}"),
    ("get", "/runs"),
    ("post", "/graph/run"),
    ("get", "/graph/state/{run_id}"),
    ("get", "/graph/state/{run_id}/values/{key}"),
    ("post", "/graph/run/{run_id}/cancel"),
    ("post", "/graph/run/{run_id}/redrive"),
    ("get", "/tools"),
    ("get", "/docs"),
    ("get", "/openapi.json"),
    ("get", "/console"),
    ("get", "/console/{proxy+}"),
    ("post", "/callbacks/{token}"),
    ("post", "/callbacks/{token}/heartbeat"),
}
#: A waiting run's callback routes: the token is their credential unless CallbackAuth=IAM.
CALLBACK_ROUTES = {("post", "/callbacks/{token}"), ("post", "/callbacks/{token}/heartbeat")}
# AWS managed policies SAM attaches by itself. Their statements use Resource "*" where AWS
# requires it: CloudWatch Logs streams are created at run time, dynamodb:ListStreams and
# the X-Ray actions have no resource-level permissions; the SQS and stream pollers of the
# event source mappings run with them.
MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole",
    "AWSLambdaSQSQueueExecutionRole",
    "AWSLambdaDynamoDBExecutionRole",
    "AWSXrayWriteOnlyAccess",
}


def http_operations(cfn: dict) -> dict[tuple[str, str], dict]:
    body = cfn["Resources"]["HttpApi"]["Properties"]["Body"]
    return {
        (method, path): operation
        for path, item in body["paths"].items()
        for method, operation in item.items()
        if method != "x-amazon-apigateway-any-method"
    }


def event_source_mapping(cfn: dict, function: str) -> dict:
    (mapping,) = [
        r["Properties"]
        for r in resources_of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
        if r["Properties"]["FunctionName"] == {"Ref": function}
    ]
    return mapping


def resolved(cfn_value, **parameters):
    """A template value with its parameter refs, conditions and mappings resolved."""
    template = load_template()
    return Intrinsics(template, parameter_values(template, parameters)).resolve(cfn_value)


# ------------------------------------------------------------------------------- auth


def test_every_http_route_requires_sigv4_by_default():
    # GIVEN the template with its default parameters (AuthMode=IAM)
    cfn = translate()

    # WHEN API Gateway imports the HTTP API's OpenAPI body
    operations = http_operations(cfn)

    # THEN it has exactly the API's routes, each one behind IAM (SigV4) auth but the
    # callback routes, whose token is their credential
    assert set(operations) == HTTP_ROUTES
    for route, operation in operations.items():
        if route in CALLBACK_ROUTES:
            assert operation.get("security") == [{"NONE": []}], route  # SAM's "no authorizer"
        else:
            assert operation.get("security") == [{"AWS_IAM": []}], route
    scheme = cfn["Resources"]["HttpApi"]["Properties"]["Body"]["components"]["securitySchemes"]
    assert scheme["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"


def test_callback_auth_iam_puts_the_callback_routes_behind_sigv4_too():
    operations = http_operations(translate(CallbackAuth="IAM"))

    for route in HTTP_ROUTES:
        assert operations[route].get("security") == [{"AWS_IAM": []}], route


def test_auth_mode_none_leaves_every_http_route_open():
    operations = http_operations(translate(AuthMode="NONE"))

    assert set(operations) == HTTP_ROUTES
    for route, operation in operations.items():
        assert not operation.get("security"), route


@pytest.mark.parametrize(("auth_mode", "expected"), [("IAM", "AWS_IAM"), ("NONE", "NONE")])
def test_websocket_connect_is_the_one_authorized_route(auth_mode, expected):
    cfn = translate(AuthMode=auth_mode)

    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in resources_of_type(cfn, "AWS::ApiGatewayV2::Route").values()
    }

    assert set(routes) == {"$connect", "$disconnect", "$default", "subscribe"}
    assert routes["$connect"]["AuthorizationType"] == expected
    # API Gateway authorizes a WebSocket once, at $connect; later routes cannot have auth.
    for key in ("$disconnect", "$default", "subscribe"):
        assert routes[key].get("AuthorizationType", "NONE") == "NONE"
    for route in routes.values():
        assert route["Target"] == {"Fn::Sub": "integrations/${WsIntegration}"}
    integration = cfn["Resources"]["WsIntegration"]["Properties"]
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert "${WsFunction.Arn}" in integration["IntegrationUri"]["Fn::Sub"]


def test_websocket_api_routes_on_the_action_field_and_is_invokable():
    cfn = translate()
    api = cfn["Resources"]["WebSocketApi"]["Properties"]
    stage = cfn["Resources"]["WebSocketStage"]
    permission = cfn["Resources"]["WsInvokePermission"]["Properties"]

    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.action"
    assert stage["Properties"]["AutoDeploy"] is True
    assert set(stage["DependsOn"]) == {
        "WsConnectRoute",
        "WsDisconnectRoute",
        "WsDefaultRoute",
        "WsSubscribeRoute",
    }
    assert stage["Properties"]["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert permission["FunctionName"] == {"Ref": "WsFunction"}


def test_websocket_access_logs_are_opt_in():
    off = translate()["Resources"]
    on = translate(WebSocketAccessLogs="true")["Resources"]

    assert "AccessLogSettings" not in off["WebSocketStage"]["Properties"]
    settings = on["WebSocketStage"]["Properties"]["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["WebSocketAccessLogGroup", "Arn"]}


def test_http_api_logs_its_access_and_throttles():
    cfn = translate()
    stages = resources_of_type(cfn, "AWS::ApiGatewayV2::Stage")
    (stage,) = [r for lid, r in stages.items() if lid != "WebSocketStage"]
    props = stage["Properties"]

    assert props["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogs", "Arn"]}
    assert int(resolved(props["DefaultRouteSettings"]["ThrottlingRateLimit"])) > 0
    assert cfn["Resources"]["HttpApiAccessLogs"]["Properties"]["RetentionInDays"] > 0


# ---------------------------------------------------------------------- step loop


def test_step_function_consumes_the_step_queue_with_partial_batch_failures():
    mapping = event_source_mapping(translate(), "StepFunction")

    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["StepQueue", "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 10
    assert mapping["MaximumBatchingWindowInSeconds"] == 0


def test_dlq_function_consumes_the_dead_letter_queue_with_partial_batch_failures():
    mapping = event_source_mapping(translate(), "DlqFunction")

    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["StepDeadLetterQueue", "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


@pytest.mark.parametrize(
    "timeout", [str(v) for v in load_template()["Parameters"]["StepTimeoutSeconds"]["AllowedValues"]]
)
def test_step_queue_hides_a_message_six_times_the_step_timeout(timeout):
    # GIVEN a deployment with this step timeout
    cfn = translate(StepTimeoutSeconds=timeout)

    # WHEN CloudFormation resolves the queue's and the function's settings
    visibility = resolved(
        cfn["Resources"]["StepQueue"]["Properties"]["VisibilityTimeout"],
        StepTimeoutSeconds=timeout,
    )
    function_timeout = resolved(
        cfn["Resources"]["StepFunction"]["Properties"]["Timeout"], StepTimeoutSeconds=timeout
    )

    # THEN the queue waits 6x the function timeout (AWS guidance) before redelivering
    assert int(function_timeout) == int(timeout)
    assert int(visibility) == 6 * int(timeout) > int(function_timeout)


def test_failing_step_messages_move_to_the_dead_letter_queue():
    resources = translate()["Resources"]
    redrive = resources["StepQueue"]["Properties"]["RedrivePolicy"]

    assert redrive == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["StepDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    assert resources["StepDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] == 14 * 86400


def test_sweeper_runs_every_minute():
    (rule,) = resources_of_type(translate(), "AWS::Events::Rule").values()

    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["SweeperFunction", "Arn"]}


def stream_record(event_name: str, **image: str) -> dict:
    return {
        "eventName": event_name,
        "dynamodb": {"NewImage": {k: {"S": v} for k, v in image.items()}},
    }


@pytest.mark.parametrize(
    ("record", "wakes"),
    [
        (stream_record("INSERT", kind="log", run_id="r1"), True),
        (stream_record("INSERT", kind="log", status="completed"), True),  # the slot ending a run
        (stream_record("INSERT", kind="finish", status="cancelled"), True),  # cancel, dead letter
        (stream_record("MODIFY", kind="run", status="completed"), False),  # a snapshot: the slot told
        (stream_record("MODIFY", kind="run", status="running"), False),  # every step: too many
        (stream_record("INSERT", kind="run", status="running"), False),
        (stream_record("INSERT", kind="sub", replay="1"), True),
        (stream_record("MODIFY", kind="sub", replay="1"), True),
        (stream_record("MODIFY", kind="sub"), False),
        (stream_record("INSERT", kind="graph"), False),
        (stream_record("INSERT", kind="conn"), False),
        (stream_record("REMOVE", kind="log"), False),  # TTL expiry
    ],
)
def test_broadcaster_wakes_only_for_the_records_it_acts_on(record, wakes):
    # GIVEN the broadcaster's event source mapping
    mapping = event_source_mapping(translate(), "BroadcastFunction")

    # WHEN the table stream carries this record
    woken = compile_filters(mapping["FilterCriteria"]["Filters"])(record)

    # THEN the function is invoked exactly for what functions/aws/connections.apply_change uses
    assert woken is wakes


def test_broadcaster_reads_the_stream_in_batches_reporting_failures():
    mapping = event_source_mapping(translate(), "BroadcastFunction")
    patterns = [json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"]]

    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["Table", "StreamArn"]}
    assert mapping["StartingPosition"] == "LATEST"
    assert mapping["BatchSize"] == 100
    assert mapping["ParallelizationFactor"] == 10  # a run's end is not held behind other runs'
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert json.loads(REPLAY_FILTER_PATTERN) in patterns
    (slots,) = [p for p in patterns if "log" in p["dynamodb"]["NewImage"]["kind"]["S"]]
    assert slots["dynamodb"]["NewImage"]["kind"]["S"] == ["log", "finish"]


# -------------------------------------------------------------------------- storage


def test_table_has_keys_index_stream_ttl_and_point_in_time_recovery():
    table = translate()["Resources"]["Table"]["Properties"]

    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert types == {"pk": "S", "sk": "S", "gsi1pk": "S", "gsi1sk": "S"}
    (gsi1,) = table["GlobalSecondaryIndexes"]
    assert gsi1["IndexName"] == "gsi1"
    assert [k["AttributeName"] for k in gsi1["KeySchema"]] == ["gsi1pk", "gsi1sk"]
    assert gsi1["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


# -------------------------------------------------------------------------- functions


def test_each_function_runs_its_handler_on_python313_arm64_with_its_own_role():
    cfn = translate()
    functions = resources_of_type(cfn, "AWS::Lambda::Function")

    assert set(functions) == set(FUNCTIONS)
    roles = set()
    for name, function in functions.items():
        props = function["Properties"]
        assert props["Handler"] == FUNCTIONS[name]
        assert props["Runtime"] == "python3.13"
        assert props["Architectures"] == ["arm64"]
        assert props["Role"] == {"Fn::GetAtt": [f"{name}Role", "Arn"]}
        roles.add(f"{name}Role")
    assert roles <= set(resources_of_type(cfn, "AWS::IAM::Role"))


def test_functions_are_built_by_the_makefile_from_the_repository_root():
    source = sam_template()["Resources"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (listed,) = re.findall(r"^LAMBDA_FUNCTIONS := (.+)$", makefile, re.MULTILINE)

    for name in FUNCTIONS:
        assert source[name]["Properties"]["CodeUri"] == "."
        assert source[name]["Metadata"]["BuildMethod"] == "makefile"
    assert set(listed.split()) == set(FUNCTIONS), "every function needs its build-<Name> target"


def test_function_requirements_leave_boto3_to_the_runtime():
    lines = (ROOT / "functions" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    names = {re.split(r"[<>=\[ ;]", ln.strip())[0].lower() for ln in lines if ln.strip()[:1].isalpha()}

    assert {"aws-lambda-powertools", "pydantic"} <= names
    assert not names & {"boto3", "botocore"}


def test_every_function_gets_the_table_queue_and_websocket_endpoint():
    for name, function in resources_of_type(translate(), "AWS::Lambda::Function").items():
        env = function["Properties"]["Environment"]["Variables"]

        assert env["FLOWFORGE_TABLE"] == {"Ref": "Table"}, name
        assert env["FLOWFORGE_STEP_QUEUE_URL"] == {"Ref": "StepQueue"}, name
        assert env["FLOWFORGE_STALL_AFTER_S"] == {"Ref": "StallAfterSeconds"}, name
        assert env["FLOWFORGE_MAX_STATE_BYTES"] == {"Ref": "MaxStateBytes"}, name
        assert env["POWERTOOLS_SERVICE_NAME"] == "flowforge", name
        assert env["FLOWFORGE_WS_ENDPOINT"] == {
            "Fn::Sub": "https://${WebSocketApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}"
        }, name


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_handler_module_exists(name):
    module, _, attribute = FUNCTIONS[name].rpartition(".")
    path = ROOT / (module.replace(".", "/") + ".py")

    assert path.is_file(), (
        f"template.yaml's {name} runs {FUNCTIONS[name]}, but {path.relative_to(ROOT)} "
        "does not exist (yet): the deployed function would fail to import"
    )
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    defined |= {
        t.id
        for n in tree.body
        if isinstance(n, ast.Assign | ast.AnnAssign)
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Name)
    }
    defined |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert attribute in defined, f"{path.relative_to(ROOT)} defines no {attribute!r}"


# ------------------------------------------------------------------------------- IAM


@pytest.mark.parametrize("tracing", ["PassThrough", "Active"])
def test_no_inline_statement_grants_every_action_or_every_resource(tracing):
    roles = resources_of_type(translate(TracingMode=tracing), "AWS::IAM::Role")

    for name, role in roles.items():
        props = role["Properties"]
        for arn in props.get("ManagedPolicyArns", []):
            policy = (arn if isinstance(arn, str) else arn["Fn::Sub"]).rsplit("/", 1)[-1]
            assert policy in MANAGED_POLICIES, f"{name}: unexpected managed policy {policy}"
        for policy in props.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                actions = [actions] if isinstance(actions, str) else actions
                resources = statement["Resource"]
                resources = resources if isinstance(resources, list) else [resources]
                assert not [a for a in actions if a == "*" or a.endswith(":*")], name
                assert "*" not in resources, f"{name}: {statement}"


def test_each_role_reaches_only_the_stack_resources_its_function_uses():
    roles = resources_of_type(translate(), "AWS::IAM::Role")
    expected = {
        # the state bucket: a run's large values (tests/template/test_state_bucket.py)
        # the timers' schedule group: a cancelled run's schedule is deleted
        "ApiFunctionRole": {"Table", "StepQueue", "CallbackKey", "StateBucket", "TimerScheduleGroup"},
        # and the models llm nodes call; the callback key makes callback nodes' tokens; a
        # long wait's schedule, made in the group and passed the timers' role
        "StepFunctionRole": {
            "Table",
            "StepQueue",
            "BedrockModelArns",
            "CallbackKey",
            "StateBucket",
            "TimerScheduleGroup",
            "TimerSchedulerRole",
        },
        "DlqFunctionRole": {"Table"},
        "SweeperFunctionRole": {"Table", "StepQueue"},
        "WsFunctionRole": {"Table", "WebSocketApi"},
        "BroadcastFunctionRole": {"Table", "WebSocketApi"},
        # what EventBridge Scheduler sends a timer's step message with
        "TimerSchedulerRole": {"StepQueue"},
    }

    for name, targets in expected.items():
        statements = [
            s
            for policy in roles[name]["Properties"].get("Policies", [])
            for s in policy["PolicyDocument"]["Statement"]
        ]
        touched = references([s["Resource"] for s in statements]) - {
            "AWS::Partition",
            "AWS::Region",
            "AWS::AccountId",
            "StageName",
        }
        assert touched == targets, name
    sweeper = str(roles["SweeperFunctionRole"]["Properties"]["Policies"])
    # it reads, rewrites a run item that lags its run and claims re-sends; it never deletes
    assert "Query" in sweeper and "UpdateItem" in sweeper and "DeleteItem" not in sweeper


def test_llm_nodes_may_invoke_only_the_configured_models():
    # GIVEN the template deployed with two model ARNs
    models = "arn:aws:bedrock:us-east-1::foundation-model/a.one-v1:0,arn:aws:bedrock:us-east-1::foundation-model/b.two-v1:0"
    roles = resources_of_type(translate(BedrockModelArns=models), "AWS::IAM::Role")

    # THEN only the step function may call Bedrock: InvokeModel (Converse) on those ARNs
    grants = {
        name: [
            s
            for policy in role["Properties"].get("Policies", [])
            for s in policy["PolicyDocument"]["Statement"]
            if "bedrock" in json.dumps(s["Action"])
        ]
        for name, role in roles.items()
    }
    assert {name for name, found in grants.items() if found} == {"StepFunctionRole"}
    (statement,) = grants["StepFunctionRole"]
    assert statement["Action"] == "bedrock:InvokeModel"
    # a list parameter: CloudFormation passes each ARN as one resource of the statement
    assert statement["Resource"] == {"Ref": "BedrockModelArns"}
    assert load_template()["Parameters"]["BedrockModelArns"]["Type"] == "CommaDelimitedList"


# --------------------------------------------------------------------- ops & outputs


def test_alarms_watch_the_dead_letter_queue_and_step_errors():
    resources = translate()["Resources"]
    dlq = resources["StepDeadLetterAlarm"]["Properties"]
    errors = resources["StepErrorsAlarm"]["Properties"]

    assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert dlq["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["StepDeadLetterQueue", "QueueName"]}}
    ]
    assert dlq["Threshold"] == 0 and dlq["ComparisonOperator"] == "GreaterThanThreshold"
    assert errors["MetricName"] == "Errors" and errors["Namespace"] == "AWS/Lambda"
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "StepFunction"}}]


def test_outputs_give_the_urls_table_and_queues():
    outputs = translate()["Outputs"]

    assert set(outputs) >= {
        "HttpApiUrl",
        "WebSocketUrl",
        "WebSocketManagementEndpoint",
        "TableName",
        "StepQueueUrl",
        "StepDeadLetterQueueUrl",
    }
    assert outputs["WebSocketUrl"]["Value"]["Fn::Sub"].startswith("wss://${WebSocketApi}.")
    assert outputs["HttpApiUrl"]["Value"]["Fn::Sub"].startswith("https://${HttpApi}.")


def test_flowforge_reads_the_template_as_samtranslator_does():
    assert load_template() == sam_template()


# ------------------------------------------------------------------ denial of service


def test_each_http_route_is_throttled_and_the_routes_that_start_work_tighter():
    stage = resources_of_type(
        translate(RunStartRateLimit="3", RunStartBurstLimit="6"), "AWS::ApiGatewayV2::Stage"
    )
    settings = next(s["Properties"] for s in stage.values() if "RouteSettings" in s["Properties"])

    def limits(value, **parameters):
        return {k: int(v) for k, v in resolved(value, **parameters).items()}

    assert limits(settings["DefaultRouteSettings"]) == {
        "ThrottlingBurstLimit": 200,
        "ThrottlingRateLimit": 100,
    }
    for route in ("POST /graph/run", "POST /graph/create", "POST /graph/run/{run_id}/redrive"):
        assert limits(settings["RouteSettings"][route], RunStartRateLimit="3", RunStartBurstLimit="6") == {
            "ThrottlingBurstLimit": 6,
            "ThrottlingRateLimit": 3,
        }
    for route in ("POST /callbacks/{token}", "POST /callbacks/{token}/heartbeat"):
        assert limits(settings["RouteSettings"][route]) == {
            "ThrottlingBurstLimit": 20,
            "ThrottlingRateLimit": 10,
        }


@pytest.mark.parametrize(("api", "ws"), [("20", "10"), ("0", "0")])
def test_the_api_and_websocket_functions_cannot_take_the_step_functions_concurrency(api, ws):
    functions = resources_of_type(
        translate(ApiReservedConcurrency=api, WsReservedConcurrency=ws), "AWS::Lambda::Function"
    )
    reserved = {
        name: resolved(f["Properties"].get("ReservedConcurrentExecutions"), ApiReservedConcurrency=api,
                       WsReservedConcurrency=ws)
        for name, f in functions.items()
    }  # fmt: skip
    reserved = {name: int(value) if value is not None else None for name, value in reserved.items()}

    expected_api, expected_ws = (int(api) or None), (int(ws) or None)
    assert reserved == {
        "ApiFunction": expected_api,
        "WsFunction": expected_ws,
        "StepFunction": None,
        "DlqFunction": None,
        "SweeperFunction": None,
        "BroadcastFunction": None,
    }
