"""The HTTP API Lambda: API Gateway HTTP API (payload v2) → Powertools resolver → RunService.

Importing this module builds no AWS client: the container's App (and its service) is
built on first use (:func:`functions.runtime.current_app`).
"""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools.event_handler import CORSConfig
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.api import callbacks, console
from functions.api.body import parse_json_body
from functions.api.docs import FlowForgeResolver, add_docs
from functions.api.errors import register_error_handlers
from functions.api.observability import logger, metrics
from functions.api.routes import router


def build_resolver() -> FlowForgeResolver:
    """The resolver with every route, the docs and the error handlers."""
    resolver = FlowForgeResolver(
        cors=CORSConfig(
            allow_origin="*",
            # As template.yaml's CorsConfiguration (which answers in AWS; this one answers locally).
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Amz-Content-Sha256",
                "X-Amz-Date",
                "X-Amz-Security-Token",
            ],
            expose_headers=["Retry-After", "Allow"],
            max_age=600,
        ),
        enable_validation=True,
        # A response that does not match its model is a bug (500), not a client error.
        response_validation_error_http_code=500,
        json_body_deserializer=parse_json_body,
    )
    resolver.include_router(router)
    resolver.include_router(console.router)
    resolver.include_router(callbacks.router)
    add_docs(resolver)
    register_error_handlers(resolver, logger)
    return resolver


#: Powertools' resolver keeps the request it is answering on itself, so each thread gets
#: its own. A Lambda container answers one request at a time, but the local stack runs
#: several containers as threads of one process (each with its own App, all sharing this
#: module), and tests call the handler from several threads too.
_resolvers = threading.local()


def resolver() -> FlowForgeResolver:
    found = getattr(_resolvers, "app", None)
    if found is None:
        found = _resolvers.app = build_resolver()
    return found


app = resolver()  # the importing thread's, built at import as before (cold start)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolver().resolve(event, context)
