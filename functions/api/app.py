"""The HTTP API Lambda: API Gateway HTTP API (payload v2) → Powertools resolver → RunService.

Importing this module builds no AWS client: the service is built on first use by
:func:`functions.runtime.get_service`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import CORSConfig
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.api.body import parse_json_body
from functions.api.docs import FlowForgeResolver, add_docs
from functions.api.errors import register_error_handlers
from functions.api.observability import logger, metrics
from functions.api.routes import router

app = FlowForgeResolver(
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
app.include_router(router)
add_docs(app)
register_error_handlers(app, logger)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
