"""Broadcast Lambda: the table stream's new log entries, finished runs and pending replays,
delivered to the connections that follow each run (batches planned in batch.py).

A run whose changes fail is reported from its first record, so the stream retries from
it; delivery is idempotent, so subscribers already served skip it.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from functions.aws.connections import apply_change, deadline_of
from functions.broadcast.batch import Record, process
from functions.runtime import current_app

logger = Logger(service="flowforge-broadcast")


@logger.inject_lambda_context
def handler(event, context):
    stream = current_app().log_stream
    deadline = deadline_of(stream, context)

    def act(record: Record) -> str:
        try:
            kind = apply_change(
                stream, record.get("eventName", ""), record["dynamodb"].get("NewImage", {}), deadline
            )
        except Exception:
            logger.exception("stream record failed", sequence_number=record["dynamodb"]["SequenceNumber"])
            raise
        logger.debug(
            "stream record handled", change=kind, sequence_number=record["dynamodb"]["SequenceNumber"]
        )
        return kind

    return process(event["Records"], act)
