"""The WebSocket API's routes: ``$connect``, ``$disconnect`` and the client's frames.

A client follows a run by connecting with ``?run_id=<id>[&after=<seq>]`` or by sending
``{"action": "subscribe", "run_id": "<id>", "after": <seq>}``; ``after`` is the last seq
it already has (-1, the default, replays from the start). ``{"action": "unsubscribe",
"run_id"}`` stops following. Whatever cannot be served is answered on the connection with
``{"error": {"code", "message", "details"?}}`` — a bad frame never ends the connection.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import FlowForgeError
from engine.graph import MAX_STEPS_CAP
from engine.jsontext import json_problem
from engine.logmessages import error_message
from engine.logstream import LogStream
from functions.errors import STATUS_BY_CODE

RUN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class InvalidMessageError(FlowForgeError):
    """A frame that is not JSON, or not a valid request."""

    code = "invalid_message"


class UnknownActionError(FlowForgeError):
    """A frame whose ``action`` is not one the API knows."""

    code = "unknown_action"


class Subscribe(BaseModel):
    """Follow a run: replay its entries after ``after``, then stream new ones, then done."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    action: Literal["subscribe"]
    run_id: str = Field(pattern=RUN_ID_PATTERN)
    after: int = Field(
        -1, ge=-1, le=MAX_STEPS_CAP, description="The last seq the client has; -1 replays everything."
    )


class Unsubscribe(BaseModel):
    """Stop following a run."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    action: Literal["unsubscribe"]
    run_id: str = Field(pattern=RUN_ID_PATTERN)


class ConnectQuery(BaseModel):
    """``$connect``'s query string: ``?run_id=`` subscribes at once, ``&after=`` resumes."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN)
    after: int = Field(-1, ge=-1, le=MAX_STEPS_CAP)


FRAMES: dict[str, type[Subscribe] | type[Unsubscribe]] = {"subscribe": Subscribe, "unsubscribe": Unsubscribe}


def parse_frame(body: str | None) -> Subscribe | Unsubscribe:
    """The request in a client's frame; InvalidMessageError or UnknownActionError."""
    example = '{"action": "subscribe", "run_id": "<run id>", "after": -1}'
    try:
        data = json.loads(body or "")
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise InvalidMessageError(f"a frame must be a JSON object such as {example}") from None
    if not isinstance(data, dict):
        raise InvalidMessageError(f"a frame must be a JSON object such as {example}")
    problem = json_problem(data, "frame")
    if problem is not None:
        raise InvalidMessageError(str(problem), details={"path": problem.path})
    action = data.get("action")
    model = FRAMES.get(action) if isinstance(action, str) else None
    if model is None:
        raise UnknownActionError(
            f"unknown action {action!r}; send one of: {', '.join(FRAMES)}", details={"actions": list(FRAMES)}
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessageError(_problems(exc), details={"example": example}) from None


def handle(stream: LogStream, event: dict[str, Any], deadline: float | None = None) -> dict[str, Any]:
    """Serve one WebSocket event; the route response API Gateway expects."""
    ws = APIGatewayWebSocketEvent(event)
    connection_id = ws.request_context.connection_id
    route = ws.request_context.route_key
    if route == "$connect":
        return _connect(stream, connection_id, ws.query_string_parameters or {}, _caller(event))
    if route == "$disconnect":
        stream.disconnect(connection_id)
        return {"statusCode": 200}
    try:
        if ws.is_base64_encoded:
            raise InvalidMessageError("binary frames are not supported: send JSON text")
        frame = parse_frame(ws.body)
        if isinstance(frame, Subscribe):
            stream.subscribe(connection_id, frame.run_id, frame.after, deadline)
        else:
            stream.unsubscribe(connection_id, frame.run_id)
    except FlowForgeError as exc:
        stream.tell(connection_id, error_message(exc.code, exc.message, exc.details))
        return {"statusCode": STATUS_BY_CODE.get(exc.code, 500)}
    return {"statusCode": 200}


def _connect(
    stream: LogStream, connection_id: str, query: dict[str, str], caller: str | None
) -> dict[str, Any]:
    """``caller``: the IAM principal that signed the handshake (None without IAM auth)."""
    if stream.isolated and not caller:
        return _refuse(
            "forbidden",
            "runs are isolated by principal, but the handshake has no IAM caller: the WebSocket API needs IAM auth",
        )
    problem = json_problem(query, "query")
    if problem is not None:
        return _refuse("invalid_request", str(problem))
    try:
        params = ConnectQuery.model_validate(query)
        stream.connect(connection_id, params.run_id, params.after, caller)
    except ValidationError as exc:
        return _refuse("invalid_request", _problems(exc))
    except FlowForgeError as exc:  # an unknown run, an after no log reaches, a throttled store
        if exc.code not in STATUS_BY_CODE:
            raise
        return _refuse(exc.code, exc.message)
    return {"statusCode": 200}


def _caller(event: dict[str, Any]) -> str | None:
    """The IAM principal that signed ``$connect`` (``requestContext.identity.userArn``;
    Powertools' WebSocket identity does not expose it)."""
    identity = (event.get("requestContext") or {}).get("identity") or {}
    return identity.get("userArn") or None


def _refuse(code: str, message: str) -> dict[str, Any]:
    """A refused ``$connect``: the client's handshake fails with the code's status and this body."""
    return {
        "statusCode": STATUS_BY_CODE[code],
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(error_message(code, message)),
    }


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'frame'}: {e['msg']}"
        for e in exc.errors(include_url=False, include_context=False)
    )
