"""Redrive on moto: a failed run resumed at the node that failed, after each kind of
failure, exactly once, through the API and the real step, DLQ and sweeper handlers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

import pytest

from engine import default_registry
from engine.registry import Registry
from engine.service import Disposition, RunService
from functions.api.app import handler as api_handler
from functions.runtime import current_app, set_app
from functions.sweeper import app as sweeper_app
from tests.functional import fixtures
from tests.functional.pump import LambdaContext, load_event
from tests.functional.test_api import Reply, api_event, assert_error
from tests.functional.tools import VANISHING

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

#: What the test tools saw: (node, attempt, idempotency key) per call, items per index.
CALLS: list[tuple[str, int, str]] = []
ITEM_CALLS: Counter[int] = Counter()


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()
    ITEM_CALLS.clear()


@default_registry.tool("redrive_test_fragile")
async def fragile(state, ctx):
    """Fails until the state says it is fixed."""
    CALLS.append((ctx.node, ctx.attempt, ctx.idempotency_key))
    if not state.get("fixed"):
        raise ConnectionError("backend down")
    return {"done_by": ctx.node}


@default_registry.tool("redrive_test_slow")
async def slow(state, ctx):
    """Sleeps ``sleep_s`` (longer than its node's timeout until patched)."""
    CALLS.append((ctx.node, ctx.attempt, ctx.idempotency_key))
    await asyncio.sleep(state.get("sleep_s", 0))
    return {"slept": True}


@default_registry.tool("redrive_test_big")
async def big(state, ctx):
    """Returns ``blob_bytes`` of text: over the state cap until patched."""
    return {"blob": "x" * state["blob_bytes"]}


@default_registry.tool("redrive_test_item")
async def item_tool(state, ctx):
    """Fails for the items in ``bad`` until the state says it is fixed."""
    ITEM_CALLS[ctx.index] += 1
    if ctx.item in state.get("bad", []) and not state.get("fixed"):
        raise ValueError(f"bad item {ctx.item}")
    return ctx.item * 10


@default_registry.tool("redrive_test_branch_ok")
async def branch_ok(state, ctx):
    CALLS.append((ctx.node, ctx.attempt, ctx.idempotency_key))
    return {"ok_branch": True}


FRAGILE = {
    "name": "fragile",
    "start": "first",
    "nodes": {
        "first": {"fn": "redrive_test_branch_ok", "next": "call"},
        "call": {"fn": "redrive_test_fragile", "retry": {"max_attempts": 2, "interval_s": 1}, "next": "last"},
        "last": {"fn": "test_vanishing"},
    },
}
#: FRAGILE's log once it failed and was redriven with a fix.
FRAGILE_REDRIVEN = [
    ("first", "ok"), ("call", "retry"), ("call", "failed"),
    ("call", "redriven"), ("call", "ok"), ("last", "ok"),
]  # fmt: skip
SLOW = {"start": "wait", "nodes": {"wait": {"fn": "redrive_test_slow", "timeout_s": 0.05}}}
BIG = {"start": "grow", "nodes": {"grow": {"fn": "redrive_test_big"}}}
MAP = {
    "start": "each",
    "nodes": {
        "each": {"map": {"items": "xs", "fn": "redrive_test_item", "results": "ys", "max_concurrency": 2}}
    },
}
PARALLEL = {
    "start": "both",
    "nodes": {
        "both": {"parallel": ["good", "bad"]},
        "good": {"fn": "redrive_test_branch_ok"},
        "bad": {"fn": "redrive_test_fragile"},
    },
}


# -- helpers --------------------------------------------------------------------------------
def call(method: str, path: str, **kwargs: Any) -> Reply:
    response = api_handler(api_event(method, path, **kwargs), LambdaContext.api())
    return Reply(response["statusCode"], response.get("headers", {}), response["body"])


def start(service: RunService, graph: dict[str, Any], state: dict[str, Any]) -> str:
    return service.start_run(service.create_graph(graph).graph_id, state).run_id


def redrive(run_id: str, patch: dict[str, Any] | None = None) -> Reply:
    body = None if patch is None else {"state_patch": patch}
    return call("POST", f"/graph/run/{run_id}/redrive", body=body)


def seqs(service: RunService, run_id: str) -> list[int]:
    return [entry["seq"] for entry in service.store.list_logs(run_id)]


def statuses(service: RunService, run_id: str) -> list[tuple[str, str]]:
    return [(e["node"], e["status"]) for e in service.store.list_logs(run_id)]


# -- after each kind of failure ---------------------------------------------------------------
def test_a_tool_failing_after_its_retries_is_redriven_with_a_patch_to_completion(service, pump):
    # GIVEN a run whose middle node failed after both its attempts
    run_id = start(service, FRAGILE, {})
    pump.drain()
    failed = service.get_run(run_id)
    assert failed.status == "failed" and failed.error["node"] == "call"
    assert seqs(service, run_id) == [0, 1, 2]

    # WHEN it is redriven with a patch that fixes the backend
    reply = redrive(run_id, {"fixed": True})

    # THEN it runs again from the failed node, with a fresh attempt count, to completion
    assert reply.status == 200, reply.raw
    assert reply.json["status"] == "running" and reply.json["redrive_count"] == 1
    assert reply.json["current_node"] == "call" and reply.json["state"]["fixed"] is True
    pump.drain()
    run = service.get_run(run_id)
    assert run.status == "completed" and run.error is None and run.redrive_count == 1
    assert seqs(service, run_id) == [0, 1, 2, 3, 4, 5]
    assert statuses(service, run_id) == FRAGILE_REDRIVEN
    entry = service.store.list_logs(run_id)[3]
    assert entry["result"] == {"fixed": True} and entry["redrive"] == 1 and entry["next"] == "call"
    # the first node did not run again; the failed one restarted at attempt 1, new keys
    assert [(node, attempt) for node, attempt, _ in CALLS] == [
        ("first", 1),
        ("call", 1),
        ("call", 2),
        ("call", 1),
    ]
    keys = [key for _, _, key in CALLS]
    assert len(set(keys)) == len(keys)
    view = call("GET", f"/graph/state/{run_id}").json
    assert view["redrive_count"] == 1 and view["status"] == "completed"


def test_a_timed_out_node_is_redriven(service, pump):
    # GIVEN a run whose node timed out
    run_id = start(service, SLOW, {"sleep_s": 5})
    pump.drain()
    assert service.get_run(run_id).error["type"] == "TimeoutError"

    # WHEN it is redriven with a patch that makes it quick
    assert redrive(run_id, {"sleep_s": 0}).status == 200
    pump.drain()

    # THEN it completed, the log going on after the timeout's entry
    run = service.get_run(run_id)
    assert run.status == "completed" and run.state["slept"] == "true"
    assert statuses(service, run_id) == [("wait", "failed"), ("wait", "redriven"), ("wait", "ok")]


def test_a_run_failed_by_its_state_cap_is_redriven_with_a_smaller_input(service, pump):
    # GIVEN a run whose node's update would put the state over the cap (the whole state's:
    # the large value is offloaded to the state bucket, so the stored state's cap holds)
    service.max_total_state_bytes = 512 * 1024
    run_id = start(service, BIG, {"blob_bytes": service.max_total_state_bytes})
    pump.drain()
    assert service.get_run(run_id).error["type"] == "StateTooLargeError"

    # WHEN it is redriven with a patch asking for less
    assert redrive(run_id, {"blob_bytes": 10}).status == 200
    pump.drain()

    # THEN it completed
    run = service.get_run(run_id)
    assert run.status == "completed" and json.loads(run.state["blob"]) == "x" * 10
    assert seqs(service, run_id) == [0, 1, 2]


def test_a_run_failed_by_the_dead_letter_queue_is_redriven(service, pump, dlq_pump, faults, clock):
    # GIVEN a run whose step 1 message kept failing until the DLQ handler failed the run
    store, _ = faults
    run_id = start(service, FRAGILE, {"fixed": True})
    store.unavailable.add((run_id, 1))
    pump.drain()
    dlq_pump.drain()
    run = service.get_run(run_id)
    assert run.status == "failed" and run.error["type"] == "StepDeliveryFailed" and run.step == 1

    # WHEN the store is back and the run is redriven (no patch)
    store.unavailable.clear()
    assert redrive(run_id).status == 200
    pump.drain()

    # THEN it completed; seq 1 is the dead letter's transition, which has no entry
    run = service.get_run(run_id)
    assert run.status == "completed" and run.redrive_count == 1
    assert statuses(service, run_id) == [
        ("first", "ok"), ("call", "redriven"), ("call", "ok"), ("last", "ok")
    ]  # fmt: skip
    assert seqs(service, run_id) == [0, 2, 3, 4]


def test_a_run_whose_tool_was_gone_is_redriven_once_the_tool_is_back(service, pump, clock):
    # GIVEN a run failed by a deployment that no longer had its tool
    run_id = start(service, VANISHING, {})
    deployed = current_app()
    set_app(fixtures.service_app(RunService(service.store, service.queue, Registry(), clock=clock)))
    pump.drain()
    assert service.get_run(run_id).error["type"] == "GraphValidationError"

    # WHEN it is redriven while the tool is still missing
    error = assert_error(redrive(run_id), 409, "conflict")

    # THEN it is refused, saying why, and the run is untouched
    assert "does not load" in error["message"] and "test_vanishing" in error["message"]
    assert service.get_run(run_id).status == "failed"

    # WHEN the tool is deployed again and the run redriven
    set_app(deployed)
    assert redrive(run_id).status == 200
    pump.drain()

    # THEN it completed
    assert service.get_run(run_id).status == "completed"
    assert statuses(service, run_id) == [("only", "redriven"), ("only", "ok")]


def test_a_failed_map_runs_only_its_failed_items_again(service, pump):
    # GIVEN a map whose items 1 and 3 failed (MapFailed)
    run_id = start(service, MAP, {"xs": [0, 1, 2, 3, 4], "bad": [1, 3]})
    pump.drain()
    run = service.get_run(run_id)
    assert run.status == "failed" and run.error["type"] == "MapFailed"
    assert dict(ITEM_CALLS) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}

    # WHEN it is redriven with a fix
    assert redrive(run_id, {"fixed": True}).status == 200
    pump.drain()

    # THEN only items 1 and 3 ran again, and the results hold every item's
    run = service.get_run(run_id)
    assert run.status == "completed", run.error
    assert dict(ITEM_CALLS) == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1}
    assert json.loads(run.state["ys"]) == [0, 10, 20, 30, 40]
    assert json.loads(run.state["ys_errors"]) == []
    logs = service.store.list_logs(run_id)
    assert [e["seq"] for e in logs] == list(range(len(logs)))
    after = logs[[e["status"] for e in logs].index("redriven") + 1 :]
    assert sorted(e["index"] for e in after if "index" in e) == [1, 3]


