"""Chained steps in memory: the stop predicate, the invocation's budget, and the loop
through the in-memory store (engine/chain.py). The moto-backed tests, crashes and the
step handler's batches are in tests/functional/test_chained_steps.py."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from engine import Registry, compile_graph, run_graph_sync
from engine.chain import ChainBudget, StopReason, chain_stop
from engine.cost import Usage
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.ports import RunRecord, StepCommit
from engine.service import Disposition, RunService
from engine.state import decode_state
from engine.step import Cursor, StepResult, ToolContext, run_step
from engine.transitions import apply_commit
from engine.waits import CallbackTicket

registry = Registry()


@registry.tool("count")
async def count(state, ctx):
    return {"i": state.get("i", 0) + 1}


@registry.tool("fail_once")
async def fail_once(state, ctx):
    if ctx.attempt == 1:
        raise ConnectionError("once")
    return {"ok": True}


@registry.tool("item")
async def item(state, ctx):
    return ctx.item


GRAPH = compile_graph(
    {
        "start": "a",
        "nodes": {
            "a": {"fn": "count", "next": "b"},
            "b": {"fn": "count", "next": "fan"},
            "fan": {"map": {"items": "xs", "fn": "item", "results": "ys"}, "next": "slow"},
            "slow": {"fn": "count", "timeout_s": 30},
        },
    },
    registry,
)


def outcome(target: str | None, *, delay_s: float = 0.0) -> StepResult:
    cursor = Cursor(target, 1) if target else None
    status = "running" if target else "completed"
    return StepResult("ok", status, {}, {}, cursor, {"seq": 0}, delay_s)


def budget(**changes) -> ChainBudget:
    b = ChainBudget(max_steps=10, max_seconds=10.0, deadline=100.0, started_at=0.0, pending=1)
    b = dataclasses.replace(b, **changes)
    b.begin_message(0.0)
    b.steps = 1
    return b


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (outcome(None), StopReason.ENDED),
        (outcome("b", delay_s=2.0), StopReason.DELAYED),
        (outcome("fan"), StopReason.FAN_OUT),
        (outcome("b"), None),
    ],
)
def test_the_runs_own_reasons_come_first(case, reason):
    assert chain_stop(case, GRAPH, None, 0.0) is reason
    assert chain_stop(case, GRAPH, budget(), 1.0) is reason


def test_the_budget_stops_a_chain():
    # steps: the message's share is spent
    assert chain_stop(outcome("b"), GRAPH, budget(max_steps=1), 1.0) is StopReason.STEPS
    # seconds: the chain's share of max_seconds is over
    assert chain_stop(outcome("b"), GRAPH, budget(), 10.0) is StopReason.TIME
    # the function's time: too short for any step, or for the next node's timeout_s
    assert chain_stop(outcome("b"), GRAPH, budget(deadline=1.5), 1.0) is StopReason.DEADLINE
    assert chain_stop(outcome("slow"), GRAPH, budget(deadline=20.0), 1.0) is StopReason.DEADLINE
    assert chain_stop(outcome("slow"), GRAPH, budget(deadline=40.0), 1.0) is None


def test_each_message_of_a_batch_gets_an_equal_share():
    # GIVEN an invocation of 12 steps and 4 s for a batch of three messages
    b = ChainBudget(max_steps=12, max_seconds=4.0, started_at=0.0, pending=3)

    # WHEN the first message starts, its share is a third of each
    b.begin_message(0.0)
    assert (b.share_steps, b.share_ends) == (4, pytest.approx(4 / 3))

    # WHEN it used 6 steps and 2 s anyway (its own step was slow), the next two share the rest
    b.steps = 6
    b.begin_message(2.0)
    assert (b.share_steps, b.share_ends) == (9, pytest.approx(3.0))

    # AND a message always runs its own step: a spent budget only stops chaining
    b.steps = 12
    b.begin_message(4.0)
    assert b.share_steps == 12 and b.stop_reason(4.0, None) is StopReason.STEPS


def test_apply_commit_names_every_field_of_a_run():
    # GIVEN a run with every field set, and a commit
    fields = [f.name for f in dataclasses.fields(RunRecord)]
    assert fields == [
        "run_id",
        "graph_id",
        "status",
        "cursor",
        "step",
        "state",
        "created_at",
        "updated_at",
        "next_at",
        "graph_version",
        "finished_at",
        "error",
        "expires_at",
        "owner",
        "redrive_count",
        "cost",
    ]  # fmt: skip  (apply_commit builds a RunRecord positionally: a new field must be added there)
    run = RunRecord(
        "r", "g", "running", Cursor("a"), 3, {"k": "1"}, "c", "u", 5.0, 7, None, None, 99, "me", 2
    )
    commit = StepCommit("r", 3, {"k": "2"}, Cursor("b", 4), "running", {}, "v", 6.0, None, None, None)

    # WHEN it is applied, THEN the commit's fields move and the run's own stay
    after = apply_commit(run, commit)
    assert after == dataclasses.replace(
        run, cursor=Cursor("b", 4), step=4, state={"k": "2"}, updated_at="v", next_at=6.0
    )
    # AND a redrive's commit sets the run's redrive count
    assert apply_commit(run, dataclasses.replace(commit, redrive_count=3)).redrive_count == 3
    # AND a commit's cost is the run's after it (a commit without one leaves it)
    spent = Usage({"dw": 2})
    assert apply_commit(run, dataclasses.replace(commit, cost=spent)).cost == spent
    assert apply_commit(dataclasses.replace(run, cost=spent), commit).cost == spent


def service() -> RunService:
    return RunService(InMemoryRunStore(), InMemoryStepQueue(), registry)


def test_the_service_chains_to_the_fan_out_then_sends_its_step():
    # GIVEN a run a -> b -> map, and a budget of 10 steps for one message
    svc = service()
    graph_id = svc.create_graph(GRAPH.definition).graph_id
    run_id = svc.start_run(graph_id, {"xs": [1, 2]}).run_id
    svc.queue.pop()
    b = ChainBudget(max_steps=10, max_seconds=10.0, started_at=svc.clock(), pending=1)
    b.begin_message(svc.clock())

    # WHEN step 0's message is processed
    disposition = asyncio.run(svc.process_step(run_id, 0, budget=b))

    # THEN a and b were committed, and the map's step message was sent
    assert disposition is Disposition.COMMITTED and b.stop is StopReason.FAN_OUT
    assert (b.steps, b.chained) == (2, 1)
    assert [e["node"] for e in svc.store.list_logs(run_id)] == ["a", "b"]
    assert [(m.run_id, m.step) for m in svc.queue.messages] == [(run_id, 2)]
    assert decode_state(svc.get_run(run_id).state)["i"] == 2


def test_without_a_budget_a_message_runs_one_step():
    svc = service()
    graph_id = svc.create_graph(GRAPH.definition).graph_id
    run_id = svc.start_run(graph_id, {"xs": []}).run_id
    svc.queue.pop()
    asyncio.run(svc.process_step(run_id, 0))
    assert svc.get_run(run_id).step == 1 and [m.step for m in svc.queue.messages] == [1]


def test_a_retry_delay_ends_the_chain_with_a_delayed_message():
    svc = service()
    definition = {
        "start": "a",
        "nodes": {
            "a": {"fn": "count", "next": "flaky"},
            "flaky": {"fn": "fail_once", "retry": {"max_attempts": 2, "interval_s": 3}},
        },
    }
    run_id = svc.start_run(svc.create_graph(definition).graph_id, {}).run_id
    svc.queue.pop()
    b = ChainBudget(max_steps=10, max_seconds=10.0, started_at=svc.clock(), pending=1)
    b.begin_message(svc.clock())
    asyncio.run(svc.process_step(run_id, 0, budget=b))
    assert b.stop is StopReason.DELAYED
    (message,) = svc.queue.messages
    assert (message.step, message.delay_s) == (2, 3)


def test_the_in_process_runner_sleeps_out_a_delay_and_goes_on():
    definition = {"start": "flaky", "nodes": {"flaky": {"fn": "fail_once", "retry": {"interval_s": 3}}}}
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    result = run_graph_sync(compile_graph(definition, registry), {}, sleep=sleep)
    assert result.status == "completed" and slept == [3]


def test_run_step_builds_the_tool_context_with_every_field_in_place():
    # GIVEN run_step builds ToolContext positionally (a new field must be added there)
    fields = [f.name for f in dataclasses.fields(ToolContext)]
    assert fields == [
        "run_id", "node", "step", "attempt", "iteration", "deadline", "params", "item", "index",
        "clients", "notes", "callback_token", "callback_url",
    ]  # fmt: skip
    seen: list[ToolContext] = []
    registry = Registry()

    @registry.tool("ctx_seen")
    async def ctx_seen(state, ctx):
        seen.append(ctx)

    graph = compile_graph(
        {"start": "a", "nodes": {"a": {"fn": "ctx_seen", "params": {"p": 1}, "timeout_s": 9}}}, registry
    )
    clients = {"s3": object()}.get
    ticket = CallbackTicket("tok", "https://cb/tok", 1_000.0)

    # WHEN a step runs its tool with clients and a callback ticket
    asyncio.run(
        run_step(
            graph, Cursor("a", 3, 2, 1), {}, run_id="r", now=lambda: 100.0, clients=clients, callback=ticket
        )
    )

    # THEN the tool's context holds each in its own field
    (ctx,) = seen
    assert (ctx.run_id, ctx.node, ctx.step, ctx.attempt, ctx.iteration) == ("r", "a", 3, 2, 1)
    assert (ctx.deadline, dict(ctx.params), ctx.item, ctx.index) == (109.0, {"p": 1}, None, None)
    assert (ctx.clients, ctx.notes, ctx.callback_token, ctx.callback_url) == (
        clients, {}, "tok", "https://cb/tok",
    )  # fmt: skip
