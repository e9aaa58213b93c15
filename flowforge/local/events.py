"""Lambda events as AWS builds them: API Gateway (HTTP API v2, WebSocket), SQS, DynamoDB
streams and EventBridge schedules; and the context object an invocation gets.

Pure functions of their inputs, so tests can check every shape against the parsers the
handlers use (Powertools' models). Identifiers are local stand-ins: account
``123456789012`` (moto's) and the API ids below. The local stack, the tests and the
benchmarks all invoke handlers with these.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ACCOUNT_ID = "123456789012"
HTTP_API_ID = "localhttp"
WS_API_ID = "localws"
#: Content types whose bodies API Gateway passes as text; anything else is base64.
TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded", "application/xml")


def new_request_id() -> str:
    return str(uuid.uuid4())


def new_connection_id() -> str:
    """An id shaped like API Gateway's (base64, ends in ``=``), so URL quoting is exercised."""
    return base64.b64encode(secrets.token_bytes(10)).decode()


@dataclass(slots=True)
class LambdaContext:
    """The parts of the Lambda context object handlers (and Powertools) read."""

    function_name: str = "flowforge-StepFunction"
    timeout_s: float = 300.0
    region: str = "us-east-1"
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=new_request_id)
    remaining_ms: int | None = None
    """Time left, fixed (tests); None counts ``timeout_s`` down from when it was made."""
    started: float = field(default_factory=time.monotonic)
    log_group_name: str = ""
    log_stream_name: str = "local"

    def __post_init__(self) -> None:
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        if self.remaining_ms is not None:
            return self.remaining_ms
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))

    @classmethod
    def api(cls, **fields: Any) -> LambdaContext:
        """The API function's context (its 29 s timeout, a fixed request id; a test may
        shorten the time left)."""
        defaults: dict[str, Any] = {
            "function_name": "flowforge-ApiFunction",
            "timeout_s": 29.0,
            "memory_limit_in_mb": 256,
            "aws_request_id": "0f3d3f3e-2b4c-4d5e-8f9a-0123456789ab",
            "remaining_ms": 30_000,
        }
        return cls(**{**defaults, **fields})


def _clf_time(when: datetime) -> str:
    """API Gateway's ``requestTime``: ``12/Mar/2020:19:03:58 +0000``."""
    return when.strftime("%d/%b/%Y:%H:%M:%S +0000")


def _epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _joined(pairs: Iterable[tuple[str, str]], lower: bool) -> dict[str, str]:
    """Repeated names joined with commas, as API Gateway does for v2 payloads."""
    joined: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower() if lower else name
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


def encode_body(body: bytes, content_type: str | None) -> tuple[str | None, bool]:
    """The body as an event carries it: text when it is text, else base64."""
    if not body:
        return None, False
    kind = (content_type or "").split(";")[0].strip().lower()
    if not kind or kind.startswith(TEXT_TYPES) or kind.endswith("+json"):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode(), True


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What the gateway read from one HTTP request."""

    method: str
    path: str
    raw_query: str
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"


def http_event(
    request: HttpRequest,
    *,
    route_key: str,
    path_parameters: Mapping[str, str] | None,
    domain: str,
    now: datetime | None = None,
    request_id: str | None = None,
    authorizer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload format 2.0 event; ``authorizer`` is what an IAM
    authorizer verified (``{"iam": {...}}``), in ``requestContext.authorizer``."""
    now = now or datetime.now(UTC)
    headers = _joined(request.headers, lower=True)
    cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
    content_type = headers.get("content-type")
    body, is_base64 = encode_body(request.body, content_type)
    request_id = request_id or new_request_id()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.path,
        "rawQueryString": request.raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": HTTP_API_ID,
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": request.protocol,
                "sourceIp": request.source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": _clf_time(now),
            "timeEpoch": _epoch_ms(now),
        },
        "isBase64Encoded": is_base64,
    }
    if authorizer is not None:
        event["requestContext"]["authorizer"] = dict(authorizer)
    if cookies:
        event["cookies"] = cookies
    if request.query:
        event["queryStringParameters"] = _joined(request.query, lower=False)
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body is not None:
        event["body"] = body
    return event


