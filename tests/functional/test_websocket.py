"""Live logs over WebSockets, end to end on moto: the ws and broadcast handlers, the table
from template.yaml, its DynamoDB stream, and a stand-in for API Gateway's @connections.

Runs execute through the run service on the DynamoDB store (moto, its virtual clock and
template.yaml's table come from tests/functional/conftest.py). The broadcaster is fed the
table's real stream records (moto's dynamodbstreams), filtered by template.yaml's
FilterCriteria as Lambda would, with failed records retried from the first failure.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from boto3.dynamodb.types import TypeSerializer

from engine import default_registry
from engine.logmessages import MAX_MESSAGE_BYTES, log_message
from engine.logstream import LogStream, RunEnd, Subscription, TooManySubscriptionsError
from engine.logstream_memory import InMemorySubscriptionStore
from engine.memory import InMemoryStepQueue
from engine.service import RunService
from engine.step import MAX_ERROR_MESSAGE_CHARS
from flowforge.local.patterns import compile_filters
from flowforge.local.stack import load_template
from functions import runtime
from functions.aws.connections import CONNECTION_TTL_S, REPLAY_FILTER_PATTERN, DynamoSubscriptionStore
from functions.aws.dynamodb import DynamoRunStore
from functions.aws.push import ApiGatewayPusher
from functions.broadcast.app import handler as broadcast_handler
from functions.settings import Settings
from functions.ws.app import handler as ws_handler
from tests.functional.connections_standin import ConnectionsStandIn
from tests.functional.fixtures import REGION
from tests.functional.pump import LambdaContext, load_event
from tests.functional.tools import FLAKY, summarization

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ENDPOINT = "https://abcdef1234.execute-api.us-east-1.amazonaws.com/prod"


@default_registry.tool("ws_fn_count")
async def ws_fn_count(state, ctx):
    """Add one to ``n``."""
    return {"n": state.get("n", 0) + 1}


@default_registry.tool("ws_fn_explode")
async def ws_fn_explode(state, ctx):
    """Fails with an exception text larger than a WebSocket message may be."""
    raise ValueError("x" * (MAX_MESSAGE_BYTES + 20_000))


def counting(steps: int) -> dict[str, Any]:
    return {
        "name": "count",
        "start": "count",
        "nodes": {
            "count": {
                "fn": "ws_fn_count",
                "loop_condition": {"var": "n", "gte": steps},
                "max_iterations": 500,
            }
        },
    }


def broadcast_filters() -> list[dict[str, str]]:
    """BroadcastFunction's FilterCriteria in template.yaml."""
    function = load_template()["Resources"]["BroadcastFunction"]["Properties"]
    (source,) = [e for e in function["Events"].values() if e["Type"] == "DynamoDB"]
    return source["Properties"].get("FilterCriteria", {}).get("Filters", [])


