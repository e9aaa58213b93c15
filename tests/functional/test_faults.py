"""The step invariant under faults (DESIGN.md §4), on moto through the real handlers.

Every test ends where a clean run ends: the same final state, exactly one log entry per
step (seq 0..n-1), each step committed exactly once, and no run left running.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine import RunResult, compile_graph, run_graph_sync
from engine.state import decode_state
from functions.aws.dynamodb import DynamoRunStore
from functions.sweeper import app as sweeper_app
from tests.functional.crashes import FaultyStore
from tests.functional.pump import LambdaContext, load_event
from tests.functional.tools import GATE, gated_summarization, sequential_summarization

pytestmark = [
    pytest.mark.filterwarnings("ignore:No application metrics to publish"),
    # Steps are named by their message here: one step per message (ChainMaxSteps=1).
    pytest.mark.usefixtures("one_step_per_message"),
]


def clean_run(graph: dict[str, Any], state: dict[str, Any]) -> RunResult:
    """The reference: the same graph run by the in-process runner, without faults."""
    return run_graph_sync(compile_graph(graph), state, sleep=None)


def start(service, graph, state) -> str:
    return service.start_run(service.create_graph(graph).graph_id, state).run_id


def violations(service, run_id: str, expected: RunResult) -> list[str]:
    """How the run's outcome differs from the clean run's (empty: it does not)."""
    problems = []
    run = service.store.get_run(run_id)
    logs = service.store.list_logs(run_id)
    if run.status != expected.status:
        problems.append(f"status {run.status!r}, expected {expected.status!r}")
    if decode_state(run.state) != expected.state:
        problems.append("final state differs from the clean run's")
    if [e["seq"] for e in logs] != list(range(len(expected.logs))):
        problems.append(f"log seqs {[e['seq'] for e in logs]}")
    if [(e["node"], e["status"]) for e in logs] != [(e["node"], e["status"]) for e in expected.logs]:
        problems.append("log entries differ from the clean run's")
    if run.step != len(expected.logs):
        problems.append(f"step {run.step}, expected {len(expected.logs)}")
    if isinstance(service.store, FaultyStore):
        repeated = {step: n for (rid, step), n in service.store.commits.items() if rid == run_id and n != 1}
        if repeated:
            problems.append(f"steps committed more than once (log entries written again): {repeated}")
    if service.store.stalled_runs(due_before=service.clock() + 10**7):
        problems.append("a run is still running")
    return problems


def test_every_message_delivered_twice(service, pump, faults):
    # GIVEN a summarization run, and a queue that delivers every batch twice
    graph, state = sequential_summarization()
    run_id = start(service, graph, state)
    pump.duplicate = True

    # WHEN the queue is drained
    pump.drain()

    # THEN the duplicates changed nothing, and never multiplied
    assert violations(service, run_id, clean_run(graph, state)) == []
    _, queue = faults
    assert set(queue.sent.values()) == {1}


def race_on_the_first_step(service, pump) -> str:
    """Two workers get the same step-0 message and both run its tool before either commits."""
    graph, state = gated_summarization()
    run_id = start(service, graph, state)
    GATE.passed = 0
    GATE.arm(2)
    pump.workers = 2
    try:
        pump.step_once()
    finally:
        GATE.disarm()
    assert GATE.passed == 2  # the tool ran in both workers: at least once, not exactly once
    return run_id


def test_two_workers_racing_on_the_same_message(service, pump, faults):
    # GIVEN two workers racing on step 0 and then on every later message
    run_id = race_on_the_first_step(service, pump)

    # WHEN the queue is drained by both
    pump.drain()

    # THEN one commit won each step; the loser's work was dropped
    assert violations(service, run_id, clean_run(*gated_summarization())) == []
    _, queue = faults
    assert queue.sent[(run_id, 1)] == 1


def test_without_the_conditional_commit_the_race_duplicates_a_transition(service, pump, stack, aws):
    # GIVEN a store whose commit drops its conditions (what the conditional commit prevents)
    service.store = FaultyStore(UnconditionalRunStore(stack["table"], lambda: aws.client("dynamodb")))
    run_id = race_on_the_first_step(service, pump)

    # WHEN the queue is drained
    pump.workers = 1
    pump.drain()

    # THEN the race is caught: both workers committed step 0, writing its log entry twice
    found = violations(service, run_id, clean_run(*gated_summarization()))
    assert found == ["steps committed more than once (log entries written again): {0: 2}"]


class UnconditionalRunStore(DynamoRunStore):
    """DynamoRunStore whose commit puts its slot without the condition that it is empty."""

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        if operation == "put_item" and params["Item"]["kind"]["S"] in ("log", "finish"):
            params.pop("ConditionExpression", None)
        return super()._call(operation, **params)


@pytest.mark.parametrize("step", [0, 2, 4])
def test_crash_after_the_tool_ran_before_the_commit(service, pump, faults, step):
    # GIVEN a worker that dies after running step k's tool, before committing it
    store, _ = faults
    store.crash_before_commit.add(step)
    graph, state = sequential_summarization()
    run_id = start(service, graph, state)

    # WHEN the queue is drained (the message comes back after its visibility timeout)
    pump.drain()

    # THEN step k ran again and was committed once
    assert violations(service, run_id, clean_run(graph, state)) == []
    assert pump.delivered.count({"run_id": run_id, "step": step}) == 2


def test_crash_after_the_commit_before_the_send_is_recovered_by_redelivery(service, pump, faults, clock):
    # GIVEN a worker that dies after committing step 1, before sending step 2
    store, _ = faults
    store.crash_after_commit.add(1)
    graph, state = sequential_summarization()
    run_id = start(service, graph, state)

    # WHEN the queue is drained: step 1's message returns after its visibility timeout,
    # by then the run has made no progress for longer than the stall threshold
    pump.drain()

    # THEN the redelivered (stale) message re-sent the continuation, and the run completed
    assert pump.visibility_timeout > service.stall_after_s
    assert violations(service, run_id, clean_run(graph, state)) == []
    assert pump.delivered.count({"run_id": run_id, "step": 1}) == 2


def test_crash_after_the_commit_before_the_send_is_recovered_by_the_sweeper(service, pump, faults, clock):
    # GIVEN a worker that died after committing step 1, before sending step 2
    store, _ = faults
    store.crash_after_commit.add(1)
    graph, state = sequential_summarization()
    run_id = start(service, graph, state)
    pump.step_once()
    pump.step_once()
    assert service.get_run(run_id).step == 2 and pump.counts()["Messages"] == 0

    # WHEN the stall threshold passes and the sweeper runs (before the redelivery)
    clock.advance(service.stall_after_s + 1)
    context = LambdaContext(function_name="flowforge-SweeperFunction")
    assert sweeper_app.handler(load_event("sweeper_schedule"), context) == {"resent": 1}
    assert pump.step_once() == [{"run_id": run_id, "step": 2}]
    pump.drain()

    # THEN the run completed as a clean run does
    assert violations(service, run_id, clean_run(graph, state)) == []


def test_crash_after_the_send_before_the_ack(service, pump, faults):
    # GIVEN a worker that sends step 3 but dies before acknowledging step 2's message
    lost = []
    pump.drop_ack = lambda body: body["step"] == 2 and not lost and not lost.append(body)
    graph, state = sequential_summarization()
    run_id = start(service, graph, state)

    # WHEN the queue is drained (step 2's message comes back, stale)
    pump.drain()

    # THEN the duplicate was dropped, and the continuation was not sent twice
    assert lost == [{"run_id": run_id, "step": 2}]
    assert pump.delivered.count({"run_id": run_id, "step": 2}) == 2
    assert violations(service, run_id, clean_run(graph, state)) == []
    _, queue = faults
    assert queue.sent[(run_id, 3)] == 1


def test_a_poison_message_reaches_the_dlq_and_its_run_fails(service, pump, dlq_pump, faults):
    # GIVEN a store that keeps failing the commit of step 2 of a run
    store, _ = faults
    graph, state = sequential_summarization()
    run_id = start(service, graph, state)
    store.unavailable.add((run_id, 2))
    redrive = json.loads(
        pump.sqs.get_queue_attributes(QueueUrl=pump.queue_url, AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )

    # WHEN the step queue is drained: SQS gives up after maxReceiveCount deliveries
    pump.drain()
    assert pump.delivered.count({"run_id": run_id, "step": 2}) == int(redrive["maxReceiveCount"])
    assert dlq_pump.counts()["Messages"] == 1

    # AND the DLQ handler gets the dead letter
    dlq_pump.drain()

    # THEN the run failed at step 2 with a clear error, keeping its first two log entries
    run = service.get_run(run_id)
    assert run.status == "failed" and run.step == 2
    assert run.error["type"] == "StepDeliveryFailed" and run.error["node"] == "merge"
    assert [e["seq"] for e in service.store.list_logs(run_id)] == [0, 1]
    assert service.store.stalled_runs(due_before=service.clock() + 10**7) == []


def test_a_dead_lettered_duplicate_does_not_fail_a_run_that_is_progressing(service, pump, dlq_pump, clock):
    # regression: a copy of step 2 given up on (five failed deliveries of a duplicate)
    # failed the run as StepDeliveryFailed while the original copy of step 2 was on its way
    # GIVEN a run that has just reached step 2
    graph, state = sequential_summarization()
    run_id = start(service, graph, state)
    pump.step_once()
    pump.step_once()
    assert service.get_run(run_id).step == 2

    # WHEN a dead copy of step 2 reaches the DLQ handler before the run has stalled
    dlq_pump.sqs.send_message(
        QueueUrl=dlq_pump.queue_url, MessageBody=json.dumps({"run_id": run_id, "step": 2})
    )
    dlq_pump.drain()

    # THEN the run is left to its original message, and finishes
    assert service.get_run(run_id).status == "running"
    pump.drain()
    assert violations(service, run_id, clean_run(graph, state)) == []


def test_a_dead_letter_fails_a_run_stuck_at_its_step(service, pump, dlq_pump, clock):
    # GIVEN a run at step 2 whose message was lost: no progress for the stall window
    graph, state = sequential_summarization()
    run_id = start(service, graph, state)
    pump.step_once()
    pump.step_once()
    pump.receive()  # step 2's message is taken and never answered
    clock.advance(service.stall_after_s + 1)

    # WHEN a dead copy of step 2 reaches the DLQ handler
    dlq_pump.sqs.send_message(
        QueueUrl=dlq_pump.queue_url, MessageBody=json.dumps({"run_id": run_id, "step": 2})
    )
    dlq_pump.drain()

    # THEN the run fails at step 2
    run = service.get_run(run_id)
    assert run.status == "failed" and run.step == 2 and run.error["type"] == "StepDeliveryFailed"
