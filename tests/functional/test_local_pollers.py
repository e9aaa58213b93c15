"""The local event source mappings against a real moto server (in a thread of the test).

Queue: partial batch failures come back after the visibility timeout and reach the DLQ
after maxReceiveCount. Stream: only filtered records wake the function. (The journal is written by the
moto server as writes happen: test_local_durability.py.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
from functools import partial

import boto3
import pytest

from flowforge.local import events, moto_internals
from flowforge.local.aws import MotoServer
from flowforge.local.lambdas import LocalFunction
from flowforge.local.patterns import compile_filters
from flowforge.local.pollers import QueuePoller, Schedule, StreamPoller
from flowforge.local.stack import DEFAULT_TEMPLATE, create_resources
from flowforge.local.template import read_template


@pytest.fixture(scope="module")
def moto():
    server = MotoServer("127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def session(moto):
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )


@pytest.fixture
def client(session, moto):
    return lambda name: session.client(name, endpoint_url=moto.endpoint)


def make_queue(sqs, name, **attributes):
    url = sqs.create_queue(QueueName=name, Attributes={k: str(v) for k, v in attributes.items()})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


async def run_for(seconds: float, *coroutines):
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_until(done, *coroutines, timeout_s: float = 20.0):
    """Run ``coroutines`` until ``done()`` holds (or ``timeout_s``): no fixed sleep that a
    busy machine could outlast."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_failed_items_are_redelivered_then_dead_lettered_and_successes_deleted(client):
    sqs = client("sqs")
    dlq_url, dlq_arn = make_queue(sqs, "poller-dlq")
    url, arn = make_queue(
        sqs,
        "poller-steps",
        VisibilityTimeout=1,
        RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
    )
    for body in ("good", "bad"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    deliveries: list[tuple[str, str]] = []

    def handler(event, context):
        failures = []
        for record in event["Records"]:
            deliveries.append((record["body"], record["attributes"]["ApproximateReceiveCount"]))
            if record["body"] == "bad":
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    function = LocalFunction("Step", handler, timeout_s=5, concurrency=2)
    poller = QueuePoller(sqs, url, arn, function, batch_size=10, report_failures=True)
    # WHEN the poller runs past two visibility timeouts
    asyncio.run(run_for(3.5, poller.run()))
    # THEN the good message was delivered once and deleted, the bad one twice, then moved
    assert deliveries.count(("good", "1")) == 1
    assert [d for d in deliveries if d[0] == "bad"] == [("bad", "1"), ("bad", "2")]
    dead = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in dead] == ["bad"]


def test_a_crashed_invocation_returns_the_whole_batch():
    # (a plain function error: Lambda's rule is that every message of the batch comes back)
    calls = []

    def handler(event, context):
        calls.append(len(event["Records"]))
        raise RuntimeError("crash")

    class Sqs:
        deleted: list = []

        def delete_message_batch(self, **kwargs):
            self.deleted.append(kwargs)

    sqs = Sqs()
    function = LocalFunction("Step", handler, timeout_s=5, concurrency=1)
    poller = QueuePoller(sqs, "url", "arn", function, batch_size=10, report_failures=True)
    message = {"MessageId": "m", "ReceiptHandle": "r", "Body": "x", "MD5OfBody": "0", "Attributes": {}}
    asyncio.run(poller.deliver([message]))
    assert calls == [1]
    assert sqs.deleted == []


def test_unknown_batch_item_ids_fail_the_whole_batch():
    function = LocalFunction(
        "Step", lambda e, c: {"batchItemFailures": [{"itemIdentifier": ""}]}, timeout_s=5, concurrency=1
    )
    poller = QueuePoller(None, "url", "arn", function, batch_size=10, report_failures=True)
    assert poller._failed_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, {"a", "b"}) == {"a", "b"}


@pytest.fixture
def stack(client, request):
    name = request.node.name[-30:].strip("_")  # a table of its own per test
    return create_resources(
        {"dynamodb": client("dynamodb"), "sqs": client("sqs"), "s3": client("s3")},
        DEFAULT_TEMPLATE,
        stack_name=name.lower(),
    )


