"""Every error the API returns: one JSON shape, with the status functions.errors gives its code.

``{"error": {"code", "message", "details"?}}`` — for engine errors (by their stable
``code``), request validation, bad JSON, oversized bodies, unknown routes and bugs alike.
A 5xx carries a generic message and the Lambda request id; its stack trace goes to the
log only.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFound
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from engine.errors import FlowForgeError
from functions.errors import STATUS_BY_CODE

#: Seconds a client should wait before retrying after a 503 (store or queue throttled).
RETRY_AFTER_S = 1


class ApiError(FlowForgeError):
    """An error found by the HTTP layer itself, before the service is called."""

    code = "invalid_request"


class InvalidJsonError(ApiError):
    code = "invalid_json"


class BodyTooLargeError(ApiError):
    code = "body_too_large"


def error_response(
    code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    """The API's one error shape, with the status its ``code`` maps to."""
    headers = dict(headers or {})
    if code == "unavailable":
        headers["Retry-After"] = str(RETRY_AFTER_S)
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return Response(
        status_code=STATUS_BY_CODE.get(code, HTTPStatus.INTERNAL_SERVER_ERROR),
        content_type=content_types.APPLICATION_JSON,
        body={"error": error},
        headers=headers,
    )


def field_problems(errors: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Pydantic errors as ``[{path, message}]``, e.g. ``body.wait_s``; inputs are not echoed."""
    return [
        {"path": ".".join(str(part) for part in e.get("loc", ())), "message": e.get("msg", e["type"])}
        for e in errors
    ]


def allowed_methods(app: APIGatewayHttpResolver, path: str) -> list[str]:
    """Methods some route accepts at ``path`` (Powertools has no public route table); a
    path a static route serves (``/graph/create``) is that route's alone."""
    static = {route.method for route in app._static_routes if route.rule.match(path)}
    dynamic = {route.method for route in app._dynamic_routes if route.rule.match(path)}
    return sorted(static or dynamic)


def register_error_handlers(app: APIGatewayHttpResolver, logger: Logger) -> None:
    """Route every exception the resolver sees to :func:`error_response`."""

    @app.exception_handler(FlowForgeError)
    def flowforge_error(exc: FlowForgeError) -> Response:
        if exc.code not in STATUS_BY_CODE:
            return internal_error(exc)
        return error_response(exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    def invalid_request(exc: RequestValidationError) -> Response:
        problems = field_problems(exc.errors())
        summary = "; ".join(f"{p['path']}: {p['message']}" for p in problems[:5])
        return error_response("invalid_request", f"invalid request: {summary}", problems)

    @app.exception_handler(UnicodeDecodeError)
    def body_not_utf8(exc: UnicodeDecodeError) -> Response:
        # API Gateway base64-encodes a body that is not text; Powertools decodes it as UTF-8.
        return error_response("invalid_json", "request body is not UTF-8 text")

    @app.exception_handler(RequestUnsupportedContentType)
    def unsupported_media_type(exc: RequestUnsupportedContentType) -> Response:
        problems = field_problems(exc.errors())
        message = problems[0]["message"] if problems else "send the body as application/json"
        return error_response("unsupported_media_type", message, problems)

    @app.not_found
    def route_not_found(exc: RouteNotFound) -> Response:
        method, path = app.current_event.http_method.upper(), app.current_event.path
        allowed = allowed_methods(app, path)
        if allowed:
            message = f"{method} is not allowed on {path}; use {', '.join(allowed)}"
            return error_response("method_not_allowed", message, headers={"Allow": ", ".join(allowed)})
        return error_response("not_found", f"no route {method} {path}")

    @app.exception_handler(Exception)
    def internal_error(exc: Exception) -> Response:
        request_id = getattr(app.lambda_context, "aws_request_id", None)
        logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
        return error_response(
            "internal",
            f"internal error; quote request id {request_id} when reporting it",
            {"request_id": request_id},
        )
