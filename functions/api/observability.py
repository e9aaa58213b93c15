"""The API function's logger and metrics (Powertools: JSON logs, EMF metrics)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

#: JSON logs; each invocation carries the HTTP request id as its correlation id.
logger = Logger(service="flowforge-api")
#: EMF metrics ``graphs_created`` and ``runs_started``, flushed after each request.
metrics = Metrics(namespace="FlowForge", service="api")
