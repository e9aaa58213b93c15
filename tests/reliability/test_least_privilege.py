"""Least privilege and auth, read from the template ``sam deploy`` would create; and logs
that never carry a run's state.

The IAM checks accept nothing by default: every inline statement must allow named
actions (no ``*`` anywhere in an action) on the stack's own table, index, queue or
WebSocket API — any other resource fails, including wildcard ARNs that name no stack
resource. The managed policies SAM attaches itself are the one documented exception
(their ``Resource: "*"`` is required by CloudWatch Logs, X-Ray and the event source
pollers). Every function has a role of its own, assumable by Lambda only; the one other
role is the timers', assumable by EventBridge Scheduler only, for this account's
schedules of the stack's group, and allowed to send to the step queue only; a role is
passed to Scheduler only. Every Lambda permission names its caller's ARN. With ``AuthMode=IAM`` every HTTP route (the catch-all
included) and the WebSocket ``$connect`` require SigV4.
"""

from __future__ import annotations

import fnmatch
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from engine import default_registry
from flowforge.local.timers import ScheduleFirer
from functions.api.app import handler as api_handler
from functions.aws import dynamodb_codec as codec
from functions.dlq import app as dlq_app
from functions.step import app as step_app
from functions.sweeper import app as sweeper_app
from tests.functional.pump import LambdaContext, QueuePump, load_event
from tests.functional.test_websocket import counting
from tests.reliability.api_client import call
from tests.template.sam_template import FUNCTIONS, resources_of_type, translate

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

#: Managed policies SAM attaches by itself (see tests/template/test_template_translated.py).
MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole",
    "AWSLambdaSQSQueueExecutionRole",
    "AWSLambdaDynamoDBExecutionRole",
    "AWSXrayWriteOnlyAccess",
}
TIMER_SCHEDULES = (
    "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/${TimerScheduleGroup}/*"
)
TIMER_GROUP = (
    "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule-group/${TimerScheduleGroup}"
)
#: The one role that is no function's: what EventBridge Scheduler assumes to deliver a timer.
TIMER_ROLE = "TimerSchedulerRole"
#: The conditions it may be assumed under: this account's schedules of the stack's group.
TIMER_TRUST = {
    "StringEquals": {
        "aws:SourceAccount": {"Ref": "AWS::AccountId"},
        "aws:SourceArn": {"Fn::Sub": TIMER_GROUP},
    }
}
#: The resources of this stack a statement may name, exactly as the template writes them.
OWN_RESOURCES = [
    {"Fn::GetAtt": ["Table", "Arn"]},
    {"Fn::Sub": "${Table.Arn}/index/gsi1"},
    {"Fn::GetAtt": ["StepQueue", "Arn"]},
    {"Fn::GetAtt": ["StepDeadLetterQueue", "Arn"]},
    # @connections of this API's stage only: any method (POST, GET, DELETE) on any connection
    {"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}/${StageName}/*/@connections/*"},
    # the models llm nodes may call: the deploy parameter's ARNs, nothing wider
    {"Ref": "BedrockModelArns"},
    # the callback key (a Secrets Manager secret of this stack; Ref is its ARN)
    {"Ref": "CallbackKey"},
    # the state bucket's run values (and, to tell a missing object from a denied one, its listing)
    {"Fn::Sub": "${StateBucket.Arn}/runs/*"},
    {"Fn::GetAtt": ["StateBucket", "Arn"]},
    # the timers' one-time schedules: the stack's schedule group's only
    {"Fn::Sub": TIMER_SCHEDULES},
    # the role those schedules send their step message with (passed to Scheduler only)
    {"Fn::GetAtt": ["TimerSchedulerRole", "Arn"]},
]  # fmt: skip
PARAMETER_SETS = [
    {},
    {"AuthMode": "IAM", "TracingMode": "Active"},
    {"AuthMode": "NONE"},
    {"WebSocketAccessLogs": "true"},
    {"CallbackAuth": "IAM"},
]
PARAMETER_IDS = ["defaults", "iam-tracing", "auth-off", "ws-access-logs", "callback-iam"]