def test_a_map_redriven_twice_takes_each_success_from_where_it_ran(service, pump):
    # GIVEN a map whose items 1 and 3 failed, redriven with only item 1 fixed
    run_id = start(service, MAP, {"xs": [0, 1, 2, 3, 4], "bad": [1, 3]})
    pump.drain()
    assert redrive(run_id, {"bad": [3]}).status == 200
    pump.drain()
    assert service.get_run(run_id).status == "failed"

    # WHEN it is redriven again with item 3 fixed
    assert redrive(run_id, {"bad": []}).status == 200
    pump.drain()

    # THEN item 3 alone ran a third time; the results come from three fan-outs
    run = service.get_run(run_id)
    assert run.status == "completed" and run.redrive_count == 2
    assert dict(ITEM_CALLS) == {0: 1, 1: 2, 2: 1, 3: 3, 4: 1}
    assert json.loads(run.state["ys"]) == [0, 10, 20, 30, 40]


def test_a_map_whose_items_the_patch_changes_runs_every_item_again(service, pump):
    # GIVEN a failed map
    run_id = start(service, MAP, {"xs": [0, 1, 2], "bad": [1]})
    pump.drain()

    # WHEN it is redriven with other items
    assert redrive(run_id, {"xs": [5, 6]}).status == 200
    pump.drain()

    # THEN every new item ran (item 0 is another item now)
    run = service.get_run(run_id)
    assert run.status == "completed" and json.loads(run.state["ys"]) == [50, 60]
    assert dict(ITEM_CALLS) == {0: 2, 1: 2, 2: 1}


