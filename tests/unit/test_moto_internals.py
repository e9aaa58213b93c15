"""moto's internals that flowforge.local.moto_internals relies on are still there.

moto's minor version is pinned for them (pyproject.toml). When an upgrade moves one,
the test named after it fails here; fix moto_internals.py, then move the pin.
"""

from __future__ import annotations

import json

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


@pytest.fixture
def sorted_table(dynamodb):
    """A table with a sort key: three partitions, one of them with several items."""
    dynamodb.create_table(
        TableName="sorted",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    for pk, sks in {"a": ["LOG#3", "RUN", "LOG#1", "LOG#2"], "b": ["RUN"], "c": ["LOG#1", "RUN"]}.items():
        for sk in sks:
            dynamodb.put_item(
                TableName="sorted",
                Item={"pk": {"S": pk}, "sk": {"S": sk}, "blob": {"B": b"\x00\xff" + sk.encode()}},
            )
    return dynamodb


QUERIES = [
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "a"}}},
    {
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "a"}},
        "ScanIndexForward": False,
    },
    {
        "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
        "ExpressionAttributeValues": {":p": {"S": "a"}, ":s": {"S": "LOG#"}},
    },
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "a"}}, "Limit": 2},
    {
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "a"}},
        "Limit": 2,
        "ExclusiveStartKey": {"pk": {"S": "a"}, "sk": {"S": "LOG#2"}},
    },
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "nobody"}}},
]


def test_a_query_reads_its_partition_only_and_answers_as_moto_does(sorted_table, monkeypatch):
    from moto.dynamodb.models.table import Table

    expected = [sorted_table.query(TableName="sorted", ConsistentRead=True, **q) for q in QUERIES]
    moto_internals.partition_queries(monkeypatch.setattr)
    listed = []
    all_items = Table.all_items
    monkeypatch.setattr(Table, "all_items", lambda self: listed.append(self.name) or all_items(self))

    answers = [sorted_table.query(TableName="sorted", ConsistentRead=True, **q) for q in QUERIES]

    for answer, want in zip(answers, expected, strict=True):
        assert (answer["Items"], answer.get("LastEvaluatedKey")) == (
            want["Items"],
            want.get("LastEvaluatedKey"),
        )
    assert [len(a["Items"]) for a in answers] == [4, 4, 3, 2, 2, 0]
    assert listed == []  # no query listed the whole table
    table = moto_internals_table("sorted")
    assert len(table.items) == 3  # asking for an empty partition did not add one


def moto_internals_table(name: str):
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[moto_internals.ACCOUNT_ID][REGION].get_table(name)


def test_dynamodb_answers_dumped_as_json_are_what_motos_serializer_answers(sorted_table, monkeypatch):
    from moto.core.responses import ActionResult

    serializer = ActionResult.execute_result
    moto_internals.plain_json_responses(monkeypatch.setattr)
    plain = ActionResult.execute_result
    compared: list[str] = []

    def both(self, context):
        fast, slow = plain(self, context), serializer(self, context)
        assert fast[0] == slow[0] == 200
        assert json.loads(fast[2]) == json.loads(slow[2]), context.operation_model.name
        assert fast[1] == slow[1]
        compared.append(context.operation_model.name)
        return fast

    monkeypatch.setattr(ActionResult, "execute_result", both)
    item = {
        "pk": {"S": "z"},
        "sk": {"S": "1"},
        "n": {"N": "1.50"},
        "b": {"B": b"\x00\xff"},
        "bs": {"BS": [b"x", b"y"]},
        "ss": {"SS": ["q", "r"]},
        "ns": {"NS": ["1", "2"]},
        "m": {"M": {"x": {"L": [{"NULL": True}, {"BOOL": False}, {"S": "é\u2028\U0001f600"}]}}},
    }
    key = {"pk": {"S": "z"}, "sk": {"S": "1"}}
    sorted_table.put_item(TableName="sorted", Item=item, ReturnConsumedCapacity="TOTAL")
    sorted_table.get_item(TableName="sorted", Key=key, ConsistentRead=True)
    sorted_table.get_item(TableName="sorted", Key={"pk": {"S": "none"}, "sk": {"S": "1"}})
    for q in QUERIES:
        sorted_table.query(TableName="sorted", ReturnConsumedCapacity="TOTAL", **q)
    sorted_table.update_item(
        TableName="sorted",
        Key=key,
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "3"}},
        ReturnValues="ALL_NEW",
    )
    sorted_table.batch_get_item(
        RequestItems={"sorted": {"Keys": [key, {"pk": {"S": "a"}, "sk": {"S": "RUN"}}]}}
    )
    sorted_table.delete_item(TableName="sorted", Key=key, ReturnValues="ALL_OLD")
    streams = boto3.client("dynamodbstreams", region_name=REGION)
    arn = sorted_table.describe_table(TableName="sorted")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]

    assert len(records) >= 10 and all("ApproximateCreationDateTime" in r["dynamodb"] for r in records)
    assert {"PutItem", "GetItem", "Query", "UpdateItem", "BatchGetItem", "DeleteItem", "GetRecords"} <= set(
        compared
    )


