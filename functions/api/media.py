"""Request bodies are JSON: any other media type is a 415 before the body is read.

Powertools' request validation also parses form and multipart bodies, and raises a bare
``ValueError`` (a 500) for a multipart type without a boundary; a form-encoded graph
(curl's default for ``-d``) would come back as a 400 listing the whole body as an
unknown field. This API takes ``application/json`` (parameters such as ``charset`` are
fine) or a body with no content type at all.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType

JSON_MEDIA_TYPE = "application/json"
#: How much of an unexpected content-type header an error message repeats.
_SHOWN_CHARS = 80


def media_type(content_type: str) -> str:
    """``multipart/form-data; boundary=x`` → ``multipart/form-data`` (lower case)."""
    return content_type.split(";", 1)[0].strip().lower()


class JsonRequestValidation(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, for routes with a body only when it is JSON."""

    def handler(self, app: Any, next_middleware: Any) -> Any:
        if app.context["_route"].dependant.body_params:
            content_type = app.current_event.headers.get("content-type") or ""
            if media_type(content_type) not in ("", JSON_MEDIA_TYPE):
                shown = content_type[:_SHOWN_CHARS] + ("..." if len(content_type) > _SHOWN_CHARS else "")
                message = f"send the body as JSON with content-type: {JSON_MEDIA_TYPE} (got {shown!r})"
                raise RequestUnsupportedContentType(
                    message,
                    errors=[
                        {"type": "unsupported_media_type", "loc": ("header", "content-type"), "msg": message}
                    ],
                )
        return super().handler(app, next_middleware)
