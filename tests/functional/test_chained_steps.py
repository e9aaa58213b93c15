"""Chained steps on moto through the real step handler (engine/chain.py).

A message executes its step, then the run's next steps in the same invocation while they
are due at once and the invocation has budget left; each step is still committed on its
own, and a step message is sent only where the chain stops. Every test ends where the
in-process runner ends: the same state, the same log, each step committed once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from engine import default_registry
from engine.state import decode_state
from functions.runtime import current_app
from functions.step import app as step_app
from functions.sweeper import app as sweeper_app
from tests.functional import fixtures
from tests.functional.pump import LambdaContext, load_event
from tests.functional.test_faults import clean_run, start, violations
from tests.functional.tools import FLAKY, count_loop, sequential_summarization, summarization

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

#: What the test tools below reach: the test's clock, and another container's service.
HOOKS: dict[str, Any] = {}
CALLS: list[str] = []


@default_registry.tool("test_chain_tick")
async def tick_tool(state, ctx):
    """Takes ``HOOKS['tick_s']`` seconds of the test's virtual clock, and counts up ``i``."""
    HOOKS["clock"].advance(HOOKS["tick_s"])
    return {"i": state.get("i", 0) + 1}


@default_registry.tool("test_chain_cancel")
async def cancel_tool(state, ctx):
    """Cancels its own run through another container (which the chain's store knows nothing of)."""
    HOOKS["other"].service.cancel(ctx.run_id)
    return {"cancelled_by": ctx.node}


@default_registry.tool("test_chain_record")
async def record_tool(state, ctx):
    CALLS.append(ctx.node)
    return {ctx.node: True}


def budget(**changes: Any) -> None:
    """Give the step function's App another chain budget (its settings, as from template.yaml)."""
    app = current_app()
    app.settings = dataclasses.replace(app.settings, **changes)


def step_messages(pump, run_id: str) -> list[int]:
    return [m["step"] for m in pump.delivered if m["run_id"] == run_id and "item" not in m]


def test_a_lone_run_chains_its_steps_in_one_invocation(service, pump, faults):
    # GIVEN a run of 12 due steps and the template's budget (100 steps per invocation)
    store, queue = faults
    graph, state = count_loop(12), {"i": 0}
    run_id = start(service, graph, state)

    # WHEN the queue is drained
    invocations = pump.drain()

    # THEN one message ran the whole run: each step committed once, in order, with its log
    # entry, and no step message was sent after the first
    assert violations(service, run_id, clean_run(graph, state)) == []
    assert invocations == 1 and step_messages(pump, run_id) == [0]
    assert sum(queue.sent.values()) == 1  # start_run's message
    assert list(store.commits) == [(run_id, step) for step in range(12)]


def test_the_budget_stops_a_chain_and_sends_its_continuation(service, pump, faults):
    # GIVEN at most 5 steps per invocation
    budget(chain_max_steps=5)
    graph, state = count_loop(12), {"i": 0}
    run_id = start(service, graph, state)

    # WHEN the queue is drained
    pump.drain()

    # THEN each message ran 5 steps, then sent the step where its chain stopped
    assert step_messages(pump, run_id) == [0, 5, 10]
    assert violations(service, run_id, clean_run(graph, state)) == []


def test_chain_max_steps_1_turns_chaining_off(service, pump):
    budget(chain_max_steps=1)
    graph, state = count_loop(4), {"i": 0}
    run_id = start(service, graph, state)
    pump.drain()
    assert step_messages(pump, run_id) == [0, 1, 2, 3]
    assert violations(service, run_id, clean_run(graph, state)) == []


def test_a_retry_delay_stops_the_chain(service, pump):
    # GIVEN a node that fails once and retries after 2 s, then a next node
    graph, state = FLAKY, {"fail_times": 1}
    run_id = start(service, graph, state)

    # WHEN the queue is drained
    pump.drain()

    # THEN the retry was a delayed message; its step and the next one made one chain
    assert step_messages(pump, run_id) == [0, 1]
    logs = service.store.list_logs(run_id)
    assert [(e["node"], e["status"]) for e in logs] == [("call", "retry"), ("call", "ok"), ("after", "ok")]
    assert violations(service, run_id, clean_run(graph, state)) == []


def test_a_fan_out_stops_the_chain(service, pump):
    # GIVEN the summarization graph: split, then a map node, then merge and refine
    graph, state = summarization()
    run_id = start(service, graph, state)

    # WHEN the queue is drained
    pump.drain()

    # THEN split's chain stopped at the map (its step message opens it), the join's worker
    # sent merge's step, and merge chained into every refine iteration to the run's end
    run = service.get_run(run_id)
    join = max(e["seq"] for e in service.store.list_logs(run_id) if e["node"] == "summarize")
    assert step_messages(pump, run_id) == [0, 1, join + 1]
    assert violations(service, run_id, clean_run(graph, state)) == []
    assert run.status == "completed"


