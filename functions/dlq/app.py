"""DLQ Lambda: a step message that kept failing fails its run, so none stays running."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from functions.aws.batch import SqsRecord, parse_step_message, process_sqs_batch
from functions.runtime import current_app

logger = Logger(service="flowforge-dlq")


def process_record(record: SqsRecord, metrics: EphemeralMetrics) -> bool:
    message = parse_step_message(record, logger, metrics)
    if message is None:
        return False
    failed = current_app().service.fail_dead_letter(
        message.run_id, message.step, record.receive_count, item=message.item
    )
    logger.warning(
        "dead letter handled",
        run_id=message.run_id,
        step=message.step,
        receive_count=record.receive_count,
        run_failed=failed,  # False: the run had moved on or ended; nothing to do
    )
    metrics.add_metric("RunsDeadLettered" if failed else "DeadLettersIgnored", MetricUnit.Count, 1)
    return failed


@logger.inject_lambda_context
def handler(event, context):
    return process_sqs_batch(event, process_record, service="dlq")
