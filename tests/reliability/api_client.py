"""Call the HTTP API handler in-process with API Gateway HTTP API (v2) events.

Events start from tests/events/api_http_v2.json; the path is percent-encoded as it
arrives from API Gateway, and query values are joined with commas as API Gateway does
for repeated names.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tests.functional.pump import LambdaContext, load_event


@dataclass
class Reply:
    """What the handler answered: status, headers and the body as text."""

    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


def http_event(
    method: str,
    path: str,
    *,
    body: str | bytes | None = None,
    query: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTP API v2 event; ``bytes`` bodies that are not UTF-8 travel base64-encoded."""
    event = load_event("api_http_v2")
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["headers"].update({k.lower(): v for k, v in (headers or {}).items()})
    if query:
        joined = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in query.items()}
        event["queryStringParameters"] = joined
        event["rawQueryString"] = urlencode(query, doseq=True)
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
            body = None
    if body is not None:
        event["body"] = body
    return event


def call(
    handler, method: str, path: str, *, json_body: Any = None, context: LambdaContext | None = None, **kwargs
) -> Reply:
    """One request through ``handler``; ``json_body`` is serialized, ``body=`` is sent as is."""
    if json_body is not None:
        kwargs["body"] = json.dumps(json_body)
    event = http_event(method, path, **kwargs)
    response = handler(event, context or LambdaContext.api())
    text = response.get("body") or ""
    if response.get("isBase64Encoded"):
        text = base64.b64decode(text).decode("utf-8", "replace")
    return Reply(response["statusCode"], response.get("headers") or {}, text)
