"""The HTTP API handler, driven with API Gateway HTTP API (v2) events over the in-memory service."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

import workflows  # noqa: F401  (registers the summarization tools)
from engine import default_registry
from engine.errors import StoreUnavailableError
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.service import RunService
from functions.api.app import build_resolver, handler
from functions.api.body import MAX_BODY_BYTES
from functions.api.docs import FlowForgeResolver
from functions.runtime import set_app
from tests.functional import fixtures as moto
from tests.functional.pump import LambdaContext, run_queued, step_loop

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
GRAPHS = ROOT / "workflows" / "graphs"

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

# moto, its clock and template.yaml's table and queues (tests/functional/fixtures.py).
aws, clock, stack = moto.aws, moto.clock, moto.stack


# -- tools, registered once for this module ------------------------------------------
@default_registry.tool("api_test_greet")
async def api_test_greet(state, ctx):
    """Say hello to ``name``."""
    return {"greeting": f"hello {state.get('name', 'world')}"}


@default_registry.tool("api_test_fail")
async def api_test_fail(state, ctx):
    """Always fails, with a message that must not leak as a stack trace."""
    raise RuntimeError("tool exploded")


GREET = {"name": "greet", "start": "hi", "nodes": {"hi": {"fn": "api_test_greet"}}}
FAILING = {"name": "failing", "start": "boom", "nodes": {"boom": {"fn": "api_test_fail"}}}


# -- events, context and calls -------------------------------------------------------
def api_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
    stage: str = "$default",
) -> dict[str, Any]:
    """An HTTP API v2 event from tests/events/api_http_v2.json; ``body`` str is sent as is."""
    event = json.loads((EVENTS / "api_http_v2.json").read_text())
    # A named stage is part of the raw path (https://host/v1/graphs → /v1/graphs).
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = raw_path
    event["requestContext"]["stage"] = stage
    event["requestContext"]["http"]["method"] = method
    event["routeKey"] = f"{method} {path}"
    event["headers"].update(headers or {})
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    if query:
        event["queryStringParameters"] = query
        event["rawQueryString"] = urlencode(query)
    event["pathParameters"] = path_parameters
    return event


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: str

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext.api()


@pytest.fixture
def call(lambda_context):
    def call(method: str, path: str, **kwargs: Any) -> Reply:
        response = handler(api_event(method, path, **kwargs), lambda_context)
        return Reply(response["statusCode"], response.get("headers", {}), response["body"])

    return call


# -- the service and its queue -------------------------------------------------------
@pytest.fixture
def service():
    service = RunService(InMemoryRunStore(), InMemoryStepQueue())
    set_app(moto.service_app(service))
    yield service
    set_app(None)


def summarization() -> tuple[dict[str, Any], dict[str, Any]]:
    graph = json.loads((GRAPHS / "summarization.json").read_text())
    state = json.loads((GRAPHS / "summarization.state.json").read_text())
    return graph, state


def create(call, graph: dict[str, Any]) -> str:
    reply = call("POST", "/graph/create", body=graph)
    assert reply.status == 201, reply.raw
    return reply.json["graph_id"]


def assert_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    """The one error shape: {"error": {"code", "message", "details"?}}; returns the error."""
    assert reply.status == status, reply.raw
    assert set(reply.json) == {"error"}
    error = reply.json["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "details"}
    assert "Traceback" not in reply.raw
    return error


# -- graphs --------------------------------------------------------------------------
def test_create_graph_returns_its_id_name_and_node_count(service, call):
    # GIVEN the summarization graph
    graph, _ = summarization()

    # WHEN it is posted
    reply = call("POST", "/graph/create", body=graph)

    # THEN it is stored under a new id
    assert reply.status == 201
    assert reply.json == {"graph_id": reply.json["graph_id"], "name": "summarization", "nodes": 4}
    assert service.store.get_graph(reply.json["graph_id"]) is not None


def test_create_graph_lists_every_problem_with_its_path(service, call):
    # GIVEN a graph with three mistakes: unknown start, unknown tool, unknown next node
    graph = {
        "start": "begin",
        "nodes": {
            "hi": {"fn": "no_such_tool", "next": "bye"},
            "bye": {"fn": "api_test_greet", "next": "nowhere"},
        },
    }

    # WHEN it is posted
    error = assert_error(call("POST", "/graph/create", body=graph), 400, "invalid_graph")

    # THEN all three are reported at once, each with its path
    assert sorted(d["path"] for d in error["details"]) == ["nodes.bye.next", "nodes.hi.fn", "start"]
    assert all(d["message"] for d in error["details"])


def test_create_graph_refuses_a_body_that_is_not_an_object(service, call):
    # GIVEN / WHEN a JSON array is posted as a graph
    error = assert_error(call("POST", "/graph/create", body=[1, 2]), 400, "invalid_graph")

    # THEN the problem says what a graph is
    assert "object" in error["details"][0]["message"]


def test_list_graphs_pages_newest_first(service, call):
    # GIVEN three graphs
    ids = [create(call, {**GREET, "name": f"greet{i}"}) for i in range(3)]

    # WHEN they are listed two at a time
    first = call("GET", "/graphs", query={"limit": "2"})
    second = call("GET", "/graphs", query={"limit": "2", "next_token": first.json["next_token"]})

    # THEN the pages hold all three once, with a token only where more follow
    assert first.status == second.status == 200
    assert len(first.json["graphs"]) == 2 and first.json["next_token"]
    assert second.json["next_token"] is None
    listed = first.json["graphs"] + second.json["graphs"]
    assert sorted(g["graph_id"] for g in listed) == sorted(ids)
    assert set(listed[0]) == {"graph_id", "name", "created_at", "nodes"}


def test_list_graphs_refuses_a_limit_out_of_range(service, call):
    # GIVEN / WHEN a page size of 0
    error = assert_error(call("GET", "/graphs", query={"limit": "0"}), 400, "invalid_request")

    # THEN the problem names the query parameter
    assert error["details"][0]["path"] == "query.limit"


def test_get_graph_returns_the_definition(service, call):
    # GIVEN a stored graph
    graph_id = create(call, GREET)

    # WHEN it is fetched
    reply = call("GET", f"/graph/{graph_id}", path_parameters={"graph_id": graph_id})

    # THEN the definition comes back as created
    assert reply.status == 200
    assert reply.json["definition"] == GREET
    assert reply.json["graph_id"] == graph_id and reply.json["version"] == 1
    assert reply.json["name"] == "greet" and reply.json["created_at"]


def test_get_unknown_graph_is_404(service, call):
    assert_error(call("GET", "/graph/nope"), 404, "not_found")


# -- runs ----------------------------------------------------------------------------
def test_foreground_run_of_the_seed_graph_returns_final_state_and_logs(service, call):
    # GIVEN the summarization graph and its example state
    graph, state = summarization()
    graph_id = create(call, graph)

    # WHEN it is run in the foreground while the step loop runs
    with step_loop(service):
        reply = call("POST", "/graph/run", body={"graph_id": graph_id, "state": state})

    # THEN the answer is the finished run: summary within target, one log entry per step
    assert reply.status == 200, reply.raw
    run = reply.json
    assert run["status"] == "completed" and run["done"] is True
    assert run["current_node"] is None and run["error"] is None and run["finished_at"]
    assert 0 < len(run["state"]["summary"]) <= state["target_length"]
    steps = [entry["node"] for entry in run["logs"] if "index" not in entry]  # leave out the map's items
    assert steps[:4] == ["split", "summarize", "merge", "refine"]
    assert [entry["seq"] for entry in run["logs"]] == list(range(run["step"]))


def test_background_run_answers_202_then_state_shows_it_finished(service, call):
    # GIVEN the summarization graph
    graph, state = summarization()
    graph_id = create(call, graph)

    # WHEN it is run in the background
    started = call("POST", "/graph/run", body={"graph_id": graph_id, "state": state, "background": True})

    # THEN it is accepted at once and still running
    assert started.status == 202
    run_id = started.json["run_id"]
    assert started.json == {"run_id": run_id, "status": "running", "state_url": f"/graph/state/{run_id}"}
    assert call("GET", f"/graph/state/{run_id}").json["status"] == "running"

    # WHEN the step loop works through it
    run_queued(service)
    reply = call("GET", started.json["state_url"])

    # THEN its state shows it finished, with logs
    assert reply.status == 200
    run = reply.json
    assert run["run_id"] == run_id and run["graph_id"] == graph_id
    assert run["status"] == "completed" and run["done"] is True
    assert run["state"]["summary"] and len(run["logs"]) == run["step"]
    assert {"created_at", "updated_at", "finished_at", "current_node", "error"} <= set(run)


def test_foreground_run_still_going_after_wait_s_is_202_with_state_url(service, call):
    # GIVEN a graph, and no step loop running
    graph_id = create(call, GREET)

    # WHEN it is run in the foreground with a short wait
    reply = call("POST", "/graph/run", body={"graph_id": graph_id, "wait_s": 0.2})

    # THEN the answer says where to poll
    assert reply.status == 202
    assert reply.json["status"] == "running"
    assert reply.json["state_url"] == f"/graph/state/{reply.json['run_id']}"


def test_foreground_run_never_waits_past_the_lambda_deadline(service, call, lambda_context):
    # GIVEN a Lambda with 2.1 s left and no step loop running
    graph_id = create(call, GREET)
    lambda_context.remaining_ms = 2100

    # WHEN a foreground run asks to wait 25 s
    started = time.monotonic()
    reply = call("POST", "/graph/run", body={"graph_id": graph_id, "wait_s": 25})

    # THEN it answers 202 well before the Lambda would be killed
    assert reply.status == 202
    assert time.monotonic() - started < 1.0


def test_a_failing_tool_fails_the_run_without_a_stack_trace(service, call):
    # GIVEN a graph whose only tool raises
    graph_id = create(call, FAILING)

    # WHEN it is run in the foreground
    with step_loop(service):
        reply = call("POST", "/graph/run", body={"graph_id": graph_id})

    # THEN the run failed with {node, type, message}, and no trace reaches the client
    assert reply.status == 200
    assert reply.json["status"] == "failed"
    assert reply.json["error"] == {"node": "boom", "type": "RuntimeError", "message": "tool exploded"}
    assert "Traceback" not in reply.raw and ".py" not in reply.raw


def test_run_of_unknown_graph_is_404(service, call):
    assert_error(call("POST", "/graph/run", body={"graph_id": "nope"}), 404, "not_found")


def test_run_with_a_state_that_is_not_an_object_is_400(service, call):
    # GIVEN a graph
    graph_id = create(call, GREET)

    # WHEN the state is a list
    error = assert_error(
        call("POST", "/graph/run", body={"graph_id": graph_id, "state": [1]}), 400, "invalid_request"
    )

    # THEN the problem is at body.state
    assert [d["path"] for d in error["details"]] == ["body.state"]


def test_run_with_a_state_over_the_cap_is_413(service, call):
    # GIVEN a graph and a 300 KiB state (the cap is 256 KiB; the body is under 1 MiB)
    graph_id = create(call, GREET)
    state = {"blob": "x" * 300 * 1024}

    # WHEN it is run
    error = assert_error(
        call("POST", "/graph/run", body={"graph_id": graph_id, "state": state}), 413, "state_too_large"
    )

    # THEN the error gives the size and the limit, and no run was created
    assert error["details"]["limit"] == 256 * 1024
    assert len(service.queue) == 0


def test_run_request_with_wrong_types_lists_each_field(service, call):
    # GIVEN / WHEN every field has the wrong type or range, plus an unknown one
    body = {"graph_id": 7, "state": {}, "background": "yes", "wait_s": 30, "priority": 1}
    error = assert_error(call("POST", "/graph/run", body=body), 400, "invalid_request")

    # THEN each is reported with its path
    paths = sorted(d["path"] for d in error["details"])
    assert paths == ["body.background", "body.graph_id", "body.priority", "body.wait_s"]


def test_run_without_a_body_is_400(service, call):
    assert_error(call("POST", "/graph/run"), 400, "invalid_request")


def test_invalid_json_is_400(service, call):
    # GIVEN / WHEN a body that is not JSON
    error = assert_error(call("POST", "/graph/run", body='{"graph_id": '), 400, "invalid_json")

    # THEN the message says where parsing stopped
    assert "line 1" in error["message"]


def test_body_over_the_limit_is_413_before_parsing(service, call):
    # GIVEN a body one byte over 5.5 MiB that is not even JSON
    body = "x" * (MAX_BODY_BYTES + 1)

    # WHEN it is posted
    error = assert_error(call("POST", "/graph/create", body=body), 413, "body_too_large")

    # THEN the size was refused first
    assert MAX_BODY_BYTES == 5632 * 1024
    assert error["details"] == {"limit": MAX_BODY_BYTES}


def test_a_non_json_content_type_is_415(service, call):
    reply = call("POST", "/graph/create", body="<graph/>", headers={"content-type": "application/xml"})
    assert_error(reply, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b"],
)
@pytest.mark.parametrize("path", ["/graph/create", "/graph/run"])
def test_a_json_body_sent_as_a_form_is_415_naming_the_expected_type(service, call, path, content_type):
    # GIVEN a JSON body sent with a form's content type (curl -d without -H), which once
    # gave a 500 (multipart without a boundary) or a 400 listing the body as a field
    body = GREET if path == "/graph/create" else {"graph_id": create(call, GREET)}

    # WHEN it is posted
    reply = call("POST", path, body=body, headers={"content-type": content_type})

    # THEN the answer says which content type to send, and nothing ran
    error = assert_error(reply, 415, "unsupported_media_type")
    assert "content-type: application/json" in error["message"]
    assert content_type.split(";")[0] in error["message"]
    assert error["details"][0]["path"] == "header.content-type"
    assert len(service.queue) == 0


def test_a_json_body_without_a_content_type_is_accepted(service, call):
    event = api_event("POST", "/graph/create", body=GREET)
    del event["headers"]["content-type"]
    assert handler(event, LambdaContext.api())["statusCode"] == 201


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/graph/run", '{"graph_id": "g", "state": {"a": "ok \\ud800"}}', "body.state.a"),
        ("/graph/run", '{"graph_id": "g", "state": {"a": [{"\\udc00x": 1}]}}', "body.state.a.0.\\udc00x"),
        (
            "/graph/create",
            '{"start": "a", "nodes": {"a": {"fn": "api_test_greet", "params": {"p": "\\ud800"}}}}',
            "body.nodes.a.params.p",
        ),
    ],
)
def test_text_utf8_cannot_encode_is_400_naming_its_path(service, call, path, body, where):
    # GIVEN a body whose JSON escapes a lone UTF-16 surrogate (valid JSON, not valid text)
    # WHEN it is posted
    error = assert_error(call("POST", path, body=body), 400, "invalid_request")

    # THEN the answer names where, and nothing was stored
    assert error["details"][0]["path"] == where
    assert "not valid UTF-8" in error["details"][0]["message"]
    assert service.store.list_graphs(limit=10)[0] == []


# -- state ---------------------------------------------------------------------------
@pytest.fixture
def finished_run(service, call) -> str:
    graph, state = summarization()
    graph_id = create(call, graph)
    run_id = call("POST", "/graph/run", body={"graph_id": graph_id, "state": state, "background": True})
    run_queued(service)
    return run_id.json["run_id"]


def test_state_without_logs_leaves_them_out(finished_run, call):
    reply = call("GET", f"/graph/state/{finished_run}", query={"logs": "false"})
    assert reply.status == 200
    assert "logs" not in reply.json and reply.json["status"] == "completed"


def test_state_after_seq_returns_only_later_entries(finished_run, call):
    # GIVEN a finished run with several steps
    everything = call("GET", f"/graph/state/{finished_run}").json["logs"]

    # WHEN asked for the entries after seq 1
    later = call("GET", f"/graph/state/{finished_run}", query={"after": "1"}).json["logs"]

    # THEN exactly those come back
    assert later == everything[2:] and later[0]["seq"] == 2


def test_fields_answers_only_the_fields_and_state_keys_named(finished_run, call):
    # GIVEN a finished summarization run, whose state holds the text, sentences, chunks...
    # WHEN asked for its status and summary only
    reply = call("GET", f"/graph/state/{finished_run}", query={"fields": "status,error,state.summary"})

    # THEN that is all the answer holds
    assert reply.status == 200, reply.raw
    assert set(reply.json) == {"status", "error", "state"}
    assert list(reply.json["state"]) == ["summary"] and reply.json["status"] == "completed"


def test_fields_on_a_foreground_run(service, call):
    # GIVEN the summarization graph
    graph, state = summarization()
    graph_id = create(call, graph)

    # WHEN it is run in the foreground asking for the status and the summary
    with step_loop(service):
        reply = call(
            "POST",
            "/graph/run",
            body={"graph_id": graph_id, "state": state},
            query={"fields": "status,state.summary"},
        )

    # THEN only those come back
    assert reply.status == 200, reply.raw
    assert reply.json == {"status": "completed", "state": {"summary": reply.json["state"]["summary"]}}


@pytest.mark.parametrize("fields", ["status,colour", "", "state.", " , "])
def test_fields_naming_no_known_field_is_400(finished_run, call, fields):
    error = assert_error(
        call("GET", f"/graph/state/{finished_run}", query={"fields": fields}), 400, "invalid_request"
    )
    assert error["details"][0]["path"] == "query.fields"


def test_state_of_unknown_run_is_404(service, call):
    assert_error(call("GET", "/graph/state/nope"), 404, "not_found")


# -- cancel --------------------------------------------------------------------------
def test_cancel_a_running_run_then_again_is_409(service, call):
    # GIVEN a background run nobody has stepped yet
    graph_id = create(call, GREET)
    run_id = call("POST", "/graph/run", body={"graph_id": graph_id, "background": True}).json["run_id"]

    # WHEN it is cancelled
    reply = call("POST", f"/graph/run/{run_id}/cancel")

    # THEN it is cancelled, and its queued step does nothing
    assert reply.status == 200
    assert reply.json["status"] == "cancelled" and reply.json["done"] is True
    run_queued(service)
    assert call("GET", f"/graph/state/{run_id}").json["status"] == "cancelled"

    # WHEN it is cancelled again
    # THEN that is a conflict that says why
    error = assert_error(call("POST", f"/graph/run/{run_id}/cancel"), 409, "conflict")
    assert "already cancelled" in error["message"]
    assert error["details"] == {"status": "cancelled"}


def test_cancel_unknown_run_is_404(service, call):
    assert_error(call("POST", "/graph/run/nope/cancel"), 404, "not_found")


# -- tools, docs, routing ------------------------------------------------------------
def test_tools_lists_tools_and_conditions_with_their_docs(service, call):
    reply = call("GET", "/tools")

    assert reply.status == 200
    tools = {t["name"]: t for t in reply.json["tools"]}
    assert tools["api_test_greet"] == {
        "name": "api_test_greet",
        "async": True,
        "doc": "Say hello to ``name``.",
    }
    assert {"split_text", "summarize_chunks", "merge_summaries", "refine_summary"} <= set(tools)
    assert "length_ok" in {c["name"] for c in reply.json["conditions"]}


def test_docs_serves_swagger_ui_without_any_external_asset(service, call):
    reply = call("GET", "/docs")

    # THEN it is HTML with Swagger UI inlined: no script or stylesheet fetched from elsewhere
    assert reply.status == 200 and reply.headers["Content-Type"] == "text/html"
    assert "SwaggerUIBundle" in reply.raw and "<style>" in reply.raw
    assert not re.search(r"<(script|link)\b[^>]*\b(src|href)\s*=", reply.raw)
    assert '"title": "FlowForge"' in reply.raw


def test_docs_answers_like_any_route_on_a_resolver_that_has_not_served_it_yet(service, lambda_context):
    # GIVEN a new resolver, whose Swagger UI route is added by the first request for it
    resolver = build_resolver()

    # WHEN /docs is first asked for with another method, then with GET
    refused = resolver.resolve(api_event("POST", "/docs"), lambda_context)
    page = resolver.resolve(api_event("GET", "/docs"), lambda_context)

    # THEN the first is a 405 naming GET, as for any route, and the second is the page
    refusal = Reply(refused["statusCode"], refused["headers"], refused["body"])
    assert_error(refusal, 405, "method_not_allowed")
    assert refusal.headers["Allow"] == "GET"
    assert page["statusCode"] == 200 and "SwaggerUIBundle" in page["body"]


def test_openapi_json_documents_every_route_and_the_error_shape(service, call):
    reply = call("GET", "/openapi.json")

    assert reply.status == 200
    spec = reply.json
    assert spec["info"]["title"] == "FlowForge" and spec["info"]["version"]
    assert set(spec["paths"]) == {
        "/graph/create",
        "/graph/validate",
        "/graphs",
        "/runs",
        "/graph/{graph_id}",
        "/graph/run",
        "/graph/state/{run_id}",
        "/graph/state/{run_id}/values/{key}",
        "/graph/run/{run_id}/cancel",
        "/graph/run/{run_id}/redrive",
        "/tools",
        "/callbacks/{token}",
        "/callbacks/{token}/heartbeat",
    }
    assert set(spec["paths"]["/callbacks/{token}"]["post"]["responses"]) >= {"200", "400", "404", "409"}
    values = spec["paths"]["/graph/state/{run_id}/values/{key}"]["get"]
    assert set(values["responses"]) == {"200", "303", "400", "404", "414", "500", "503"}
    assert [p["name"] for p in values["parameters"]] == ["run_id", "key"]
    schemas = spec["components"]["schemas"]
    run_request = schemas["RunRequest"]
    assert run_request["additionalProperties"] is False
    assert all(field.get("description") for field in run_request["properties"].values())
    assert set(spec["paths"]["/graph/run"]["post"]["responses"]) >= {"200", "202", "400", "404", "413"}
    assert "HTTPValidationError" not in schemas
    assert all("422" not in op["responses"] for path in spec["paths"].values() for op in path.values())
    graph_body = spec["paths"]["/graph/create"]["post"]["requestBody"]["content"]["application/json"]
    assert set(graph_body["schema"]["required"]) == {"start", "nodes"}


def test_unknown_route_is_404(service, call):
    assert_error(call("GET", "/nowhere"), 404, "not_found")


def test_wrong_method_is_405_with_allow(service, call):
    reply = call("DELETE", "/graphs")

    assert_error(reply, 405, "method_not_allowed")
    assert reply.headers["Allow"] == "GET"


@pytest.mark.parametrize("path", ["/graph/create", "/graph/run"])
def test_get_on_a_post_route_is_405_not_an_unknown_graph(service, call, path):
    # GIVEN GET /graph/create, which GET /graph/{graph_id} would also match
    reply = call("GET", path)

    # THEN it is the wrong method, not a graph called "create"
    error = assert_error(reply, 405, "method_not_allowed")
    assert reply.headers["Allow"] == "POST" and "use POST" in error["message"]


def test_routes_work_under_a_named_stage(service, call):
    # GIVEN a graph, and the API deployed on stage v1 (template.yaml's default)
    graph_id = create(call, GREET)

    # WHEN it is fetched through /v1/graph/{id}
    reply = call("GET", f"/graph/{graph_id}", stage="v1")

    # THEN the stage prefix does not get in the way
    assert reply.status == 200 and reply.json["graph_id"] == graph_id


def test_cors_answers_preflight_and_tags_responses(service, call):
    # GIVEN / WHEN a browser preflight, then the request itself
    preflight = call(
        "OPTIONS",
        "/graph/run",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )
    reply = call("GET", "/graphs", headers={"origin": "https://app.example"})

    # THEN both carry the CORS headers
    assert preflight.status == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


# -- failures of the service ---------------------------------------------------------
class BrokenStore(InMemoryRunStore):
    """A store whose reads fail like a bug would, or like a throttled table."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def get_graph(self, graph_id):
        raise self.error

    def list_graphs(self, limit=50, after=None, *, owner=None):
        raise self.error


