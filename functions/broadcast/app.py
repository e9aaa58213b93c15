"""Broadcast Lambda: the table stream's new log entries, finished runs and pending replays,
delivered to the connections that follow each run.

A record that fails (throttled, store unavailable) is reported alone, so the stream
retries from it; delivery is idempotent, so subscribers already served skip it.
"""

from __future__ import annotations

from functools import partial

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from engine.logstream import LogStream
from functions.aws.connections import apply_change, deadline_of
from functions.runtime import current_app

logger = Logger(service="flowforge-broadcast")


def process_record(record: DynamoDBRecord, stream: LogStream, deadline: float | None) -> str:
    change = record.raw_event
    image = change.get("dynamodb", {}).get("NewImage", {})
    kind = apply_change(stream, change.get("eventName", ""), image, deadline)
    sequence_number = record.dynamodb.sequence_number if record.dynamodb else None
    logger.debug("stream record handled", change=kind, sequence_number=sequence_number)
    return kind


@logger.inject_lambda_context
def handler(event, context):
    stream = current_app().log_stream
    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
    return process_partial_response(
        event=event,
        record_handler=partial(process_record, stream=stream, deadline=deadline_of(stream, context)),
        processor=processor,
        context=context,
    )
