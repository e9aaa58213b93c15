"""moto's internals that flowforge.local.moto_internals relies on are still there.

moto's minor version is pinned for them (pyproject.toml). When an upgrade moves one,
the test named after it fails here; fix moto_internals.py, then move the pin.
"""

from __future__ import annotations

import json
import re

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


def outcome(call) -> object:
    """What a request answered: its result without the metadata, or its error's code and message."""
    from botocore.exceptions import ClientError

    try:
        answer = call()
    except ClientError as exc:
        return exc.response["Error"]["Code"], exc.response["Error"]["Message"]
    except Exception as exc:  # moto fails on some bad requests (a 500 from its server)
        return type(exc).__name__, str(exc)
    if not isinstance(answer, dict):
        return answer
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


def fresh_table(dynamodb) -> None:
    """The table emptied (deleted and made again): each sequence of requests starts alike."""
    dynamodb.delete_table(TableName=TABLE)
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def conditional_requests(dynamodb) -> list:
    """PutItem, UpdateItem, DeleteItem and Query with conditions: met, not met and invalid
    (the same texts with other values too)."""
    key = {"pk": {"S": "k"}}
    n = lambda v: {"N": str(v)}  # noqa: E731
    s = lambda v: {"S": v}  # noqa: E731

    def put(condition, values=None, names=None, item=None):
        params = {"TableName": TABLE, "Item": item or {**key, "n": n(1), "s": s("go"), "tags": {"SS": ["x"]}}}
        params |= {"ConditionExpression": condition} if condition is not None else {}
        params |= {"ExpressionAttributeValues": values} if values is not None else {}
        params |= {"ExpressionAttributeNames": names} if names is not None else {}
        return lambda: dynamodb.put_item(**params)

    def update(condition, values, names=None):
        params = {
            "TableName": TABLE,
            "Key": key,
            "UpdateExpression": "SET n = n + :one",
            "ConditionExpression": condition,
            "ExpressionAttributeValues": {":one": n(1), **values},
            "ReturnValues": "ALL_NEW",
        }
        params |= {"ExpressionAttributeNames": names} if names is not None else {}
        return lambda: dynamodb.update_item(**params)

    def query(condition, values):
        return lambda: dynamodb.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk",
            FilterExpression=condition,
            ExpressionAttributeValues={":pk": s("k"), **values},
        )

    status = {"#s": "s"}
    between = "n BETWEEN :lo AND :hi AND begins_with(#s, :p) AND size(tags) > :z"
    return [
        put("attribute_not_exists(pk)"),
        put("attribute_not_exists(pk)"),  # not met now
        update("n < :cap AND #s IN (:a, :b)", {":cap": n(5), ":a": s("go"), ":b": s("stop")}, status),
        update("n < :cap AND #s IN (:a, :b)", {":cap": n(2), ":a": s("go"), ":b": s("stop")}, status),
        update("n < :cap AND #s IN (:a, :b)", {":cap": n(9), ":a": s("no"), ":b": s("go")}, status),
        update(between, {":lo": n(1), ":hi": n(9), ":p": s("g"), ":z": n(0)}, status),
        update(between, {":lo": n(1), ":hi": n(2), ":p": s("g"), ":z": n(0)}, status),
        update("NOT (n = :x) OR attribute_exists(#s)", {":x": n(4)}, status),
        update("NOT (n = :x) OR contains(tags, :t)", {":x": n(4), ":t": s("y")}),
        update("n = :missing", {":x": n(1)}),  # an unknown value
        update("#nope = :x", {":x": n(1)}, status),  # an unknown name
        update("n = = :x", {":x": n(1)}),  # a syntax error
        update("status = :x", {":x": n(1)}),  # a reserved word
        update("((n = :x))", {":x": n(1)}),  # redundant parentheses
        update("n IN (:x", {":x": n(1)}),
        put("n = :x"),  # no values at all
        put("attribute_exists(#s) AND n >= :x", {":x": n(1)}, status),
        put("attribute_exists(#s) AND n >= :x", {":x": n(100)}, status),
        query("n > :x", {":x": n(0)}),
        query("n > :x", {":x": n(100)}),
        query("#s <> :x", {":x": s("go")}),
        lambda: dynamodb.delete_item(
            TableName=TABLE, Key=key, ConditionExpression="n > :x", ExpressionAttributeValues={":x": n(100)}
        ),
        lambda: dynamodb.delete_item(
            TableName=TABLE, Key=key, ConditionExpression="n > :x", ExpressionAttributeValues={":x": n(0)}
        ),
    ]