@pytest.fixture
def broken(request):
    service = RunService(BrokenStore(request.param), InMemoryStepQueue())
    set_app(moto.service_app(service))
    yield service
    set_app(None)


@pytest.mark.parametrize("broken", [KeyError("secret-table-key /var/task/store.py")], indirect=True)
def test_an_unexpected_error_is_500_with_request_id_and_no_trace(broken, call, caplog):
    # GIVEN a store that raises something nobody expected
    # WHEN a route hits it
    reply = call("GET", "/graph/abc")

    # THEN the client gets a generic 500 with the request id, nothing of the error itself
    error = assert_error(reply, 500, "internal")
    assert error["details"] == {"request_id": LambdaContext.api().aws_request_id}
    assert "secret" not in reply.raw and "KeyError" not in reply.raw and ".py" not in reply.raw
    # AND the exception, with its trace, is in the log
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and isinstance(logged[0].exc_info[1], KeyError)


@pytest.mark.parametrize("broken", [StoreUnavailableError("table throttled")], indirect=True)
def test_a_throttled_store_is_503_with_retry_after(broken, call):
    reply = call("GET", "/graphs")

    assert_error(reply, 503, "unavailable")
    assert int(reply.headers["Retry-After"]) >= 1


# -- wiring --------------------------------------------------------------------------
def test_importing_the_app_builds_no_aws_client():
    # GIVEN / WHEN the handler module is imported in a fresh interpreter
    code = "import sys, functions.api.app; print('boto3' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )

    # THEN boto3 was not even imported
    assert result.stdout.strip() == "False"