def test_the_stream_is_filtered(client, stack):
    dynamodb = client("dynamodb")
    table = stack["table"]
    delivered: list[dict] = []
    (source,) = read_template(DEFAULT_TEMPLATE).stream_sources
    poller = StreamPoller(
        client("dynamodbstreams"),
        stack["stream_arn"],
        LocalFunction("Broadcast", lambda e, c: delivered.extend(e["Records"]), timeout_s=5, concurrency=1),
        batch_size=source.batch_size,
        report_failures=True,
        max_retries=source.max_retries,
        accepts=compile_filters(source.filters),
    )
    dynamodb.put_item(
        TableName=table, Item={"pk": {"S": "GRAPH#old"}, "sk": {"S": "GRAPH"}, "kind": {"S": "graph"}}
    )
    assert poller.skip_existing() == 1  # what was there before the poller started is not replayed

    def log(seq):
        return {
            "pk": {"S": "RUN#r"},
            "sk": {"S": f"LOG#{seq:010d}"},
            "kind": {"S": "log"},
            "seq": {"N": str(seq)},
        }

    dynamodb.put_item(TableName=table, Item=log(0))
    dynamodb.put_item(TableName=table, Item=log(1))
    dynamodb.put_item(
        TableName=table, Item={"pk": {"S": "GRAPH#g"}, "sk": {"S": "GRAPH"}, "kind": {"S": "graph"}}
    )

    asyncio.run(run_for(1.0, poller.run()))
    # THEN the function saw the two log inserts only (the graph is filtered out)
    assert [r["dynamodb"]["Keys"]["sk"]["S"] for r in delivered] == ["LOG#0000000000", "LOG#0000000001"]
    assert all(r["eventSourceARN"] == stack["stream_arn"] for r in delivered)


def test_consumed_stream_records_are_forgotten_and_reading_carries_on(client, stack, moto):
    # moto keeps stream records forever: the local stack drops what it has read, and
    # sequence numbers must carry on across the cut

    dynamodb = client("dynamodb")
    table = stack["table"]
    delivered: list[str] = []
    poller = StreamPoller(
        client("dynamodbstreams"),
        stack["stream_arn"],
        LocalFunction(
            "Broadcast",
            lambda e, c: delivered.extend(r["eventName"] for r in e["Records"]),
            timeout_s=5,
            concurrency=1,
        ),
        batch_size=100,
        report_failures=True,
        max_retries=0,
        accepts=lambda record: True,
        consumed=partial(moto.trim, table, "us-east-1"),
    )

    def shard():
        return moto_internals.stream_shard(table, "us-east-1")

    for round_ in range(3):
        for i in range(5):
            dynamodb.put_item(TableName=table, Item={"pk": {"S": f"p{round_}-{i}"}, "sk": {"S": "s"}})
        assert len(poller.read()) == 5
        assert shard().items == []
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "last"}, "sk": {"S": "s"}})
    asyncio.run(run_until(lambda: delivered, poller.run()))
    assert delivered == ["INSERT"]


def test_the_schedule_invokes_its_function_with_scheduled_events_and_survives_a_failure():
    seen: list[dict] = []

    def sweeper(event, context):
        seen.append(event)
        if len(seen) == 1:
            raise RuntimeError("a failing tick must not stop the schedule")
        return {"resent": 0}

    function = LocalFunction("Sweeper", sweeper, timeout_s=5, concurrency=1)
    asyncio.run(run_for(0.5, Schedule(function, every_s=0.1).run()))
    assert len(seen) >= 3
    assert {e["detail-type"] for e in seen} == {"Scheduled Event"}
    assert seen[0]["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/Sweeper-schedule"]


def test_the_stream_is_read_while_every_shared_executor_thread_is_busy(client, stack):
    # GIVEN the event loop's default executor taken up entirely (as queue long polls took it)
    dynamodb = client("dynamodb")
    delivered = threading.Event()
    (source,) = read_template(DEFAULT_TEMPLATE).stream_sources
    poller = StreamPoller(
        client("dynamodbstreams"),
        stack["stream_arn"],
        LocalFunction("Broadcast", lambda e, c: delivered.set(), timeout_s=5, concurrency=1),
        batch_size=source.batch_size,
        report_failures=True,
        max_retries=0,
        accepts=compile_filters(source.filters),
    )
    poller.skip_existing()
    item = {"pk": {"S": "RUN#r"}, "sk": {"S": "LOG#0000000000"}, "kind": {"S": "log"}, "seq": {"N": "0"}}

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        busy = loop.run_in_executor(None, delivered.wait, 30)  # held until the record arrives
        streaming = asyncio.ensure_future(poller.run())
        # WHEN a log entry is written
        dynamodb.put_item(TableName=stack["table"], Item=item)
        # THEN the poller delivers it without a thread of the shared executor
        got = await busy
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)
        return got

    assert asyncio.run(scenario()) is True