def test_a_failed_parallel_node_runs_only_its_failed_branch_again(service, pump):
    # GIVEN a parallel node whose branch "bad" failed
    run_id = start(service, PARALLEL, {})
    pump.drain()
    assert service.get_run(run_id).error["type"] == "ParallelFailed"

    # WHEN it is redriven with a fix
    assert redrive(run_id, {"fixed": True}).status == 200
    pump.drain()

    # THEN "good" (branch 0) ran once, "bad" (branch 1) twice, and both updates are merged
    run = service.get_run(run_id)
    assert run.status == "completed"
    assert Counter(key.rsplit(":", 1)[1] for _, _, key in CALLS) == Counter({"0": 1, "1": 2})
    assert json.loads(run.state["ok_branch"]) is True and json.loads(run.state["done_by"]) == "both"


# -- exactly once ------------------------------------------------------------------------------
class Rendezvous:
    """A store whose redrives wait for each other after reading the run, before writing:
    two racing redrives both see it failed."""

    def __init__(self, store: Any, parties: int) -> None:
        self.store = store
        self.barrier = threading.Barrier(parties, timeout=10)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def redrive_run(self, run_id, build):
        def waiting(run, step):
            commit = build(run, step)
            self.barrier.wait()
            return commit

        return self.store.redrive_run(run_id, waiting)