def test_creating_graphs_and_starting_runs_emit_metrics(service, call, capsys):
    graph_id = create(call, GREET)
    call("POST", "/graph/run", body={"graph_id": graph_id, "background": True})

    out = capsys.readouterr().out
    assert '"graphs_created":[1.0]' in out and '"runs_started":[1.0]' in out


# -- the same API on DynamoDB and SQS (moto) -----------------------------------------
@pytest.fixture
def aws_service(stack, monkeypatch):
    """The service as deployed: built by functions.runtime from the stack's environment."""
    for name, value in stack["env"].items():
        monkeypatch.setenv(name, value)
    set_app(moto.moto_app())
    yield
    set_app(None)


def test_seed_flow_on_dynamodb_and_sqs(aws_service, aws, stack, clock, call):
    from functions.step.app import handler as step_handler
    from tests.functional.pump import QueuePump

    # GIVEN the summarization graph stored through the API in DynamoDB
    graph, state = summarization()
    graph_id = create(call, graph)
    assert [g["graph_id"] for g in call("GET", "/graphs").json["graphs"]] == [graph_id]

    # WHEN it runs in the background and the step Lambda drains the SQS queue
    started = call("POST", "/graph/run", body={"graph_id": graph_id, "state": state, "background": True})
    assert started.status == 202
    QueuePump(aws.client("sqs"), stack["queue_url"], clock, step_handler).drain()

    # THEN the API shows the finished run with one log entry per step
    run = call("GET", started.json["state_url"]).json
    assert run["status"] == "completed" and len(run["state"]["summary"]) <= state["target_length"]
    assert [entry["seq"] for entry in run["logs"]] == list(range(run["step"]))

    # AND a finished run cannot be cancelled; unknown ids are 404
    assert_error(call("POST", f"/graph/run/{run['run_id']}/cancel"), 409, "conflict")
    assert_error(call("GET", "/graph/state/nope"), 404, "not_found")
    assert_error(call("GET", "/graph/nope"), 404, "not_found")


