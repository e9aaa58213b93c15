"""Step Lambda: each SQS step message executes one node of one run (DESIGN.md §4)."""

from __future__ import annotations

import asyncio
import threading
from functools import partial

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from engine.ports import StepCommit
from engine.step import TERMINAL
from functions.aws.batch import SqsRecord, parse_step_message, process_sqs_batch
from functions.runtime import current_app

logger = Logger(service="flowforge-step")
#: The event loop a thread reuses across invocations: per thread, not per App, because
#: tests run several invocations at once on one App (the local stack's workers have one
#: each anyway), and one loop cannot run two of them.
_local = threading.local()


def run_async(coro):
    """Run ``coro`` on this thread's event loop, created once and reused across invocations."""
    runner = getattr(_local, "runner", None)
    if runner is None:
        runner = _local.runner = asyncio.Runner()
    return runner.run(coro)


def record_outcome(metrics: EphemeralMetrics, commit: StepCommit) -> None:
    metrics.add_metric("NodeDuration", MetricUnit.Milliseconds, commit.log.get("duration_ms", 0))
    if commit.log.get("error"):
        metrics.add_metric("NodeErrors", MetricUnit.Count, 1)
    if commit.status in TERMINAL:
        metrics.add_metric(f"Runs{commit.status.title()}", MetricUnit.Count, 1)


def process_record(record: SqsRecord, metrics: EphemeralMetrics) -> str | None:
    message = parse_step_message(record, logger, metrics)
    if message is None:
        return None
    logger.thread_safe_append_keys(run_id=message.run_id, step=message.step)
    try:
        service = current_app().service
        if message.item is None:
            step = service.process_step(message.run_id, message.step, partial(record_outcome, metrics))
        else:
            step = service.process_item(message.run_id, message.step, message.item, message.attempt)
        disposition = run_async(step)
        logger.info("step handled", disposition=disposition)
    except Exception:  # infrastructure: the record is reported failed and redelivered
        logger.exception("step failed; the message will be redelivered")
        metrics.add_metric("StepErrors", MetricUnit.Count, 1)
        raise
    finally:
        logger.thread_safe_remove_keys(["run_id", "step"])
    metrics.add_metric("Steps" + disposition.title().replace("_", ""), MetricUnit.Count, 1)
    return disposition


@logger.inject_lambda_context
def handler(event, context):
    return process_sqs_batch(event, process_record, service="step")