def test_of_two_racing_redrives_exactly_one_wins_and_the_other_is_409(service, pump):
    # GIVEN a failed run, and two redrive requests that both read it failed
    run_id = start(service, FRAGILE, {})
    pump.drain()
    service.store = Rendezvous(service.store, 2)
    replies: list[Reply] = []
    patches = [{"fixed": True, "by": "a"}, {"fixed": True, "by": "b"}]
    threads = [threading.Thread(target=lambda p=p: replies.append(redrive(run_id, p))) for p in patches]

    # WHEN they race
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # THEN one is 200, the other 409 saying the run is running; one redrive is logged
    assert sorted(reply.status for reply in replies) == [200, 409]
    winner = next(reply for reply in replies if reply.status == 200).json
    loser = assert_error(next(reply for reply in replies if reply.status == 409), 409, "conflict")
    assert "is running" in loser["message"] and loser["details"] == {"status": "running"}
    pump.drain()
    run = service.get_run(run_id)
    assert run.status == "completed" and run.redrive_count == 1
    assert json.loads(run.state["by"]) == winner["state"]["by"]
    assert [status for _, status in statuses(service, run_id)].count("redriven") == 1
    assert seqs(service, run_id) == list(range(run.step))


def test_a_stale_duplicate_of_the_failed_step_changes_nothing_after_the_redrive(service, pump):
    # GIVEN a failed run, a copy of its failed step's message still queued
    run_id = start(service, FRAGILE, {})
    pump.drain()
    pump.sqs.send_message(QueueUrl=pump.queue_url, MessageBody=json.dumps({"run_id": run_id, "step": 2}))

    # WHEN it is redriven and every message is then delivered twice, by two workers at once
    assert redrive(run_id, {"fixed": True}).status == 200
    pump.duplicate, pump.workers = True, 2
    pump.drain()

    # THEN the duplicate ran nothing, and every transition was made once
    run = service.get_run(run_id)
    assert run.status == "completed"
    assert statuses(service, run_id) == FRAGILE_REDRIVEN
    assert seqs(service, run_id) == list(range(run.step))