@pytest.fixture
def indexed_table(dynamodb):
    """A table with a KEYS_ONLY index (sparse, like gsi1): some items in two index
    partitions, some in none."""
    attribute = lambda name: {"AttributeName": name, "AttributeType": "S"}  # noqa: E731
    dynamodb.create_table(
        TableName="indexed",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[attribute("pk"), attribute("sk"), attribute("gpk"), attribute("gsk")],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "gsi",
                "KeySchema": [
                    {"AttributeName": "gpk", "KeyType": "HASH"},
                    {"AttributeName": "gsk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for i in range(12):
        item = {"pk": {"S": f"run{i % 5}"}, "sk": {"S": f"WAIT#{i:03d}"}}
        if i % 3:
            item |= {"gpk": {"S": f"W#{i % 2}"}, "gsk": {"S": f"{(i * 7) % 10:04d}"}}
        dynamodb.put_item(TableName="indexed", Item=item)
    return dynamodb


INDEX_QUERIES = [
    {"KeyConditionExpression": "gpk = :p", "ExpressionAttributeValues": {":p": {"S": "W#0"}}},
    {
        "KeyConditionExpression": "gpk = :p AND gsk <= :d",
        "ExpressionAttributeValues": {":p": {"S": "W#1"}, ":d": {"S": "0005"}},
    },
    {
        "KeyConditionExpression": "gpk = :p",
        "ExpressionAttributeValues": {":p": {"S": "W#1"}},
        "ScanIndexForward": False,
        "Limit": 2,
    },
    {"KeyConditionExpression": "gpk = :p", "ExpressionAttributeValues": {":p": {"S": "nobody"}}},
]


def test_an_index_query_lists_its_index_partition_only_and_answers_as_moto_does(indexed_table, monkeypatch):
    from moto.dynamodb.models.table import Table

    ask = lambda q: indexed_table.query(TableName="indexed", IndexName="gsi", **q)  # noqa: E731
    expected = [ask(q) for q in INDEX_QUERIES]
    moto_internals.index_queries(monkeypatch.setattr)
    listed = []
    all_items = Table.all_items
    monkeypatch.setattr(Table, "all_items", lambda self: listed.append(self.name) or all_items(self))

    answers = [ask(q) for q in INDEX_QUERIES]

    for answer, want in zip(answers, expected, strict=True):
        assert (answer["Items"], answer.get("LastEvaluatedKey")) == (
            want["Items"],
            want.get("LastEvaluatedKey"),
        )
    assert [len(a["Items"]) for a in answers] == [4, 1, 2, 0]
    assert listed == []  # no index query listed (and sorted) the whole table


@pytest.fixture
def sqs(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def test_a_receive_no_longer_computes_every_queue_attribute_per_message(sqs, monkeypatch):
    import moto.sqs.models as sqs_models

    backend = sqs_models.SQSBackend
    check = backend.is_message_valid_based_on_retention_period
    # moto's own check (a local stack started in this process replaced it for good)
    monkeypatch.setattr(
        backend, "is_message_valid_based_on_retention_period", getattr(check, "__wrapped__", check)
    )
    url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    counted = []
    attributes = sqs_models.Queue.attributes
    monkeypatch.setattr(
        sqs_models.Queue, "attributes", property(lambda self: counted.append(1) or attributes.fget(self))
    )
    # moto's own receive reads every attribute (counting the queue's messages) per message
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]) == 2
    per_two = len(counted)
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]) == 1
    assert per_two - (len(counted) - per_two) >= 1  # more messages, more scans

    counted.clear()
    moto_internals.sqs_without_scans(monkeypatch.setattr)
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]) == 2
    assert counted == []


def test_a_message_past_its_retention_period_is_still_not_received(sqs, monkeypatch):
    now = [1_750_000_000.0]
    moto_internals.sqs_without_scans(monkeypatch.setattr)
    moto_internals.sqs_on_clock(monkeypatch.setattr, lambda: now[0])
    url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="old")
    now[0] += 61
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.send_message(QueueUrl=url, MessageBody="new")
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == ["new"]


