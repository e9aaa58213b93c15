"""moto's internals that flowforge.local.moto_internals relies on are still there.

moto's minor version is pinned for them (pyproject.toml). When an upgrade moves one,
the test named after it fails here; fix moto_internals.py, then move the pin.
"""

from __future__ import annotations

import boto3
import pytest
from moto import backends, mock_aws
from moto.moto_server.werkzeug_app import create_backend_app

from flowforge.local import moto_internals

REGION = "us-east-1"
TABLE = "internals"


@pytest.fixture
def dynamodb(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        yield client


def put(dynamodb, pk: str) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": pk}})


def test_stream_records_are_read_after_a_sequence_number(dynamodb):
    shard = moto_internals.stream_shard(TABLE, REGION)
    start = moto_internals.last_sequence(shard)
    put(dynamodb, "a")
    put(dynamodb, "b")

    records = moto_internals.records_after(shard, start)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in records] == ["a", "b"]
    assert [int(r["dynamodb"]["SequenceNumber"]) for r in records] == [start + 1, start + 2]
    assert moto_internals.last_sequence(shard) == start + 2
    assert moto_internals.records_after(shard, start + 1)[0]["dynamodb"]["Keys"]["pk"]["S"] == "b"


def test_forgetting_stream_records_keeps_the_sequence_numbers(dynamodb):
    shard = moto_internals.stream_shard(TABLE, REGION)
    put(dynamodb, "a")
    put(dynamodb, "b")
    last = moto_internals.last_sequence(shard)

    moto_internals.forget_through(TABLE, REGION, str(last - 1))

    assert len(shard.items) == 1 and moto_internals.last_sequence(shard) == last
    put(dynamodb, "c")
    [record] = moto_internals.records_after(shard, last)
    assert int(record["dynamodb"]["SequenceNumber"]) == last + 1


def test_an_item_is_read_from_memory(dynamodb):
    put(dynamodb, "a")
    assert moto_internals.stored_item(TABLE, {"pk": {"S": "a"}}, REGION) == {"pk": {"S": "a"}}
    assert moto_internals.stored_item(TABLE, {"pk": {"S": "nope"}}, REGION) is None


def test_stream_records_can_be_turned_off(dynamodb, monkeypatch):
    moto_internals.keep_no_stream_records(monkeypatch.setattr)
    put(dynamodb, "a")
    assert moto_internals.stream_shard(TABLE, REGION).items == []


def test_sqs_runs_on_a_given_clock(monkeypatch):
    now = [1_750_000_000.0]
    moto_internals.sqs_on_clock(monkeypatch.setattr, lambda: now[0])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="x", DelaySeconds=60)
        assert "Messages" not in sqs.receive_message(QueueUrl=url)
        now[0] += 61  # no sleeping: the delay passes on the clock
        assert [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == ["x"]


def test_in_process_requests_go_one_at_a_time(dynamodb, monkeypatch):
    from moto.core.botocore_stubber import BotocoreStubber

    original = BotocoreStubber.process_request
    moto_internals.one_request_at_a_time(monkeypatch.setattr)
    assert BotocoreStubber.process_request is not original
    put(dynamodb, "a")  # and requests still go through
    assert moto_internals.stored_item(TABLE, {"pk": {"S": "a"}}, REGION)


def test_the_dispatcher_looks_a_host_up_once(monkeypatch):
    listed = []
    real = backends.list_of_moto_modules
    monkeypatch.setattr(backends, "list_of_moto_modules", lambda: listed.append(1) or real())
    dispatcher = moto_internals.Dispatcher(create_backend_app)
    found = {dispatcher.get_backend_for_host("dynamodb.us-east-1.amazonaws.com") for _ in range(5)}
    assert found == {"dynamodb"} and len(listed) == 1


def test_the_quiet_handler_still_overrides_the_request_log():
    assert "log_request" in vars(moto_internals.QuietRequestHandler)
    assert hasattr(moto_internals.MotoRequestHandler, "log_request")