@pytest.fixture(autouse=True)
def offline_aws(monkeypatch):
    """Fake credentials and a region: SAM's translator asks boto3 for the region."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_problems(cfn: dict[str, Any]) -> list[str]:
    """Every grant wider than the stack's own resources, as readable lines."""
    problems = []
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::SQS::QueuePolicy"):
        for name in resources_of_type(cfn, kind):
            problems.append(f"{name}: a {kind} outside the function roles")
    for name, role in resources_of_type(cfn, "AWS::IAM::Role").items():
        props = role["Properties"]
        for arn in props.get("ManagedPolicyArns", []):
            policy = (arn if isinstance(arn, str) else json.dumps(arn)).rsplit("/", 1)[-1].strip('"}')
            if policy not in MANAGED_POLICIES:
                problems.append(f"{name}: managed policy {policy}")
        for statement in props["AssumeRolePolicyDocument"]["Statement"]:
            if name == TIMER_ROLE:
                if statement.get("Principal") != {"Service": "scheduler.amazonaws.com"}:
                    problems.append(f"{name}: assumable by {statement.get('Principal')}")
                if statement.get("Condition") != TIMER_TRUST:
                    problems.append(f"{name}: assumable under {statement.get('Condition')}")
            elif statement.get("Principal") != {"Service": ["lambda.amazonaws.com"]}:
                problems.append(f"{name}: assumable by {statement.get('Principal')}")
        for policy in props.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if (
                    statement.get("Effect") != "Allow"
                    or "NotAction" in statement
                    or "NotResource" in statement
                ):
                    problems.append(f"{name}: unexpected statement shape {statement}")
                for action in as_list(statement.get("Action", [])):
                    if "*" in action or ":" not in action:
                        problems.append(f"{name}: wildcard action {action!r}")
                    if action == "iam:PassRole" and statement.get("Condition") != {
                        "StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}
                    }:
                        problems.append(f"{name}: iam:PassRole to any service")
                if name == TIMER_ROLE and statement.get("Action") != "sqs:SendMessage":
                    problems.append(f"{name}: may {statement.get('Action')}")
                for resource in as_list(statement.get("Resource", [])):
                    if resource not in OWN_RESOURCES:
                        problems.append(f"{name}: resource {json.dumps(resource)} is not the stack's own")
    return problems


@pytest.mark.parametrize("parameters", PARAMETER_SETS, ids=PARAMETER_IDS)
def test_no_grant_reaches_past_the_stacks_own_resources(parameters):
    assert policy_problems(translate(**parameters)) == []


def test_the_check_catches_wide_grants():
    # GIVEN the translated stack with three widened statements
    cfn = translate()
    statements = cfn["Resources"]["StepFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    statements.append(
        {"Effect": "Allow", "Action": "dynamodb:*", "Resource": {"Fn::GetAtt": ["Table", "Arn"]}}
    )
    statements.append({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "arn:aws:sqs:*:*:*"})
    statements.append({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})
    # ... a role passed to any service, and the timers' role widened and opened
    statements.append(
        {
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": {"Fn::GetAtt": ["TimerSchedulerRole", "Arn"]},
        }
    )
    timers = cfn["Resources"]["TimerSchedulerRole"]["Properties"]
    timers["Policies"][0]["PolicyDocument"]["Statement"][0]["Action"] = "sqs:DeleteMessage"
    timers["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"].pop("aws:SourceArn")

    # WHEN / THEN each one is reported
    assert len(policy_problems(cfn)) == 6


