"""The one table from FlowForge error code to HTTP status, for the HTTP and WebSocket APIs.

A code not listed here is a bug: the APIs answer it with 500.
"""

from __future__ import annotations

STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "invalid_json": 400,
    "invalid_graph": 400,
    "invalid_state": 400,
    "unknown_tool": 400,
    "invalid_message": 400,  # a WebSocket frame
    "unknown_action": 400,  # a WebSocket frame
    "forbidden": 403,  # isolation by principal, and the request has no IAM caller
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "body_too_large": 413,
    "state_too_large": 413,
    "unsupported_media_type": 415,
    "too_many_subscriptions": 429,
    "too_many_runs": 429,  # the principal's cap of running runs (MaxRunningRunsPerPrincipal)
    "internal": 500,
    "unavailable": 503,
    "push_unavailable": 503,
}
