"""Cold start: the handlers import only what their path needs (bench/cold_start.py times it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from bench.cold_start import API_FIRST_REQUEST

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "FLOWFORGE_TABLE": "flowforge-test",
    "FLOWFORGE_STEP_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/flowforge-test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: Needed by no step message: graphs are validated (pydantic) when created, and the step
#: Lambda loads them as stored. Nor the in-process runner, tracing (X-Ray), HTTP routing,
#: or Powertools' batch utility and the ~40 event data classes it imports.
NOT_ON_THE_STEP_PATH = (
    "pydantic",
    "pydantic_core",
    "engine.model",
    "engine.validate",
    "engine.runner",
    "aws_xray_sdk",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.utilities.parser",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.data_classes",
)

#: The step Lambda's first message, with the deployed wiring (settings, tools modules, the
#: DynamoDB and SQS adapters) but in-memory storage, so nothing leaves the process.
FIRST_MESSAGE = textwrap.dedent(
    """
    import json, sys, types
    import functions.step.app as step
    from engine.memory import InMemoryRunStore, InMemoryStepQueue
    from engine.ports import GraphRecord, RunRecord
    from engine.state import encode_state
    from engine.step import Cursor
    from functions import runtime

    service = runtime.current_app().service
    service.store, service.queue = InMemoryRunStore(), InMemoryStepQueue()
    graph = json.load(open("workflows/graphs/summarization.json"))
    state = json.load(open("workflows/graphs/summarization.state.json"))
    stamp = "2025-01-01T00:00:00.000Z"
    service.store.put_graph(GraphRecord("g1", graph, stamp, graph.get("name")))
    service.store.create_run(
        RunRecord("r1", "g1", "running", Cursor(graph["start"]), 0, encode_state(state), stamp, stamp, 0.0)
    )
    event = json.load(open("tests/events/sqs_step_message.json"))
    event["Records"][0]["body"] = '{"run_id": "r1", "step": 0}'
    context = types.SimpleNamespace(
        function_name="StepFunction", memory_limit_in_mb=512, aws_request_id="req-1",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:StepFunction",
    )
    response = step.handler(event, context)
    run = service.store.get_run("r1")
    print(json.dumps({
        "response": response, "step": run.step, "status": run.status,
        "loaded": [m for m in CANDIDATES if m in sys.modules],
    }))
    """
)

#: Needed by no API request but the ones that ask for them: Powertools' OpenAPI document
#: models (the OpenAPI specification as pydantic models: ``GET /openapi.json`` and
#: ``/docs``), the graph model and its validation (creating or validating a graph).
NOT_ON_THE_API_PATH = (
    "aws_lambda_powertools.event_handler.openapi.models",
    "aws_lambda_powertools.event_handler.openapi.swagger_ui",
    "engine.model",
    "engine.validate",
    "engine.runner",
    "aws_xray_sdk",
)


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]  # the handlers log to stdout before it


def loaded_after_import(module: str, candidates: tuple[str, ...]) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps([m for m in {candidates!r} if m in sys.modules]))"
    return json.loads(run_python(code))


def test_importing_the_step_handler_loads_nothing_its_path_does_not_need():
    # GIVEN a fresh interpreter with a function's environment
    # WHEN the step handler is imported
    loaded = loaded_after_import("functions.step.app", NOT_ON_THE_STEP_PATH)

    # THEN neither pydantic, the graph model, the runner, X-Ray nor HTTP routing came with it
    assert loaded == []


def test_the_step_handlers_first_message_loads_no_pydantic_or_graph_model():
    # GIVEN a fresh interpreter, a stored graph and a run waiting at step 0
    code = f"CANDIDATES = {NOT_ON_THE_STEP_PATH!r}\n{FIRST_MESSAGE}"

    # WHEN the step handler processes the run's first step message
    outcome = json.loads(run_python(code))

    # THEN the step committed, and the stored graph was loaded without the graph model
    assert outcome["response"] == {"batchItemFailures": []}
    assert (outcome["step"], outcome["status"]) == (1, "running")
    assert outcome["loaded"] == []


def test_the_dlq_and_sweeper_handlers_load_neither_that_nor_the_graph_loader():
    for module in ("functions.sweeper.app", "functions.dlq.app"):
        assert loaded_after_import(module, (*NOT_ON_THE_STEP_PATH, "engine.graph")) == [], module


def test_importing_the_api_handler_loads_neither_the_openapi_document_nor_the_graph_model():
    # GIVEN a fresh interpreter with a function's environment
    # WHEN the API handler is imported
    loaded = loaded_after_import("functions.api.app", NOT_ON_THE_API_PATH)

    # THEN what only the docs and graph validation need stayed out
    assert loaded == []


def test_the_api_handlers_first_run_request_loads_neither_of_them_either():
    # GIVEN a fresh interpreter and a stored graph
    loaded = f"[m for m in {NOT_ON_THE_API_PATH!r} if m in sys.modules]"
    report = f'response["loaded"] = {loaded}; print(json.dumps(response))'
    code = f"{API_FIRST_REQUEST}\nimport sys\n{report}"

    # WHEN the API handler answers its first request, starting a run in the background
    outcome = json.loads(run_python(code))

    # THEN the run started, and neither the OpenAPI models nor the graph model were loaded
    assert outcome["statusCode"] == 202, outcome
    assert json.loads(outcome["body"])["status"] == "running"
    assert outcome["loaded"] == []