def test_a_record_from_memory_is_what_get_records_reads(client, stack, moto):
    # the local stack reads its stream from moto's memory: the same records as the API's
    dynamodb = client("dynamodb")
    table = stack["table"]
    (source,) = read_template(DEFAULT_TEMPLATE).stream_sources
    through_api = StreamPoller(
        client("dynamodbstreams"),
        stack["stream_arn"],
        LocalFunction("Broadcast", lambda e, c: None, timeout_s=5, concurrency=1),
        batch_size=source.batch_size,
        report_failures=True,
        max_retries=0,
        accepts=lambda record: True,
    )
    from_memory = StreamPoller(
        None,
        stack["stream_arn"],
        LocalFunction("Broadcast", lambda e, c: None, timeout_s=5, concurrency=1),
        batch_size=source.batch_size,
        report_failures=True,
        max_retries=0,
        accepts=lambda record: True,
        records_after=partial(moto.stream_records_after, table, "us-east-1"),
    )
    through_api.skip_existing()
    from_memory.skip_existing()
    item = {
        "pk": {"S": "RUN#r"},
        "sk": {"S": "LOG#0000000000"},
        "kind": {"S": "log"},
        "b": {"B": b"\x00\xff"},
    }
    dynamodb.put_item(TableName=table, Item=item)
    dynamodb.put_item(TableName=table, Item={**item, "sk": {"S": "LOG#0000000001"}})
    read, remembered = through_api.read(), from_memory.read()

    def timeless(records: list[dict]) -> list[dict]:  # GetRecords' time is to the millisecond
        return [{**r, "dynamodb": {**r["dynamodb"], "ApproximateCreationDateTime": None}} for r in records]

    assert len(read) == 2 and timeless(remembered) == timeless(read)
    assert from_memory.last_sequence == through_api.last_sequence
    arn, region = stack["stream_arn"], "us-east-1"
    assert events.stream_event(remembered, arn, region) == events.stream_event(read, arn, region)
    assert from_memory.read() == []


def test_a_runs_end_is_not_held_behind_another_items_batch(client, stack):
    # GIVEN a parallelization factor of 2 and a batch of one partition being served slowly
    dynamodb = client("dynamodb")
    release = threading.Event()
    served: list[str] = []

    def broadcast(event, context):
        keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]
        served.extend(keys)
        if "RUN#slow" in keys:
            release.wait(10)

    def poller(lanes: int) -> StreamPoller:
        return StreamPoller(
            client("dynamodbstreams"),
            stack["stream_arn"],
            LocalFunction("Broadcast", broadcast, timeout_s=15, concurrency=4),
            batch_size=100,
            report_failures=True,
            max_retries=0,
            accepts=lambda record: True,
            parallelization=lanes,
        )

    def log(run_id: str, seq: int) -> None:
        dynamodb.put_item(
            TableName=stack["table"],
            Item={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": f"LOG#{seq:010d}"}, "kind": {"S": "log"}},
        )

    # the two partitions land in different lanes of two
    assert StreamPoller._lane_of({"dynamodb": {"Keys": {"pk": {"S": "RUN#slow"}}}}, 2) != (
        StreamPoller._lane_of({"dynamodb": {"Keys": {"pk": {"S": "RUN#ends"}}}}, 2)
    )

    async def scenario(lanes: int) -> list[str]:
        served.clear()
        release.clear()
        stream = poller(lanes)
        stream.skip_existing()
        streaming = asyncio.ensure_future(stream.run())
        log("slow", 0)
        while "RUN#slow" not in served:
            await asyncio.sleep(0.01)
        # WHEN another run's records arrive while that batch is served
        log("ends", 0)
        log("slow", 1)
        log("ends", 1)
        await asyncio.sleep(1.0)
        seen = list(served)
        release.set()
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)
        return seen

    # THEN with one lane they wait for the slow batch; with two they are served meanwhile,
    # in order, and the slow partition's next record waits for its own lane
    assert asyncio.run(scenario(1)) == ["RUN#slow"]
    assert asyncio.run(scenario(2)) == ["RUN#slow", "RUN#ends", "RUN#ends"]


def test_a_poll_that_raises_anything_leaves_the_poller_polling(monkeypatch):
    """A receive that failed with something other than a botocore error (moto's SQS once
    raised "Set changed size during iteration" when two receives raced) must not end the
    poller: its loop was the only one feeding the step function, and every run stalled."""
    import flowforge.local.pollers as pollers

    monkeypatch.setattr(pollers, "ERROR_BACKOFF_S", 0.01)
    delivered: list[str] = []

    class Sqs:
        receives = 0

        def receive_message(self, **kwargs):
            self.receives += 1
            if self.receives == 1:
                raise RuntimeError("Set changed size during iteration")
            if self.receives == 2:
                return {
                    "Messages": [
                        {
                            "MessageId": "m",
                            "ReceiptHandle": "r",
                            "Body": "x",
                            "MD5OfBody": "0",
                            "Attributes": {},
                        }
                    ]
                }
            time.sleep(0.01)
            return {}

        def delete_message_batch(self, **kwargs):
            raise RuntimeError("not a botocore error either")

    function = LocalFunction(
        "Step", lambda e, c: delivered.append(e["Records"][0]["body"]), timeout_s=5, concurrency=1
    )
    poller = QueuePoller(Sqs(), "url", "arn", function, batch_size=10, report_failures=True)

    async def poll_a_while() -> None:
        task = asyncio.ensure_future(poller.run())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if delivered:
                break
        await asyncio.sleep(0.05)
        assert not task.done(), "the poller ended"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(poll_a_while())
    assert delivered == ["x"]
