"""Schemathesis against the API's own OpenAPI document, through the real HTTP handler,
and over HTTP against the local stack (``make run``'s gateway, handlers and moto).

The schema is the one ``GET /openapi.json`` serves. Schemathesis generates valid and
invalid requests for every operation; each is turned into an API Gateway HTTP API event
(tests/reliability/api_client.py), so what is checked is exactly what the Lambda
answers: never a 5xx, the documented status codes, content types, headers and bodies,
invalid data refused with a 4xx. Path and body ids are sometimes those of a stored graph
and a finished run, so the success paths are exercised too. The service runs in memory
with a step loop in a thread; a short Lambda deadline keeps foreground waits short.

Every phase runs: examples, coverage (boundary and invalid values, missing and wrong
parameters, unexpected methods and content types, derived from the schema) and fuzzing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.service import RunService
from functions.api.app import handler
from functions.runtime import set_app
from tests.e2e.conftest import LocalStack
from tests.functional.fixtures import service_app
from tests.functional.pump import LambdaContext, step_loop
from tests.reliability import figures
from tests.reliability.api_client import call

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

SCHEMA = schemathesis.openapi.from_dict(json.loads(call(handler, "GET", "/openapi.json").text))
# Unknown query parameters are ignored, as HTTP APIs do (unknown body fields are refused):
# a request is not invalid for carrying one.
SCHEMA.config.generation.update(allow_extra_parameters=False)
# A request line and headers over the HTTP API's 10,240 bytes are refused before any route
# with 414 (documented on every route): a rejection of invalid data like any 4xx.
_REJECTION = SCHEMA.config.checks.negative_data_rejection
_REJECTION.expected_statuses = [*_REJECTION.expected_statuses, "414"]
PHASES = SCHEMA.config.phases
assert PHASES.examples.enabled and PHASES.coverage.enabled and PHASES.fuzzing.enabled
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
#: 2.1 s left: a foreground run waits at most 0.1 s (the handler keeps 2 s in reserve).
SHORT_DEADLINE = LambdaContext.api(remaining_ms=2_100)
BASE_URL = "https://abc123.execute-api.us-east-1.amazonaws.com"
GRAPH = {
    "name": "fuzzed",
    "start": "a",
    "nodes": {"a": {"fn": "rel_add", "next": "b"}, "b": {"fn": "rel_noop"}},
}
CALLS: list[int] = []


def fuzzing(examples: int) -> settings:
    """Hypothesis settings of both fuzz tests: ``examples`` per operation in the fuzzing phase."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=not figures.LONG,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )


class Known:
    """A stored graph and a finished run, whose ids the fuzzer may use."""

    graph_id = ""
    run_id = ""


@pytest.fixture(scope="module")
def service() -> Iterator[RunService]:
    service = RunService(InMemoryRunStore(), InMemoryStepQueue())
    set_app(service_app(service))
    Known.graph_id = service.create_graph(GRAPH).graph_id
    Known.run_id = service.start_run(Known.graph_id, {"a": 1}).run_id
    with step_loop(service):  # the step function, consuming the queue
        yield service
    set_app(None)
    figures.record(
        "openapi_fuzz",
        {"requests": len(CALLS), "server_errors": sum(s >= 500 for s in CALLS)},
    )


def use_known_ids(case: schemathesis.Case, data: st.DataObject) -> None:
    """Sometimes swap generated ids for stored ones, so success answers are checked too
    (valid requests only: a stored id would make an invalid one valid)."""
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return
    params = case.path_parameters or {}
    for name, known in (("graph_id", Known.graph_id), ("run_id", Known.run_id)):
        if name in params and data.draw(st.booleans(), label=f"known {name}"):
            params[name] = known
    body = case.body
    if (
        isinstance(body, dict)
        and isinstance(body.get("graph_id"), str)
        and data.draw(st.booleans(), label="known body graph_id")
    ):
        body["graph_id"] = Known.graph_id


def send(case: schemathesis.Case) -> schemathesis.Response:
    """``case`` as an HTTP client would send it (schemathesis serializes it), delivered to
    the handler as API Gateway would, and the handler's answer."""
    prepared = requests.Request(**case.as_transport_kwargs(base_url=BASE_URL)).prepare()
    url = urlsplit(prepared.url)
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(url.query, keep_blank_values=True):
        query.setdefault(name, []).append(value)
    reply = call(
        handler,
        prepared.method,
        url.path,
        body=prepared.body,
        query={k: v if len(v) > 1 else v[0] for k, v in query.items()},
        headers=dict(prepared.headers),
        context=SHORT_DEADLINE,
    )
    CALLS.append(reply.status)
    return schemathesis.Response(
        status_code=reply.status,
        headers={k.lower(): [v] for k, v in reply.headers.items()},
        content=reply.text.encode(),
        request=prepared,
        elapsed=0.0,
        verify=True,
    )


@SCHEMA.parametrize()
@SCHEMA.given(data=st.data())
@fuzzing(examples=figures.scaled(25, 300))
def test_every_operation_answers_as_documented_and_never_5xx(service, case, data):
    use_known_ids(case, data)
    case.validate_response(send(case), checks=CHECKS)


# -- the local stack, over HTTP ---------------------------------------------------------------
LOCAL_CALLS: list[int] = []


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory) -> Iterator[LocalStack]:
    """A local stack with the reliability tools, a stored graph and a finished run."""
    directory = tmp_path_factory.mktemp("fuzzed-stack")
    tools = "workflows,tests.e2e.slow_tools,tests.reliability.tools"
    stack = LocalStack(directory / "data", directory / "stack.log", tools_modules=tools)
    stack.start()
    served = requests.get(f"{stack.url}/openapi.json", timeout=30).json()
    assert served == json.loads(call(handler, "GET", "/openapi.json").text)  # the schema fuzzed
    Known.graph_id = requests.post(f"{stack.url}/graph/create", json=GRAPH, timeout=30).json()["graph_id"]
    run = requests.post(
        f"{stack.url}/graph/run", json={"graph_id": Known.graph_id, "state": {"a": 1}}, timeout=30
    )
    Known.run_id = run.json()["run_id"]
    yield stack
    stack.kill()
    figures.record(
        "openapi_fuzz_local_stack",
        {"requests": len(LOCAL_CALLS), "server_errors": sum(s >= 500 for s in LOCAL_CALLS)},
    )


@pytest.mark.e2e
@SCHEMA.parametrize()
@SCHEMA.given(data=st.data())
@fuzzing(examples=figures.scaled(10, 200))
def test_the_local_stack_answers_as_documented_and_never_5xx(local_stack, case, data):
    use_known_ids(case, data)
    if isinstance(case.body, dict) and "wait_s" in case.body:
        case.body["wait_s"] = (
            min(case.body["wait_s"], 1)
            if isinstance(case.body["wait_s"], int | float)
            else case.body["wait_s"]
        )
    response = case.call(base_url=local_stack.url, timeout=60)
    LOCAL_CALLS.append(response.status_code)
    case.validate_response(response, checks=CHECKS)
