"""The routes the web console needs: validating without storing, listing runs, and the
console's own pages and assets, through the API handler over the in-memory service."""

from __future__ import annotations

import itertools

import pytest

from functions.runtime import build_app, set_app
from functions.settings import Settings
from tests.functional import test_api
from tests.functional.test_api import GREET, assert_error, create

# The API tests' fixtures: the handler over an in-memory service.
call, lambda_context, service = test_api.call, test_api.lambda_context, test_api.service

TYPO = {
    "name": "typo",
    "start": "split",
    "nodes": {
        "split": {"fn": "split_text", "next": "summarize"},
        "summarize": {"fn": "summarise_chunks", "next": "refin"},
        "refine": {"fn": "refine_summary", "loop_condition": "length_ok"},
    },
}

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


# -- POST /graph/validate --------------------------------------------------------------
def test_validate_accepts_a_valid_graph_and_stores_nothing(service, call):
    reply = call("POST", "/graph/validate", body=GREET)

    assert reply.status == 200, reply.raw
    assert reply.json == {"valid": True, "problems": []}
    assert call("GET", "/graphs").json["graphs"] == []


def test_validate_lists_every_problem_at_its_path(service, call):
    # WHEN a graph with a misspelt tool and a misspelt node is checked
    reply = call("POST", "/graph/validate", body=TYPO)

    # THEN the answer is a 200 verdict listing each problem where create would, nothing stored
    assert reply.status == 200, reply.raw
    assert reply.json["valid"] is False
    problems = {p["path"]: p["message"] for p in reply.json["problems"]}
    assert problems["nodes.summarize.next"] == "unknown node 'refin' (did you mean 'refine'?)"
    assert "did you mean 'summarize_chunks'" in problems["nodes.summarize.fn"]
    created = call("POST", "/graph/create", body=TYPO)
    assert [(p["path"], p["message"]) for p in assert_error(created, 400, "invalid_graph")["details"]] == [
        (p["path"], p["message"]) for p in reply.json["problems"]
    ]
    assert call("GET", "/graphs").json["graphs"] == []


def test_validate_of_a_body_that_is_not_json_is_400(service, call):
    assert_error(call("POST", "/graph/validate", body="{nodes:"), 400, "invalid_json")


def test_validate_of_a_body_that_is_not_an_object_is_a_problem_at_the_root(service, call):
    reply = call("POST", "/graph/validate", body=[1, 2])

    assert reply.status == 200 and reply.json == {
        "valid": False,
        "problems": [{"path": "", "message": "a graph is a JSON object"}],
    }


# -- GET /runs -------------------------------------------------------------------------
def test_runs_are_listed_newest_first_with_status_and_steps(service, call):
    # GIVEN three runs a second apart, the last one cancelled
    service.clock = itertools.count(1_750_000_000.0).__next__
    graph_id = create(call, GREET)
    ids = [
        call("POST", "/graph/run", body={"graph_id": graph_id, "background": True}).json["run_id"]
        for _ in range(3)
    ]
    assert call("POST", f"/graph/run/{ids[2]}/cancel").status == 200

    # WHEN they are listed two at a time
    first = call("GET", "/runs", query={"limit": "2"}).json
    second = call("GET", "/runs", query={"limit": "2", "next_token": first["next_token"]}).json

    # THEN the newest come first, each with its status and progress, and nothing heavy
    assert [r["run_id"] for r in first["runs"] + second["runs"]] == ids[::-1]
    assert second["next_token"] is None
    newest = first["runs"][0]
    assert newest["status"] == "cancelled" and newest["finished_at"]
    assert first["runs"][1]["status"] == "running" and first["runs"][1]["step"] == 0
    assert set(newest) == {"run_id", "graph_id", "status", "step", "created_at", "updated_at", "finished_at"}


def test_runs_refuse_a_limit_out_of_range(service, call):
    error = assert_error(call("GET", "/runs", query={"limit": "0"}), 400, "invalid_request")
    assert error["details"][0]["path"] == "query.limit"


def test_graph_list_counts_nodes(service, call):
    create(call, GREET)

    assert call("GET", "/graphs").json["graphs"][0]["nodes"] == 1


# -- the console -----------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/console", "/console/edit", "/console/graphs/g1", "/console/runs/r1"])
def test_console_pages_are_the_shell_with_assets_from_this_origin(service, call, path):
    reply = call("GET", path)

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<script src="/console/assets/console.js" defer></script>' in reply.raw
    assert "script-src 'self'" in reply.headers["Content-Security-Policy"]
    assert "http://" not in reply.raw and "https://" not in reply.raw  # no CDN


def test_console_under_a_named_stage_prefixes_its_assets_and_api_calls(service, call):
    reply = call("GET", "/console", stage="v1")

    assert 'data-base="/v1"' in reply.raw
    assert 'src="/v1/console/assets/graph.js"' in reply.raw


def test_console_connects_to_the_configured_websocket_url(service, call):
    # GIVEN the API function deployed with its WebSocket API's URL
    settings = Settings("flowforge-Table", console_ws_url="wss://ws.example/v1")
    set_app(build_app(settings, lambda name: None, service=service))

    reply = call("GET", "/console")

    assert 'data-ws-url="wss://ws.example/v1"' in reply.raw


@pytest.mark.parametrize(
    ("name", "content_type", "marker"),
    [
        ("console.js", "text/javascript; charset=utf-8", "/graph/validate"),
        ("graph.js", "text/javascript; charset=utf-8", "dagre.layout"),
        ("run.js", "text/javascript; charset=utf-8", "/callbacks/"),
        ("dagre.min.js", "text/javascript; charset=utf-8", "Copyright (c) 2012-2014 Chris Pettitt"),
        ("console.css", "text/css; charset=utf-8", ".g-node"),
    ],
)
def test_console_assets_are_served_with_their_type(service, call, name, content_type, marker):
    reply = call("GET", f"/console/assets/{name}")

    assert reply.status == 200
    assert reply.headers["Content-Type"] == content_type
    assert marker in reply.raw


@pytest.mark.parametrize("name", ["console.html", "..%2Fconsole.py", "nope.js"])
def test_anything_else_under_assets_is_404(service, call, name):
    assert_error(call("GET", f"/console/assets/{name}"), 404, "not_found")