@pytest.mark.parametrize("parameters", PARAMETER_SETS, ids=PARAMETER_IDS)
def test_every_function_has_a_role_of_its_own(parameters):
    cfn = translate(**parameters)
    functions = resources_of_type(cfn, "AWS::Lambda::Function")

    roles = [f["Properties"]["Role"] for f in functions.values()]

    assert set(functions) == set(FUNCTIONS)
    assert all(set(role) == {"Fn::GetAtt"} and role["Fn::GetAtt"][1] == "Arn" for role in roles)
    assert len({json.dumps(role) for role in roles}) == len(functions)
    role_names = {role["Fn::GetAtt"][0] for role in roles}
    assert role_names | {TIMER_ROLE} == set(resources_of_type(cfn, "AWS::IAM::Role"))


def test_every_lambda_permission_names_its_caller():
    for name, permission in resources_of_type(translate(), "AWS::Lambda::Permission").items():
        props = permission["Properties"]
        source = json.dumps(props.get("SourceArn"))
        assert props["Principal"] in ("apigateway.amazonaws.com", "events.amazonaws.com"), name
        assert (
            "${__ApiId__}" in source or "${WebSocketApi}" in source or "SweeperFunctionEveryMinute" in source
        ), name


def http_operations(cfn: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every route API Gateway imports, the ANY catch-all included."""
    body = cfn["Resources"]["HttpApi"]["Properties"]["Body"]
    return {(method, path): op for path, item in body["paths"].items() for method, op in item.items()}


#: Routes whose credential is the callback token in their path, unless CallbackAuth=IAM.
CALLBACK_ROUTES = [("post", "/callbacks/{token}"), ("post", "/callbacks/{token}/heartbeat")]


@pytest.mark.parametrize(
    "parameters",
    [
        {},
        {"AuthMode": "IAM"},
        {"AuthMode": "IAM", "TracingMode": "Active"},
        {"AuthMode": "IAM", "CallbackAuth": "IAM"},
    ],
)
def test_with_iam_auth_every_route_and_connect_require_sigv4(parameters):
    cfn = translate(**parameters)

    operations = http_operations(cfn)
    ws_routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in resources_of_type(cfn, "AWS::ApiGatewayV2::Route").values()
    }

    assert ("x-amazon-apigateway-any-method", "/{proxy+}") in operations
    unauthenticated = [route for route, op in operations.items() if op.get("security") != [{"AWS_IAM": []}]]
    # the callback routes only, unless CallbackAuth=IAM: their token is the credential
    assert sorted(unauthenticated) == ([] if parameters.get("CallbackAuth") == "IAM" else CALLBACK_ROUTES)
    assert ws_routes["$connect"]["AuthorizationType"] == "AWS_IAM"
    # API Gateway authorizes a WebSocket once, at $connect; no authorizer can be bypassed
    assert resources_of_type(cfn, "AWS::ApiGatewayV2::Authorizer") == {}


# -- logs ---------------------------------------------------------------------------------
SECRET = "s3cr3t-7f1c9a2e-do-not-log"
#: The functions' Powertools loggers (each module above creates its own at import).
LOGGERS = ("flowforge-api", "flowforge-step", "flowforge-sweeper", "flowforge-dlq")


@pytest.fixture
def lambda_logs() -> Iterator[io.StringIO]:
    """Everything the functions' loggers print — what CloudWatch Logs would receive."""
    buffer = io.StringIO()
    swapped = [
        (handler, handler.setStream(buffer))
        for name in LOGGERS
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    assert len(swapped) >= 3, "the functions' loggers were not found"
    yield buffer
    for handler, stream in swapped:
        handler.setStream(stream)


def test_logs_never_carry_the_states_values_at_info(service, stack, aws, clock, lambda_logs):
    # GIVEN a graph that copies a secret around, fails on it, catches and completes
    graph = {
        "name": "secretive",
        "start": "echo",
        "nodes": {
            "echo": {"fn": "rel_secret_echo", "next": "fail"},
            "fail": {"fn": "rel_secret_echo", "params": {"fail": True}, "catch": [{"on": ["*"], "next": "done"}]},
            "done": {"fn": "rel_noop"},
        },
    }  # fmt: skip
    pump = QueuePump(aws.client("sqs"), stack["queue_url"], clock, step_app.handler)

    # WHEN it runs through the API, the step function, the sweeper, then is read back
    graph_id = call(api_handler, "POST", "/graph/create", json_body=graph).json["graph_id"]
    started = call(
        api_handler,
        "POST",
        "/graph/run",
        json_body={"graph_id": graph_id, "state": {"secret": SECRET}, "background": True},
    )
    pump.drain()
    sweeper_app.handler(
        load_event("sweeper_schedule"), LambdaContext(function_name="flowforge-SweeperFunction")
    )
    state = call(api_handler, "GET", f"/graph/state/{started.json['run_id']}")
    refused = call(
        api_handler,
        "POST",
        "/graph/run",
        json_body={"graph_id": graph_id, "state": {"secret": SECRET, "x": {}}, "wait_s": -1},
    )
    logged = lambda_logs.getvalue()

    # THEN the run did carry the secret, and the logs (INFO, with correlation keys) never did
    assert state.json["status"] == "completed" and SECRET in state.text and refused.status == 400
    lines = [json.loads(line) for line in logged.splitlines()]
    assert "INFO" in {line["level"] for line in lines} and any(line.get("run_id") for line in lines)
    assert {line["service"] for line in lines} >= {"flowforge-api", "flowforge-step"}
    assert SECRET not in logged


def test_logging_the_event_is_opt_in_and_would_show_it(service, monkeypatch, lambda_logs):
    # GIVEN the API handler wrapped again with POWERTOOLS_LOGGER_LOG_EVENT=true (the opt-in)
    from functions.api import app as api_app

    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    verbose = api_app.logger.inject_lambda_context(lambda event, context: api_app.app.resolve(event, context))
    graph_id = service.create_graph({"start": "a", "nodes": {"a": {"fn": "rel_noop"}}}).graph_id

    # WHEN a run is started with a secret
    call(
        verbose,
        "POST",
        "/graph/run",
        json_body={"graph_id": graph_id, "state": {"secret": SECRET}, "background": True},
    )

    # THEN the event (and so the secret) is in the log: the check above can see one
    assert SECRET in lambda_logs.getvalue()


# -- every call each function makes is one its role allows ------------------------------------
def allowed_actions(cfn: dict[str, Any], function: str) -> set[str]:
    role = cfn["Resources"][f"{function}Role"]["Properties"]
    return {
        action
        for policy in role.get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
        for action in as_list(statement.get("Action", []))
    }


@default_registry.tool("rel_big")
async def rel_big(state, ctx):
    """Reads the large ``big`` and writes another large value."""
    return {"n": len(state["big"]), "more": "m" * 50_000}


#: Operations whose IAM action has another name.
IAM_ACTIONS = {
    "s3:HeadObject": "s3:GetObject",
    "s3:CopyObject": "s3:PutObject",  # a value written again in place: and s3:GetObject on its source
    "sqs:SendMessageBatch": "sqs:SendMessage",  # a fan-out's item messages, ten to a request
}


class CallsByFunction:
    """The AWS operations made while each function's handler ran (botocore hooks)."""

    def __init__(self) -> None:
        self.acting: str | None = None
        self.made: dict[str, set[str]] = {}

    def watch(self, client: Any) -> None:
        client.meta.events.register("before-call.*.*", self._record)

    def _record(self, model, **_):
        if self.acting is not None:
            action = f"{model.service_model.signing_name}:{model.name}"
            self.made.setdefault(self.acting, set()).add(IAM_ACTIONS.get(action, action))

    def run(self, function: str, handler, *args, **kwargs):
        self.acting = function
        try:
            return handler(*args, **kwargs)
        finally:
            self.acting = None


def test_every_call_a_function_makes_is_allowed_by_its_role(service, stack, aws, clock):
    # GIVEN every client of the service the API, step, DLQ and sweeper functions share
    calls = CallsByFunction()
    calls.watch(service.store.client)
    calls.watch(service.queue.client)
    calls.watch(service.blobs.store.client)
    calls.watch(service.timers.client)
    pump = QueuePump(aws.client("sqs"), stack["queue_url"], clock, step_app.handler)
    graph = {"start": "a", "nodes": {"a": {"fn": "rel_noop", "next": "b"}, "b": {"fn": "rel_noop"}}}

    # WHEN a graph is stored, runs start, run, are read, one is cancelled and one dead-lettered
    api = lambda *a, **kw: calls.run("ApiFunction", call, api_handler, *a, **kw)  # noqa: E731
    graph_id = api("POST", "/graph/create", json_body=graph).json["graph_id"]
    api("GET", "/graphs")
    api("GET", f"/graph/{graph_id}")
    runs = [
        api("POST", "/graph/run", json_body={"graph_id": graph_id, "state": {}, "background": True}).json[
            "run_id"
        ]
        for _ in range(3)
    ]
    assert api("POST", f"/graph/run/{runs[0]}/cancel").status == 200
    dead = load_event("sqs_dlq_message")
    dead["Records"][0]["body"] = json.dumps({"run_id": runs[1], "step": 0})
    calls.run("DlqFunction", dlq_app.handler, dead, LambdaContext(function_name="flowforge-DlqFunction"))
    # ... a run through a map and a parallel node, read while its map runs
    fanouts = {
        "start": "m",
        "nodes": {
            "m": {
                "map": {"items": "xs", "fn": "rel_item", "results": "ys", "max_concurrency": 1},
                "next": "p",
            },
            "p": {"parallel": ["p1", "p2"]},
            "p1": {"fn": "rel_branch", "params": {"key": "p"}},
            "p2": {"fn": "rel_branch", "params": {"key": "q"}},
        },
    }
    fanout_graph = api("POST", "/graph/create", json_body=fanouts).json["graph_id"]
    fanout_run = api(
        "POST",
        "/graph/run",
        json_body={"graph_id": fanout_graph, "state": {"xs": [1, 2]}, "background": True},
    ).json["run_id"]
    # ... a run with large values (offloaded at its start and by its step, which reads one)
    big_graph = api("POST", "/graph/create", json_body={"start": "w", "nodes": {"w": {"fn": "rel_big"}}}).json
    large = api(
        "POST",
        "/graph/run",
        json_body={"graph_id": big_graph["graph_id"], "state": {"big": "b" * 2_000_000}, "background": True},
    ).json["run_id"]
    service.blobs = type(service.blobs)(service.blobs.store)  # the step function's own container
    calls.acting = "StepFunction"
    pump.drain()
    calls.acting = None
    api("GET", f"/graph/state/{runs[2]}")
    assert api("GET", f"/graph/state/{large}/values/big").status == 303  # presigned, after a HEAD
    service.blobs = type(service.blobs)(service.blobs.store, offload_bytes=1024)  # nothing cached
    assert api("GET", f"/graph/state/{large}/values/more").status == 200
    assert api("GET", f"/graph/state/{large}/values/n").json == 2_000_000
    assert api("GET", f"/graph/state/{fanout_run}").json["state"]["ys"] == [10, 21]
    # ... a failed map redriven (its failed item alone)
    failing = {
        "start": "m",
        "nodes": {
            "m": {
                "map": {"items": "xs", "fn": "rel_item", "results": "ys"},
                "params": {"fail_every": 2, "fail_times": 1},
            }
        },
    }
    failing_graph = api("POST", "/graph/create", json_body=failing).json["graph_id"]
    body = {"graph_id": failing_graph, "state": {"xs": [1, 2, 3]}, "background": True}
    failing_run = api("POST", "/graph/run", json_body=body).json["run_id"]
    calls.acting = "StepFunction"
    pump.drain()
    calls.acting = None
    assert api("POST", f"/graph/run/{failing_run}/redrive", json_body={"state_patch": {"n": 1}}).status == 200
    calls.acting = "StepFunction"
    pump.drain()
    calls.acting = None
    assert api("GET", f"/graph/state/{failing_run}").json["redrive_count"] == 1
    # ... a run that waits for a callback, answered; one that waits two days, woken
    waits = {
        "start": "review",
        "nodes": {
            "review": {"fn": "rel_noop", "callback": {"timeout_s": 3600, "result": "r"}, "next": "pause"},
            "pause": {"wait": {"seconds": 172800}},
        },
    }
    waits_graph = api("POST", "/graph/create", json_body=waits).json["graph_id"]
    body = {"graph_id": waits_graph, "state": {}, "background": True}
    waiting_run = api("POST", "/graph/run", json_body=body).json["run_id"]
    calls.acting = "StepFunction"
    pump.drain()
    calls.acting = None
    token = service.waits.signer.token(waiting_run, 0)
    assert api("POST", f"/callbacks/{token}", json_body={"status": "approved", "output": 1}).status == 200
    calls.acting = "StepFunction"
    pump.drain()
    calls.acting = None
    assert api("GET", f"/graph/state/{waiting_run}").json["waiting"]["node"] == "pause"
    # ... (its schedule fires: Scheduler's own delivery, with the timers' role)
    clock.advance(172800)
    ScheduleFirer(aws.client("scheduler"), aws.client("sqs"), stack["schedule_group"]).fire_due(clock())
    calls.acting = "StepFunction"
    pump.drain()
    calls.acting = None
    assert api("GET", f"/graph/state/{waiting_run}").json["status"] == "completed"
    # ... and one that waits a day is cancelled: its schedule is deleted
    pausing = api(
        "POST", "/graph/create", json_body={"start": "p", "nodes": {"p": {"wait": {"seconds": 86400}}}}
    )
    body = {"graph_id": pausing.json["graph_id"], "state": {}, "background": True}
    paused = api("POST", "/graph/run", json_body=body).json["run_id"]
    calls.acting = "StepFunction"
    pump.drain()
    calls.acting = None
    assert api("POST", f"/graph/run/{paused}/cancel").json["status"] == "cancelled"
    # ... and the sweeper finds a run whose snapshot lags its end, and mends it
    lagging = aws.client("dynamodb").get_item(TableName=stack["table"], Key=codec.run_key(runs[2]))["Item"]
    lagging.update(
        status={"S": "running"}, applied={"N": "0"}, gsi1pk={"S": "RUNNING#0"}, gsi1sk={"S": "0" * 15}
    )
    aws.client("dynamodb").put_item(TableName=stack["table"], Item=lagging)
    clock.advance(service.stall_after_s + 60)
    sweeper = LambdaContext(function_name="flowforge-SweeperFunction")
    calls.run("SweeperFunction", sweeper_app.handler, load_event("sweeper_schedule"), sweeper)

    # THEN each function made only calls its own role allows
    cfn = translate()
    assert set(calls.made) == {"ApiFunction", "DlqFunction", "StepFunction", "SweeperFunction"}
    assert {"dynamodb:PutItem", "dynamodb:Query"} <= calls.made["SweeperFunction"]
    assert "dynamodb:UpdateItem" in calls.made["StepFunction"]  # the fan-out's claims
    assert {"s3:PutObject", "s3:GetObject"} <= calls.made["ApiFunction"]  # offloads at start, values
    assert {"s3:PutObject", "s3:GetObject"} <= calls.made["StepFunction"]
    assert "scheduler:CreateSchedule" in calls.made["StepFunction"]  # the long waits' timers
    assert "iam:PassRole" in allowed_actions(cfn, "StepFunction")  # ... with the timers' role
    assert "scheduler:DeleteSchedule" in calls.made["ApiFunction"]  # a cancelled run's timer
    denied = {f: sorted(made - allowed_actions(cfn, f)) for f, made in calls.made.items()}
    assert denied == {f: [] for f in calls.made}


# -- the WebSocket and broadcast functions: their calls, and the partitions they touch ------
def leading_key(params: dict[str, Any]) -> str | None:
    """The partition key value a DynamoDB call names (what ``dynamodb:LeadingKeys`` sees)."""
    for field in ("Key", "Item"):
        if field in params:
            return params[field]["pk"]["S"]
    value = params.get("ExpressionAttributeValues", {}).get(":pk")
    return value["S"] if value else None


def role_allows(cfn: dict[str, Any], function: str, action: str, key: str | None) -> bool:
    """Whether a statement of the function's role allows ``action`` on partition ``key``
    (conditions: ``ForAllValues:StringLike`` on ``dynamodb:LeadingKeys``, the one used)."""
    role = cfn["Resources"][f"{function}Role"]["Properties"]
    for policy in role.get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if action not in as_list(statement.get("Action", [])):
                continue
            condition = statement.get("Condition")
            if condition is None:
                return True
            ((operator, tests),) = condition.items()
            assert operator == "ForAllValues:StringLike" and set(tests) == {"dynamodb:LeadingKeys"}
            if key is not None and any(fnmatch.fnmatchcase(key, p) for p in tests["dynamodb:LeadingKeys"]):
                return True
    return False


class KeyedCalls(CallsByFunction):
    """:class:`CallsByFunction`, with the partition each DynamoDB call names."""

    def __init__(self) -> None:
        super().__init__()
        self.keyed: dict[str, set[tuple[str, str | None]]] = {}

    def watch(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.*.*", self._record_keyed)

    def _record_keyed(self, model, params, **_):
        if self.acting is not None:
            action = f"{model.service_model.signing_name}:{model.name}"
            key = leading_key(params) if action.startswith("dynamodb:") else None
            self.keyed.setdefault(self.acting, set()).add((action, key))


def test_the_websocket_and_broadcast_functions_touch_only_what_their_roles_allow(ws):
    # GIVEN the table client both functions use, and a run followed from two connections
    calls = KeyedCalls()
    calls.watch(ws.dynamodb)
    run_id = ws.start(counting(3))
    socket = lambda *a, **kw: calls.run("WsFunction", *a, **kw)  # noqa: E731
    broadcast = lambda: calls.run("BroadcastFunction", ws.feed.deliver)  # noqa: E731

    # WHEN clients connect, subscribe, follow the run live and after it ended, unsubscribe
    # and disconnect (each handler's calls recorded under its own function)
    socket(ws.connect, "c1")
    socket(ws.subscribe, "c1", run_id)
    socket(ws.connect, "c2", run_id=run_id)
    broadcast()
    while ws.step(feed=False):
        broadcast()
    socket(ws.connect, "c3")
    socket(ws.subscribe, "c3", run_id)
    socket(ws.send, "c3", {"action": "unsubscribe", "run_id": run_id}, route="$default")
    socket(ws.disconnect, "c3")
    socket(ws.send, "c1", {"action": "follow"})

    # THEN both ran, and every call each made is one its role allows on that partition
    cfn = translate()
    assert {"WsFunction", "BroadcastFunction"} <= set(calls.keyed)
    assert ws.api.dones("c1") and ws.api.dones("c2")
    writes = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
    for function in ("WsFunction", "BroadcastFunction"):
        made = calls.keyed[function]
        assert {key.split("#")[0] + "#" for action, key in made if action in writes} <= {"CONN#", "SUB#"}
        denied = sorted((a, k) for a, k in made if not role_allows(cfn, function, a, k))
        assert denied == [], function


def test_the_websocket_and_broadcast_functions_may_not_write_runs_or_graphs():
    cfn = translate()
    for function in ("WsFunction", "BroadcastFunction"):
        for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"):
            assert not role_allows(cfn, function, action, "RUN#r1"), (function, action)
            assert not role_allows(cfn, function, action, "GRAPH#g1"), (function, action)
        assert not role_allows(cfn, function, "dynamodb:Query", "GRAPH#g1")
        assert not role_allows(cfn, function, "dynamodb:BatchGetItem", "RUN#r1")
