"""Delivery of run logs to WebSocket connections, in memory: order, replay, resume, races.

The broadcaster is played by the test: after each committed step it calls ``on_log``
with the new entry, after the last one ``on_run_end`` — what the table stream does.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time

import pytest

from engine import default_registry
from engine.errors import NotFoundError
from engine.logentry import StoredEntry
from engine.logstream import InvalidAfterError, LogStream, PushUnavailableError, TooManySubscriptionsError
from engine.logstream_memory import InMemorySubscriptionStore
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.service import RunService
from engine.step import TERMINAL
from functions.aws.connections import CONNECTION_TTL_S
from functions.aws.push import ApiGatewayPusher
from tests.functional.connections_standin import ConnectionsStandIn


@default_registry.tool("ws_unit_count")
async def ws_unit_count(state, ctx):
    """Add one to ``n``."""
    return {"n": state.get("n", 0) + 1}


@default_registry.tool("ws_unit_fail")
async def ws_unit_fail(state, ctx):
    """Always fails."""
    raise RuntimeError("boom")


def counting(steps: int) -> dict:
    """A graph whose run writes exactly ``steps`` log entries."""
    return {
        "name": "count",
        "start": "count",
        "nodes": {
            "count": {
                "fn": "ws_unit_count",
                "loop_condition": {"var": "n", "gte": steps},
                "max_iterations": 500,
            }
        },
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class World:
    """A run service and a log stream over the in-memory stores, and a fake @connections."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = InMemoryRunStore()
        self.queue = InMemoryStepQueue()
        self.service = RunService(self.store, self.queue, default_registry, clock=self.clock)
        self.subs = InMemorySubscriptionStore()
        self.api = ConnectionsStandIn()
        self.stream = LogStream(
            self.store,
            self.subs,
            ApiGatewayPusher(lambda: self.api),
            connection_ttl_s=CONNECTION_TTL_S,
            clock=self.clock,
            workers=4,
        )
        self.run_id = ""

    def start(self, graph: dict) -> str:
        graph_id = self.service.create_graph(graph).graph_id
        self.run_id = self.service.start_run(graph_id, {}).run_id
        return self.run_id

    def step(self, broadcast: bool = True) -> StoredEntry | None:
        """Execute the next queued step; the log entry it committed (broadcast unless told not to)."""
        message = self.queue.pop()
        if message is None:
            return None
        commits = []
        asyncio.run(self.service.process_step(message.run_id, message.step, commits.append))
        if not commits:
            return None
        if broadcast:
            self.broadcast(commits[0])
        return self.stored(commits[0])

    def stored(self, commit) -> StoredEntry:
        """The commit's entry as stored: what the table stream carries."""
        (entry,) = self.store.list_entries(commit.run_id, after=commit.step - 1, limit=1)
        return entry

    def broadcast(self, commit) -> None:
        self.stream.on_log(commit.run_id, self.stored(commit))
        if commit.status in TERMINAL:
            self.stream.on_run_end(commit.run_id)

    def finish(self, broadcast: bool = True) -> None:
        while self.step(broadcast) is not None:
            pass

    def replays(self) -> None:
        """What the stream does for subscriptions owed a replay."""
        for sub in list(self.subs.subs.values()):
            if sub.replay is not None:
                self.stream.on_replay_due(sub)

    def connect(self, *ids: str) -> None:
        self.api.connect(*ids)
        for connection_id in ids:
            self.stream.connect(connection_id)


@pytest.fixture
def world() -> World:
    return World()


def assert_complete(
    api: ConnectionsStandIn, connection_id: str, entries: int, status: str = "completed"
) -> None:
    """Every entry exactly once, in order, then exactly one done message, last."""
    messages = api.messages(connection_id)
    assert api.entries(connection_id) == list(range(entries))
    assert [m for m in messages if m.get("done")] == [messages[-1]]
    assert messages[-1]["status"] == status


# -- following a run ----------------------------------------------------------------------
def test_a_subscriber_from_the_start_gets_every_entry_in_order_then_done(world):
    # GIVEN a connection subscribed to a run before its first step
    run_id = world.start(counting(6))
    world.connect("c1")
    world.stream.subscribe("c1", run_id)

    # WHEN the run executes, each committed entry reaching the broadcaster
    world.finish()

    # THEN the client saw entries 0..5 in order, then one done message
    assert_complete(world.api, "c1", 6)
    assert world.api.messages("c1")[0]["node"] == "count"
    # and the finished subscription is gone; the connection stays
    assert world.subs.subscriptions(run_id) == [] and "c1" in world.subs.connections