class ShortContext(LambdaContext):
    """A Lambda context with only ``seconds`` left."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


class StreamFeed:
    """The table's stream, delivered to the broadcaster as Lambda's event source mapping does."""

    def __init__(self, client: Any, stream_arn: str) -> None:
        self.client = client
        self.stream_arn = stream_arn
        description = client.describe_stream(StreamArn=stream_arn)["StreamDescription"]
        self.shard_id = description["Shards"][0]["ShardId"]
        self.last_sequence: str | None = None
        self.template = load_event("stream_log_insert")["Records"][0]
        self.wakes = compile_filters(broadcast_filters())
        self.failures = 0

    def record(self, raw: dict[str, Any]) -> dict[str, Any]:
        dynamodb = {k: v for k, v in raw["dynamodb"].items() if k != "ApproximateCreationDateTime"}
        dynamodb["ApproximateCreationDateTime"] = self.template["dynamodb"]["ApproximateCreationDateTime"]
        return {
            **self.template,
            "eventID": raw["eventID"],
            "eventName": raw["eventName"],
            "dynamodb": dynamodb,
        }

    def poll(self) -> list[dict[str, Any]]:
        """The records written since the last poll, as Lambda events carry them."""
        # A fresh iterator each time: moto swaps in a copy of the table (stream included)
        # when a transaction fails, which an old iterator would not see.
        position: dict[str, Any] = {"ShardIteratorType": "TRIM_HORIZON"}
        if self.last_sequence is not None:
            position = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self.last_sequence}
        iterator = self.client.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=self.shard_id, **position
        )
        records = self.client.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
        if records:
            self.last_sequence = records[-1]["dynamodb"]["SequenceNumber"]
        return [self.record(r) for r in records]

    def deliver(self, context: Any = None, retries: int = 3, rounds: int = 200) -> None:
        """Hand new records to the broadcaster until the stream is quiet (or ``rounds`` polls)."""
        for _ in range(rounds):
            read = self.poll()
            if not read:
                return
            records = [r for r in read if self.wakes(r)]
            for _ in range(retries + 1):
                if not records:
                    break
                numbers = [r["dynamodb"]["SequenceNumber"] for r in records]
                try:
                    response = broadcast_handler({"Records": records}, context or LambdaContext())
                    failed = [f["itemIdentifier"] for f in response.get("batchItemFailures", [])]
                except BatchProcessingError:  # every record failed: the whole batch is retried
                    failed = numbers[:1]
                if not failed:
                    break
                self.failures += 1
                # Like Lambda: retry from the first failed record on.
                records = records[numbers.index(failed[0]) :]


def connect_event(connection_id: str, **query: Any) -> dict[str, Any]:
    event = load_event("ws_connect")
    event["requestContext"]["connectionId"] = connection_id
    event["queryStringParameters"] = {k: str(v) for k, v in query.items()} or None
    event["multiValueQueryStringParameters"] = {k: [str(v)] for k, v in query.items()} or None
    return event


@dataclass
class Harness:
    """The service, the handlers' log stream, the stream feed and the fake @connections."""

    service: RunService
    queue: InMemoryStepQueue
    stream: LogStream
    api: ConnectionsStandIn
    feed: StreamFeed
    dynamodb: Any
    table: str
    clock: Any

    # -- runs -------------------------------------------------------------------------------
    def start(self, graph: dict[str, Any], state: dict[str, Any] | None = None) -> str:
        graph_id = self.service.create_graph(graph).graph_id
        return self.service.start_run(graph_id, state or {}).run_id

    def step(self, feed: bool = True) -> bool:
        """Execute the next step message (and stream its records); False when none is left."""
        message = self.queue.pop()
        if message is None:
            return False
        self.clock.advance(max(message.delay_s, 0.01))
        if message.item is None:
            asyncio.run(self.service.process_step(message.run_id, message.step))
        else:
            asyncio.run(
                self.service.process_item(message.run_id, message.step, message.item, message.attempt)
            )
        if feed:
            self.feed.deliver()
        return True

    def finish(self, feed: bool = True) -> None:
        while self.step(feed):
            pass

    # -- the WebSocket API ----------------------------------------------------------------------
    def connect(self, connection_id: str, **query: Any) -> dict[str, Any]:
        """``$connect``; on success the socket opens, as API Gateway does after it returns."""
        response = ws_handler(connect_event(connection_id, **query), LambdaContext())
        if response["statusCode"] == 200:
            self.api.connect(connection_id)
        return response

    def send(self, connection_id: str, body: str | dict[str, Any], route: str = "$default") -> dict[str, Any]:
        event = load_event("ws_message")
        event["requestContext"]["connectionId"] = connection_id
        event["requestContext"]["routeKey"] = route
        event["body"] = body if isinstance(body, str) else json.dumps(body)
        return ws_handler(event, LambdaContext())

    def subscribe(self, connection_id: str, run_id: str, after: int | None = None) -> dict[str, Any]:
        frame = {"action": "subscribe", "run_id": run_id} | ({} if after is None else {"after": after})
        return self.send(connection_id, frame, route="subscribe")

    def disconnect(self, connection_id: str) -> dict[str, Any]:
        self.api.close(connection_id)
        event = load_event("ws_disconnect")
        event["requestContext"]["connectionId"] = connection_id
        return ws_handler(event, LambdaContext())

    # -- what is stored -------------------------------------------------------------------------
    def items(self, kind: str) -> list[dict[str, Any]]:
        pages = self.dynamodb.get_paginator("scan").paginate(TableName=self.table)
        return [i for page in pages for i in page["Items"] if i.get("kind", {}).get("S") == kind]

    def logs(self, run_id: str) -> list[dict[str, Any]]:
        return self.stream.runs.list_logs(run_id)


