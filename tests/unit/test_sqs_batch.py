"""SQS batches: each record is handled alone, and the failures make SQS's partial batch response."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from functions.aws.batch import SqsRecord, process_sqs_batch, process_sqs_batch_async

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
EVENTS = Path(__file__).resolve().parents[1] / "events"


def sqs_event(*bodies: str) -> dict:
    template = json.loads((EVENTS / "sqs_step_message.json").read_text())["Records"][0]
    return {"Records": [{**template, "messageId": f"m{i}", "body": body} for i, body in enumerate(bodies)]}


def test_a_record_whose_handler_raises_is_reported_alone_and_the_rest_are_handled():
    # GIVEN a batch of three records, the second of which fails
    seen = []

    def handle(record: SqsRecord, metrics) -> None:
        seen.append(record.body)
        if record.body == "bad":
            raise RuntimeError("store unavailable")

    # WHEN it is processed
    response = process_sqs_batch(sqs_event("one", "bad", "three"), handle, service="test")

    # THEN every record was handled in order and only the failed one goes back to SQS
    assert seen == ["one", "bad", "three"]
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}


def test_a_batch_whose_every_record_fails_is_still_answered_record_by_record():
    def fail(record, metrics):
        raise RuntimeError("down")

    response = process_sqs_batch(sqs_event("a", "b"), fail, service="test")

    assert response == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}


def test_metrics_added_while_handling_are_flushed_once_the_batch_is_done(capsys):
    def count(record, metrics):
        metrics.add_metric("Handled", "Count", 1)

    process_sqs_batch(sqs_event("a", "b"), count, service="test")

    [emf] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf["Handled"] == [1.0, 1.0] and emf["service"] == "test"


@pytest.mark.parametrize(("attributes", "expected"), [({"ApproximateReceiveCount": "5"}, 5), ({}, None)])
def test_a_record_exposes_its_id_body_and_receive_count(attributes, expected):
    raw = {"messageId": "m1", "body": '{"run_id": "r", "step": 0}', "attributes": attributes}
    assert SqsRecord.of(raw) == SqsRecord("m1", '{"run_id": "r", "step": 0}', expected)


# -- records alongside each other (the step function's item messages) ------------------------
def test_records_alongside_run_together_and_the_others_one_after_another():
    # GIVEN a batch of item records ("i…") and step records ("s…"); each handler waits a
    # moment, so records that may run together overlap
    running, peaks, order = {"item": 0, "step": 0}, {"item": 0, "step": 0}, []

    async def handle(record: SqsRecord, metrics) -> None:
        kind = "item" if record.body.startswith("i") else "step"
        running[kind] += 1
        peaks[kind] = max(peaks[kind], running[kind])
        order.append(record.body)
        await asyncio.sleep(0.01)
        running[kind] -= 1
        if record.body == "i-bad":
            raise RuntimeError("store unavailable")

    # WHEN it is processed with the item records alongside
    response = asyncio.run(
        process_sqs_batch_async(
            sqs_event("s1", "i1", "i-bad", "s2", "i3", "s3"),
            handle,
            service="test",
            alongside=lambda record: record.body.startswith("i"),
        )
    )

    # THEN the three items ran at once, each step after the one before, in batch order
    assert peaks == {"item": 3, "step": 1}
    assert [body for body in order if body.startswith("s")] == ["s1", "s2", "s3"]
    # AND only the failed record goes back to SQS
    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}


def test_records_are_left_for_redelivery_when_the_invocation_has_no_time_for_them(capsys):
    # GIVEN an invocation with time for one record in turn
    handled, time_left = [], [True]

    async def handle(record: SqsRecord, metrics) -> None:
        handled.append(record.body)
        time_left[0] = False

    # WHEN a batch of a step record, two items and another step record is processed
    response = asyncio.run(
        process_sqs_batch_async(
            sqs_event("s1", "i1", "i2", "s2"),
            handle,
            service="test",
            has_time=lambda: time_left[0],
            alongside=lambda record: record.body.startswith("i"),
        )
    )

    # THEN the items (started at once) and the first step ran; the second step goes back
    assert sorted(handled) == ["i1", "i2", "s1"]
    assert response == {"batchItemFailures": [{"itemIdentifier": "m3"}]}
    [emf] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf["RecordsLeftForRedelivery"] == [1.0]


def test_items_are_left_for_redelivery_too_when_no_time_is_left_at_the_start(capsys):
    response = asyncio.run(
        process_sqs_batch_async(
            sqs_event("i1", "s1"),
            lambda record, metrics: asyncio.sleep(0),
            service="test",
            has_time=lambda: False,
            alongside=lambda record: record.body.startswith("i"),
        )
    )
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == ["m0", "m1"]


def test_a_record_that_kills_the_invocation_fails_it_only_once_the_others_have_ended():
    # GIVEN a batch whose first item raises past its handler (no Exception: the function
    # dies), while another item is still waiting
    class Died(BaseException):
        pass

    ended = []

    async def handle(record: SqsRecord, metrics) -> None:
        if record.body == "i-dies":
            raise Died
        await asyncio.sleep(0.01)
        ended.append(record.body)

    # WHEN it is processed
    with pytest.raises(Died):
        asyncio.run(
            process_sqs_batch_async(
                sqs_event("i-dies", "i-waits", "s1"),
                handle,
                service="test",
                alongside=lambda record: record.body.startswith("i"),
            )
        )

    # THEN the invocation failed only after the others ended (none is left on the loop)
    assert sorted(ended) == ["i-waits", "s1"]
