"""The stack's DynamoDB table, SQS queues, S3 bucket and Scheduler group, created from
template.yaml without CloudFormation.

Functional tests and the local stack call :func:`create_resources` so the table and queues
they use have exactly the keys, indexes, stream, TTL and queue settings ``sam deploy``
creates: the settings live in one place, template.yaml, and cannot drift. It talks to
whatever endpoint the clients point at (moto in-process under ``mock_aws``, a moto
server, or AWS itself).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from flowforge.local.cloudformation import (
    DEFAULT_TEMPLATE,
    NO_VALUE,
    Intrinsics,
    TemplateError,
    Unresolvable,
    load_template,
    parameter_values,
    references,
)

# The template helpers are re-exported: the local stack and the tests import them from here.
__all__ = [
    "DEFAULT_TEMPLATE",
    "Intrinsics",
    "TemplateError",
    "Unresolvable",
    "create_resources",
    "load_template",
    "parameter_values",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")

# Every Properties key of the template's tables and queues must be translated or listed
# here as deliberately irrelevant locally; anything else is an error, never a silent drift.
_TABLE_AS_IS = frozenset(
    {
        "AttributeDefinitions",
        "KeySchema",
        "BillingMode",
        "ProvisionedThroughput",
        "GlobalSecondaryIndexes",
        "LocalSecondaryIndexes",
    }
)
_TABLE_IGNORED = frozenset(
    {"Tags", "DeletionProtectionEnabled", "ContributorInsightsSpecification", "TableClass"}
)
_QUEUE_ATTRIBUTES = frozenset(
    {
        "VisibilityTimeout",
        "MessageRetentionPeriod",
        "DelaySeconds",
        "MaximumMessageSize",
        "ReceiveMessageWaitTimeSeconds",
        "SqsManagedSseEnabled",
        "KmsMasterKeyId",
        "KmsDataKeyReusePeriodSeconds",
        "FifoQueue",
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "FifoThroughputLimit",
    }
)
_QUEUE_JSON_ATTRIBUTES = frozenset({"RedrivePolicy", "RedriveAllowPolicy"})
#: Bucket properties with no local effect: moto serves anyone, over HTTP, and expires
#: nothing by age (the local stack drops a run's values with its run instead: blobs.py).
_BUCKET_IGNORED = frozenset({"OwnershipControls", "Tags", "LifecycleConfiguration"})


# ------------------------------------------------------------------------- creating


def create_resources(
    session_or_clients: Any,
    template_path: str | Path = DEFAULT_TEMPLATE,
    *,
    parameters: Mapping[str, Any] | None = None,
    stack_name: str = "flowforge",
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Create (or adopt, if they exist) the template's DynamoDB tables, SQS queues and S3
    buckets.

    ``session_or_clients`` is a boto3 session (or the boto3 module), whose clients are
    built with ``endpoint_url``, or a mapping ``{"dynamodb": client, "sqs": client, "s3":
    client}``. Resources are named ``<stack_name>-<LogicalId>`` (a bucket in lowercase).
    Returns ``table``, ``stream_arn``, ``queue_url``, ``queue_arn``, ``dlq_url``,
    ``dlq_arn``, ``bucket`` (the state bucket), ``schedule_group`` (the timers' EventBridge
    Scheduler group, created when a session or a ``"scheduler"`` client is given), ``names`` (logical id →
    physical name or URL) and ``env``: the functions' environment variables (Globals) that
    resolve from these resources and the parameters. ``FLOWFORGE_WS_ENDPOINT`` needs the
    WebSocket API, so it is left to the caller.
    """
    if not _NAME.match(stack_name):
        raise TemplateError(f"stack name {stack_name!r} must match {_NAME.pattern}")
    template = load_template(template_path)
    dynamodb, sqs, s3 = _clients(session_or_clients, endpoint_url)
    scheduler = _scheduler_client(session_or_clients, endpoint_url)
    pseudo = {
        "AWS::Region": dynamodb.meta.region_name,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackName": stack_name,
    }
    intrinsics = Intrinsics(template, parameter_values(template, parameters), pseudo)
    resources = template.get("Resources", {})
    queues = [lid for lid, r in resources.items() if r.get("Type") == "AWS::SQS::Queue"]
    tables = [lid for lid, r in resources.items() if r.get("Type") == "AWS::DynamoDB::Table"]
    buckets = [lid for lid, r in resources.items() if r.get("Type") == "AWS::S3::Bucket"]
    for logical_id in _dependency_order(queues, resources):
        _create_queue(sqs, intrinsics, logical_id, resources[logical_id], stack_name)
    for logical_id in tables:
        _create_table(dynamodb, intrinsics, logical_id, resources[logical_id], stack_name)
    for logical_id in buckets:
        _create_bucket(s3, intrinsics, logical_id, resources[logical_id], stack_name)
    for logical_id, resource in resources.items():
        if resource.get("Type") == "AWS::Scheduler::ScheduleGroup":
            _create_schedule_group(scheduler, intrinsics, logical_id, resource, stack_name)
        elif resource.get("Type") == "AWS::IAM::Role":
            # Not created: moto's Scheduler never assumes a role. Its ARN is what the
            # functions pass, as on AWS.
            name = f"{stack_name}-{logical_id}"
            account = intrinsics.values.get("AWS::AccountId", "123456789012")
            intrinsics.refs[logical_id] = name
            intrinsics.attrs[(logical_id, "Arn")] = f"arn:aws:iam::{account}:role/{name}"
    try:
        return {
            "table": intrinsics.refs["Table"],
            "stream_arn": intrinsics.attrs[("Table", "StreamArn")],
            "queue_url": intrinsics.refs["StepQueue"],
            "queue_arn": intrinsics.attrs[("StepQueue", "Arn")],
            "dlq_url": intrinsics.refs["StepDeadLetterQueue"],
            "dlq_arn": intrinsics.attrs[("StepDeadLetterQueue", "Arn")],
            "bucket": intrinsics.refs["StateBucket"],
            "schedule_group": intrinsics.refs["TimerScheduleGroup"],
            "names": {lid: intrinsics.refs[lid] for lid in queues + tables + buckets},
            "env": _environment(template, intrinsics),
        }
    except KeyError as exc:
        raise TemplateError(f"template.yaml has no resource {exc.args[0]!r}") from None