@pytest.fixture
def ws(aws, stack, clock, monkeypatch):
    dynamodb = aws.client("dynamodb")
    store = DynamoRunStore(stack["table"], lambda: dynamodb)
    api = ConnectionsStandIn()
    stream = LogStream(
        store,
        DynamoSubscriptionStore(stack["table"], lambda: dynamodb),
        ApiGatewayPusher(lambda: api),
        connection_ttl_s=CONNECTION_TTL_S,
        clock=clock,
        workers=8,
    )
    settings = Settings(stack["table"], ws_endpoint=ENDPOINT)
    runtime.set_app(runtime.build_app(settings, aws.client, log_stream=stream))
    queue = InMemoryStepQueue()
    service = RunService(store, queue, default_registry, clock=clock)
    # An explicit endpoint: botocore would otherwise pick an account-based one moto does not serve.
    streams = aws.client("dynamodbstreams", endpoint_url=f"https://streams.dynamodb.{REGION}.amazonaws.com")
    feed = StreamFeed(streams, stack["stream_arn"])
    yield Harness(service, queue, stream, api, feed, dynamodb, stack["table"], clock)
    runtime.set_app(None)


def assert_complete(ws: Harness, connection_id: str, run_id: str, status: str = "completed") -> None:
    """The client got the run's log exactly — every entry once, in order — then one done."""
    messages = [m for m in ws.api.messages(connection_id) if m.get("run_id") == run_id]
    expected = [json.loads(json.dumps(log_message(run_id, e))) for e in ws.logs(run_id)]
    assert messages[:-1] == expected
    assert messages[-1]["done"] is True and messages[-1]["status"] == status
    assert [m for m in messages if m.get("done")] == [messages[-1]]


# -- following runs -------------------------------------------------------------------------
def test_a_whole_run_streams_live_in_order(ws):
    # GIVEN the summarization workflow, and a client subscribed before its first step
    graph, state = summarization()
    run_id = ws.start(graph, state)
    assert ws.connect("c1") == {"statusCode": 200}
    assert ws.subscribe("c1", run_id) == {"statusCode": 200}
    assert ws.api.messages("c1") == []

    # WHEN each step commits and its stream records reach the broadcaster
    ws.finish()

    # THEN the client received every log entry, in seq order, then one done message
    assert len(ws.logs(run_id)) >= 4
    assert_complete(ws, "c1", run_id)
    steps = [
        m["node"] for m in ws.api.messages("c1") if "node" in m and "index" not in m
    ]  # not the map's items
    assert steps[:3] == ["split", "summarize", "merge"]
    # and the subscription is gone once done was sent
    assert ws.items("sub") == []


def test_retries_stream_with_their_attempts(ws):
    run_id = ws.start(FLAKY, {"fail_times": 2})
    ws.connect("c1")
    ws.subscribe("c1", run_id)
    ws.finish()
    assert_complete(ws, "c1", run_id)
    attempts = [(m["node"], m["status"], m["attempt"]) for m in ws.api.messages("c1") if "seq" in m]
    assert attempts[:3] == [("call", "retry", 1), ("call", "retry", 2), ("call", "ok", 3)]


def test_a_late_subscriber_gets_the_replay_then_live_entries(ws):
    run_id = ws.start(counting(8))
    for _ in range(3):
        ws.step()
    ws.connect("late")
    ws.subscribe("late", run_id)
    assert ws.api.entries("late") == [0, 1, 2]
    ws.finish()
    assert_complete(ws, "late", run_id)