def test_a_condition_expression_is_parsed_once_and_answers_as_moto_does(dynamodb, monkeypatch):
    from moto.dynamodb.comparisons import ConditionExpressionParser as Parser

    # moto's own parse (a local stack started in this process replaced it for good)
    monkeypatch.setattr(Parser, "parse", getattr(Parser.parse, "__wrapped__", Parser.parse))
    lexed: list[str] = []
    lex = Parser._lex_condition_expression
    monkeypatch.setattr(
        Parser, "_lex_condition_expression", lambda self: lexed.append(self.condition_expression) or lex(self)
    )
    fresh_table(dynamodb)
    by_moto = [outcome(call) for call in conditional_requests(dynamodb)]
    lexed_by_moto = list(lexed)

    moto_internals.parsed_condition_expressions(monkeypatch.setattr)
    for _ in range(2):  # parsed, then kept
        fresh_table(dynamodb)
        lexed.clear()
        assert [outcome(call) for call in conditional_requests(dynamodb)] == by_moto

    assert sum(isinstance(o, tuple) for o in by_moto) >= 10  # errors and unmet conditions compared too
    assert ("KeyError", "':missing'") in by_moto and ("ValueError", "Bad comparison n = =") in by_moto
    # the second time round, only the expressions moto refuses are parsed again
    assert len(lexed) < len(lexed_by_moto) / 2
    assert "attribute_not_exists(pk)" not in lexed and "n = = :x" in lexed


def test_a_kept_condition_tree_takes_each_requests_values(monkeypatch):
    from moto.dynamodb.comparisons import ConditionExpressionParser as Parser
    from moto.dynamodb.models.dynamo_type import Item

    moto_internals.parsed_condition_expressions(monkeypatch.setattr)
    item = Item({"S": "k"}, None, {"pk": {"S": "k"}, "n": {"N": "3"}, "s": {"S": "go"}})
    expression, names = "n BETWEEN :lo AND :hi AND (#s = :s OR :s IN (:a, :s))", {"#s": "s"}
    for lo, hi, s, want in [("1", "5", "go", True), ("4", "5", "go", False), ("1", "5", "no", True)]:
        values = {":lo": {"N": lo}, ":hi": {"N": hi}, ":s": {"S": s}, ":a": {"S": "x"}}
        parser = Parser(expression, names, values)
        assert parser.parse().expr(item) is want
        assert (parser.expr_attr_names_found, parser.expr_attr_values_found) == (
            ["n", "#s"],
            [":lo", ":hi", ":s", ":s", ":a", ":s"],
        )
    with pytest.raises(KeyError, match=":hi"):  # moto's error for the first value missing
        Parser(expression, names, {":lo": {"N": "1"}, ":s": {"S": "x"}}).parse()
    assert Parser.parse.parsed_once and Parser.parse.__wrapped__ is not Parser.parse


UPDATES = [
    ("SET n = if_not_exists(n, :zero) + :one, tags = list_append(if_not_exists(tags, :empty), :t)", {}),
    ("SET m.#a = :one, l[0] = :one REMOVE gone ADD c :one, ss :ss DELETE ds :ds", {"#a": "a"}),
    ("SET n = n + :s", {}),  # a type mismatch
    ("SET m = :one, m.#a = :one", {"#a": "a"}),  # overlapping paths
    ("SET pk = :s", {}),  # a key attribute
    ("SET n = n - :one REMOVE l[0], l[1]", {}),
    ("SET nope.deeper = :one", {}),  # a path that does not exist
    ("SET #a = :one", {"#a": "x"}),
    ("SET #a = :one", {"#a": "pk"}),  # the same expression updating a key attribute
    ("SET #a = :one, #b = :one", {"#a": "x", "#b": "x"}),  # the same path twice
]