def _clients(session_or_clients: Any, endpoint_url: str | None) -> tuple[Any, Any, Any]:
    if isinstance(session_or_clients, Mapping):
        return session_or_clients["dynamodb"], session_or_clients["sqs"], session_or_clients["s3"]
    if hasattr(session_or_clients, "client"):
        options = {"endpoint_url": endpoint_url} if endpoint_url else {}
        client = session_or_clients.client
        return client("dynamodb", **options), client("sqs", **options), client("s3", **options)
    raise TypeError("expected a boto3 session or {'dynamodb': client, 'sqs': client, 's3': client}")


def _dependency_order(logical_ids: list[str], resources: Mapping[str, Any]) -> list[str]:
    ordered: list[str] = []
    pending = list(logical_ids)
    while pending:
        ready = [lid for lid in pending if not (references(resources[lid]) & (set(pending) - {lid}))]
        if not ready:
            raise TemplateError(f"circular references between {pending}")
        ordered += ready
        pending = [lid for lid in pending if lid not in ready]
    return ordered


def _create_queue(
    sqs: Any, intrinsics: Intrinsics, logical_id: str, resource: Mapping, stack_name: str
) -> None:
    props = intrinsics.resolve(resource.get("Properties", {}))
    attributes: dict[str, str] = {}
    for key, value in props.items():
        if key in _QUEUE_ATTRIBUTES:
            attributes[key] = str(value).lower() if isinstance(value, bool) else str(value)
        elif key in _QUEUE_JSON_ATTRIBUTES:
            attributes[key] = json.dumps(value)
        elif key not in ("QueueName", "Tags"):
            raise TemplateError(f"{logical_id}: queue property {key} is not translated")
    name = props.get("QueueName") or f"{stack_name}-{logical_id}"
    if str(attributes.get("FifoQueue")) == "true" and not name.endswith(".fifo"):
        name += ".fifo"
    try:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        # It exists with other settings (the template changed): bring it up to date.
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attributes.pop("FifoQueue", None)
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    intrinsics.refs[logical_id] = url
    intrinsics.attrs[(logical_id, "Arn")] = arn
    intrinsics.attrs[(logical_id, "QueueUrl")] = url
    intrinsics.attrs[(logical_id, "QueueName")] = name
    intrinsics.values.setdefault("AWS::AccountId", arn.split(":")[4])