@dataclass(slots=True)
class WsClient:
    """One WebSocket connection as API Gateway describes it in every event."""

    connection_id: str
    source_ip: str
    user_agent: str
    domain: str
    connected_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_active_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _ws_context(
    client: WsClient, route_key: str, event_type: str, now: datetime | None = None
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    request_id = secrets.token_urlsafe(12)
    return {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": _clf_time(now),
        "messageDirection": "IN",
        "stage": "$default",
        "connectedAt": _epoch_ms(client.connected_at),
        "requestTimeEpoch": _epoch_ms(now),
        "identity": {"sourceIp": client.source_ip, "userAgent": client.user_agent},
        "requestId": request_id,
        "domainName": client.domain,
        "connectionId": client.connection_id,
        "apiId": WS_API_ID,
    }


def ws_connect_event(
    client: WsClient,
    headers: Iterable[tuple[str, str]],
    query: Iterable[tuple[str, str]],
    identity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``$connect``: the handshake's headers and query string (the only event with them);
    ``identity`` holds the IAM caller's fields, added to ``requestContext.identity``."""
    pairs = list(headers)
    multi_headers: dict[str, list[str]] = {}
    for name, value in pairs:
        multi_headers.setdefault(name, []).append(value)
    query = list(query)
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        multi_query.setdefault(name, []).append(value)
    event: dict[str, Any] = {
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "requestContext": _ws_context(client, "$connect", "CONNECT"),
        "isBase64Encoded": False,
    }
    if identity is not None:
        event["requestContext"]["identity"].update(identity)
    if query:
        event["queryStringParameters"] = {name: values[-1] for name, values in multi_query.items()}
        event["multiValueQueryStringParameters"] = multi_query
    return event


def ws_message_event(client: WsClient, route_key: str, body: str | bytes) -> dict[str, Any]:
    """A message routed to ``route_key`` (binary frames arrive base64-encoded)."""
    context = _ws_context(client, route_key, "MESSAGE")
    context["messageId"] = secrets.token_urlsafe(12)
    if isinstance(body, bytes):
        return {"requestContext": context, "body": base64.b64encode(body).decode(), "isBase64Encoded": True}
    return {"requestContext": context, "body": body, "isBase64Encoded": False}


def ws_disconnect_event(client: WsClient, status_code: int, reason: str) -> dict[str, Any]:
    """``$disconnect``, after the socket closed (either side)."""
    context = _ws_context(client, "$disconnect", "DISCONNECT")
    context["disconnectStatusCode"] = status_code
    context["disconnectReason"] = reason
    headers = {"Host": client.domain, "User-Agent": client.user_agent}
    return {
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "requestContext": context,
        "isBase64Encoded": False,
    }


def sqs_event(messages: Iterable[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS event source mapping batch from ``ReceiveMessage`` results."""
    records = []
    for message in messages:
        attributes = {
            name: value
            for name, value in message.get("Attributes", {}).items()
            if name
            in (
                "ApproximateReceiveCount",
                "SentTimestamp",
                "SenderId",
                "ApproximateFirstReceiveTimestamp",
                "MessageGroupId",
                "MessageDeduplicationId",
                "SequenceNumber",
                "AWSTraceHeader",
            )
        }
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": attributes,
                "messageAttributes": {
                    name: _sqs_attribute(value)
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def _sqs_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """``{"StringValue", "DataType"}`` (the SQS API) → the event's camelCase form."""
    converted: dict[str, Any] = {
        "dataType": value["DataType"],
        "stringListValues": [],
        "binaryListValues": [],
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return converted


def stream_event(records: Iterable[Mapping[str, Any]], stream_arn: str, region: str) -> dict[str, Any]:
    """A DynamoDB stream batch from ``GetRecords`` results (already JSON-shaped: see journal)."""
    converted = []
    for record in records:
        dynamodb = dict(record["dynamodb"])
        created = dynamodb.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
        converted.append(
            {
                "eventID": record["eventID"],
                "eventName": record["eventName"],
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": region,
                "dynamodb": dynamodb,
                "eventSourceARN": stream_arn,
            }
        )
    return {"Records": converted}


def schedule_event(rule_arn: str, region: str, now: datetime | None = None) -> dict[str, Any]:
    """An EventBridge scheduled event (``Type: Schedule``)."""
    now = now or datetime.now(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }
