"""A batch of step messages under one Lambda timeout.

A batch's step messages run one after another in one invocation (its item messages
alongside them), and a node's ``timeout_s`` may exceed the function's. Before this, a Lambda timeout killed the node in the middle
(its retry and catch never saw a TimeoutError) and took the batch's other messages with it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest

from engine import default_registry
from functions.step.app import COMMIT_RESERVE_S, MIN_STEP_S
from tests.functional.pump import LambdaContext, QueuePump

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@dataclass
class Clocked:
    """The test's virtual clock, for the tools below (tools run at least once: pure in it)."""

    clock: object = None


CLOCK = Clocked()


@default_registry.tool("test_busy")
async def busy(state, ctx):
    """Takes ``params.seconds`` of the virtual clock."""
    CLOCK.clock.advance(ctx.params["seconds"])
    return {ctx.node: ctx.attempt}


@default_registry.tool("test_sleepy")
async def sleepy(state, ctx):
    """Sleeps ``params.seconds`` for real (a tool that outlives what the function has left)."""
    await asyncio.sleep(ctx.params["seconds"])
    return {ctx.node: "woke"}


@dataclass
class ClockedContext(LambdaContext):
    """A Lambda context whose remaining time runs out at ``ends_at`` on the virtual clock."""

    clock: object = None
    ends_at: float = 0.0
    fields: dict = field(default_factory=dict)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.ends_at - self.clock()) * 1000))


class TimedPump(QueuePump):
    """Each invocation gets ``timeout_s`` from its start, on the virtual clock."""

    timeout_s = 300.0

    def invoke(self, messages):
        self.invocations += 1
        self.delivered += [m["Body"] for m in messages]
        context = ClockedContext(clock=self.clock, ends_at=self.clock() + self.timeout_s)
        response = self.handler(self.event(messages), context)
        return {failure["itemIdentifier"] for failure in response.get("batchItemFailures", [])}


@pytest.fixture
def timed(pump, clock):
    CLOCK.clock = clock
    return TimedPump(pump.sqs, pump.queue_url, clock, pump.handler)


def start(service, graph) -> str:
    return service.start_run(service.create_graph(graph).graph_id, {}).run_id


def one_node(**node) -> dict:
    return {"start": "a", "nodes": {"a": node}}


def test_messages_without_time_left_are_left_for_redelivery(service, timed, clock):
    # GIVEN three runs whose first node takes 294.5 s each, in one batch on a 300 s function
    runs = [start(service, one_node(fn="test_busy", params={"seconds": 294.5})) for _ in range(3)]

    # WHEN the batch is delivered
    failed = timed.deliver(timed.receive(10))

    # THEN the first ran, the others were handed back untouched
    assert len(failed) == 2
    assert [service.get_run(r).status for r in runs] == ["completed", "running", "running"]
    assert [service.get_run(r).step for r in runs] == [1, 0, 0]
    # AND they run once redelivered
    timed.drain()
    assert {service.get_run(r).status for r in runs} == {"completed"}
    assert all(service.store.list_logs(r)[0]["attempt"] == 1 for r in runs)


def test_a_node_whose_timeout_no_longer_fits_is_re_sent_to_run_alone(service, timed):
    # GIVEN a batch: a 250 s node, then a node with timeout_s 60 (45 s would be left)
    first = start(service, one_node(fn="test_busy", params={"seconds": 250}))
    second = start(service, one_node(fn="test_busy", params={"seconds": 50}, timeout_s=60))

    # WHEN the batch is delivered
    failed = timed.deliver(timed.receive(10))

    # THEN the second was re-sent at once (not failed, not cut short) and runs in full
    assert failed == set() and service.get_run(first).status == "completed"
    assert service.get_run(second).step == 0
    timed.drain()
    [entry] = service.store.list_logs(second)
    assert entry["status"] == "ok" and entry["attempt"] == 1


def test_a_node_longer_than_the_function_times_out_where_catch_sees_it(service, timed):
    # GIVEN a node with timeout_s 900 on a function with (here) a moment left for its tool
    timed.timeout_s = COMMIT_RESERVE_S + MIN_STEP_S + 0.2
    graph = {
        "start": "a",
        "nodes": {
            "a": {"fn": "test_sleepy", "params": {"seconds": 30}, "timeout_s": 900,
                  "catch": [{"on": ["TimeoutError"], "next": "b"}]},
            "b": {"fn": "test_busy", "params": {"seconds": 0}},
        },
    }  # fmt: skip
    run_id = start(service, graph)

    # WHEN it runs
    timed.drain()

    # THEN the node timed out before the function did, and its catch routed the run
    run = service.get_run(run_id)
    first = service.store.list_logs(run_id)[0]
    assert run.status == "completed" and first["status"] == "caught"
    assert first["error"]["type"] == "TimeoutError"
    assert first["error"]["message"].endswith("the time the step function had left")


def test_a_map_item_longer_than_the_function_times_out_as_a_failed_item(service, timed):
    # GIVEN a map item whose tool outlives the function (timeout_s 900), failures tolerated
    timed.timeout_s = COMMIT_RESERVE_S + MIN_STEP_S + 0.2
    graph = {
        "start": "m",
        "nodes": {
            "m": {"map": {"items": "xs", "fn": "test_sleepy", "results": "ys", "tolerated_failures": 1},
                  "params": {"seconds": 30}, "timeout_s": 900},
        },
    }  # fmt: skip
    run_id = service.start_run(service.create_graph(graph).graph_id, {"xs": [1]}).run_id

    # WHEN it runs
    timed.drain()

    # THEN the item timed out before the function did, and the map tolerated it
    run = service.get_run(run_id)
    [error] = json.loads(run.state["ys_errors"])
    assert run.status == "completed" and json.loads(run.state["ys"]) == [None]
    assert error["type"] == "TimeoutError"
    assert error["message"].endswith("the time the step function had left")