def test_connecting_with_run_id_after_the_run_ended_replays_it(ws):
    # GIVEN a finished run
    run_id = ws.start(counting(5))
    ws.finish()
    # WHEN a client connects with ?run_id= (wscat -c 'wss://…?run_id=…')
    assert ws.connect("c1", run_id=run_id) == {"statusCode": 200}
    assert ws.api.messages("c1") == []  # nothing may be posted during $connect
    ws.feed.deliver()  # the subscription's replay marker wakes the broadcaster
    # THEN it receives the whole log and the done message
    assert_complete(ws, "c1", run_id)


def test_connecting_with_run_id_mid_run_and_after(ws):
    run_id = ws.start(counting(7))
    for _ in range(4):
        ws.step()
    ws.connect("c1", run_id=run_id, after=1)
    ws.finish()
    assert ws.api.entries("c1") == [2, 3, 4, 5, 6]
    assert len(ws.api.dones("c1")) == 1


def test_the_replay_waits_for_the_socket_if_the_stream_is_faster_than_connect(ws):
    run_id = ws.start(counting(3))
    ws.finish()
    # GIVEN the stream delivers the replay marker while $connect has not returned yet
    assert ws_handler(connect_event("slow", run_id=run_id), LambdaContext())["statusCode"] == 200
    ws.feed.deliver(rounds=3)
    # THEN the GoneException of that moment does not drop the new connection: it retries
    assert len(ws.items("conn")) == 1 and ws.api.messages("slow") == []
    ws.api.connect("slow")
    ws.feed.deliver()
    assert_complete(ws, "slow", run_id)


def test_reconnecting_with_after_resumes_without_gap_or_duplicate(ws):
    run_id = ws.start(counting(9))
    ws.connect("first")
    ws.subscribe("first", run_id)
    for _ in range(4):
        ws.step()
    seen = ws.api.entries("first")
    assert seen == [0, 1, 2, 3]
    # WHEN the client drops, the run moves on, and it reconnects with its last seq
    ws.disconnect("first")
    ws.step()
    ws.step()
    ws.connect("second", run_id=run_id, after=seen[-1])
    ws.feed.deliver()
    ws.finish()
    # THEN the two connections together saw each entry exactly once
    assert seen + ws.api.entries("second") == list(range(9))
    assert len(ws.api.dones("second")) == 1


def test_replay_and_live_delivery_racing_deliver_each_entry_once(ws):
    # GIVEN a run with 4 entries already written
    run_id = ws.start(counting(8))
    for _ in range(4):
        ws.step()
    ws.connect("c1")
    raced = []

    def live_while_replaying(connection_id, message):
        # WHEN, while the ws function replays entry 1, the run commits two more steps
        # and the broadcaster handles their stream records (it finds the replay's lease)
        if message.get("seq") == 1 and not raced:
            raced.append(ws.step())
            raced.append(ws.step())

    ws.api.on_post = live_while_replaying
    ws.subscribe("c1", run_id)
    ws.api.on_post = None

    # THEN the replay sent them before letting go, in order, once
    assert raced == [True, True]
    assert ws.api.entries("c1") == list(range(6))
    ws.finish()
    assert_complete(ws, "c1", run_id)


def test_a_run_ending_while_a_replay_runs_ends_with_one_done(ws):
    run_id = ws.start(counting(3))
    ws.step()
    ws.step()
    ws.connect("c1")
    ws.api.on_post = lambda _, message: message.get("seq") == 0 and ws.finish()
    ws.subscribe("c1", run_id)
    ws.api.on_post = None
    ws.feed.deliver()
    assert_complete(ws, "c1", run_id)


def test_a_long_replay_is_handed_to_the_broadcaster(ws):
    # GIVEN a finished run of 10 entries, and posts that take 1 s each
    run_id = ws.start(counting(10))
    ws.finish()
    ws.connect("c1")
    ws.api.on_post = lambda *_: ws.clock.advance(1)
    # WHEN the ws function has 5 s left (3 s of which it keeps in reserve)
    event = load_event("ws_message")
    event["requestContext"]["connectionId"] = "c1"
    event["body"] = json.dumps({"action": "subscribe", "run_id": run_id})
    assert ws_handler(event, ShortContext(5))["statusCode"] == 200
    assert ws.api.entries("c1") == [0, 1]
    # THEN the broadcaster, woken by the replay marker, finishes it (in 2-entry slices too)
    ws.feed.deliver(ShortContext(5))
    assert_complete(ws, "c1", run_id)


