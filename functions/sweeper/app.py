"""Sweeper Lambda (EventBridge schedule): re-enqueue runs that stopped making progress.

A run stalls when its next step message was lost, e.g. the step Lambda crashed between
its commit and its send. Re-sending is safe: the step handler applies a step only once.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from functions.runtime import current_app

logger = Logger(service="flowforge-sweeper")
metrics = Metrics(namespace="FlowForge", service="sweeper")


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event, context):
    resent = current_app().service.sweep()
    metrics.add_metric("StalledRunsResent", MetricUnit.Count, len(resent))
    if resent:
        logger.warning("stalled runs re-enqueued", runs=[{"run_id": r, "step": s} for r, s in resent])
    return {"resent": len(resent)}