def _create_table(
    dynamodb: Any, intrinsics: Intrinsics, logical_id: str, resource: Mapping, stack_name: str
) -> None:
    props = dict(intrinsics.resolve(resource.get("Properties", {})))
    name = props.pop("TableName", None) or f"{stack_name}-{logical_id}"
    request: dict[str, Any] = {"TableName": name, "BillingMode": "PROVISIONED"}
    ttl = props.pop("TimeToLiveSpecification", None)
    pitr = props.pop("PointInTimeRecoverySpecification", None)
    for key, value in props.items():
        if key in _TABLE_AS_IS:
            request[key] = value
        elif key == "StreamSpecification":
            request[key] = {"StreamEnabled": True, "StreamViewType": value["StreamViewType"]}
        elif key == "SSESpecification":
            request[key] = {"Enabled": _true(value.get("SSEEnabled"))}
        elif key not in _TABLE_IGNORED:
            raise TemplateError(f"{logical_id}: table property {key} is not translated")
    try:
        dynamodb.create_table(**request)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    table = dynamodb.describe_table(TableName=name)["Table"]
    if table["KeySchema"] != request["KeySchema"]:
        raise TemplateError(f"table {name} exists with other keys than template.yaml's")
    if ttl and _true(ttl.get("Enabled")):
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if current["TimeToLiveStatus"] == "DISABLED":
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
    if pitr and _true(pitr.get("PointInTimeRecoveryEnabled")):
        dynamodb.update_continuous_backups(  # idempotent
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
    intrinsics.refs[logical_id] = name
    intrinsics.attrs[(logical_id, "Arn")] = table["TableArn"]
    if "LatestStreamArn" in table:
        intrinsics.attrs[(logical_id, "StreamArn")] = table["LatestStreamArn"]


def _create_bucket(
    s3: Any, intrinsics: Intrinsics, logical_id: str, resource: Mapping, stack_name: str
) -> None:
    props = dict(intrinsics.resolve(resource.get("Properties", {})))
    # Bucket names are lowercase; CloudFormation makes one from the stack and logical id too.
    name = props.pop("BucketName", None) or f"{stack_name}-{logical_id}".lower()
    try:
        s3.create_bucket(Bucket=name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    for key, value in props.items():
        if key == "BucketEncryption":
            rules = {
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault" if k == "ServerSideEncryptionByDefault" else k: v
                        for k, v in rule.items()
                    }
                    for rule in value["ServerSideEncryptionConfiguration"]
                ]
            }
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=rules)
        elif key == "PublicAccessBlockConfiguration":
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=value)
        elif key not in _BUCKET_IGNORED:
            raise TemplateError(f"{logical_id}: bucket property {key} is not translated")
    intrinsics.refs[logical_id] = name
    intrinsics.attrs[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"


def _scheduler_client(session_or_clients: Any, endpoint_url: str | None) -> Any:
    """The EventBridge Scheduler client (None: a mapping of clients without one)."""
    if isinstance(session_or_clients, Mapping):
        return session_or_clients.get("scheduler")
    options = {"endpoint_url": endpoint_url} if endpoint_url else {}
    return session_or_clients.client("scheduler", **options)


def _create_schedule_group(
    scheduler: Any, intrinsics: Intrinsics, logical_id: str, resource: Mapping, stack_name: str
) -> None:
    """The timers' schedule group (Ref: its name; Arn), created when a scheduler client is given."""
    props = dict(intrinsics.resolve(resource.get("Properties", {})))
    name = props.pop("Name", None) or f"{stack_name}-{logical_id}"
    if set(props) - {"Tags"}:
        raise TemplateError(f"{logical_id}: schedule group properties {sorted(props)} are not translated")
    region = intrinsics.values["AWS::Region"]
    account = intrinsics.values.get("AWS::AccountId", "123456789012")
    arn = f"arn:aws:scheduler:{region}:{account}:schedule-group/{name}"
    if scheduler is not None:
        try:
            arn = scheduler.create_schedule_group(Name=name)["ScheduleGroupArn"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConflictException":
                raise
    intrinsics.refs[logical_id] = name
    intrinsics.attrs[(logical_id, "Arn")] = arn


def _true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _environment(template: Mapping[str, Any], intrinsics: Intrinsics) -> dict[str, str]:
    variables = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    env: dict[str, str] = {}
    for name, value in variables.items():
        try:
            resolved = intrinsics.resolve(value)
        except Unresolvable:
            continue  # it names something only a deployed stack has (the WebSocket API)
        if resolved is not NO_VALUE:
            env[name] = str(resolved)
    return env