# -- outcomes ------------------------------------------------------------------------------
def test_a_failing_run_ends_with_its_error(ws):
    graph = {
        "name": "fails",
        "start": "count",
        "nodes": {"count": {"fn": "ws_fn_count", "next": "boom"}, "boom": {"fn": "ws_fn_explode"}},
    }
    run_id = ws.start(graph)
    ws.connect("c1")
    ws.subscribe("c1", run_id)
    ws.finish()
    entry, failed, done = ws.api.messages("c1")
    assert entry["status"] == "ok" and failed["status"] == "failed"
    # An error text too large for one WebSocket message arrives cut short (by the engine,
    # which keeps MAX_ERROR_MESSAGE_CHARS of it in the log entry and the run).
    assert failed["error"]["type"] == "ValueError"
    cut = MAX_MESSAGE_BYTES + 20_000 - MAX_ERROR_MESSAGE_CHARS
    assert failed["error"]["message"].endswith(f"... ({cut} more characters)")
    assert done["done"] is True and done["status"] == "failed"
    assert done["error"] == failed["error"]
    assert all(len(data) <= MAX_MESSAGE_BYTES for data in ws.api.posted["c1"])


def test_a_cancelled_run_ends_with_done(ws):
    run_id = ws.start(counting(10))
    ws.connect("c1")
    ws.subscribe("c1", run_id)
    ws.step()
    ws.service.cancel(run_id)
    ws.feed.deliver()
    assert ws.api.entries("c1") == [0]
    assert ws.api.dones("c1")[0]["status"] == "cancelled"


def test_fifty_subscribers_each_get_the_whole_run(ws):
    run_id = ws.start(counting(5))
    clients = [f"c{i:02d}" for i in range(50)]
    for client in clients[:25]:
        ws.connect(client)
        ws.subscribe(client, run_id)
    ws.step()
    ws.step()
    for client in clients[25:]:
        ws.connect(client, run_id=run_id)
    ws.finish()
    for client in clients:
        assert_complete(ws, client, run_id)


def test_gone_connections_are_cleaned_up_and_others_still_served(ws):
    run_id = ws.start(counting(4))
    for client in ("stays", "vanishes"):
        ws.connect(client)
        ws.subscribe(client, run_id)
    ws.step()
    # WHEN a client disappears without a $disconnect
    ws.api.close("vanishes")
    ws.finish()
    # THEN its connection and subscription items are deleted; the other client is served
    assert [i["connection_id"]["S"] for i in ws.items("conn")] == ["stays"]
    assert ws.items("sub") == []
    assert ws.api.entries("vanishes") == [0]
    assert_complete(ws, "stays", run_id)


def test_a_throttled_post_is_retried_by_the_stream_without_duplicates(ws):
    run_id = ws.start(counting(3))
    for client in ("a", "b"):
        ws.connect(client)
        ws.subscribe(client, run_id)
    ws.api.fail_next("b", "LimitExceededException")
    ws.finish()
    assert ws.feed.failures == 1
    assert_complete(ws, "a", run_id)
    assert_complete(ws, "b", run_id)


def test_disconnect_deletes_the_connection_and_its_subscriptions(ws):
    first, second = ws.start(counting(3)), ws.start(counting(3))
    ws.connect("c1", run_id=first)
    ws.subscribe("c1", second)
    assert len(ws.items("sub")) == 2
    assert ws.disconnect("c1") == {"statusCode": 200}
    assert ws.items("sub") == [] and ws.items("conn") == []


