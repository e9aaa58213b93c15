"""The step loop end to end on moto: service → SQS → step handler → DynamoDB, and the
DLQ and sweeper handlers around it."""

from __future__ import annotations

import json

import pytest

from engine import compile_graph, run_graph_sync
from engine.registry import Registry
from engine.service import RunService
from engine.state import decode_state
from functions.runtime import set_app
from functions.step import app as step_app
from functions.sweeper import app as sweeper_app
from tests.functional import fixtures
from tests.functional.pump import LambdaContext, load_event
from tests.functional.tools import FLAKY, VANISHING, summarization

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def start(service, graph, state):
    return service.start_run(service.create_graph(graph).graph_id, state).run_id


def sweep() -> dict:
    context = LambdaContext(function_name="flowforge-SweeperFunction")
    return sweeper_app.handler(load_event("sweeper_schedule"), context)


def emf_metrics(output: str) -> list[str]:
    """Names of the metrics in the EMF documents printed to stdout."""
    names = []
    for line in output.splitlines():
        if line.startswith('{"_aws"'):
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                names += [metric["Name"] for metric in directive["Metrics"]]
    return names


def test_summarization_completes_through_the_step_handler(service, pump):
    # GIVEN the seed's summarization graph and example state
    graph, state = summarization()
    run_id = start(service, graph, state)

    # WHEN the step queue is drained through the step handler
    pump.drain()

    # THEN the run completed with the in-process runner's result, one log entry per step
    run = service.get_run(run_id)
    final = decode_state(run.state)
    expected = run_graph_sync(compile_graph(graph), state, sleep=None)
    assert run.status == "completed" and run.error is None and run.finished_at
    assert final == expected.state
    assert len(final["summary"]) <= state["target_length"]
    logs = service.store.list_logs(run_id)
    assert [entry["seq"] for entry in logs] == list(range(run.step))
    assert [(e["node"], e["status"]) for e in logs] == [(e["node"], e["status"]) for e in expected.logs]
    assert all(entry["run_id"] == run_id for entry in logs)
    # a map's items each their own message, its join made by the last item's worker; the
    # other steps chained: split's message (its chain stops at the map), the map node's own
    # (it opens the map) and merge's (sent by the join, chained through every refine)
    items = [m for m in pump.delivered if "item" in m]
    assert len(items) == len(final["chunks"])
    assert [m["step"] for m in pump.delivered if "item" not in m] == [0, 1, len(final["chunks"]) + 2]
    assert service.store.stalled_runs(due_before=pump.clock() + 10**6) == []


def test_step_handler_publishes_step_and_outcome_metrics(service, pump, capsys):
    # GIVEN a one-node graph
    run_id = start(service, VANISHING, {})
    capsys.readouterr()

    # WHEN its only step runs
    pump.drain()

    # THEN the handler published EMF metrics for the step, the node and the run outcome
    assert service.get_run(run_id).status == "completed"
    assert {"StepsCommitted", "NodeDuration", "RunsCompleted"} <= set(emf_metrics(capsys.readouterr().out))


def test_retry_is_delayed_through_delay_seconds(service, pump, clock):
    # GIVEN a node that fails twice, retried after 2 s then 4 s
    run_id = start(service, FLAKY, {"fail_times": 2})
    started = clock()

    # WHEN the first attempt fails
    pump.step_once()

    # THEN the retry message is invisible until its delay has passed
    assert pump.receive() == []
    clock.advance(1)
    assert pump.receive() == []
    clock.advance(1)
    retry = pump.receive()
    assert [json.loads(m["Body"]) for m in retry] == [{"run_id": run_id, "step": 1}]
    pump.deliver(retry)
    pump.drain()

    # AND the run completes on the third attempt, after at least 2 + 4 s
    run = service.get_run(run_id)
    logs = service.store.list_logs(run_id)
    assert run.status == "completed"
    assert decode_state(run.state)["flaky_attempts"] == 3
    assert [(e["status"], e["attempt"]) for e in logs] == [("retry", 1), ("retry", 2), ("ok", 3), ("ok", 1)]
    assert clock() - started >= 6


def test_cancel_mid_run_stops_the_step_loop(service, pump):
    # GIVEN a run that has made its first step
    graph, state = summarization()
    run_id = start(service, graph, state)
    pump.step_once()

    # WHEN it is cancelled and the queue drained
    service.cancel(run_id)
    pump.drain()

    # THEN the next step was acknowledged without running
    run = service.get_run(run_id)
    assert run.status == "cancelled" and run.error["type"] == "Cancelled"
    assert run.step == 1
    assert [e["seq"] for e in service.store.list_logs(run_id)] == [0]
    assert pump.counts() == {"Messages": 0, "MessagesNotVisible": 0, "MessagesDelayed": 0}


def test_dlq_handler_fails_a_run_whose_message_died(service, pump, dlq_pump, aws, stack, clock):
    # GIVEN a run whose step-0 message ended in the dead-letter queue (after its
    # deliveries, each a visibility timeout apart)
    graph, state = summarization()
    run_id = start(service, graph, state)
    [message] = pump.receive()
    pump.sqs.delete_message(QueueUrl=stack["queue_url"], ReceiptHandle=message["ReceiptHandle"])
    clock.advance(5 * pump.visibility_timeout)
    pump.sqs.send_message(QueueUrl=stack["dlq_url"], MessageBody=message["Body"])

    # WHEN the DLQ handler gets it
    dlq_pump.drain()

    # THEN the run failed with a clear error, and nothing is left to sweep
    run = service.get_run(run_id)
    assert run.status == "failed"
    assert run.error["type"] == "StepDeliveryFailed"
    assert run.error["node"] == "split"
    assert "dead-letter queue" in run.error["message"]
    assert service.store.stalled_runs(due_before=pump.clock() + 10**6) == []
    assert dlq_pump.counts()["Messages"] == 0


