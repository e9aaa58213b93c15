"""What the local stack reads from template.yaml: functions, their event sources, routes.

Everything the local stack wires (which handler serves which HTTP route or WebSocket
route, batch sizes, filters, schedules, timeouts) comes from the template, so the local
stack cannot drift from what ``sam deploy`` creates. Intrinsics resolve as in
:mod:`flowforge.local.stack` (parameters take their defaults unless overridden); resource
names and URLs come from :func:`flowforge.local.stack.create_resources`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowforge.local.stack import Intrinsics, TemplateError, Unresolvable, load_template, parameter_values

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_FUNCTION_ARN = re.compile(r"\$\{(\w+)\.Arn\}")
_INTEGRATION = re.compile(r"integrations/\$\{(\w+)\}")


def _logical_id(value: Any) -> str | None:
    """The resource a ``!Ref X`` / ``!GetAtt X.Attr`` points at."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            return value["Fn::GetAtt"][0]
    return None


@dataclass(frozen=True, slots=True)
class HttpRoute:
    method: str  # upper case, or ANY
    path: str  # /graph/{graph_id}, /{proxy+}
    function: str


@dataclass(frozen=True, slots=True)
class QueueSource:
    function: str
    queue: str  # logical id
    batch_size: int
    report_failures: bool
    max_concurrency: int | None


@dataclass(frozen=True, slots=True)
class StreamSource:
    function: str
    table: str  # logical id
    batch_size: int
    report_failures: bool
    max_retries: int  # -1: until the record expires
    filters: list[dict[str, Any]]
    parallelization: int = 1  # ParallelizationFactor: batches of the shard served at once


@dataclass(frozen=True, slots=True)
class ScheduleSource:
    function: str
    every_s: float


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    logical_id: str
    handler: str
    timeout_s: float


@dataclass(slots=True)
class LocalTemplate:
    """The template as the local stack needs it."""

    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    http_routes: list[HttpRoute] = field(default_factory=list)
    queue_sources: list[QueueSource] = field(default_factory=list)
    stream_sources: list[StreamSource] = field(default_factory=list)
    schedules: list[ScheduleSource] = field(default_factory=list)
    ws_routes: dict[str, str] = field(default_factory=dict)  # route key → function
    ws_route_selection: str = "$request.body.action"
    cors: dict[str, Any] | None = None


def _resolve(intrinsics: Intrinsics, value: Any) -> Any:
    """A property resolved from parameters; None if it names a deployed-only resource."""
    try:
        return intrinsics.resolve(value)
    except Unresolvable:
        return None


def _rate_seconds(expression: str) -> float:
    match = _RATE.match(expression.strip())
    if not match:
        raise TemplateError(f"schedule {expression!r}: the local stack understands rate(N unit) only")
    count, unit = int(match[1]), match[2].rstrip("s")
    return float(count * _RATE_UNITS[unit])


def _function_spec(
    logical_id: str, props: Mapping[str, Any], globals_: Mapping[str, Any], intrinsics
) -> FunctionSpec:
    handler = props.get("Handler") or globals_.get("Handler")
    if not handler:
        raise TemplateError(f"{logical_id} has no Handler")
    timeout = _resolve(intrinsics, props.get("Timeout", globals_.get("Timeout", 3)))
    return FunctionSpec(logical_id, handler, float(timeout or 3))


def _add_events(
    local: LocalTemplate, logical_id: str, events: Mapping[str, Any] | None, intrinsics: Any
) -> None:
    for name, event in (events or {}).items():
        kind, props = event.get("Type"), event.get("Properties") or {}
        if kind == "HttpApi":
            method = str(props.get("Method", "ANY")).upper()
            local.http_routes.append(HttpRoute(method, props.get("Path", "/{proxy+}"), logical_id))
        elif kind == "SQS":
            queue = _logical_id(props.get("Queue"))
            if queue is None:
                raise TemplateError(f"{logical_id}.{name}: Queue must be !GetAtt <Queue>.Arn")
            scaling = props.get("ScalingConfig") or {}
            local.queue_sources.append(
                QueueSource(
                    function=logical_id,
                    queue=queue,
                    batch_size=int(_resolve(intrinsics, props.get("BatchSize", 10))),
                    report_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                    max_concurrency=_int_or_none(_resolve(intrinsics, scaling.get("MaximumConcurrency"))),
                )
            )
        elif kind == "DynamoDB":
            table = _logical_id(props.get("Stream"))
            if table is None:
                raise TemplateError(f"{logical_id}.{name}: Stream must be !GetAtt <Table>.StreamArn")
            local.stream_sources.append(
                StreamSource(
                    function=logical_id,
                    table=table,
                    batch_size=int(_resolve(intrinsics, props.get("BatchSize", 100))),
                    report_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                    max_retries=int(_resolve(intrinsics, props.get("MaximumRetryAttempts", -1))),
                    filters=list((props.get("FilterCriteria") or {}).get("Filters") or []),
                    parallelization=int(_resolve(intrinsics, props.get("ParallelizationFactor", 1))),
                )
            )
        elif kind == "Schedule":
            local.schedules.append(ScheduleSource(logical_id, _rate_seconds(props["Schedule"])))


def _add_websocket(local: LocalTemplate, resources: Mapping[str, Any]) -> None:
    """Routes of the WEBSOCKET API, each to the function its integration invokes."""
    integrations: dict[str, str] = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::ApiGatewayV2::Integration":
            continue
        uri = (resource.get("Properties") or {}).get("IntegrationUri")
        text = uri.get("Fn::Sub") if isinstance(uri, dict) else uri
        match = _FUNCTION_ARN.search(text if isinstance(text, str) else "")
        if match:
            integrations[logical_id] = match[1]
    for resource in resources.values():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::ApiGatewayV2::Api" and props.get("ProtocolType") == "WEBSOCKET":
            local.ws_route_selection = props.get("RouteSelectionExpression", local.ws_route_selection)
        if resource.get("Type") != "AWS::ApiGatewayV2::Route":
            continue
        target = props.get("Target")
        text = target.get("Fn::Sub") if isinstance(target, dict) else target
        match = _INTEGRATION.search(text if isinstance(text, str) else "")
        if match and match[1] in integrations:
            local.ws_routes[props["RouteKey"]] = integrations[match[1]]


def read_template(path: str | Path, parameters: Mapping[str, Any] | None = None) -> LocalTemplate:
    """Parse ``path`` into what the local stack wires (parameters: defaults, or ``parameters``)."""
    template = load_template(path)
    intrinsics = Intrinsics(template, parameter_values(template, parameters))
    resources = template.get("Resources") or {}
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    local = LocalTemplate()
    for logical_id, resource in resources.items():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Serverless::Function":
            local.functions[logical_id] = _function_spec(logical_id, props, globals_, intrinsics)
            _add_events(local, logical_id, props.get("Events"), intrinsics)
        elif resource.get("Type") == "AWS::Serverless::HttpApi":
            cors = props.get("CorsConfiguration")
            local.cors = cors if isinstance(cors, dict) else None
    _add_websocket(local, resources)
    if not local.http_routes:
        raise TemplateError(f"{path}: no HttpApi events, so the local gateway has no route")
    return local


def _int_or_none(value) -> int | None:
    """A number from the template (a parameter reference resolves to its text)."""
    return None if value is None else int(value)
