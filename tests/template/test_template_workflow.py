"""A workflow runs on exactly what CloudFormation creates from template.yaml: the table,
the queues and the functions' environment variables of the translated stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sam_template import translate
from test_template_resources import deploy_with_cloudformation

import workflows  # noqa: F401  (registers the summarization tools)
from functions.runtime import current_app, set_app
from functions.step import app as step_app
from tests.functional import fixtures
from tests.functional.pump import QueuePump

aws, clock = fixtures.aws, fixtures.clock
ROOT = Path(__file__).resolve().parents[2]


def resolve(value, physical: dict[str, str], parameters: dict[str, dict]) -> str:
    """A function environment value of the translated template, as CloudFormation sets it."""
    if isinstance(value, str):
        return value
    (ref,) = value.values()
    if "Ref" in value:
        return physical.get(ref) or str(parameters[ref]["Default"])
    raise AssertionError(f"unexpected intrinsic in the step function's environment: {value}")


@pytest.fixture
def stack_env(aws, monkeypatch) -> dict[str, str]:
    cfn = translate()
    physical = deploy_with_cloudformation(aws)
    variables = cfn["Resources"]["StepFunction"]["Properties"]["Environment"]["Variables"]
    env = {
        name: resolve(value, physical, cfn["Parameters"])
        for name, value in variables.items()
        if not (isinstance(value, dict) and ("Fn::If" in value or "Fn::Sub" in value))
        # moto's CloudFormation creates no Secrets Manager secret (this workflow makes no
        # callback) nor Scheduler group (nor waits beyond 15 minutes): the timers' settings go
        and value != {"Ref": "CallbackKey"}
        and value != {"Ref": "TimerScheduleGroup"}
        and not (isinstance(value, dict) and "Fn::GetAtt" in value)
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    set_app(fixtures.moto_app())
    yield env
    set_app(None)


def test_the_summarization_workflow_runs_on_the_stack_cloudformation_created(aws, clock, stack_env):
    # GIVEN the functions' environment pointing at the stack CloudFormation created
    service = current_app().service
    service.clock = clock
    definition = json.loads((ROOT / "workflows/graphs/summarization.json").read_text())
    state = json.loads((ROOT / "workflows/graphs/summarization.state.json").read_text())

    # WHEN a run starts and its step queue is pumped through the real step handler
    graph = service.create_graph(definition)
    run = service.start_run(graph.graph_id, state)
    pump = QueuePump(aws.client("sqs"), stack_env["FLOWFORGE_STEP_QUEUE_URL"], clock, step_app.handler)
    pump.drain()

    # THEN it completes in the stack's own table, one log entry per step
    done = service.get_run(run.run_id)
    logs = service.store.list_logs(run.run_id)
    assert done.status == "completed"
    assert [entry["seq"] for entry in logs] == list(range(done.step))
    summary = json.loads(done.state["summary"])
    assert 0 < len(summary) <= state["target_length"]
    assert stack_env["FLOWFORGE_TABLE"] == aws.client("dynamodb").list_tables()["TableNames"][0]
