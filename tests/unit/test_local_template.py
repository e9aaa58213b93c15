"""The local stack wires exactly what template.yaml declares."""

from __future__ import annotations

from flowforge.local.stack import DEFAULT_TEMPLATE, load_template
from flowforge.local.template import read_template


def test_every_function_and_its_handler_and_timeout_come_from_the_template():
    local = read_template(DEFAULT_TEMPLATE)
    resources = load_template(DEFAULT_TEMPLATE)["Resources"]
    functions = {lid for lid, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert set(local.functions) == functions
    for logical_id, spec in local.functions.items():
        assert spec.handler == resources[logical_id]["Properties"]["Handler"]
        assert spec.timeout_s > 0


def test_every_http_api_event_becomes_a_route():
    local = read_template(DEFAULT_TEMPLATE)
    resources = load_template(DEFAULT_TEMPLATE)["Resources"]
    declared = {
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"], lid)
        for lid, r in resources.items()
        if r["Type"] == "AWS::Serverless::Function"
        for event in (r["Properties"].get("Events") or {}).values()
        if event["Type"] == "HttpApi"
    }
    assert {(r.method, r.path, r.function) for r in local.http_routes} == declared
    assert ("POST", "/graph/run") in {(r.method, r.path) for r in local.http_routes}


def test_event_sources_schedules_and_websocket_routes():
    local = read_template(DEFAULT_TEMPLATE)
    step = next(s for s in local.queue_sources if s.queue == "StepQueue")
    assert step.report_failures and step.batch_size >= 1
    assert {s.queue for s in local.queue_sources} >= {"StepQueue", "StepDeadLetterQueue"}
    (stream,) = local.stream_sources
    assert stream.table == "Table" and stream.filters and stream.parallelization == 10
    assert [s.every_s for s in local.schedules] == [60.0]
    assert {"$connect", "$disconnect", "$default", "subscribe"} <= set(local.ws_routes)
    assert local.ws_route_selection == "$request.body.action"


def test_parameters_change_what_resolves(tmp_path):
    local = read_template(DEFAULT_TEMPLATE, {"StepTimeoutSeconds": "60"})
    assert local.functions["StepFunction"].timeout_s == 60
