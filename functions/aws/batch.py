"""SQS-triggered handlers: batch processing with partial failures, and step-message parsing.

Records are Powertools' ``SQSRecord`` data classes over the raw event, not its pydantic
``SqsRecordModel``: the only field a handler reads is the body, which is parsed as a
:class:`StepMessage` anyway. Nothing on this path imports pydantic, which also keeps
Powertools' batch utility from loading every pydantic event model of its parser (SQS,
DynamoDB, Kinesis, Kafka …), as it does when it finds pydantic already imported.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from functions.aws.sqs import MalformedStepMessage, StepMessage

METRICS_NAMESPACE = "FlowForge"

RecordHandler = Callable[[SQSRecord, EphemeralMetrics], Any]


def process_sqs_batch(event: dict, context: Any, record_handler: RecordHandler, service: str) -> dict:
    """Run ``record_handler`` on each record; a record whose handler raises is reported
    as a batch item failure (SQS redelivers it). Metrics are flushed at the end.

    Processor and metrics are per invocation, so concurrent in-process callers (the
    local stack, tests) share no batch state.
    """
    metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=service)
    # Failures are reported per record, even when every record failed: an invocation
    # error then means a crash or a timeout (the step-errors alarm counts those).
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    try:
        return process_partial_response(
            event=event,
            record_handler=partial(record_handler, metrics=metrics),
            processor=processor,
            context=context,
        )
    finally:
        metrics.flush_metrics()


def parse_step_message(record: SQSRecord, logger: Logger, metrics: EphemeralMetrics) -> StepMessage | None:
    """The record's step message, or None when it is malformed.

    A malformed message can never succeed, so it is logged, counted and acknowledged
    rather than retried into the dead-letter queue.
    """
    try:
        return StepMessage.from_json(record.body)
    except MalformedStepMessage as exc:
        logger.error("malformed step message dropped", message_id=record.message_id, errors=exc.problems)
        metrics.add_metric("MalformedMessages", MetricUnit.Count, 1)
        return None