def test_a_late_subscriber_gets_the_past_replayed_then_the_live_entries(world):
    run_id = world.start(counting(8))
    for _ in range(3):
        world.step()
    # WHEN a client joins mid-run
    world.connect("late")
    world.stream.subscribe("late", run_id)
    assert world.api.entries("late") == [0, 1, 2]
    world.finish()
    # THEN nothing is missing or repeated
    assert_complete(world.api, "late", 8)


def test_a_subscriber_after_the_run_ended_gets_everything_and_done_once(world):
    run_id = world.start(counting(4))
    world.finish()
    world.connect("after")
    world.stream.subscribe("after", run_id)
    # Stragglers from the stream (late records of the same run) change nothing.
    for entry in world.store.list_entries(run_id):
        world.stream.on_log(run_id, entry)
    world.stream.on_run_end(run_id)
    assert_complete(world.api, "after", 4)


def test_resuming_with_after_sends_only_what_the_client_lacks(world):
    run_id = world.start(counting(6))
    world.finish()
    world.connect("again")
    world.stream.subscribe("again", run_id, after=3)
    assert world.api.entries("again") == [4, 5]
    (done,) = world.api.dones("again")
    assert done.pop("cost")["estimate"] is True
    assert done == {"run_id": run_id, "done": True, "status": "completed"}
    # After the last entry there is only the done message left to send.
    world.connect("up-to-date")
    world.stream.subscribe("up-to-date", run_id, after=5)
    assert [m.get("done") for m in world.api.messages("up-to-date")] == [True]


def test_a_failed_run_ends_with_its_error(world):
    graph = {"name": "fails", "start": "boom", "nodes": {"boom": {"fn": "ws_unit_fail"}}}
    run_id = world.start(graph)
    world.connect("c1")
    world.stream.subscribe("c1", run_id)
    world.finish()
    entry, done = world.api.messages("c1")
    assert entry["status"] == "failed" and entry["error"]["type"] == "RuntimeError"
    # (its cost estimate: tests/functional/test_run_cost.py)
    assert done.pop("cost")["estimate"] is True
    assert done == {
        "run_id": run_id,
        "done": True,
        "status": "failed",
        "error": {"node": "boom", "type": "RuntimeError", "message": "boom"},
    }


def test_a_cancelled_run_ends_with_done_after_its_entries(world):
    run_id = world.start(counting(10))
    world.connect("c1")
    world.stream.subscribe("c1", run_id)
    world.step()
    world.step()
    world.service.cancel(run_id)
    world.stream.on_run_end(run_id)  # the run item's MODIFY to "cancelled"
    assert world.api.entries("c1") == [0, 1]
    assert world.api.dones("c1")[0]["status"] == "cancelled"


# -- races ------------------------------------------------------------------------------------
def test_entries_committed_during_a_replay_arrive_once_and_in_order(world):
    # GIVEN a run with 5 entries and a client replaying them
    run_id = world.start(counting(9))
    for _ in range(5):
        world.step()
    world.connect("c1")
    live = []

    def during_replay(connection_id, message):
        # WHEN, while entry 1 is being posted, the run moves on and the broadcaster
        # delivers the new entries concurrently (it finds the replay holding the lease)
        if message.get("seq") == 1 and not live:
            live.append(world.step())
            live.append(world.step())

    world.api.on_post = during_replay
    world.stream.subscribe("c1", run_id)
    world.api.on_post = None

    # THEN the replay picked them up before letting go: no gap, no duplicate
    assert [e.seq for e in live] == [5, 6]
    assert world.api.entries("c1") == [0, 1, 2, 3, 4, 5, 6]
    world.finish()
    assert_complete(world.api, "c1", 9)


def test_the_end_of_a_run_during_a_replay_yields_one_done_after_every_entry(world):
    run_id = world.start(counting(3))
    for _ in range(2):
        world.step(broadcast=False)
    world.connect("c1")

    def during_replay(connection_id, message):
        if message.get("seq") == 0:
            world.finish()  # the last entry and the run's end, broadcast while we replay

    world.api.on_post = during_replay
    world.stream.subscribe("c1", run_id)
    assert_complete(world.api, "c1", 3)