def test_a_duplicate_racing_from_before_the_failure_loses_its_commit_to_the_redrive(service, pump):
    # GIVEN a worker that last saw the run running at step 2 (it made step 1)...
    run_id = start(service, FRAGILE, {})
    pump.step_once()
    pump.step_once()
    duplicate = {"run_id": run_id, "step": 2}

    # ...while another container fails the run at step 2 and a request redrives it
    def elsewhere():
        pump.clock.advance(2)
        pump.drain()
        assert redrive(run_id, {"fixed": True}).status == 200
        redriven.append(service.get_run(run_id).status)

    redriven: list[str] = []
    other = threading.Thread(target=elsewhere)
    other.start()
    other.join(timeout=30)
    assert redriven == ["running"]

    # WHEN the first worker gets a stale copy of step 2
    disposition = asyncio.run(service.process_step(run_id, duplicate["step"]))

    # THEN it ran the tool again, with step 2's key, and its commit lost (the failure took
    # slot 2); the redriven run completes once, its node under a new key
    assert disposition == Disposition.CONFLICT
    step_2_key = f"{run_id}:2"
    assert [key for _, _, key in CALLS].count(step_2_key) == 2
    pump.drain()
    run = service.get_run(run_id)
    assert run.status == "completed"
    assert statuses(service, run_id) == FRAGILE_REDRIVEN
    assert CALLS[-1] == ("call", 1, f"{run_id}:4")


def test_a_redrive_that_died_before_its_step_message_is_resent_by_the_sweeper(service, pump, clock):
    # GIVEN a failed run, and a queue that is down when the redrive sends its step
    run_id = start(service, FRAGILE, {})
    pump.drain()
    real = service.queue

    class DownQueue:
        def __getattr__(self, name):
            return getattr(real, name)

        def send_step(self, *args, **kwargs):
            from engine.errors import StoreUnavailableError

            raise StoreUnavailableError("injected: SQS unreachable")

    service.queue = DownQueue()
    assert_error(redrive(run_id, {"fixed": True}), 503, "unavailable")
    service.queue = real
    assert service.get_run(run_id).status == "running"  # the redrive was committed
    assert pump.drain() == 0

    # WHEN the run has stalled and the sweeper runs
    clock.advance(service.stall_after_s + 61)
    sweep()
    pump.drain()

    # THEN it completed
    assert service.get_run(run_id).status == "completed"


