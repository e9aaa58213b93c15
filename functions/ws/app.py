"""WebSocket Lambda: ``$connect`` (``?run_id=`` subscribes), ``$disconnect``, and the
``subscribe``/``unsubscribe`` frames, which replay a run's log on the connection.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from functions.aws.connections import deadline_of
from functions.runtime import current_app
from functions.ws.routes import handle

logger = Logger(service="flowforge-ws")


@logger.inject_lambda_context(correlation_id_path="requestContext.connectionId")
def handler(event, context):
    stream = current_app().log_stream
    return handle(stream, event, deadline_of(stream, context))