def update_requests(dynamodb) -> list:
    values = {
        ":zero": {"N": "0"},
        ":one": {"N": "1"},
        ":t": {"L": [{"S": "x"}, {"M": {"k": {"BOOL": True}}}]},
        ":empty": {"L": []},
        ":ss": {"SS": ["a", "b"]},
        ":ds": {"SS": ["y"]},
        ":s": {"S": "text"},
    }
    item = {
        "pk": {"S": "k"},
        "m": {"M": {"a": {"N": "0"}}},
        "l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}]},
        "gone": {"NULL": True},
        "ds": {"SS": ["y", "z"]},
    }

    def update(expression, names, pk="k"):
        used = {k: values[k] for k in re.findall(r":\w+", expression)}
        params = {"ExpressionAttributeNames": names} if names else {}
        return lambda: dynamodb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": pk}},
            UpdateExpression=expression,
            ExpressionAttributeValues=used,
            ReturnValues="ALL_NEW",
            **params,
        )

    new_items = [update(e, n, pk=f"new{i}") for i, (e, n) in enumerate(UPDATES)]  # validated twice by moto
    return [
        lambda: dynamodb.put_item(TableName=TABLE, Item=item),
        *[update(e, n) for e, n in UPDATES * 2],
        *new_items,
    ]


def node_shape(node, names: dict[int, int] | None = None) -> object:
    """A node tree as a comparable value: classes, attributes in order, values, and which
    node each ``parent`` is (by the order nodes are met), so aliasing is compared too."""
    from moto.dynamodb.parsing.ast_nodes import Node

    names = {} if names is None else names
    if isinstance(node, Node):
        if id(node) in names:
            return ("seen", names[id(node)])
        names[id(node)] = len(names)
        return (type(node), [(k, node_shape(v, names)) for k, v in vars(node).items()])
    if isinstance(node, list):
        return [node_shape(v, names) for v in node]
    return (type(node), repr(node))


def node_ids(node) -> set[int]:
    from moto.dynamodb.parsing.ast_nodes import Node

    stack, seen = [node], set()
    while stack:
        node = stack.pop()
        if isinstance(node, Node) and id(node) not in seen:
            seen.add(id(node))
            stack.extend([*(node.children or []), node.parent])
    return seen


def test_an_update_expression_tree_is_copied_as_deepcopy_copies_it(dynamodb, monkeypatch):
    import copy

    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.parsing import validators
    from moto.dynamodb.parsing.ast_nodes import DDBTypedValue, Node
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    # moto's own copy (a local stack started in this process replaced it for good)
    monkeypatch.setattr(
        validators, "deepcopy", getattr(validators.deepcopy, "__wrapped__", validators.deepcopy)
    )
    fresh_table(dynamodb)
    by_moto = [outcome(call) for call in update_requests(dynamodb)]
    moto_internals.validated_copies_made_directly(monkeypatch.setattr)
    direct = validators.deepcopy
    assert direct is not copy.deepcopy and direct.direct

    for expression, _ in UPDATES:
        tree = UpdateExpressionParser.make(expression)
        made, expected = direct(tree), copy.deepcopy(tree)
        assert node_shape(made) == node_shape(expected) == node_shape(tree)
        assert not node_ids(made) & node_ids(tree)  # nothing of the original tree is shared
    typed = DDBTypedValue(DynamoType({"L": [{"S": "x"}]}))  # DynamoType: deepcopy's own way
    assert node_shape(direct(typed)) == node_shape(copy.deepcopy(typed))
    assert direct(typed).children[0] is not typed.children[0]
    assert direct([1, {"a": [2]}]) == [1, {"a": [2]}]

    reconstructed: list = []
    reconstruct = copy._reconstruct
    monkeypatch.setattr(
        copy, "_reconstruct", lambda x, *a, **k: reconstructed.append(x) or reconstruct(x, *a, **k)
    )
    fresh_table(dynamodb)
    assert [outcome(call) for call in update_requests(dynamodb)] == by_moto
    assert sum(isinstance(o, tuple) for o in by_moto) >= 6  # the errors compared too
    assert not [x for x in reconstructed if isinstance(x, Node)]  # no node copied by deepcopy's protocol


def moto_query(monkeypatch) -> None:
    """moto's own Table.query and its table module's ``copy`` (a local stack started in
    this process replaced them for good)."""
    import copy

    import moto.dynamodb.models.table as table_module

    query = table_module.Table.query
    while hasattr(query, "__wrapped__"):
        query = query.__wrapped__
    monkeypatch.setattr(table_module.Table, "query", query)
    monkeypatch.setattr(table_module, "copy", copy)


