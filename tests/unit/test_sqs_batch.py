"""SQS batches: each record is handled alone, and the failures make SQS's partial batch response."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from functions.aws.batch import SqsRecord, process_sqs_batch

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