def test_a_cancel_landing_mid_chain_is_seen_by_the_next_commit(service, pump, faults, env):
    # GIVEN a chain a -> b -> c where b's tool cancels the run through another container:
    # the chain's own store still knows the run as running at b's step
    store, queue = faults
    HOOKS["other"] = fixtures.moto_app()
    CALLS.clear()
    graph = {
        "start": "a",
        "nodes": {
            "a": {"fn": "test_chain_record", "next": "b"},
            "b": {"fn": "test_chain_cancel", "next": "c"},
            "c": {"fn": "test_chain_record"},
        },
    }
    run_id = start(service, graph, {})

    # WHEN its message is handled
    pump.drain()

    # THEN b's commit lost its slot's condition to the cancel: the chain stopped there,
    # c never ran, nothing was sent, and the run is cancelled with a's entry only
    run = service.get_run(run_id)
    assert run.status == "cancelled" and run.error["type"] == "Cancelled"
    assert [e["node"] for e in service.store.list_logs(run_id)] == ["a"]
    assert list(store.commits) == [(run_id, 0)]
    assert CALLS == ["a"] and sum(queue.sent.values()) == 1


@pytest.mark.parametrize("crash", ["before", "after"])
@pytest.mark.parametrize("step", range(9))
def test_a_crash_at_any_commit_of_a_chain_loses_nothing(service, pump, faults, crash, step):
    # GIVEN a worker that dies before or after committing step k of a chain (its steps
    # before k committed, no message sent for them)
    store, _ = faults
    (store.crash_before_commit if crash == "before" else store.crash_after_commit).add(step)
    graph, state = sequential_summarization()
    run_id = start(service, graph, state)
    expected = clean_run(graph, state)
    assert len(expected.logs) > 8

    # WHEN the queue is drained: the chain's first message returns after its visibility
    # timeout, a stale duplicate of a run stalled for longer than the stall threshold
    pump.drain()

    # THEN it re-sent the run's current step, and the run ended exactly as in process
    assert pump.visibility_timeout > service.stall_after_s
    assert violations(service, run_id, expected) == []
    assert step_messages(pump, run_id)[:2] == [0, 0]


def test_a_crash_mid_chain_is_recovered_by_the_sweeper(service, pump, faults, clock):
    # GIVEN a worker that died after committing step 3 of a chain begun at step 0
    store, _ = faults
    store.crash_after_commit.add(3)
    graph, state = sequential_summarization()
    run_id = start(service, graph, state)
    pump.step_once()
    assert service.get_run(run_id).step == 4 and pump.counts()["Messages"] == 0

    # WHEN the stall threshold passes and the sweeper runs (before the redelivery)
    clock.advance(service.stall_after_s + 1)
    context = LambdaContext(function_name="flowforge-SweeperFunction")
    assert sweeper_app.handler(load_event("sweeper_schedule"), context) == {"resent": 1}
    assert pump.step_once() == [{"run_id": run_id, "step": 4}]
    pump.drain()

    # THEN the run ended as in process
    assert violations(service, run_id, clean_run(graph, state)) == []


def test_a_long_chain_shares_the_invocation_with_the_rest_of_its_batch(service, pump, faults):
    # GIVEN two runs of 20 due steps whose first messages come in one batch, and 6 steps
    # per invocation
    budget(chain_max_steps=6)
    graph, state = count_loop(20), {"i": 0}
    first, second = start(service, graph, state), start(service, graph, state)

    # WHEN that batch is delivered
    failed = pump.deliver(pump.receive())

    # THEN each message's chain took its share (3 steps each): nothing was returned, and
    # each sent the step where its chain stopped
    assert failed == set()
    assert service.get_run(first).step == 3 and service.get_run(second).step == 3
    pump.drain()
    assert violations(service, first, clean_run(graph, state)) == []
    assert violations(service, second, clean_run(graph, state)) == []


def test_time_is_shared_too(service, pump, clock):
    # GIVEN two runs whose steps take 1 s each, in one batch, and 4 s of chaining per invocation
    budget(chain_max_seconds=4.0)
    HOOKS.update(clock=clock, tick_s=1.0)
    graph = {
        "start": "t",
        "nodes": {"t": {"fn": "test_chain_tick", "loop_condition": {"var": "i", "gte": 10}}},
    }
    first, second = start(service, graph, {}), start(service, graph, {})

    # WHEN that batch is delivered
    failed = pump.deliver(pump.receive())

    # THEN the first chain stopped after its 2 s, the second had the 2 s left
    assert failed == set()
    assert service.get_run(first).step == 2 and service.get_run(second).step == 2


def test_when_a_chain_spends_the_functions_time_the_rest_of_the_batch_is_returned(service, pump, clock):
    # GIVEN an invocation with 8 s left (3 s for tools, after the commit reserve), steps
    # of 1 s, and two runs whose first messages come in one batch
    HOOKS.update(clock=clock, tick_s=1.0)
    pump.handler = lambda event, _: step_app.handler(event, LambdaContext(remaining_ms=8000))
    graph = {
        "start": "t",
        "nodes": {"t": {"fn": "test_chain_tick", "loop_condition": {"var": "i", "gte": 6}}},
    }
    first, second = start(service, graph, {}), start(service, graph, {})
    messages = pump.receive()

    # WHEN that batch is delivered
    failed = pump.deliver(messages)

    # THEN the first chain ran until the function's time was short and sent its next
    # step; the second message went back to the queue untouched (batchItemFailures)
    assert failed == {m["MessageId"] for m in messages if second in m["Body"]}
    assert service.get_run(first).step == 3 and service.get_run(second).step == 0
    assert pump.counts()["Messages"] == 1  # the first run's continuation

    # AND both runs end as in process once the returned message comes back
    pump.drain()
    for run_id in (first, second):
        run = service.get_run(run_id)
        assert run.status == "completed" and decode_state(run.state) == {"i": 6}