def test_connections_expire_with_api_gateways_two_hours(ws):
    run_id = ws.start(counting(3))
    ws.connect("c1", run_id=run_id)
    (conn,), (sub,) = ws.items("conn"), ws.items("sub")
    expected = int(ws.clock()) + 7200
    assert int(conn["expires_at"]["N"]) == expected and int(sub["expires_at"]["N"]) == expected


# -- refusals and errors ---------------------------------------------------------------------
def test_connect_to_an_unknown_run_is_refused_with_a_reason(ws):
    response = ws.connect("c1", run_id="no-such-run")
    assert response["statusCode"] == 404
    assert json.loads(response["body"]) == {
        "error": {"code": "not_found", "message": "run 'no-such-run' not found"}
    }
    assert ws.items("conn") == []


def test_connect_with_a_bad_query_is_refused(ws):
    response = ws.connect("c1", run_id="abc", after="soon")
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["code"] == "invalid_request"
    assert "after" in json.loads(response["body"])["error"]["message"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("hello", "invalid_message"),
        ("[]", "invalid_message"),
        ('{"action": "subscribe"}', "invalid_message"),
        ('{"action": "subscribe", "run_id": "abc", "after": "x"}', "invalid_message"),
        ('{"action": "follow", "run_id": "abc"}', "unknown_action"),
        ('{"run_id": "abc"}', "unknown_action"),
        ('{"action": "subscribe", "run_id": "unknown"}', "not_found"),
    ],
)
def test_bad_frames_are_answered_on_the_connection(ws, body, code):
    ws.connect("c1")
    response = ws.send("c1", body)
    (message,) = ws.api.messages("c1")
    assert response["statusCode"] in (400, 404)
    assert message["error"]["code"] == code and message["error"]["message"]
    if code == "unknown_action":
        assert message["error"]["details"] == {"actions": ["subscribe", "unsubscribe"]}
    # the connection is still usable
    run_id = ws.start(counting(2))
    ws.finish()
    ws.subscribe("c1", run_id)
    assert ws.api.entries("c1") == [0, 1]


HUGE = "9" * 130  # a seq no run has, and a number DynamoDB (38 digits) cannot store


@pytest.mark.parametrize("after", [HUGE, "25001", "-2"])
def test_connect_with_after_out_of_range_is_refused_and_stores_nothing(ws, after):
    # GIVEN a finished run
    run_id = ws.start(counting(1))
    ws.finish()

    # WHEN a client connects to follow it after a seq out of -1 … 25,000
    response = ws.connect("c1", run_id=run_id, after=after)

    # THEN the handshake fails with a 400 naming after, and nothing was stored
    assert response["statusCode"] == 400
    error = json.loads(response["body"])["error"]
    assert error["code"] == "invalid_request" and "after" in error["message"]
    assert ws.items("conn") == [] and ws.items("sub") == []


def test_a_subscribe_frame_with_after_out_of_range_is_answered_and_takes_no_slot(ws):
    # GIVEN a connection following 19 running runs, one below the cap of 20
    run_ids = [ws.start(counting(1)) for _ in range(20)]
    ws.connect("c1")
    for run_id in run_ids[:19]:
        ws.subscribe("c1", run_id)

    # WHEN a frame asks for the 20th run after a 130-digit seq
    response = ws.send("c1", {"action": "subscribe", "run_id": run_ids[19], "after": int(HUGE)})

    # THEN it is answered with an error on the connection, nothing is registered, and
    # the 20th run can still be followed
    (message,) = ws.api.messages("c1")
    assert response["statusCode"] == 400
    assert message["error"]["code"] == "invalid_message" and "after" in message["error"]["message"]
    assert len(ws.items("sub")) == 19
    assert ws.subscribe("c1", run_ids[19])["statusCode"] == 200
    assert len(ws.items("sub")) == 20 and len(ws.api.messages("c1")) == 1


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ('{"action": "subscribe", "run_id": "abc", "\\ud800": 1}', "frame.\\ud800"),
        ('{"action": "\\udfff"}', "frame.action"),
        ('{"action": "subscribe", "run_id": "a\\ud800"}', "frame.run_id"),
    ],
)
def test_a_frame_with_text_utf8_cannot_encode_is_answered_naming_its_path(ws, body, path):
    # GIVEN an open connection
    ws.connect("c1")

    # WHEN a frame escapes a lone UTF-16 surrogate
    response = ws.send("c1", body)

    # THEN the error names where, and the connection still works
    (message,) = ws.api.messages("c1")
    assert response["statusCode"] == 400
    assert message["error"]["code"] == "invalid_message"
    assert message["error"]["details"] == {"path": path} and "not valid UTF-8" in message["error"]["message"]
    run_id = ws.start(counting(1))
    ws.finish()
    ws.subscribe("c1", run_id)
    assert ws.api.entries("c1") == [0]


