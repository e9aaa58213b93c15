"""Differential testing: the distributed step loop under faults ends exactly where the
in-process runner ends.

Hypothesis draws a graph (tests/reliability/graphs.py) and up to three initial states.
Each state runs through :func:`engine.run_graph` — the reference, no faults, no delays —
and through the deployed path: the API's service on moto (template.yaml's table and
queue), the real step handler, and a queue pump that injects faults
(tests/reliability/chaos.py). Final status, error, state and the log sequence (every
field but timing) must be identical, every step must have been committed exactly once,
and nothing may be left running, queued or dead-lettered.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine import RunResult, compile_graph, run_graph_sync
from engine.chain import DEFAULT_CHAIN_MAX_STEPS
from engine.errors import ConflictError, StoreUnavailableError
from engine.runner import Answer, CallbackRequest
from engine.state import decode_state
from engine.step import LIVE
from flowforge.local import moto_internals
from flowforge.local.timers import ScheduleFirer
from functions.runtime import current_app
from functions.step import app as step_app
from functions.sweeper import app as sweeper_app
from tests.functional.pump import LambdaContext, load_event
from tests.reliability import figures
from tests.reliability.canonical import canonical_logs, log_length
from tests.reliability.chaos import BotoFaults, ChaosPump, FaultPlan
from tests.reliability.graphs import CALLBACK_TIMEOUT_S, fanout_states, graphs, states

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

RATES = [0.0, 0.05, 0.15, 0.3]
#: The step function's ChainMaxSteps: one step per message, chains cut short often, and
#: template.yaml's default (whole runs chained in one invocation).
CHAIN_MAX_STEPS = [1, 3, DEFAULT_CHAIN_MAX_STEPS]
#: Sweeper rounds a run may need: each rescue can be stranded again by further faults
#: (and each wait a run makes takes a few rounds more: its answer, its time).
SWEEPS = 20
ROUNDS = 400

#: Every differential test's hypothesis settings: more examples in the long suite.
DIFFERENTIAL_SETTINGS = settings(
    max_examples=figures.scaled(30, 300),
    deadline=None,
    derandomize=not figures.LONG,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def answer_for(node: str, step: int) -> Answer:
    """How the callback of ``node`` reached at ``step`` is answered: the same in the
    reference and in the distributed run (whose steps it then also agrees on)."""
    choice = zlib.crc32(f"{node}:{step}".encode()) % 4
    return (
        Answer("approved", step),
        Answer("approved", {"by": node, "n": [step]}),
        Answer("rejected", reason=f"not at step {step}"),
        Answer("timed_out"),
    )[choice]


async def answer_in_process(request: CallbackRequest) -> Answer:
    return answer_for(request.node, request.step)


def reference(graph: dict[str, Any], state: dict[str, Any]) -> RunResult:
    return run_graph_sync(compile_graph(graph), state, sleep=None, answer=answer_in_process)


def expected_outcome(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "error": result.error,
        "state": result.state,
        "logs": canonical_logs(result.logs),
    }


def stored_outcome(service, run_id: str) -> dict[str, Any]:
    run = service.store.get_run(run_id)
    return {
        "status": run.status,
        "error": run.error,
        "state": decode_state(run.state),
        "logs": canonical_logs(service.store.list_logs(run_id)),
    }


class World:
    """The stack, its service and a chaos pump, reused across the examples of one test."""

    def __init__(self, service, stack, aws, clock) -> None:
        self.service, self.clock = service, clock
        self.table, self.dynamodb = stack["table"], aws.client("dynamodb")
        self.sqs, self.queue_url, self.dlq_url = aws.client("sqs"), stack["queue_url"], stack["dlq_url"]
        self.plan = FaultPlan(0, 0.0)
        self.faults = BotoFaults(self.plan)
        self.faults.install(service.store.client, "dynamodb")
        self.faults.install(service.queue.client, "sqs")
        self.faults.install(service.timers.client, "scheduler")
        # Scheduler's delivery of the long timers' schedules, at the virtual clock's time.
        self.scheduler, self.group = aws.client("scheduler"), stack["schedule_group"]
        self.timers = ScheduleFirer(self.scheduler, self.sqs, self.group)
        self.pump = self.new_pump()
        self.totals: Counter[str] = Counter()
        self.faults_by_kind: Counter[str] = Counter()

    def new_pump(self) -> ChaosPump:
        return ChaosPump(self.sqs, self.queue_url, self.clock, step_app.handler, plan=self.plan)

    def use(self, plan: FaultPlan, chain_max_steps: int) -> None:
        """Start an example: its fault plan and chain budget, a fresh pump, an empty table."""
        app = current_app()
        app.settings = dataclasses.replace(app.settings, chain_max_steps=chain_max_steps)
        self.plan = self.faults.plan = plan
        self.pump = self.new_pump()
        self.faults.commits.clear()
        self.empty_table()

    def empty_table(self) -> None:
        """Delete the last example's items (and schedules): each example starts from an
        empty table."""
        for page in self.scheduler.get_paginator("list_schedules").paginate(GroupName=self.group):
            for schedule in page["Schedules"]:
                self.scheduler.delete_schedule(Name=schedule["Name"], GroupName=self.group)
        pages = self.dynamodb.get_paginator("scan").paginate(
            TableName=self.table, ProjectionExpression="pk, sk"
        )
        keys = [item for page in pages for item in page["Items"]]
        for i in range(0, len(keys), 25):
            deletes = [{"DeleteRequest": {"Key": key}} for key in keys[i : i + 25]]
            self.dynamodb.batch_write_item(RequestItems={self.table: deletes})

    def dead_letters(self) -> int:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=names)
        return sum(int(v) for v in attributes["Attributes"].values())

    def start(self, graph_id: str, state: dict[str, Any]) -> str:
        """Start a run; a lost first send (the API's 503) leaves it to the sweeper."""
        lost = self.plan.rate > 0 and self.plan.rng.random() < self.plan.rate / 2
        if lost:
            self.plan.injected["start_send_lost"] += 1
            self.faults.fail_next_send = True
        try:
            return self.service.start_run(graph_id, state).run_id
        except StoreUnavailableError:
            (run_id,) = self.faults.last_unsent
            return run_id

    def settle(self, run_ids: list[str]) -> int:
        """Deliver the queue a few batches at a time, answering waiting runs' callbacks in
        between (at random times: other messages are still on their way); when nothing is
        queued and a run is left running or waiting, move the clock — to the next wait's
        due time, else by a stall window — fire the timers' schedules that are due (as
        EventBridge Scheduler would) and let the sweeper find the rest (as its schedule
        would). Returns invocations made.

        A run is stranded when the worker that committed a step died before sending the
        next one while a duplicate of the message was acknowledged as already done (by a
        concurrent worker that lost the commit, or a second delivery that found it stale).
        """
        invocations = 0
        context = LambdaContext(function_name="flowforge-SweeperFunction")
        sweeps = 0
        for _ in range(ROUNDS):
            for _ in range(self.plan.randint(1, 4)):
                messages = self.pump.receive()
                if messages:
                    self.pump.deliver(messages)
                    invocations += 1
                elif not self.skip_to_next_message():
                    break
            self.answer_some(run_ids)
            if any(self.pump.counts().values()):
                continue
            live = [run for run in map(self.service.store.get_run, run_ids) if run.status in LIVE]
            if not live:
                return invocations
            sweeps += 1
            assert sweeps <= SWEEPS + 4 * len(run_ids) * 10, (
                f"runs stranded: {[(r.run_id, r.status, r.step) for r in live]} "
                f"waits={[self.service.store.get_wait(r.run_id, r.step - 1) for r in live]} "
                f"fan-outs={[self.fanout_of(r) for r in live]}"
            )
            self.clock.advance(self.time_to_move(live))
            self.totals["timers_fired"] += len(self.timers.fire_due(self.clock()))
            self.totals["sweeper_resent"] += sweeper_app.handler(load_event("sweeper_schedule"), context)[
                "resent"
            ]
        live = [
            (r.run_id, r.status, r.step) for r in map(self.service.store.get_run, run_ids) if r.status in LIVE
        ]
        waits = [
            self.service.store.get_wait(r, s) if hasattr(self.service.store, "get_wait") else None
            for r, _, s in live
        ]
        raise AssertionError(
            f"runs still live after {ROUNDS} rounds: {live} waits={waits} queue={self.pump.counts()}"
        )

    def fanout_of(self, run: Any) -> Any:
        """The open fan-out ``run`` is at and its executions (None if it is at none)."""
        if run.cursor is None:
            return None
        fanout = self.service.store.get_fanout(run.run_id, run.cursor.step)
        if fanout is None:
            return None
        executions = self.service.store.list_executions(run.run_id, fanout.base, fanout.executed)
        return fanout, [(e.step, e.index, e.attempt, e.status) for e in executions]

    def skip_to_next_message(self) -> bool:
        """Move the clock on towards the next message that becomes receivable; False if
        none is queued. A delayed message (a timer's: up to SQS's 15 minutes) is waited for
        in strides of 30 s at most, a message in flight until its visibility timeout ends,
        whichever comes first, so that runs with several timers and dead workers still
        settle within ROUNDS."""
        counts = self.pump.counts()
        if counts["Messages"]:
            return True
        now = self.clock()
        strides = [30.0] if counts["MessagesDelayed"] else []
        if counts["MessagesNotVisible"]:  # back when their visibility timeout ends
            visible_again = [at - now for at in self.pump._in_flight.values() if at > now]
            strides.append(min(visible_again, default=1.0))
        if not strides:
            return False
        self.clock.advance(max(0.001, min(strides)))
        return True

    def answer_some(self, run_ids: list[str]) -> None:
        """Answer, or not yet, each callback a run waits for, as :func:`answer_for` says
        (a timeout is left to the clock)."""
        waits = self.service.waits
        for run in map(self.service.store.get_run, run_ids):
            if run.status != "waiting" or self.plan.rng.random() < 0.5:
                continue
            wait = self.service.store.get_wait(run.run_id, run.step - 1)
            if wait is None or wait.kind != "callback" or wait.resolved:
                continue
            answer = answer_for(wait.node, wait.step)
            if answer.status == "timed_out":
                continue
            token = waits.signer.token(run.run_id, wait.step)
            try:
                waits.answer(token, answer.status, output=answer.output, reason=answer.reason)
            except ConflictError:
                pass  # settled already (an earlier answer whose commit was cut short)
            except StoreUnavailableError:
                pass  # throttled: the client tries again later (its answer may be stored)
            self.totals["callbacks_answered"] += 1

    def time_to_move(self, live: list[Any]) -> float:
        """Seconds to the next wait that ends by time (a timer, a timeout), or a stall window."""
        step = self.service.stall_after_s + 60
        dues = []
        for run in live:
            wait = self.service.store.get_wait(run.run_id, run.step - 1) if run.status == "waiting" else None
            if run.status == "waiting" and wait is None:
                dues.append(run.next_at)  # a timer: due at the run's next_at (no wait item)
            elif wait is not None and not wait.resolved:
                if wait.kind == "timer" or answer_for(wait.node, wait.step).status == "timed_out":
                    dues.append(wait.due)
                else:
                    return 0.0  # an answer is still to come: no time needs to pass
        # To the earliest due time however far (a callback meant to time out waits a
        # year): a run stalled meanwhile is swept then as well.
        return max(min(dues, default=self.clock() + step) - self.clock(), 1.0)


@pytest.fixture
def world(service, stack, aws, clock, monkeypatch) -> World:
    # Nothing here reads the table's stream: moto need not keep its records.
    moto_internals.keep_no_stream_records(monkeypatch.setattr)
    world = World(service, stack, aws, clock)
    yield world
    figures.record(
        "differential",
        {
            **world.totals,
            "faults_injected": world.faults_by_kind.total(),
            "faults_by_kind": world.faults_by_kind,
        },
    )


@settings(
    max_examples=figures.scaled(40, 400),
    deadline=None,
    derandomize=not figures.LONG,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    graph=graphs(max_steps=figures.scaled(16, 40)),
    initial=st.lists(states, min_size=1, max_size=figures.scaled(2, 3)),
    seed=st.integers(0, 2**32 - 1),
    rate=st.sampled_from(RATES),
    chain=st.sampled_from(CHAIN_MAX_STEPS),
)
def test_the_distributed_loop_under_faults_matches_the_in_process_runner(
    world, graph, initial, seed, rate, chain
):
    world.totals.update(cases=1)
    assert_matches_runner_under_faults(world, graph, initial, seed, rate, chain)


def assert_matches_runner_under_faults(world, graph, initial, seed, rate, chain) -> None:
    # GIVEN the outcome of each run in the in-process runner, without faults
    expected = [expected_outcome(reference(graph, state)) for state in initial]
    plan = FaultPlan(seed, rate)
    world.use(plan, chain)

    # WHEN the same runs go through the API's service, the step handler (chaining up to
    # ``chain`` steps per invocation) and the queue, with faults (duplicated, racing,
    # reordered deliveries, crashes at each read, write and send, mid-chain included)
    graph_id = world.service.create_graph(graph).graph_id
    run_ids = [world.start(graph_id, state) for state in initial]
    invocations = world.settle(run_ids)

    # THEN each ended exactly as in the runner: status, error, state, every log entry
    for run_id, outcome in zip(run_ids, expected, strict=True):
        assert stored_outcome(world.service, run_id) == outcome, f"faults: {dict(plan.injected)}"
    # AND every transition (a step, an execution, a join) was committed exactly once;
    # nothing is queued or dead-lettered
    steps = sum(log_length(outcome["logs"]) for outcome in expected)
    assert sorted(world.faults.commits.values()) == [1] * steps, f"faults: {dict(plan.injected)}"
    assert world.pump.counts() == {"Messages": 0, "MessagesNotVisible": 0, "MessagesDelayed": 0}
    assert world.dead_letters() == 0
    waits = sum(1 for outcome in expected for e in outcome["logs"] if e.get("status") == "waiting")
    world.totals.update(
        runs=len(run_ids), steps=steps, invocations=invocations, chained_cases=chain > 1, waits=waits
    )
    world.faults_by_kind.update(plan.injected)


@DIFFERENTIAL_SETTINGS
@given(
    graph=graphs(max_steps=figures.scaled(24, 60), with_fanouts=True),
    initial=st.lists(fanout_states, min_size=1, max_size=2),
    seed=st.integers(0, 2**32 - 1),
    rate=st.sampled_from(RATES),
    chain=st.sampled_from(CHAIN_MAX_STEPS),
)
def test_map_and_parallel_nodes_under_faults_match_the_in_process_runner(
    world, graph, initial, seed, rate, chain
):
    # (graphs with map and parallel nodes, items and branches that fail and retry; faults
    # include crashes between an execution's claim and its entry)
    world.totals.update(cases=1, fanout_cases=1)
    assert_matches_runner_under_faults(world, graph, initial, seed, rate, chain)


@DIFFERENTIAL_SETTINGS
@given(
    graph=graphs(max_steps=figures.scaled(16, 40), with_waits=True),
    initial=st.lists(states, min_size=1, max_size=2),
    seed=st.integers(0, 2**32 - 1),
    rate=st.sampled_from(RATES),
    chain=st.sampled_from(CHAIN_MAX_STEPS),
)
@example(  # a callback answered by its timeout: the clock must reach its deadline, a year on
    graph={
        "name": "differential",
        "start": "n2",  # answer_for("n2", 0) is a timeout
        "nodes": {
            "n2": {
                "fn": "rel_noop",
                "callback": {"timeout_s": CALLBACK_TIMEOUT_S, "result": "a"},
                "catch": [{"on": ["CallbackTimeout"], "next": "n3", "result_key": "caught"}],
            },
            "n3": {"fn": "rel_add", "params": {"key": "c", "by": 1}},
        },
    },
    initial=[{"c": 1}],
    seed=0,
    rate=0.0,
    chain=1,
)
def test_runs_that_wait_under_faults_match_the_in_process_runner(world, graph, initial, seed, rate, chain):
    # (graphs with callback and wait nodes: callbacks approved, rejected or timed out, each
    # answered at a random time between deliveries; timers short and long)
    world.totals.update(cases=1, waiting_cases=1)
    assert_matches_runner_under_faults(world, graph, initial, seed, rate, chain)
