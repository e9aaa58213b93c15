"""Map and parallel nodes on the step loop on moto: item messages through the real step
handler, duplicated and racing deliveries, crashes between an execution's two writes,
cancel, and the sweeper's repair of a fan-out whose messages were lost."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest

from engine import compile_graph, default_registry, run_graph_sync
from engine.state import decode_state
from functions.sweeper import app as sweeper_app
from tests.functional.pump import LambdaContext, load_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@default_registry.tool("test_square")
async def square(state, ctx):
    """ctx.item squared; items that are strings fail (ValueError)."""
    if isinstance(ctx.item, str):
        raise ValueError(f"not a number: {ctx.item}")
    return ctx.item * ctx.item


@default_registry.tool("test_put")
async def put(state, ctx):
    """Write ``params.value`` under ``params.key``."""
    return {ctx.params["key"]: ctx.params["value"]}


TOGETHER = {"started": 0, "running": 0, "peak": 0}


@default_registry.tool("test_together")
async def together(state, ctx):
    """ctx.item + 1, once every item of the map has started (or after 5 s): items that
    run one after another each wait the 5 s out."""
    TOGETHER["started"] += 1
    TOGETHER["running"] += 1
    TOGETHER["peak"] = max(TOGETHER["peak"], TOGETHER["running"])
    try:
        for _ in range(500):
            if TOGETHER["started"] >= len(state["xs"]):
                break
            await asyncio.sleep(0.01)
        return ctx.item + 1
    finally:
        TOGETHER["running"] -= 1


ALL_TEN = threading.Barrier(10, timeout=5)


@default_registry.tool("test_all_ten")
def all_ten(state, ctx):
    """A sync tool (run in a thread): ctx.item, once 10 items wait at once (else it fails
    after 5 s with BrokenBarrierError)."""
    ALL_TEN.wait()
    return ctx.item


def map_graph(max_concurrency: int = 3, tolerated: int = 0, items: str = "xs") -> dict:
    return {
        "start": "m",
        "nodes": {
            "m": {
                "map": {"items": items, "fn": "test_square", "results": "ys",
                        "max_concurrency": max_concurrency, "tolerated_failures": tolerated},
                "retry": {"max_attempts": 2, "interval_s": 0},
                "catch": [{"on": ["MapFailed"], "next": "fallback", "result_key": "error"}],
                "next": "p",
            },
            "p": {"parallel": ["news", "prices"]},
            "news": {"fn": "test_put", "params": {"key": "news", "value": 1}},
            "prices": {"fn": "test_put", "params": {"key": "prices", "value": 2}},
            "fallback": {"fn": "test_put", "params": {"key": "fell_back", "value": True}},
        },
    }  # fmt: skip


def start(service, graph, state) -> str:
    return service.start_run(service.create_graph(graph).graph_id, state).run_id


def normalized(logs: list[dict]) -> tuple[list[int], list[tuple], list[tuple]]:
    """Seqs, and the entries with seq taken out: executions sorted, the others in order."""
    fields = ("node", "index", "branch", "attempt", "status", "result", "error")
    executions = sorted(tuple(str(e.get(k)) for k in fields) for e in logs if "index" in e or "branch" in e)
    others = [tuple(str(e.get(k)) for k in fields) for e in logs if "index" not in e and "branch" not in e]
    return [e["seq"] for e in logs], executions, others


def assert_matches_runner(service, run_id, graph, state) -> None:
    expected = run_graph_sync(compile_graph(graph), state, sleep=None)
    run = service.get_run(run_id)
    assert (run.status, run.error, decode_state(run.state)) == (
        expected.status,
        expected.error,
        expected.state,
    )
    logs = service.store.list_logs(run_id)
    assert normalized(logs) == normalized(expected.logs)
    assert [e["seq"] for e in logs] == list(range(len(logs)))


def test_a_map_and_a_parallel_node_run_through_the_step_handler(service, pump):
    # GIVEN a map over 7 items (one failing, tolerated), then two parallel branches
    graph, state = map_graph(tolerated=1), {"xs": [1, 2, 3, "x", 5, 6, 7]}
    run_id = start(service, graph, state)

    # WHEN the queue is drained through the step handler
    pump.drain()

    # THEN the run ends as in-process: results in item order, the failure listed, branches merged
    assert_matches_runner(service, run_id, graph, state)
    final = decode_state(service.get_run(run_id).state)
    assert final["ys"] == [1, 4, 9, None, 25, 36, 49]
    assert final["ys_errors"] == [{"index": 3, "type": "ValueError", "message": "not a number: x"}]
    assert (final["news"], final["prices"]) == (1, 2)
    # AND each item message was sent once: 3 first, each finished item the next one
    items = Counter((m["step"], m["item"], m["attempt"]) for m in pump.delivered if "item" in m)
    assert set(items.values()) == {1} and len(items) == 7 + 1 + 2  # + the retry of "x", + 2 branches


def test_item_messages_received_in_one_batch_run_alongside_each_other(service, pump):
    # GIVEN a map of 4 items, all at once, whose tool waits until every item has started
    graph = {
        "start": "m",
        "nodes": {
            "m": {"map": {"items": "xs", "fn": "test_together", "results": "ys", "max_concurrency": 4}}
        },
    }
    TOGETHER.update(started=0, running=0, peak=0)
    run_id = start(service, graph, {"xs": [1, 2, 3, 4]})
    pump.step_once()  # the step message: the fan-out opens and sends the 4 item messages

    # WHEN the 4 item messages reach one invocation
    delivered = pump.step_once(max_messages=10)
    pump.drain()

    # THEN their tools ran at once, and the run ends as in-process
    assert len(delivered) == 4 and all("item" in message for message in delivered)
    assert TOGETHER["peak"] == 4
    assert decode_state(service.get_run(run_id).state)["ys"] == [2, 3, 4, 5]
    assert_matches_runner(service, run_id, graph, {"xs": [1, 2, 3, 4]})


def test_the_item_messages_of_one_batch_read_their_run_once(service, pump, monkeypatch):
    # GIVEN a map of 4 items at once whose fan-out has opened, and a second run's map
    graph = {
        "start": "m",
        "nodes": {"m": {"map": {"items": "xs", "fn": "test_square", "results": "ys", "max_concurrency": 4}}},
    }
    run_ids = [start(service, graph, {"xs": [1, 2, 3, 4]}) for _ in range(2)]
    pump.step_once(max_messages=2)  # both fan-outs open: 8 item messages
    reads: Counter[str] = Counter()
    get_run = service.store.get_run

    def counted(run_id, **kwargs):
        reads[run_id] += 1
        return get_run(run_id, **kwargs)

    monkeypatch.setattr(service.store, "get_run", counted)

    # WHEN the 8 item messages reach one invocation
    delivered = pump.step_once(max_messages=10)

    # THEN each run was read once for its 4 items (one query, not four), both maps joined,
    # and the runs end as in-process
    assert len(delivered) == 8
    assert reads == {run_ids[0]: 1, run_ids[1]: 1}
    pump.drain()
    for run_id in run_ids:
        assert decode_state(service.get_run(run_id).state)["ys"] == [1, 4, 9, 16]
        assert_matches_runner(service, run_id, graph, {"xs": [1, 2, 3, 4]})


def test_ten_items_with_sync_tools_in_one_batch_each_get_a_thread_at_once(service, pump):
    # GIVEN a map of 10 items whose sync tool returns only once all 10 are waiting together
    graph = {
        "start": "m",
        "nodes": {
            "m": {"map": {"items": "xs", "fn": "test_all_ten", "results": "ys", "max_concurrency": 10}}
        },
    }
    ALL_TEN.reset()
    run_id = start(service, graph, {"xs": list(range(10))})
    pump.step_once()  # the fan-out opens: its 10 item messages

    # WHEN they reach one invocation
    delivered = pump.step_once(max_messages=10)
    pump.drain()

    # THEN all 10 ran at once (asyncio's default of cpu_count + 4 threads would hold some back)
    assert len(delivered) == 10
    assert decode_state(service.get_run(run_id).state)["ys"] == list(range(10))


def test_duplicated_and_racing_deliveries_commit_each_execution_once_and_join_once(service, pump):
    # GIVEN every batch delivered twice, to two concurrent workers each
    graph, state = map_graph(max_concurrency=4), {"xs": list(range(12))}
    pump.duplicate, pump.workers = True, 2
    run_id = start(service, graph, state)

    # WHEN the queue is drained
    pump.drain()

    # THEN each execution and the join are one log entry each, as in-process
    assert_matches_runner(service, run_id, graph, state)
    joins = [e for e in service.store.list_logs(run_id) if e["node"] == "m" and "index" not in e]
    assert len(joins) == 1 and joins[0]["result"]["ys"] == [i * i for i in range(12)]


def test_more_failures_than_tolerated_fail_the_map_with_a_catchable_map_failed(service, pump):
    graph, state = map_graph(tolerated=0), {"xs": [1, "a", "b"]}
    run_id = start(service, graph, state)
    pump.drain()
    assert_matches_runner(service, run_id, graph, state)
    final = decode_state(service.get_run(run_id).state)
    assert final["error"]["type"] == "MapFailed" and final["fell_back"] is True
    assert final["ys"] == [1, None, None]


def test_an_empty_list_joins_at_once(service, pump):
    graph, state = map_graph(), {"xs": []}
    run_id = start(service, graph, state)
    pump.drain()
    assert_matches_runner(service, run_id, graph, state)
    assert decode_state(service.get_run(run_id).state)["ys"] == []


def test_a_worker_dying_between_claim_and_entry_is_redelivered_and_the_join_waits(service, pump, clock):
    # GIVEN the first delivery of item 1 dies after its claim, before writing its entry
    graph, state = map_graph(max_concurrency=3), {"xs": [1, 2, 3]}
    store = service.store
    put = store.put_execution
    died = []

    def dying_put(run_id, base, record, now):
        if record.index == 1 and not died:
            died.append(record.step)
            raise RuntimeError("the function died")
        return put(run_id, base, record, now)

    store.put_execution = dying_put
    run_id = start(service, graph, state)

    # WHEN the queue is drained (the dead message comes back after its visibility timeout)
    pump.drain()

    # THEN the item's entry took the step it had claimed, and the run ends as in-process
    assert died and service.get_run(run_id).status == "completed"
    entry = next(e for e in store.list_logs(run_id) if e.get("index") == 1)
    assert entry["seq"] == died[0]
    assert_matches_runner(service, run_id, graph, state)


def test_an_attempt_that_died_after_its_claim_is_run_again_when_stalled_never_superseded(
    service, pump, clock
):
    # GIVEN item 1 (a string: it fails, and is retried once) whose first attempt dies after
    # its claim, and dies again when its message comes back
    graph, state = map_graph(max_concurrency=3, tolerated=1), {"xs": [1, "x", 3]}
    store = service.store
    put = store.put_execution
    deaths = []

    def dying_put(run_id, base, record, now):
        if (record.index, record.attempt) == (1, 1) and len(deaths) < 2:
            deaths.append(record.step)
            raise RuntimeError("the function died")
        return put(run_id, base, record, now)

    store.put_execution = dying_put
    run_id = start(service, graph, state)
    while pump.counts()["Messages"]:  # items 0 and 2 finish; item 1's message is in flight
        pump.deliver(pump.receive())

    # WHEN the sweeper finds the fan-out stalled as the message comes back (and dies again)
    clock.advance(service.stall_after_s + 60)
    sweeper_app.handler(
        load_event("sweeper_schedule"), LambdaContext(function_name="flowforge-SweeperFunction")
    )
    pump.drain()

    # THEN the claimed attempt was run again and wrote its slot (its retry did not take
    # over, leaving the slot empty for the join to wait on for good): the run completed
    # as in-process
    assert service.get_run(run_id).status == "completed"
    assert len(deaths) == 2
    entry = next(e for e in store.list_logs(run_id) if (e.get("index"), e["attempt"]) == (1, 1))
    assert entry["seq"] == deaths[0]
    assert_matches_runner(service, run_id, graph, state)


def test_lost_item_messages_are_resent_by_the_sweeper(service, pump, clock):
    # GIVEN a map whose first item messages are lost (the queue drops them)
    graph, state = map_graph(max_concurrency=2), {"xs": [1, 2, 3, 4]}
    send_item, send_items = service.queue.send_item, service.queue.send_items
    lost = []

    def kept(item, attempt):
        if item in (0, 2) and (item, attempt) not in lost:
            lost.append((item, attempt))
            return False
        return True

    def lossy(run_id, step, item, attempt, delay_s=0.0):
        if kept(item, attempt):
            send_item(run_id, step, item, attempt, delay_s)

    def lossy_batch(run_id, step, items):
        send_items(run_id, step, [(item, attempt) for item, attempt in items if kept(item, attempt)])

    service.queue.send_item, service.queue.send_items = lossy, lossy_batch
    run_id = start(service, graph, state)
    pump.drain()
    assert service.get_run(run_id).status == "running"

    # WHEN the sweeper runs after the stall window, and the queue is drained (twice: item 2
    # follows item 0 in its chain)
    context = LambdaContext(function_name="flowforge-SweeperFunction")
    for _ in range(3):
        clock.advance(service.stall_after_s + 60)
        sweeper_app.handler(load_event("sweeper_schedule"), context)
        pump.drain()

    # THEN the run completed as in-process
    assert lost == [(0, 1), (2, 1)]
    assert_matches_runner(service, run_id, graph, state)


def test_cancel_stops_new_items_and_running_ones_are_ignored(service, pump):
    graph, state = map_graph(max_concurrency=1), {"xs": [1, 2, 3, 4]}
    run_id = start(service, graph, state)
    pump.step_once()  # opens the map
    pump.step_once()  # item 0
    service.cancel(run_id)
    pump.drain()
    run = service.get_run(run_id)
    assert run.status == "cancelled"
    logs = service.store.list_logs(run_id)
    assert [(e["node"], e.get("index")) for e in logs] == [("m", 0)]


def test_state_shows_a_running_maps_progress(service, pump):
    # GIVEN a map of 3 items, one at a time, whose second item fails (no retry left)
    graph, state = map_graph(max_concurrency=1, tolerated=5), {"xs": [1, "a", 3]}
    graph["nodes"]["m"]["retry"]["max_attempts"] = 1
    run_id = start(service, graph, state)
    pump.step_once()
    pump.step_once()
    pump.step_once()
    # WHEN the map's first two items have run, one at a time
    progress = service.progress(service.get_run(run_id))
    # THEN the run's progress counts them, the failed one too
    assert progress == {"node": "m", "done": 2, "failed": 1, "total": 3}
    pump.drain()
    assert service.progress(service.get_run(run_id)) is None


def test_resume_resends_a_running_maps_items_whose_messages_were_lost(service, pump, aws, stack):
    # GIVEN a map that sent its items, whose messages are then lost (the local stack's
    # queue is not persisted across a restart)
    graph, state = map_graph(max_concurrency=2), {"xs": [1, 2, 3]}
    run_id = start(service, graph, state)
    pump.step_once()
    pump.step_once()  # item 0 ran, item 2 was sent
    aws.client("sqs").purge_queue(QueueUrl=stack["queue_url"])
    pump._in_flight.clear()

    # WHEN the run is resumed, as the local stack does at start, and the queue drained
    service.resume(service.get_run(run_id))
    pump.drain()

    # THEN it completed as in-process, at once (no stall window waited for)
    assert_matches_runner(service, run_id, graph, state)