def test_binary_frames_are_refused(ws):
    ws.connect("c1")
    event = load_event("ws_message")
    event["requestContext"]["connectionId"] = "c1"
    event["isBase64Encoded"], event["body"] = True, "AAEC"
    assert ws_handler(event, LambdaContext())["statusCode"] == 400
    assert ws.api.messages("c1")[0]["error"]["code"] == "invalid_message"


def test_unsubscribe_stops_the_stream(ws):
    run_id = ws.start(counting(4))
    ws.connect("c1")
    ws.subscribe("c1", run_id)
    ws.step()
    assert ws.send("c1", {"action": "unsubscribe", "run_id": run_id}) == {"statusCode": 200}
    ws.finish()
    assert ws.api.entries("c1") == [0] and ws.api.dones("c1") == []


# -- the stream and the template ---------------------------------------------------------------
def test_a_stream_record_built_from_a_stored_item_is_delivered(ws):
    # GIVEN a subscriber, and a log item written by the step loop
    run_id = ws.start(counting(2))
    ws.connect("c1")
    ws.subscribe("c1", run_id)
    ws.step(feed=False)
    item = ws.dynamodb.get_item(
        TableName=ws.table, Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "LOG#0000000000"}}
    )["Item"]
    # WHEN the broadcaster gets the fixture event carrying that item as its NewImage
    event = load_event("stream_log_insert")
    event["Records"][0]["dynamodb"]["NewImage"] = item
    event["Records"][0]["dynamodb"]["Keys"] = {"pk": item["pk"], "sk": item["sk"]}
    assert broadcast_handler(event, LambdaContext()) == {"batchItemFailures": []}
    # THEN the entry reached the client
    assert ws.api.entries("c1") == [0]


def test_stream_records_of_other_items_are_ignored(ws):
    serialize = TypeSerializer().serialize
    event = load_event("stream_log_insert")
    image = {"pk": "GRAPH#g", "sk": "GRAPH", "kind": "graph", "graph_id": "g"}
    event["Records"][0]["dynamodb"]["NewImage"] = {k: serialize(v) for k, v in image.items()}
    assert broadcast_handler(event, LambdaContext()) == {"batchItemFailures": []}
    # a finished run's record for a run with no subscriber does nothing either
    assert broadcast_handler(load_event("stream_run_finished"), LambdaContext()) == {"batchItemFailures": []}


def test_the_template_filter_wakes_the_broadcaster_for_what_it_handles():
    filters = broadcast_filters()
    assert {"Pattern": REPLAY_FILTER_PATTERN} in filters
    wakes = compile_filters(filters)
    serialize = TypeSerializer().serialize

    def record(event_name: str, **image: Any) -> dict[str, Any]:
        return {
            "eventName": event_name,
            "dynamodb": {"NewImage": {k: serialize(v) for k, v in image.items()}},
        }

    assert wakes(record("INSERT", kind="log", run_id="r", seq=0, entry="{}"))
    assert wakes(record("MODIFY", kind="run", status="completed"))
    assert wakes(record("INSERT", kind="sub", replay="t1"))
    assert wakes(record("MODIFY", kind="sub", replay="t2"))
    assert not wakes(record("MODIFY", kind="sub", last_seq=3))
    assert not wakes(record("MODIFY", kind="run", status="running"))


