"""A stand-in for API Gateway's ``@connections`` management API, as a boto3-like client.

moto's ``post_to_connection`` only appends bytes and never reports a closed connection.
This one keeps each connection's messages in order, raises botocore ``ClientError`` with
the codes API Gateway uses (``GoneException`` 410, ``PayloadTooLargeException`` 413, or a
scripted ``LimitExceededException`` 429), and lets a test run code at the moment a message
is posted (``on_post``) to interleave senders deterministically.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

#: API Gateway refuses @connections posts over 128 KB.
MAX_POST_BYTES = 128 * 1024

_STATUS = {"GoneException": 410, "PayloadTooLargeException": 413, "LimitExceededException": 429}


def client_error(code: str, operation: str) -> ClientError:
    status = _STATUS.get(code, 400)
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


class ConnectionsStandIn:
    """Open connections and what was posted to each; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.open: set[str] = set()
        self.posted: dict[str, list[bytes]] = {}
        self.failures: dict[str, list[str]] = {}
        self.on_post: Callable[[str, dict[str, Any]], None] | None = None
        self.posts = 0

    # -- the test's side -------------------------------------------------------------------
    def connect(self, *connection_ids: str) -> None:
        with self._lock:
            for connection_id in connection_ids:
                self.open.add(connection_id)
                self.posted.setdefault(connection_id, [])

    def close(self, connection_id: str) -> None:
        with self._lock:
            self.open.discard(connection_id)

    def fail_next(self, connection_id: str, code: str, times: int = 1) -> None:
        """Make the next ``times`` posts to ``connection_id`` fail with ``code``."""
        with self._lock:
            self.failures.setdefault(connection_id, []).extend([code] * times)

    def messages(self, connection_id: str) -> list[dict[str, Any]]:
        """The JSON messages a connection received, in order."""
        with self._lock:
            return [json.loads(data) for data in self.posted.get(connection_id, [])]

    def entries(self, connection_id: str) -> list[int]:
        """The seqs of the log entries a connection received, in order."""
        return [m["seq"] for m in self.messages(connection_id) if "seq" in m]

    def dones(self, connection_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages(connection_id) if m.get("done")]

    # -- the client's side (apigatewaymanagementapi) ----------------------------------------
    def post_to_connection(self, *, ConnectionId: str, Data: bytes | str) -> dict[str, Any]:
        data = Data.encode() if isinstance(Data, str) else bytes(Data)
        with self._lock:
            if ConnectionId not in self.open:
                raise client_error("GoneException", "PostToConnection")
            scripted = self.failures.get(ConnectionId)
            if scripted:
                raise client_error(scripted.pop(0), "PostToConnection")
            if len(data) > MAX_POST_BYTES:
                raise client_error("PayloadTooLargeException", "PostToConnection")
            self.posted[ConnectionId].append(data)
            self.posts += 1
        if self.on_post is not None:
            self.on_post(ConnectionId, json.loads(data))
        return {}

    def delete_connection(self, *, ConnectionId: str) -> dict[str, Any]:
        with self._lock:
            if ConnectionId not in self.open:
                raise client_error("GoneException", "DeleteConnection")
            self.open.discard(ConnectionId)
        return {}

    def get_connection(self, *, ConnectionId: str) -> dict[str, Any]:
        with self._lock:
            if ConnectionId not in self.open:
                raise client_error("GoneException", "GetConnection")
        now = datetime.now(UTC)
        return {"ConnectedAt": now, "LastActiveAt": now, "Identity": {"SourceIp": "127.0.0.1"}}