def test_concurrent_senders_never_duplicate_or_reorder(world):
    # GIVEN a finished run of 40 entries and 6 clients subscribing at random moments
    run_id = world.start(counting(40))
    world.finish(broadcast=False)
    entries = world.store.list_entries(run_id)
    clients = [f"c{i}" for i in range(6)]
    world.connect(*clients)
    rng = random.Random(7)

    def slow_posts(connection_id, message):
        time.sleep(rng.random() / 2000)

    world.api.on_post = slow_posts
    # WHEN the broadcaster's notifications (duplicated, shuffled) race the clients' replays
    jobs = [lambda e=e: world.stream.on_log(run_id, e) for e in entries * 2]
    jobs += [lambda: world.stream.on_run_end(run_id)] * 3
    jobs += [lambda c=c: world.stream.subscribe(c, run_id) for c in clients]
    rng.shuffle(jobs)
    errors = []

    def work(chunk):
        for job in chunk:
            try:
                job()
            except Exception as exc:  # surfaced below
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(jobs[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A subscription that missed every notification is completed by the last one.
    world.stream.on_run_end(run_id)

    # THEN every client got every entry once, in order, and one done
    assert errors == []
    for client in clients:
        assert_complete(world.api, client, 40)


# -- connections --------------------------------------------------------------------------
def test_a_gone_connection_is_removed_and_the_others_still_get_messages(world):
    run_id = world.start(counting(3))
    world.connect("stays", "leaves")
    world.stream.subscribe("stays", run_id)
    world.stream.subscribe("leaves", run_id)
    world.step()
    # WHEN a client vanished without a $disconnect
    world.api.close("leaves")
    world.finish()
    # THEN its connection and subscriptions are deleted at the first failed post
    assert "leaves" not in world.subs.connections
    assert [s.connection_id for s in world.subs.subscriptions(run_id)] == []
    assert world.api.entries("leaves") == [0]
    assert_complete(world.api, "stays", 3)


def test_a_throttled_connection_fails_the_batch_only_after_serving_the_others(world):
    run_id = world.start(counting(3))
    world.connect("ok", "throttled")
    world.stream.subscribe("ok", run_id)
    world.stream.subscribe("throttled", run_id)
    entry = world.step(broadcast=False)
    world.api.fail_next("throttled", "LimitExceededException")
    # WHEN one post is throttled
    with pytest.raises(PushUnavailableError):
        world.stream.on_log(run_id, entry)
    # THEN the others were served, and the stream's retry serves the rest exactly once
    assert world.api.entries("ok") == [0] and world.api.entries("throttled") == []
    world.stream.on_log(run_id, entry)
    world.finish()
    assert_complete(world.api, "ok", 3)
    assert_complete(world.api, "throttled", 3)


def test_connect_with_a_run_replays_once_the_socket_is_open(world):
    run_id = world.start(counting(3))
    world.finish()
    # GIVEN $connect?run_id=… (API Gateway opens the socket only after $connect returns)
    world.stream.connect("c1", run_id)
    # WHEN the stream delivers the subscription's replay marker before the socket is open
    world.replays()
    # THEN the post's GoneException is not taken for a closed connection: it retries
    assert world.subs.get(run_id, "c1").replay is not None
    world.api.connect("c1")
    world.replays()
    assert_complete(world.api, "c1", 3)


def test_a_connection_still_gone_after_the_grace_period_is_removed(world):
    run_id = world.start(counting(2))
    world.finish()
    world.stream.connect("c1", run_id)
    world.clock.advance(11)
    world.replays()
    assert world.subs.subscriptions(run_id) == [] and "c1" not in world.subs.connections


def test_a_long_replay_hands_off_when_time_is_up(world):
    # GIVEN a client subscribing to a finished run of 12 entries, each post taking 1 s
    run_id = world.start(counting(12))
    world.finish()
    world.connect("c1")
    world.api.on_post = lambda *_: world.clock.advance(1)
    # WHEN the ws function has 5 s left
    world.stream.subscribe("c1", run_id, deadline=world.clock() + 5)
    # THEN it stops, leaving the replay marker for the broadcaster, which finishes the job
    assert world.api.entries("c1") == [0, 1, 2, 3, 4]
    assert world.subs.get(run_id, "c1").replay is not None
    world.replays()
    assert_complete(world.api, "c1", 12)


def test_unsubscribe_and_disconnect_stop_delivery(world):
    run_id = world.start(counting(4))
    world.connect("unsub", "disc")
    world.stream.subscribe("unsub", run_id)
    world.stream.subscribe("disc", run_id)
    world.step()
    world.stream.unsubscribe("unsub", run_id)
    world.stream.disconnect("disc")
    world.finish()
    assert world.api.entries("unsub") == [0] and world.api.entries("disc") == [0]
    assert world.subs.subscriptions(run_id) == [] and "disc" not in world.subs.connections


def test_one_connection_follows_several_runs_up_to_a_limit(world):
    first, second = world.start(counting(2)), world.start(counting(3))
    world.connect("c1")
    world.stream.subscribe("c1", first)
    world.stream.subscribe("c1", second)
    world.finish()
    runs = {m["run_id"] for m in world.api.messages("c1")}
    assert runs == {first, second}
    assert len(world.api.dones("c1")) == 2
    # A connection following 20 runs may not follow a 21st (finished runs no longer count).
    world.stream.max_subscriptions = 2
    others = [world.start(counting(50)) for _ in range(3)]
    world.stream.subscribe("c1", others[0])
    world.stream.subscribe("c1", others[1])
    world.stream.subscribe("c1", others[1])  # again: still two
    with pytest.raises(TooManySubscriptionsError):
        world.stream.subscribe("c1", others[2])


def test_unknown_runs_are_refused_and_leave_nothing_behind(world):
    world.connect("c1")
    with pytest.raises(NotFoundError):
        world.stream.subscribe("c1", "nope")
    with pytest.raises(NotFoundError):
        world.stream.connect("c2", "nope")
    assert world.subs.subs == {} and world.subs.connections == {"c1": set()}


@pytest.mark.parametrize("after", [-2, 25_001, 10**130, True])
def test_an_after_no_log_can_reach_is_refused_before_anything_is_stored(world, after):
    # GIVEN a running run and an open connection
    run_id = world.start(counting(2))
    world.connect("c1")

    # WHEN it is followed from an after outside -1 … 25,000 (or not an integer)
    with pytest.raises(InvalidAfterError):
        world.stream.subscribe("c1", run_id, after)
    with pytest.raises(InvalidAfterError):
        world.stream.connect("c2", run_id, after)

    # THEN no subscription (nor connection) was stored, and nothing was sent
    assert world.subs.subscriptions(run_id) == []
    assert world.api.messages("c1") == []


class RecordingPusher:
    """A pusher that keeps what it was handed, object for object."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, bytes]] = []

    def post(self, connection_id: str, data: bytes) -> None:
        self.posted.append((connection_id, data))


def test_an_entry_going_to_many_subscribers_is_encoded_once(world):
    # GIVEN three connections following one run, posting through a recording pusher
    pusher = RecordingPusher()
    world.stream.pusher = pusher
    run_id = world.start(counting(2))
    world.connect("c1", "c2", "c3")
    for connection_id in ("c1", "c2", "c3"):
        world.stream.subscribe(connection_id, run_id)

    # WHEN its first entry is committed and broadcast
    world.step()

    # THEN each subscriber got that entry, as the very same encoded message
    sent = [data for _, data in pusher.posted]
    assert sorted(c for c, _ in pusher.posted) == ["c1", "c2", "c3"]
    assert json.loads(sent[0])["seq"] == 0 and all(data is sent[0] for data in sent)


@default_registry.tool("ws_unit_item")
async def ws_unit_item(state, ctx):
    """A map item: twice the item."""
    return ctx.item * 2


def test_map_items_whose_entries_are_written_out_of_order_all_reach_the_subscriber(world):
    # GIVEN a subscriber following a run whose map runs two items at once
    graph = {
        "name": "fan",
        "start": "fan",
        "nodes": {
            "fan": {"map": {"items": "xs", "fn": "ws_unit_item", "results": "ys", "max_concurrency": 2}}
        },
    }
    graph_id = world.service.create_graph(graph).graph_id
    run_id = world.service.start_run(graph_id, {"xs": [1, 2]}).run_id
    world.connect("c1")
    world.stream.subscribe("c1", run_id)
    assert world.step() is None  # the fan-out opens: two item messages, no entry yet
    first, second = world.queue.pop(), world.queue.pop()

    # WHEN the first item claims its slot but writes its entry after the second one's
    held = []
    put = world.store.put_execution
    world.store.put_execution = lambda *args: held.append(args)
    asyncio.run(world.service.process_item(run_id, first.step, first.item, first.attempt))
    world.store.put_execution = put
    asyncio.run(world.service.process_item(run_id, second.step, second.item, second.attempt))
    world.stream.on_log(run_id, world.store.list_entries(run_id)[-1])
    # (GET /graph/state's log stops before the late entry too: a client follows from there)
    assert world.service.shown_log(world.service.get_run(run_id)).entries == []
    put(*held[0])
    assert [e["seq"] for e in world.service.shown_log(world.service.get_run(run_id)).entries] == [0, 1]
    world.stream.on_log(run_id, world.store.list_entries(run_id)[0])
    while (message := world.queue.pop()) is not None:  # the join, rechecking for the late item
        seen = len(world.store.list_entries(run_id))
        if message.item is None:
            asyncio.run(world.service.process_step(run_id, message.step))
        else:
            asyncio.run(world.service.process_item(run_id, message.step, message.item, message.attempt))
        for entry in world.store.list_entries(run_id)[seen:]:
            world.stream.on_log(run_id, entry)
    assert world.service.get_run(run_id).status == "completed"
    world.stream.on_run_end(run_id)

    # THEN the subscriber got both items' entries and the join's, once each, then done
    assert sorted(world.api.entries("c1")) == [0, 1, 2]
    assert world.api.dones("c1")[0]["status"] == "completed"
