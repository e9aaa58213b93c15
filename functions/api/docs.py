"""OpenAPI and Swagger UI: generated from the routes' pydantic models, served offline.

Nothing here imports Powertools' OpenAPI document models (pydantic models of the whole
OpenAPI specification, about half of the API function's import time) until a request
asks for the document or the Swagger UI: no other request needs them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types

from functions.api.media import JsonRequestValidation

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.models import OpenAPI

TITLE = "FlowForge"
#: Version of the HTTP contract (not of the package, whose metadata Lambda artifacts lack):
#: bump the minor for additions, the major for anything a client could notice breaking.
API_VERSION = "1.2.0"
DESCRIPTION = (
    "Graph workflows on AWS serverless. Create a graph, run it in the foreground or the "
    'background, read its state and logs. Every error is `{"error": {"code", "message", '
    '"details"?}}`.'
)
#: Powertools' stand-ins for what this API answers instead (400 and 500 in our error shape).
_POWERTOOLS_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")
_INTERNAL_ERROR = {
    "description": "A bug: a generic message and the request id; the details are in the logs",
    "content": {content_types.APPLICATION_JSON: {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


_TOO_LONG = {
    "description": "Request line and header values over 10,240 bytes (the HTTP API's quota): refused by "
    "the gateway before any route, with the gateway's own body",
    "content": {
        content_types.APPLICATION_JSON: {
            "schema": {
                "type": "object",
                "properties": {"message": {"type": "string"}},
                "required": ["message"],
            }
        }
    },
}


#: The request each thread is answering (see FlowForgeResolver).
_answering = threading.local()


class FlowForgeResolver(APIGatewayHttpResolver):
    """The HTTP API resolver, whose OpenAPI document lists the errors it really returns,
    and which keeps each thread's request apart.

    Powertools documents a 422 for request validation and a 500 with its own shape for
    response validation; this API answers 400 and 500 in its one error shape instead.

    Powertools keeps the request being answered (``current_event``, ``lambda_context``)
    in class attributes shared by every resolver and router: right for a Lambda
    container, which answers one request at a time, wrong for a process that answers
    several from threads (the local stack). Here they live per thread.
    """

    @property
    def current_event(self) -> Any:
        return _answering.event

    @current_event.setter
    def current_event(self, value: Any) -> None:
        _answering.event = value

    @property
    def lambda_context(self) -> Any:
        return _answering.context

    @lambda_context.setter
    def lambda_context(self, value: Any) -> None:
        _answering.context = value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self._enable_validation:
            # Powertools has no hook to refuse a body before its validation parses it.
            self._request_validation_middleware = JsonRequestValidation()

    #: Where the Swagger UI is served once a request asks for it (see :func:`add_docs`).
    swagger_path: str | None = None

    def _resolve(self) -> Any:
        method = self.current_event.http_method.upper()
        path = self._remove_prefix(self.current_event.path)
        if path == self.swagger_path:
            # Registered on first use: Powertools' enable_swagger imports the OpenAPI models.
            self.enable_swagger(path=path, compress=True)
            self.swagger_path = None
        # A path some static route serves (``/graph/create``) answers 405 for other
        # methods, never a route with a parameter there (``GET /graph/{graph_id}``).
        statics = {route.method for route in self._static_routes if route.rule.match(path)}
        if statics and method not in statics and method != "OPTIONS":
            return self._handle_not_found(method=method, path=path)
        return super()._resolve()

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self.current_event = self._to_proxy_event(cast(dict[str, Any], event))
        self.lambda_context = context
        return super().resolve(event, context)

    def get_openapi_schema(self, **kwargs: Any) -> OpenAPI:
        schema = super().get_openapi_schema(**kwargs)
        for path in (schema.paths or {}).values():
            for operation in (path.get, path.post, path.put, path.patch, path.delete):
                if operation is not None and operation.responses is not None:
                    operation.responses.pop(422, None)
                    operation.responses[500] = _INTERNAL_ERROR
                    operation.responses[414] = _TOO_LONG
        if schema.components and schema.components.schemas:
            for name in _POWERTOOLS_ERROR_SCHEMAS:
                schema.components.schemas.pop(name, None)
        return schema


def add_docs(app: FlowForgeResolver) -> None:
    """``GET /docs`` (Swagger UI with its assets inlined: no CDN) and ``GET /openapi.json``.

    The Swagger UI route is added by the first request for ``/docs`` (any method, so a
    POST still answers 405), with no swagger_base_url: Powertools inlines its bundled
    Swagger UI JS and CSS in the page.
    """
    app.configure_openapi(title=TITLE, version=API_VERSION, description=DESCRIPTION)
    app.swagger_path = "/docs"

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_json():
        return Response(200, content_types.APPLICATION_JSON, app.get_openapi_json_schema())
