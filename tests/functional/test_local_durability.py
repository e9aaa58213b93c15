"""The local moto server journals every DynamoDB write before it answers it.

Against a real moto server in a thread of the test: what a response acknowledged is in
the journal and on disk (an fsync covered it) when the response arrives, whatever the
operation; what did not happen (a failed condition) is not journaled; and a journal that cannot be written fails requests instead of acknowledging
them.
"""

from __future__ import annotations

import errno
import os
import re
import threading

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from flowforge.local.aws import MotoServer
from flowforge.local.journal import Journal
from flowforge.local.stack import DEFAULT_TEMPLATE, create_resources

REGION = "us-east-1"


@pytest.fixture(params=["over_http", "in_process"])
def moto(request):  # a server per test: each journals its own table
    """Reached over HTTP (as from outside the local stack's process) and in-process (as
    the handlers in it reach it): the journal's guarantees hold for both."""
    server = MotoServer("127.0.0.1", 0)
    server.start()
    if request.param == "in_process":
        server.serve_in_process()
    yield server
    server.stop()


@pytest.fixture
def dynamodb(moto):
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    # No retries: a failed request must show as it is.
    return session.client("dynamodb", endpoint_url=moto.endpoint, config=Config(retries={"max_attempts": 1}))


@pytest.fixture
def table(moto, dynamodb, request):
    sqs = boto3.client(
        "sqs",
        endpoint_url=moto.endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[-30:].strip("_-")  # a table of its own per test
    s3 = boto3.client(
        "s3",
        endpoint_url=moto.endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    clients = {"dynamodb": dynamodb, "sqs": sqs, "s3": s3}
    return create_resources(clients, DEFAULT_TEMPLATE, stack_name=name.lower())["table"]


@pytest.fixture
def synced(monkeypatch) -> list[int]:
    """The journal's size at each fsync: what each one made durable."""
    sizes: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        size = os.fstat(fd).st_size
        real_fsync(fd)
        sizes.append(size)

    monkeypatch.setattr(os, "fsync", fsync)
    return sizes


def item(pk: str, sk: str = "RUN", **attributes) -> dict:
    return {"pk": {"S": pk}, "sk": {"S": sk}, "kind": {"S": "run"}, **attributes}


def scan(dynamodb, table: str) -> dict[tuple[str, str], dict]:
    items = [i for page in dynamodb.get_paginator("scan").paginate(TableName=table) for i in page["Items"]]
    return {(i["pk"]["S"], i["sk"]["S"]): i for i in items}


def journaled(path) -> dict[tuple[str, str], dict]:
    from flowforge.local.journal import from_wire

    return {(i["pk"]["S"], i["sk"]["S"]): from_wire(i) for i in Journal(path).load().values()}


def test_every_acknowledged_write_is_on_disk_when_its_response_arrives(
    moto, dynamodb, table, tmp_path, synced
):
    # GIVEN an item written before journaling starts (as a restore writes what it replays)
    dynamodb.put_item(TableName=table, Item=item("RESTORED"))
    path = tmp_path / "journal.jsonl"
    moto.journal_writes(Journal(path), table, REGION)
    writes = [
        lambda: dynamodb.put_item(TableName=table, Item=item("A", blob={"B": b"\x00\xff"})),
        lambda: dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": "A"}, "sk": {"S": "RUN"}},
            UpdateExpression="SET step = :s",
            ExpressionAttributeValues={":s": {"N": "1"}},
        ),
        lambda: dynamodb.batch_write_item(
            RequestItems={table: [{"PutRequest": {"Item": item(f"B{i}")}} for i in range(3)]}
        ),
        lambda: dynamodb.delete_item(TableName=table, Key={"pk": {"S": "B0"}, "sk": {"S": "RUN"}}),
    ]
    # WHEN each write is acknowledged
    for write in writes:
        write()
        # THEN the journal, as far as the last fsync reached, holds the table as it is now
        assert synced and synced[-1] == path.stat().st_size
        assert journaled(path) == {k: v for k, v in scan(dynamodb, table).items() if k[0] != "RESTORED"}

    # ... and what did not happen is not journaled: a failed condition
    size = path.stat().st_size
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
        dynamodb.put_item(TableName=table, Item=item("A2"), ConditionExpression="attribute_exists(pk)")
    assert path.stat().st_size == size
    assert ("A2", "RUN") not in journaled(path)
    # ... and the first write after that is journaled as usual
    dynamodb.put_item(TableName=table, Item=item("C"))
    assert ("C", "RUN") in journaled(path)
    assert synced[-1] == path.stat().st_size


def test_a_journal_that_cannot_be_flushed_fails_requests_instead_of_acknowledging_them(
    moto, dynamodb, table, tmp_path, monkeypatch
):
    path = tmp_path / "journal.jsonl"
    moto.journal_writes(Journal(path), table, REGION)
    dynamodb.put_item(TableName=table, Item=item("BEFORE"))

    # WHEN the disk fails under the journal
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    # THEN the write is not acknowledged: a 500 that says why
    with pytest.raises(ClientError) as failed:
        dynamodb.put_item(TableName=table, Item=item("AFTER"))
    assert failed.value.response["Error"]["Code"] == "InternalServerError"
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert str(path) in failed.value.response["Error"]["Message"]
    # ... and nor is anything after it, even once the disk answers again (after a failed
    # fsync the kernel may have dropped what was not written): restart to recover
    monkeypatch.undo()
    with pytest.raises(ClientError, match="InternalServerError"):
        dynamodb.get_item(TableName=table, Key={"pk": {"S": "BEFORE"}, "sk": {"S": "RUN"}})
    assert ("BEFORE", "RUN") in journaled(path)


def write_with_fsync_held(dynamodb, table: str, monkeypatch) -> tuple[threading.Event, threading.Thread]:
    """A put of item W, in a thread, applied in moto and stopped in its fsync until the
    event returned is set."""
    entered, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def held_fsync(fd: int) -> None:
        entered.set()
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", held_fsync)
    writer = threading.Thread(target=lambda: dynamodb.put_item(TableName=table, Item=item("W")))
    writer.start()
    assert entered.wait(10)
    return release, writer


def test_a_read_is_answered_only_once_the_writes_it_can_see_are_on_disk(
    moto, dynamodb, table, tmp_path, monkeypatch
):
    # (the stream poller must not broadcast, nor the API show, a write a crash can still undo)
    moto.journal_writes(Journal(tmp_path / "journal.jsonl"), table, REGION)
    # GIVEN a write applied in moto whose fsync has not finished
    release, writer = write_with_fsync_held(dynamodb, table, monkeypatch)
    # WHEN another client reads it
    read: list[dict] = []
    reader = threading.Thread(
        target=lambda: read.append(
            dynamodb.get_item(
                TableName=table, Key={"pk": {"S": "W"}, "sk": {"S": "RUN"}}, ConsistentRead=True
            )
        )
    )
    reader.start()
    # THEN the answer waits for the fsync ...
    reader.join(0.5)
    assert reader.is_alive() and not read
    release.set()
    writer.join(10)
    reader.join(10)
    # ... and then shows the write
    assert read[0]["Item"]["pk"] == {"S": "W"}


def test_a_read_waits_only_for_the_writes_to_the_partitions_it_can_see(
    moto, dynamodb, table, tmp_path, monkeypatch, request
):
    """In the local stack's process a request that writes nothing waits for the fsync of
    the last write to the partition it reads (a GetItem's key, a Query's leading
    partition condition, a failed write's item), not for every write before it; over
    HTTP, and for what could see any partition (an index, a scan), it waits for all."""
    moto.journal_writes(Journal(tmp_path / "journal.jsonl"), table, REGION)
    dynamodb.put_item(TableName=table, Item=item("OTHER"))
    # GIVEN a write to partition W whose fsync has not finished
    release, writer = write_with_fsync_held(dynamodb, table, monkeypatch)
    key = {"pk": {"S": "OTHER"}, "sk": {"S": "RUN"}}
    requests = {
        "get other": lambda: dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True),
        "query other": lambda: dynamodb.query(
            TableName=table,
            KeyConditionExpression="#p = :p AND sk BETWEEN :a AND :z",
            ExpressionAttributeNames={"#p": "pk"},
            ExpressionAttributeValues={":p": {"S": "OTHER"}, ":a": {"S": "A"}, ":z": {"S": "Z"}},
        ),
        "failed write to other": lambda: dynamodb.put_item(
            TableName=table, Item=item("OTHER"), ConditionExpression="attribute_not_exists(pk)"
        ),
        "get W": lambda: dynamodb.get_item(TableName=table, Key={"pk": {"S": "W"}, "sk": {"S": "RUN"}}),
        "query W": lambda: dynamodb.query(
            TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "W"}}
        ),
        "scan": lambda: dynamodb.scan(TableName=table, Limit=1),
        "query with parentheses": lambda: dynamodb.query(
            TableName=table,
            KeyConditionExpression="pk = :p AND (sk = :a)",
            ExpressionAttributeValues={":p": {"S": "OTHER"}, ":a": {"S": "RUN"}},
        ),
    }
    answered: dict[str, object] = {}

    def ask(name: str) -> None:
        try:
            answered[name] = requests[name]()
        except ClientError as exc:
            answered[name] = exc.response["Error"]["Code"]

    readers = {name: threading.Thread(target=ask, args=(name,)) for name in requests}
    for reader in readers.values():
        reader.start()
    # WHEN the fsync is still held
    in_process = request.node.callspec.params["moto"] == "in_process"
    for reader in readers.values():
        reader.join(1.0 if in_process else 0.3)
    # THEN in-process, what reads only the other partition is answered ...
    unseen = {"get other", "query other", "failed write to other"}
    if in_process:
        assert set(answered) == unseen
        assert answered["failed write to other"] == "ConditionalCheckFailedException"
        assert answered["get other"]["Item"]["pk"] == {"S": "OTHER"}
    else:
        assert not answered  # over HTTP every read waits
    # ... and what can see W waits for its fsync
    release.set()
    writer.join(10)
    for reader in readers.values():
        reader.join(10)
    assert set(answered) == set(requests)
    assert answered["get W"]["Item"]["pk"] == {"S": "W"}
