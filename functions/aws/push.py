"""The :class:`~engine.logstream.Pusher` on API Gateway's @connections management API.

The ``apigatewaymanagementapi`` client must be pointed at the WebSocket stage
(``FLOWFORGE_WS_ENDPOINT``, ``https://{api-id}.execute-api.{region}.amazonaws.com/{stage}``);
it is built on first use, so tests and the local stack choose what it talks to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from engine.logstream import ConnectionGoneError, PushError, PushUnavailableError
from functions.aws.adapter import AwsAdapter
from functions.aws.errors import error_code

#: Codes that mean "slow down or try again": the delivery is retried, never dropped.
UNAVAILABLE_CODES = frozenset(
    {
        "LimitExceededException",
        "ThrottlingException",
        "TooManyRequestsException",
        "InternalServerErrorException",
        "ServiceUnavailableException",
    }
)


def management_client_factory(endpoint_url: str) -> Callable[[], Any]:
    """A factory for the @connections client of one WebSocket stage."""

    def build() -> Any:
        import boto3  # deferred: no AWS SDK on the import path of what does not push
        from botocore.config import Config

        # Small messages: fail fast and let the caller's retry decide, not a long stall.
        config = Config(connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
        return boto3.session.Session().client(
            "apigatewaymanagementapi", endpoint_url=endpoint_url, config=config
        )

    return build


class ApiGatewayPusher(AwsAdapter):
    """Posts to WebSocket connections; AWS error codes become FlowForge push errors."""

    def post(self, connection_id: str, data: bytes) -> None:
        self._call("post_to_connection", ConnectionId=connection_id, Data=data)

    def close(self, connection_id: str) -> None:
        """Close a connection from the server side (already closed is fine)."""
        with contextlib.suppress(ConnectionGoneError):
            self._call("delete_connection", ConnectionId=connection_id)

    def _translate(self, exc: ClientError, operation: str, params: dict[str, Any]) -> PushError:
        return _translate(exc, operation, params["ConnectionId"])

    def _unreachable(self, exc: Exception, operation: str) -> PushError:
        return PushUnavailableError(f"{operation}: {type(exc).__name__}")


def _translate(exc: ClientError, operation: str, connection_id: str) -> PushError:
    code = error_code(exc)
    if code == "GoneException":
        return ConnectionGoneError(f"connection {connection_id!r} is gone")
    if code in UNAVAILABLE_CODES:
        return PushUnavailableError(f"{operation}: {code}")
    if code == "PayloadTooLargeException":
        return PushError(f"{operation}: message over API Gateway's size limit")
    if code in ("ForbiddenException", "AccessDeniedException"):
        return PushError(
            f"{operation}: {code}; check FLOWFORGE_WS_ENDPOINT and execute-api:ManageConnections"
        )
    return PushError(f"{operation}: {code or 'unknown error'}")