PLAIN_AND_OTHER_QUERIES = [
    *QUERIES,
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "a"}}, "Select": "COUNT"},
    {
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "a"}},
        "ProjectionExpression": "sk, #b",
        "ExpressionAttributeNames": {"#b": "blob"},
    },
    {
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "a"}, ":s": {"S": "LOG#2"}},
        "FilterExpression": "sk >= :s",
    },
    {
        "KeyConditions": {"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "a"}]}},
        "QueryFilter": {"sk": {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [{"S": "LOG"}]}},
    },
]


def test_a_plain_query_hands_over_its_items_uncopied_and_answers_as_moto_does(sorted_table, monkeypatch):
    from moto.dynamodb.models.dynamo_type import Item

    moto_query(monkeypatch)
    ask = lambda q: outcome(lambda: sorted_table.query(TableName="sorted", **q))  # noqa: E731
    expected = [ask(q) for q in PLAIN_AND_OTHER_QUERIES]
    table = moto_internals_table("sorted")
    stored = {pk: {sk: item.to_json() for sk, item in items.items()} for pk, items in table.items.items()}
    moto_internals.partition_queries(monkeypatch.setattr)
    moto_internals.uncopied_query_results(monkeypatch.setattr)
    copied: list[int] = []
    deepcopy = Item.__deepcopy__
    monkeypatch.setattr(Item, "__deepcopy__", lambda self, memo: copied.append(1) or deepcopy(self, memo))

    plain = [ask(q) for q in QUERIES]
    assert copied == []  # no item copied for a plain query
    others = [ask(q) for q in PLAIN_AND_OTHER_QUERIES[len(QUERIES) :]]
    assert plain + others == expected
    assert len(copied) >= 4 + 4 + 3  # projected or filtered: each item copied, as moto does
    assert all("Count" in a for a in expected)
    after = {pk: {sk: item.to_json() for sk, item in items.items()} for pk, items in table.items.items()}
    assert after == stored


def test_a_query_sizes_each_item_once_and_answers_as_moto_does(sorted_table, monkeypatch):
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    moto_query(monkeypatch)
    monkeypatch.setattr(Item, "size", getattr(Item.size, "__wrapped__", Item.size))
    ask = lambda q: outcome(lambda: sorted_table.query(TableName="sorted", **q))  # noqa: E731
    sized: list[int] = []
    size = Item.size
    monkeypatch.setattr(Item, "size", lambda self: sized.append(id(self)) or size(self))
    expected = [ask(q) for q in PLAIN_AND_OTHER_QUERIES]
    sized_by_moto = len(sized)
    assert len(set(sized)) < sized_by_moto  # moto sizes an item more than once per query

    moto_internals.query_items_sized_once(monkeypatch.setattr)
    sized.clear()
    assert [ask(q) for q in PLAIN_AND_OTHER_QUERIES] == expected
    assert 0 < len(sized) < sized_by_moto
    item = next(iter(next(iter(moto_internals_table("sorted").items.values())).values()))
    before = item.size()
    item.attrs["more"] = DynamoType({"S": "x" * 10})
    assert item.size() == before + len("more") + 10  # outside a query, sized as it is now