def test_dlq_handler_ignores_a_message_of_a_run_that_moved_on(service, pump, dlq_pump, stack):
    # GIVEN a run past step 0, and a dead letter for its step 0
    graph, state = summarization()
    run_id = start(service, graph, state)
    pump.step_once()
    pump.sqs.send_message(QueueUrl=stack["dlq_url"], MessageBody=json.dumps({"run_id": run_id, "step": 0}))

    # WHEN the DLQ handler gets it
    dlq_pump.drain()

    # THEN the run carries on to completion
    assert service.get_run(run_id).status == "running"
    pump.drain()
    assert service.get_run(run_id).status == "completed"


def test_sweeper_reenqueues_a_stalled_run_and_nothing_else(service, pump, clock):
    # GIVEN a run whose first message was lost, a finished run, and a fresh run
    graph, state = summarization()
    stalled = start(service, graph, state)
    pump.receive()  # taken by a worker that died; in flight for the visibility timeout
    finished = start(service, VANISHING, {})
    pump.step_once()
    assert service.get_run(finished).status == "completed"
    clock.advance(service.stall_after_s + 1)
    fresh = start(service, VANISHING, {})

    # WHEN the sweeper runs
    result = sweep()

    # THEN only the stalled run was re-enqueued, at its current step
    assert result == {"resent": 1}
    delivered = pump.step_once(max_messages=10)
    assert sorted(map(json.dumps, delivered)) == sorted(
        json.dumps(m) for m in ({"run_id": stalled, "step": 0}, {"run_id": fresh, "step": 0})
    )
    pump.drain()
    assert {service.get_run(r).status for r in (stalled, finished, fresh)} == {"completed"}


def test_run_fails_cleanly_when_its_tool_is_gone(service, pump, clock):
    # GIVEN a run of a graph whose tool a new deployment no longer registers
    run_id = start(service, VANISHING, {})
    set_app(fixtures.service_app(RunService(service.store, service.queue, Registry(), clock=clock)))

    # WHEN its step is delivered
    pump.drain()

    # THEN the run failed naming the node and the tool, without a log entry or a retry
    run = service.get_run(run_id)
    assert run.status == "failed"
    assert run.error["node"] == "only"
    assert run.error["type"] == "GraphValidationError"
    assert "test_vanishing" in run.error["message"]
    assert service.store.list_logs(run_id) == []
    assert pump.invocations == 1


@pytest.mark.parametrize(
    "body",
    ["not json", '{"run_id": "r1", "step": -1}', '{"run_id": "r1", "step": "1"}',
     '{"run_id": "r1", "step": 0, "extra": true}', '{"run_id": "../etc", "step": 0}'],
)  # fmt: skip
def test_malformed_message_is_acknowledged_without_poisoning_its_batch(service, pump, body):
    # GIVEN a malformed message queued next to a valid one
    run_id = start(service, VANISHING, {})
    pump.sqs.send_message(QueueUrl=pump.queue_url, MessageBody=body)

    # WHEN both arrive in one batch
    failed = pump.deliver(pump.receive())

    # THEN both are acknowledged (the malformed one can never succeed) and the run ran
    assert failed == set()
    assert pump.counts() == {"Messages": 0, "MessagesNotVisible": 0, "MessagesDelayed": 0}
    assert service.get_run(run_id).status == "completed"


def test_store_outage_fails_only_its_record(service, pump, faults):
    # GIVEN two runs, and a store that throttles the first run's commit
    store, _ = faults
    first = start(service, VANISHING, {})
    second = start(service, VANISHING, {"other": True})
    store.unavailable.add((first, 0))

    # WHEN both step messages arrive in one batch
    messages = pump.receive()
    failed = pump.deliver(messages)

    # THEN only the first is reported as a batch item failure, to be redelivered
    by_run = {json.loads(m["Body"])["run_id"]: m["MessageId"] for m in messages}
    assert failed == {by_run[first]}
    assert service.get_run(second).status == "completed"
    assert service.get_run(first).status == "running"


def test_a_batch_whose_every_record_failed_is_reported_not_raised(service, pump, faults):
    # GIVEN a run whose commit is throttled
    store, _ = faults
    run_id = start(service, VANISHING, {})
    store.unavailable.add((run_id, 0))
    [message] = pump.receive()

    # WHEN its message is the whole batch
    response = step_app.handler(pump.event([message]), LambdaContext())

    # THEN the handler returns it as a batch item failure instead of raising
    assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}


def test_a_value_changed_in_place_is_not_an_update_in_the_runner_either(service, pump):
    # GIVEN a tool that appends to a list of the state in place, returning only a count
    graph = {
        "start": "a",
        "nodes": {"a": {"fn": "test_append_in_place", "next": "b"}, "b": {"fn": "test_append_in_place"}},
    }
    state = {"items": []}

    # WHEN it runs through the step handler and in the in-process runner
    run_id = start(service, graph, state)
    pump.drain()
    in_process = run_graph_sync(compile_graph(graph), state, sleep=None)

    # THEN both kept only what the tool returned: each step saw the list as stored
    assert decode_state(service.get_run(run_id).state) == {"items": [], "seen": 1}
    assert in_process.state == {"items": [], "seen": 1}
    assert [e["result"] for e in in_process.logs] == [{"seen": 1}, {"seen": 1}]
    assert state == {"items": []}  # the caller's state is not touched either
