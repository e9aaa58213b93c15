"""The local stack's handlers reach its moto without a socket (MotoServer.serve_in_process),
and get exactly the answers they would get over HTTP."""

from __future__ import annotations

import hashlib
import os

import boto3
import pytest
import urllib3.connection
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config
from botocore.exceptions import ClientError

from flowforge.local.aws import MotoServer

REGION = "us-east-1"


@pytest.fixture
def moto():
    server = MotoServer("127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def clients(moto, *services: str) -> list:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    config = Config(retries={"max_attempts": 1})
    return [session.client(service, endpoint_url=moto.endpoint, config=config) for service in services]


def exercise(dynamodb, sqs, s3, name: str) -> list:
    """The same calls, whatever carries them: what each answered (request ids aside)."""
    answers: list = []
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    item = {"pk": {"S": "a"}, "text": {"S": "é\u2028" * 100}, "blob": {"B": b"\x00\xff"}, "n": {"N": "1.5"}}
    dynamodb.put_item(TableName=name, Item=item)
    answers.append(dynamodb.get_item(TableName=name, Key={"pk": {"S": "a"}}, ConsistentRead=True)["Item"])
    with pytest.raises(ClientError) as refused:
        dynamodb.put_item(TableName=name, Item=item, ConditionExpression="attribute_not_exists(pk)")
    answers.append(refused.value.response["Error"]["Code"])
    answers.append(
        dynamodb.update_item(
            TableName=name,
            Key={"pk": {"S": "a"}},
            UpdateExpression="SET #n = #n + :one",
            ExpressionAttributeNames={"#n": "n"},
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="ALL_NEW",
        )["Attributes"]["n"]
    )
    with pytest.raises(ClientError) as invalid:
        dynamodb.query(TableName=name, KeyConditionExpression="nope = :x")
    answers.append(invalid.value.response["Error"]["Code"])
    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": name, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}
            ]
        )
    answers.append(cancelled.value.response["CancellationReasons"])
    with pytest.raises(ClientError) as no_queue:
        sqs.get_queue_url(QueueName=f"{name}-none")
    answers.append(no_queue.value.response["Error"]["Code"])
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    answers.append(queue.rsplit("/", 2)[-2])  # the account moto answered for
    sqs.send_message(QueueUrl=queue, MessageBody='{"run_id": "é", "step": 1}')
    answers.append([m["Body"] for m in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]])
    bucket = name.lower()
    s3.create_bucket(Bucket=bucket)
    data = os.urandom(3_000_000)
    key = f"runs/r/{hashlib.sha256(data).hexdigest()}"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    answers.append(s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data)
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="runs/r/none")
    answers.append(missing.value.response["Error"]["Code"])
    return answers


def test_in_process_requests_open_no_connection_and_answer_as_over_http(moto, monkeypatch):
    over_http = exercise(*clients(moto, "dynamodb", "sqs", "s3"), "over-http")

    moto.serve_in_process()
    made = clients(moto, "dynamodb", "sqs", "s3")  # sessions made from now on skip the socket

    def no_socket(self, *args, **kwargs):
        raise AssertionError("an in-process request opened a connection")

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", no_socket)
    assert exercise(*made, "in-process") == over_http
    assert over_http[1] == "ConditionalCheckFailedException" and over_http[-1] == "404"
    assert over_http[2:6] == [
        {"N": "2.5"},
        "ValidationException",
        [{"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}],
        "AWS.SimpleQueueService.NonExistentQueue",
    ]


def test_requests_to_other_endpoints_still_go_out(moto):
    moto.serve_in_process()
    elsewhere = AWSPreparedRequest("POST", "http://127.0.0.1:9/", {}, b"", stream_output=False)
    assert moto._dispatch(elsewhere) is None


def test_a_stopped_server_answers_in_process_no_more(moto):
    moto.serve_in_process()
    moto.stop()
    (dynamodb,) = clients(moto, "dynamodb")
    with pytest.raises(Exception):  # noqa: B017 - nothing listens: a connection error
        dynamodb.list_tables()


def test_in_process_dynamodb_and_sqs_requests_skip_motos_web_application(moto, monkeypatch):
    from flowforge.local import moto_internals

    reached: list[str] = []
    real = moto_internals.Dispatcher.__call__

    def through_the_app(self, environ, start_response):
        reached.append(environ.get("HTTP_X_AMZ_TARGET") or "s3")
        return real(self, environ, start_response)

    monkeypatch.setattr(moto_internals.Dispatcher, "__call__", through_the_app)
    moto.serve_in_process()
    answers = exercise(*clients(moto, "dynamodb", "sqs", "s3"), "direct")
    assert answers[1] == "ConditionalCheckFailedException" and answers[3] == "ValidationException"
    # only S3's requests (REST, not JSON) went through moto's werkzeug and Flask application
    assert reached and set(reached) == {"s3"}


def test_a_crash_inside_moto_is_a_500_to_the_caller_as_over_http(moto, monkeypatch):
    """An exception inside moto (its SQS is not thread-safe) reaches an in-process caller as
    the 500 moto's server sends over HTTP — a ClientError botocore retries — never as
    moto's own exception, which killed the local stack's step poller."""
    import moto.sqs.models as sqs_models

    moto.serve_in_process()
    (sqs,) = clients(moto, "sqs")
    queue = sqs.create_queue(QueueName="crashing")["QueueUrl"]

    def crash(self, *args, **kwargs):
        raise RuntimeError("Set changed size during iteration")

    monkeypatch.setattr(sqs_models.SQSBackend, "receive_message", crash)
    with pytest.raises(ClientError) as failed:
        sqs.receive_message(QueueUrl=queue)
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "Set changed size" in str(failed.value)