def test_the_fast_clock_keeps_a_test_clock_in_place(monkeypatch):
    import moto.sqs.models as sqs_models

    moto_internals.sqs_on_clock(monkeypatch.setattr, lambda: 42.0)
    moto_internals.sqs_without_scans(monkeypatch.setattr)
    assert sqs_models.unix_time() == 42.0 and sqs_models.unix_time_millis() == 42_000.0


def test_a_long_poll_returns_a_message_when_its_visibility_timeout_ends(sqs, monkeypatch):
    # moto waits for new messages a second at a time: a message that only became visible
    # again was handed out up to a second late
    import time

    moto_internals.sqs_prompt_long_polls(monkeypatch.setattr)
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    received = time.monotonic()
    assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=2)["Messages"]
    time.sleep(0.5)
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
    # visible again at 2.0 s; moto's own wait would hand it out at 2.5 s
    assert [m["Body"] for m in again] == ["x"]
    assert time.monotonic() - received < 2.3


def test_a_parsed_update_expression_is_shared_and_answers_as_moto_does(dynamodb, monkeypatch):
    import copy

    from moto.dynamodb.parsing import validators
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    def update(pk: str) -> dict:
        item = dynamodb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": pk}},
            UpdateExpression="SET #n = if_not_exists(#n, :zero) + :one, tags = list_append(:t, :t) ADD s :s",
            ExpressionAttributeNames={"#n": "n"},
            ExpressionAttributeValues={
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
                ":t": {"L": [{"S": "x"}]},
                ":s": {"SS": ["x"]},
            },
            ReturnValues="ALL_NEW",
        )["Attributes"]
        return {name: value for name, value in item.items() if name != "pk"}

    by_moto = [update("a"), update("a"), update("b")]
    validated: list = []
    real_deepcopy = copy.deepcopy
    monkeypatch.setattr(validators, "deepcopy", lambda tree: validated.append(tree) or real_deepcopy(tree))
    moto_internals.parsed_update_expressions(monkeypatch.setattr)
    shared = [update("c"), update("c"), update("d")]

    # the same answers, every request validating a copy of the one tree parsed
    assert shared == by_moto and by_moto[1]["n"] == {"N": "2"}
    trees = [tree for tree in validated if type(tree).__name__ == "UpdateExpression"]
    assert len(trees) >= 3 and len({id(tree) for tree in trees}) == 1
    assert UpdateExpressionParser.make("SET a = :b") is UpdateExpressionParser.make("SET a = :b")


def test_a_json_body_is_not_searched_for_a_request_id(monkeypatch):
    from moto.core.responses import BaseResponse

    body = json.dumps({"Items": [{"text": {"S": "x" * 10_000}}]})
    xml = "<R><RequestId>old</RequestId></R>"
    moto_internals.no_request_id_scans(monkeypatch.setattr)
    headers, kept = BaseResponse._enrich_response({"status": 200}, body)
    assert kept is body and headers["status"] == "200" and "x-amzn-requestid" in {h.lower() for h in headers}
    _, replaced = BaseResponse._enrich_response({}, xml)
    assert "<RequestId>old</RequestId>" not in replaced and replaced.startswith("<R><RequestId>")


def test_reading_a_request_touches_no_table_answering_it_does(dynamodb):
    """The local stack reads a request outside its DynamoDB lock: moto's ``setup_class``
    must not reach the backend, and ``call_action`` must still be a method of its own."""
    (dispatch, *_) = __import__("moto.dynamodb.urls", fromlist=["url_paths"]).url_paths.values()
    url = f"https://dynamodb.{REGION}.amazonaws.com/"

    def prepared(target: str, body: dict) -> object:
        headers = {
            "X-Amz-Target": f"DynamoDB_20120810.{target}",
            "Content-Type": "application/x-amz-json-1.0",
        }
        return moto_internals.prepare_directly(dispatch, "POST", url, headers, json.dumps(body).encode())

    put_a = prepared("PutItem", {"TableName": TABLE, "Item": {"pk": {"S": "a"}}})
    assert "Item" not in dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "a"}})  # read, not answered
    status, _, body = put_a()
    assert status == 200 and json.loads(body) == {}
    assert dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "a"}})["Item"] == {"pk": {"S": "a"}}

    status, _, body = prepared("GetItem", {"TableName": "none", "Key": {"pk": {"S": "a"}}})()
    assert status == 400 and "ResourceNotFoundException" in json.loads(body)["__type"]
