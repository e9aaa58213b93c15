"""Whose graphs and runs a request may see: with ``Isolation=principal``, the caller's own.

The caller is the IAM principal API Gateway verified, from the payload 2.0 request
context (``requestContext.authorizer.iam.userArn``).
"""

from __future__ import annotations

from typing import Any

from functions.api.errors import ApiError


class NoPrincipalError(ApiError):
    """Isolation by principal, but the request carries no IAM caller."""

    code = "forbidden"


def request_owner(event: dict[str, Any], isolated: bool) -> str | None:
    """The owner of what this request creates and the only one whose items it sees;
    None when graphs and runs are not ``isolated`` (they belong to the account: no filtering)."""
    if not isolated:
        return None
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    arn = (authorizer.get("iam") or {}).get("userArn")
    if not isinstance(arn, str) or not arn:
        raise NoPrincipalError(
            "graphs and runs are isolated by principal, but the request has no IAM caller: "
            "the API needs IAM auth (AuthMode=IAM)"
        )
    return arn
