"""SQS-triggered handlers: batch processing with partial failures, and step-message parsing.

The step and DLQ handlers read three fields of a record: its id, its body (a
:class:`StepMessage`) and its receive count. So this module reads them from the raw
event and answers SQS's partial batch response itself, rather than through Powertools'
batch utility: that utility imports every event data class Powertools has (about 40
modules, ~20 ms of CPU), which was a third of what the step handler added to a cold start.
Nothing here imports pydantic either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from engine.stepmessage import MalformedStepMessage, StepMessage

METRICS_NAMESPACE = "FlowForge"


@dataclass(frozen=True, slots=True)
class SqsRecord:
    """What the handlers read of one record of an SQS event."""

    message_id: str
    body: str
    receive_count: int | None
    """How many times SQS has delivered this message (``ApproximateReceiveCount``)."""

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> SqsRecord:
        count = record.get("attributes", {}).get("ApproximateReceiveCount")
        return cls(record["messageId"], record["body"], None if count is None else int(count))


RecordHandler = Callable[[SqsRecord, EphemeralMetrics], Any]


def process_sqs_batch(
    event: Mapping[str, Any],
    record_handler: RecordHandler,
    service: str,
    has_time: Callable[[], bool] | None = None,
) -> dict:
    """Run ``record_handler`` on each record of an SQS event, in order, and answer with
    SQS's partial batch response: a record whose handler raised is listed in
    ``batchItemFailures`` (SQS redelivers it alone). Metrics are flushed at the end.

    Before each record ``has_time`` (if given) says whether the invocation has time left
    for it; when it has not, that record and the rest are listed as failures, so SQS
    redelivers them rather than the Lambda timeout killing one halfway.

    Failures are reported per record even when every record failed: an invocation error
    then means a crash or a timeout (the step-errors alarm counts those). Metrics are per
    invocation, so concurrent in-process callers (the local stack, tests) share nothing.
    """
    metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=service)
    failures: list[dict[str, str]] = []
    try:
        records = event["Records"]
        for i, raw in enumerate(records):
            if has_time is not None and not has_time():
                failures += [{"itemIdentifier": r["messageId"]} for r in records[i:]]
                metrics.add_metric("RecordsLeftForRedelivery", MetricUnit.Count, len(records) - i)
                break
            try:
                record_handler(SqsRecord.of(raw), metrics)
            except Exception:  # the record fails alone: SQS redelivers it
                failures.append({"itemIdentifier": raw["messageId"]})
    finally:
        metrics.flush_metrics()
    return {"batchItemFailures": failures}


AsyncRecordHandler = Callable[[SqsRecord, EphemeralMetrics], Awaitable[Any]]


async def process_sqs_batch_async(
    event: Mapping[str, Any],
    record_handler: AsyncRecordHandler,
    service: str,
    has_time: Callable[[], bool] | None = None,
    alongside: Callable[[SqsRecord], bool] | None = None,
) -> dict:
    """:func:`process_sqs_batch` with an async ``record_handler``: the records for which
    ``alongside`` is true start at once, each in a task of its own, and run alongside the
    others (whose handlers wait together: a map's items calling a model); the rest run
    one after another, in the batch's order, in one more task. The answer is the same
    partial batch response: a record whose handler raised fails alone.

    ``has_time`` is asked before each record starts, as there: a record started alongside
    starts at once, so only the ones in turn can be left for redelivery.
    """
    metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=service)
    failures: list[dict[str, str]] = []

    def leave(records: list[SqsRecord]) -> None:
        failures.extend({"itemIdentifier": r.message_id} for r in records)
        metrics.add_metric("RecordsLeftForRedelivery", MetricUnit.Count, len(records))

    async def run(record: SqsRecord) -> None:
        try:
            await record_handler(record, metrics)
        except Exception:  # the record fails alone: SQS redelivers it
            failures.append({"itemIdentifier": record.message_id})

    async def in_turn(records: list[SqsRecord]) -> None:
        for i, record in enumerate(records):
            if has_time is not None and not has_time():
                return leave(records[i:])
            await run(record)

    try:
        together: list[SqsRecord] = []
        rest: list[SqsRecord] = []
        for raw in event["Records"]:
            record = SqsRecord.of(raw)
            (together if alongside is not None and alongside(record) else rest).append(record)
        if together and has_time is not None and not has_time():
            leave(together)
            together = []
        # Every task ends before the answer: one that raised past ``run`` (not an
        # Exception: the invocation fails) must not leave the others pending on the loop,
        # to go on in the next invocation.
        ended = await asyncio.gather(
            in_turn(rest), *(run(record) for record in together), return_exceptions=True
        )
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome
    finally:
        metrics.flush_metrics()
    return {"batchItemFailures": failures}


def parse_step_message(record: SqsRecord, logger: Logger, metrics: EphemeralMetrics) -> StepMessage | None:
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