# -- the subscription store contract: the same tests on DynamoDB and in memory ----------------------
@pytest.fixture(params=["dynamodb", "memory"])
def store(request):
    if request.param == "memory":
        return InMemorySubscriptionStore()
    aws, stack = request.getfixturevalue("aws"), request.getfixturevalue("stack")
    client = aws.client("dynamodb")
    return DynamoSubscriptionStore(stack["table"], lambda: client)


def sub(run_id: str = "r1", connection_id: str = "c1", **fields: Any) -> Subscription:
    return Subscription(run_id, connection_id, created_at=100.0, expires_at=7300, **fields)


def test_contract_the_lease_admits_one_sender_and_signals_the_holder(store):
    store.add(sub(), 20)
    first = store.acquire("r1", "c1", "t1", now=100, until=130, end=None)
    assert first.held and first.sub.lease == "t1"
    # A second sender does not get it, but leaves a signal (and the run's end) behind.
    end = RunEnd("failed", 4, {"node": "n", "type": "E", "message": "m"})
    second = store.acquire("r1", "c1", "t2", now=101, until=131, end=end)
    assert not second.held and second.sub.ver == first.sub.ver + 1
    # The holder cannot let go without seeing it ...
    assert not store.release("r1", "c1", "t1", 2, expect_ver=first.sub.ver, replay=None)
    fresh = store.get("r1", "c1")
    assert fresh.lease == "t1" and fresh.end == end and fresh.last_seq == -1
    # ... and lets go once it has.
    assert store.release("r1", "c1", "t1", 4, expect_ver=fresh.ver, replay=None)
    assert store.get("r1", "c1").lease is None and store.get("r1", "c1").last_seq == 4


def test_contract_progress_needs_the_lease_and_an_expired_lease_is_taken_over(store):
    store.add(sub(), 20)
    assert store.acquire("r1", "c1", "t1", now=100, until=130, end=None).held
    assert store.advance("r1", "c1", "t1", 0, until=140)
    assert not store.advance("r1", "c1", "other", 1, until=140)
    assert not store.acquire("r1", "c1", "t2", now=139, until=170, end=None).held
    taken = store.acquire("r1", "c1", "t2", now=141, until=170, end=None)
    assert taken.held and taken.sub.last_seq == 0
    assert not store.release("r1", "c1", "t1", 5, expect_ver=None, replay=None)
    assert store.release("r1", "c1", "t2", 1, expect_ver=None, replay="again")
    assert store.get("r1", "c1").replay == "again" and store.get("r1", "c1").last_seq == 1


def test_contract_resubscribing_replaces_the_subscription_and_its_lease(store):
    store.add(sub(), 20)
    store.acquire("r1", "c1", "t1", now=100, until=130, end=None)
    store.add(sub(last_seq=7, replay="m"), 20)
    assert store.get("r1", "c1") == sub(last_seq=7, replay="m")
    assert not store.advance("r1", "c1", "t1", 8, until=140)


def test_contract_finish_and_close(store):
    for run_id in ("r1", "r2", "r3"):
        store.add(sub(run_id), 20)
    store.add(sub("r1", "c2"), 20)
    assert [s.connection_id for s in store.subscriptions("r1")] == ["c1", "c2"]
    assert store.acquire("r1", "c1", "t", now=100, until=130, end=None).held
    store.done("r1", "c1", "not-the-holder")
    assert store.get("r1", "c1") is not None
    store.done("r1", "c1", "t")
    assert store.get("r1", "c1") is None
    store.remove("r2", "c1")
    assert store.close_connection("c1") == ["r3"]
    assert store.subscriptions("r3") == [] and [s.connection_id for s in store.subscriptions("r1")] == ["c2"]
    assert store.acquire("r3", "c1", "t", now=100, until=130, end=None) is None


def test_contract_a_connection_follows_a_limited_number_of_runs(store):
    store.open_connection("c1", 100.0, 7300)
    store.add(sub("r1"), 2)
    store.add(sub("r2"), 2)
    store.add(sub("r2"), 2)
    with pytest.raises(TooManySubscriptionsError):
        store.add(sub("r3"), 2)
    store.remove("r1", "c1")
    store.add(sub("r3"), 2)
