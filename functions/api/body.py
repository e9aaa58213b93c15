"""Reading a request body: size-capped before it is parsed, then strict JSON."""

from __future__ import annotations

import json
from typing import Any

from functions.api.errors import BodyTooLargeError, InvalidJsonError

#: Bodies over 1 MiB are refused before parsing (API Gateway itself allows 10 MB); a
#: graph is capped at 256 KiB and a state at 256 KiB, so no valid request comes close.
MAX_BODY_BYTES = 1024 * 1024


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(text: str) -> Any:
    """The resolver's JSON body deserializer: refuse oversized bodies, then parse."""
    if len(text) > MAX_BODY_BYTES or len(text.encode("utf-8", "replace")) > MAX_BODY_BYTES:
        raise BodyTooLargeError(
            f"request body is over {MAX_BODY_BYTES} bytes",
            details={"limit": MAX_BODY_BYTES},
        )
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:  # JSONDecodeError, or NaN/Infinity that JSON does not have
        position = (
            f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        )
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InvalidJsonError(f"request body is not valid JSON: {message}{position}") from None