def test_concurrent_requests_in_one_process_each_get_their_own_answer(service, call):
    # GIVEN one process serving a function's requests from several threads (the local
    # stack does; a Lambda container serves one at a time)
    graph, _ = summarization()
    barrier = threading.Barrier(8)
    replies: list[tuple[str, Reply]] = []

    def one(kind: str) -> None:
        barrier.wait()
        for _ in range(10):
            reply = call("POST", "/graph/create", body=graph) if kind == "create" else call("GET", "/graphs")
            replies.append((kind, reply))

    # WHEN creates and lists run at once
    threads = [threading.Thread(target=one, args=("create" if i % 2 else "list",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN every create answered 201 with a graph id, every list 200 with a page
    assert sorted({(kind, r.status) for kind, r in replies}) == [("create", 201), ("list", 200)]
    assert all("graph_id" in r.json for kind, r in replies if kind == "create")
    assert all("graphs" in r.json for kind, r in replies if kind == "list")


def test_the_resolver_keeps_each_threads_request_apart():
    # GIVEN a resolver whose route waits until two threads are both inside it
    app = FlowForgeResolver()
    both_inside = threading.Barrier(2)
    seen: dict[str, tuple[str, str]] = {}

    @app.get("/who/<name>")
    def who(name: str):
        both_inside.wait(timeout=5)
        seen[name] = (app.current_event.path, app.lambda_context.aws_request_id)
        return {}

    # WHEN two threads answer /who/a and /who/b at once, each with its own Lambda context
    def answer(name: str) -> None:
        app.resolve(api_event("GET", f"/who/{name}"), LambdaContext.api(aws_request_id=name))

    threads = [threading.Thread(target=answer, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN each saw its own request and context, not the one resolved last
    assert seen == {"a": ("/who/a", "a"), "b": ("/who/b", "b")}


def test_state_and_logs_tell_of_one_moment_when_a_step_commits_between_their_reads(service, call):
    # GIVEN a run whose first step committed; the API reads the run, then its log, and a
    # second step (here: the run's wait) commits in between
    graph_id = create(call, {"start": "a", "nodes": {"a": {"fn": "api_test_greet", "next": "b"},
                                                     "b": {"fn": "api_test_greet"}}})  # fmt: skip
    run_id = call("POST", "/graph/run", body={"graph_id": graph_id, "background": True}).json["run_id"]
    run_queued(service, limit=1)
    read_before = service.get_run(run_id)
    assert read_before.step == 1
    run_queued(service)
    service.get_run = lambda run_id, owner=None: read_before  # the run as read before step 1 committed

    # WHEN the run is read with its log
    view = call("GET", f"/graph/state/{run_id}").json

    # THEN the log shows what the run as read had reached, no more: a client following
    # from its last entry hears of the rest, the status it brings included
    assert view["status"] == "running" and view["step"] == 1
    assert [entry["seq"] for entry in view["logs"]] == [0]
    assert view["logs_next"] is None