def test_an_item_is_sized_once_per_attribute_and_refused_as_moto_refuses_it(dynamodb, monkeypatch):
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    monkeypatch.setattr(Item, "__init__", getattr(Item.__init__, "__wrapped__", Item.__init__))

    def build(attrs):
        try:
            item = Item(DynamoType({"S": "k"}), None, attrs)
        except ItemSizeTooLarge as exc:
            return type(exc), str(exc)
        return type(item.attrs), list(item.attrs.items())

    limit = 405_000
    attrs = [
        {
            "pk": {"S": "k"},
            "n": {"N": "-12.50"},
            "é": {"S": "ü" * 3},
            "b": {"B": b"\x00\xff"},
            "t": {"BOOL": True},
        },
        {
            "m": {"M": {"x": {"L": [{"N": "1"}, {"SS": ["a", "bb"]}, {"NULL": True}]}}},
            "ns": {"NS": ["1", "22"]},
        },
        {"a": {"S": "x" * (limit - 1)}},  # at the limit: kept
        {"a": {"S": "x" * limit}},  # one byte over: refused
        {"a": {"S": "x" * (limit // 2)}, "b": {"S": "x" * (limit // 2 - 3)}, "c": {"S": ""}},  # at the limit
        {"a": {"S": "x" * (limit // 2)}, "b": {"S": "x" * (limit // 2 - 3)}, "c": {"S": "x"}},
        {"ü": {"S": "é" * (limit // 2 - 1)}},  # 2 + 404996 bytes
        {"ü": {"S": "é" * (limit // 2)}, "": {"NULL": True}},
    ]
    by_moto = [build(a) for a in attrs]
    big = {"pk": {"S": "big"}, "a": {"S": "x" * limit}}
    refused = outcome(lambda: dynamodb.put_item(TableName=TABLE, Item=big))

    moto_internals.sized_items_once(monkeypatch.setattr)
    checked: list[int] = []
    check = LimitedSizeDict.__setitem__
    monkeypatch.setattr(
        LimitedSizeDict, "__setitem__", lambda self, k, v: checked.append(1) or check(self, k, v)
    )
    assert [build(a) for a in attrs] == by_moto  # moto's way: the check above replaced its own
    assert checked
    monkeypatch.setattr(LimitedSizeDict, "__setitem__", check)
    assert [build(a) for a in attrs] == by_moto
    assert [b[0] for b in by_moto].count(ItemSizeTooLarge) == 3
    assert outcome(lambda: dynamodb.put_item(TableName=TABLE, Item=big)) == refused
    assert refused[0] == "ValidationException"

    sized: list[int] = []
    size = DynamoType.size
    monkeypatch.setattr(DynamoType, "size", lambda self: sized.append(1) or size(self))
    Item(DynamoType({"S": "k"}), None, {f"a{i}": {"S": "x"} for i in range(40)})
    assert len(sized) == 40  # each attribute sized once (moto: 40 * 41 / 2)


def test_an_action_is_found_among_the_methods_as_moto_finds_it(dynamodb, monkeypatch):
    import inspect
    import types

    import moto.core.responses as responses
    from moto.dynamodb.responses import DynamoHandler
    from moto.s3.responses import S3Response
    from moto.sqs.responses import SQSResponse

    listed = getattr(responses.method_names_from_class, "__wrapped__", responses.method_names_from_class)
    monkeypatch.setattr(responses, "method_names_from_class", listed)

    class Odd(DynamoHandler):
        gone = property(lambda self: 1)
        static = staticmethod(lambda: 1)
        klass = classmethod(lambda cls: 1)
        data = 3
        dynamic = types.DynamicClassAttribute(lambda self: 1)

        class Refusing:
            def __get__(self, obj, owner):
                raise AttributeError("refused")

        refusing = Refusing()

        def put_item(self):  # an override
            return super().put_item()

    moto_internals.listed_methods_once(monkeypatch.setattr)
    for cls in (DynamoHandler, SQSResponse, S3Response, Odd):
        view, names = responses.method_names_from_class(cls), listed(cls)
        asked = [*dir(cls), "nope", "", "query", "__init__", "mro", "__class__", 3, None]
        assert [name in view for name in asked] == [name in names for name in asked], cls
        assert list(view) == names and len(view) == len(names) and view[0] == names[0]
    odd = responses.method_names_from_class(Odd)
    assert "static" in odd and "put_item" in odd and "klass" not in odd and "refusing" not in odd

    members: list[object] = []
    getmembers = inspect.getmembers
    monkeypatch.setattr(
        inspect, "getmembers", lambda obj, *a, **k: members.append(obj) or getmembers(obj, *a, **k)
    )
    assert outcome(lambda: dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})) == {}
    assert outcome(lambda: dynamodb.describe_limits()) != {}
    assert DynamoHandler not in members  # found without listing the class's members
    monkeypatch.setattr(DynamoHandler, "brand_new", lambda self: None, raising=False)
    assert "brand_new" in responses.method_names_from_class(DynamoHandler)  # a method added later counts
    monkeypatch.setattr(responses, "method_names_from_class", listed)
    put(dynamodb, "b")
    assert DynamoHandler in members  # moto's own way lists them


def test_a_request_is_routed_to_its_action_once_and_answered_as_moto_does(dynamodb, sqs, monkeypatch):
    from moto.core.responses import BaseResponse
    from moto.core.routing import ServiceOperationRouter

    match = getattr(
        BaseResponse._get_action_from_request, "__wrapped__", BaseResponse._get_action_from_request
    )
    monkeypatch.setattr(BaseResponse, "_get_action_from_request", match)
    routed: list[str] = []
    route = ServiceOperationRouter.match
    monkeypatch.setattr(
        ServiceOperationRouter,
        "match",
        lambda self, request: routed.append(self._service_model.service_name) or route(self, request),
    )

    def requests() -> list:
        fresh_table(dynamodb)
        url = sqs.create_queue(QueueName=f"q{len(rounds)}")["QueueUrl"]
        rounds.append(url)
        calls = [
            lambda: dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "a"}}),
            lambda: dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "a"}}),
            lambda: dynamodb.get_item(TableName="nope", Key={"pk": {"S": "a"}}),
            lambda: dynamodb.describe_table(TableName=TABLE)["Table"]["KeySchema"],
            lambda: sqs.send_message(QueueUrl=url, MessageBody="m")["MD5OfMessageBody"],
            lambda: [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]],
            lambda: sqs.get_queue_attributes(QueueUrl=url + "-nope"),
            lambda: sqs.purge_queue(QueueUrl=url),
        ]
        routed.clear()
        return [outcome(call) for call in calls]

    rounds: list[str] = []
    by_moto = requests()
    routed_by_moto = list(routed)
    moto_internals.matched_actions_once(monkeypatch.setattr)
    assert requests() == by_moto
    assert sum(isinstance(o, tuple) for o in by_moto) == 2  # errors compared too
    assert len(routed) == 8 < len(routed_by_moto)  # once a request


def test_an_update_expressions_shape_is_checked_once_and_answers_as_moto_does(dynamodb, monkeypatch):
    from moto.dynamodb.parsing.validators import ActionCountValidator, UpdateExpressionValidator

    validate, init = UpdateExpressionValidator.validate, UpdateExpressionValidator.__init__
    monkeypatch.setattr(UpdateExpressionValidator, "validate", getattr(validate, "__wrapped__", validate))
    monkeypatch.setattr(UpdateExpressionValidator, "__init__", getattr(init, "__wrapped__", init))
    moto_internals.parsed_update_expressions(monkeypatch.setattr)  # one tree per expression
    checked: list[int] = []
    count = ActionCountValidator.verify_action_counts
    monkeypatch.setattr(
        ActionCountValidator, "verify_action_counts", lambda s, n: checked.append(1) or count(s, n)
    )
    fresh_table(dynamodb)
    by_moto = [outcome(call) for call in update_requests(dynamodb)]
    checked_by_moto = len(checked)

    moto_internals.update_expressions_checked_once(monkeypatch.setattr)
    for _ in range(2):
        fresh_table(dynamodb)
        checked.clear()
        assert [outcome(call) for call in update_requests(dynamodb)] == by_moto
    assert sum(isinstance(o, tuple) for o in by_moto) >= 8  # the errors compared too
    key_error = "One or more parameter values were invalid: Cannot update attribute pk. This attribute is part of the key"
    assert ("ValidationException", key_error) in by_moto
    assert 0 < len(checked) < checked_by_moto / 2  # only the expressions moto refuses checked again


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


def _environ(request) -> tuple[dict, bytes]:
    environ = dict(request.environ)
    body = environ.pop("wsgi.input").getvalue()
    environ.pop("werkzeug.request", None)
    return environ, body


@pytest.mark.parametrize(
    ("method", "url", "headers", "body"),
    [
        pytest.param(
            "POST",
            "http://127.0.0.1:5000/",
            {
                "X-Amz-Target": "DynamoDB_20120810.PutItem",
                "Content-Type": "application/x-amz-json-1.0",
                "Content-Length": "7",
                "User-Agent": b"Boto3/1.40 md/Botocore#1.40",
                "amz-sdk-request": "attempt=1",
            },
            b'{"a":1}',
            id="dynamodb",
        ),
        pytest.param(
            "POST",
            "https://sqs.us-east-1.amazonaws.com/123456789012/q?x=1&y=%2F",
            {"X-Amz-Target": "AmazonSQS.SendMessage", "Content-Type": "application/x-amz-json-1.0"},
            b"",
            id="query-string-no-body",
        ),
        pytest.param(
            "GET",
            "http://h:1/p%20a/b%2Fc?x=%C3%A9",
            {"Accept": "*/*", "Transfer-Encoding": "chunked"},
            b"",
            id="encoded-path",
        ),
        pytest.param("PUT", "http://h/b/k", {"Host": "elsewhere:9"}, b"x", id="host-header"),
        pytest.param("PUT", "http://h/b/k", {"x-amz-meta-my_key": "v"}, b"x", id="preserved-name"),
    ],
)
def test_a_request_is_built_as_moto_builds_it(method, url, headers, body):
    from moto.core.request import Request

    expected = Request.from_primitives(method, url, headers, body)
    for _ in range(2):  # the first builds the bare environ, the second copies it
        built = moto_internals.moto_request(method, url, headers, body)
        assert type(built) is Request
        assert _environ(built) == _environ(expected)
        assert list(_environ(built)[0]) == list(_environ(expected)[0])  # in the same order
        assert (built.method, built.url, built.raw_url, built.data) == (
            expected.method,
            expected.url,
            expected.raw_url,
            expected.data,
        )
        assert list(built.headers) == list(expected.headers)


def test_a_request_to_a_known_url_builds_no_environ_with_werkzeug(monkeypatch):
    from werkzeug.test import EnvironBuilder

    built: list[object] = []
    get_environ = EnvironBuilder.get_environ
    monkeypatch.setattr(EnvironBuilder, "get_environ", lambda self: built.append(self) or get_environ(self))
    headers = {"X-Amz-Target": "DynamoDB_20120810.GetItem", "Content-Type": "application/x-amz-json-1.0"}
    url = "http://127.0.0.1:5999/"
    for body in (b"{}", b'{"TableName":"t"}', b"{}"):
        assert moto_internals.moto_request("POST", url, headers, body).get_data() == body
    assert len(built) <= 1  # the bare environ, once per method and URL


def test_a_stream_record_converts_only_the_images_its_view_keeps(monkeypatch):
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import StreamRecord

    # moto's own (a local stack started in this process installs the patch for good)
    monkeypatch.setattr(
        StreamRecord, "__init__", getattr(StreamRecord.__init__, "__wrapped__", StreamRecord.__init__)
    )

    to_json = Item.to_json
    converted: list[str] = []
    monkeypatch.setattr(
        Item, "to_json", lambda self: converted.append(self.attrs["pk"].value) or to_json(self)
    )

    def records(view: str) -> list[dict]:
        with mock_aws():
            client = boto3.client("dynamodb", region_name=REGION)
            client.create_table(
                TableName=TABLE,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
            )
            client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "n": {"N": "1"}})
            client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "n": {"N": "2"}, "b": {"B": b"\0"}})
            client.update_item(
                TableName=TABLE,
                Key={"pk": {"S": "a"}},
                UpdateExpression="SET n = n + :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
            client.delete_item(TableName=TABLE, Key={"pk": {"S": "a"}})
            shard = moto_internals.stream_shard(TABLE, REGION)
            found = moto_internals.records_after(shard, shard.starting_sequence_number - 1)
        for record in found:
            record.pop("eventID")
            # SizeBytes counts the time's digits too.
            for varies in ("ApproximateCreationDateTime", "SequenceNumber", "SizeBytes"):
                record["dynamodb"].pop(varies)
        return found

    views = ("NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES", "KEYS_ONLY")
    by_moto = {view: records(view) for view in views}
    converted_by_moto = len(converted)
    converted.clear()
    moto_internals.stream_records_without_unused_images(monkeypatch.setattr)
    assert {view: records(view) for view in views} == by_moto
    assert [r["eventName"] for r in by_moto["NEW_IMAGE"]] == ["INSERT", "MODIFY", "MODIFY", "REMOVE"]
    assert "OldImage" in by_moto["NEW_AND_OLD_IMAGES"][1]["dynamodb"]
    assert "NewImage" not in by_moto["OLD_IMAGE"][1]["dynamodb"]
    # Per write: moto converts both items, the patch only those the view keeps (the
    # key of a REMOVE still comes from the old item).
    assert len(converted) < converted_by_moto