def test_a_redrive_that_died_before_its_commit_leaves_no_mark_once_swept(service, pump, stack, aws, clock):
    # GIVEN a failed run whose redrive marked it for the sweeper, then died before its slot
    run_id = start(service, FRAGILE, {})
    pump.drain()
    store = service.store

    def dying(run_id, item):
        raise ConnectionAbortedError("the API function died")

    store._put_slot = dying
    with pytest.raises(ConnectionAbortedError):
        service.redrive(run_id, {"fixed": True})
    del store._put_slot
    table = aws.client("dynamodb")
    key = {"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}}
    assert "gsi1pk" in table.get_item(TableName=stack["env"]["FLOWFORGE_TABLE"], Key=key)["Item"]

    # WHEN the sweeper runs
    clock.advance(service.stall_after_s + 61)
    sweep()

    # THEN the run is still failed, out of the sweeper's index, and can be redriven
    item = table.get_item(TableName=stack["env"]["FLOWFORGE_TABLE"], Key=key)["Item"]
    assert item["status"]["S"] == "failed" and "gsi1pk" not in item
    assert pump.drain() == 0
    assert redrive(run_id, {"fixed": True}).status == 200
    pump.drain()
    assert service.get_run(run_id).status == "completed"


def sweep() -> dict:
    return sweeper_app.handler(
        load_event("sweeper_schedule"), LambdaContext(function_name="flowforge-SweeperFunction")
    )


# -- what can be redriven, and what a patch may hold --------------------------------------------
def test_only_a_failed_run_can_be_redriven(service, pump):
    # GIVEN a completed, a running and a cancelled run
    completed = start(service, VANISHING, {})
    pump.drain()
    running = start(service, FRAGILE, {})
    pump.step_once()
    cancelled = start(service, VANISHING, {})
    service.cancel(cancelled)
    assert [service.get_run(r).status for r in (completed, running, cancelled)] == [
        "completed", "running", "cancelled"
    ]  # fmt: skip

    # WHEN each is redriven THEN each is 409 naming its status, and nothing changed
    for run_id in (completed, running, cancelled):
        status = service.get_run(run_id).status
        error = assert_error(redrive(run_id), 409, "conflict")
        assert f"is {status}; only a failed run can be redriven" in error["message"]
        assert error["details"] == {"status": status}
        assert service.get_run(run_id).redrive_count == 0
    # and an unknown run is 404
    assert_error(redrive("nope"), 404, "not_found")


def test_a_patch_is_checked_like_an_input_state(service, pump):
    # GIVEN a failed run
    run_id = start(service, FRAGILE, {})
    pump.drain()
    before = service.get_run(run_id)

    # WHEN it is redriven with patches a run's input state could not be either
    surrogate = assert_error(
        call("POST", f"/graph/run/{run_id}/redrive", body='{"state_patch": {"a": "\\ud800"}}'),
        400,
        "invalid_request",
    )
    not_object = assert_error(redrive(run_id, [1]), 400, "invalid_request")  # type: ignore[arg-type]
    long_key = assert_error(redrive(run_id, {"k" * 1025: 1}), 400, "invalid_state")
    # (values under the offload threshold: they stay in the run, over its stored cap)
    inline = {f"k{i}": "x" * 30_000 for i in range(service.max_state_bytes // 30_000 + 1)}
    too_large = assert_error(redrive(run_id, inline), 413, "state_too_large")
    unknown_field = assert_error(
        call("POST", f"/graph/run/{run_id}/redrive", body={"patch": {}}), 400, "invalid_request"
    )

    # THEN each says what is wrong, and the run is untouched
    assert "body.state_patch.a" in json.dumps(surrogate)
    assert "state_patch" in json.dumps(not_object) and "1024 bytes" in long_key["message"]
    assert too_large["details"]["limit"] == service.max_state_bytes
    assert "patch" in json.dumps(unknown_field)
    after = service.get_run(run_id)
    assert after.status == "failed" and after.step == before.step and after.redrive_count == 0
    # AND an empty body, or an empty patch, redrives it as it was
    assert call("POST", f"/graph/run/{run_id}/redrive").status == 200


def test_a_run_that_used_its_max_steps_cannot_be_redriven(service, pump):
    # GIVEN a run that failed with MaxStepsExceeded
    graph = {"start": "loop", "max_steps": 3, "nodes": {"loop": {"fn": "test_vanishing", "next": "loop"}}}
    graph["nodes"]["loop"] = {"fn": "test_vanishing", "loop_condition": {"var": "never", "truthy": True}}
    run_id = start(service, graph, {})
    pump.drain()
    assert service.get_run(run_id).error["type"] == "MaxStepsExceeded"

    # WHEN it is redriven THEN it is refused, saying why
    error = assert_error(redrive(run_id), 409, "conflict")
    assert "max_steps=3" in error["message"]
    assert service.get_run(run_id).status == "failed"


def test_a_map_failed_by_a_dead_lettered_item_runs_only_what_had_not_succeeded(
    service, pump, dlq_pump, clock
):
    # GIVEN a map whose item 2's message is never answered, the other items done
    run_id = start(service, MAP, {"xs": [0, 1, 2, 3, 4]})
    lost: list[dict[str, Any]] = []
    while messages := pump.receive():
        kept = [m for m in messages if json.loads(m["Body"]).get("item") != 2]
        lost += [m for m in messages if m not in kept]
        if kept:
            pump.deliver(kept)
    assert [json.loads(m["Body"])["item"] for m in lost] == [2]
    assert dict(ITEM_CALLS) == {0: 1, 1: 1, 3: 1}  # item 4 waits for item 2 (max_concurrency 2)

    # WHEN it has stalled and the item's dead letter fails the run
    clock.advance(service.stall_after_s + 1)
    dead = json.loads(lost[0]["Body"])
    dlq_pump.sqs.send_message(QueueUrl=dlq_pump.queue_url, MessageBody=json.dumps(dead))
    dlq_pump.drain()
    assert service.get_run(run_id).error["type"] == "StepDeliveryFailed"

    # AND it is redriven, its lost message coming back late as well
    assert redrive(run_id).status == 200
    pump.drain()

    # THEN items 2 and 4 ran, nothing else again (the late copy of item 2's old message
    # changed nothing)
    run = service.get_run(run_id)
    assert run.status == "completed", run.error
    assert dict(ITEM_CALLS) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}
    assert json.loads(run.state["ys"]) == [0, 10, 20, 30, 40]
