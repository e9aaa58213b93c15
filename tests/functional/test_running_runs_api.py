"""MaxRunningRunsPerPrincipal through the HTTP API on moto, wired as deployed: a principal
at its cap gets 429 ``too_many_runs`` on start and redrive, another principal does not,
and a run that ended gives its place back."""

from __future__ import annotations

import pytest

from functions.api.app import handler
from functions.runtime import set_app
from tests.functional import fixtures as moto
from tests.functional.pump import LambdaContext
from tests.functional.test_api import FAILING, GREET, Reply, api_event, assert_error

aws, clock, stack = moto.aws, moto.clock, moto.stack
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
ALICE = "arn:aws:iam::123456789012:user/alice"
BOB = "arn:aws:iam::123456789012:user/bob"


@pytest.fixture
def capped(stack, monkeypatch):
    for name, value in {
        **stack["env"],
        "FLOWFORGE_ISOLATION": "principal",
        "FLOWFORGE_MAX_RUNNING_RUNS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    set_app(moto.moto_app())
    yield
    set_app(None)


def call(principal: str, method: str, path: str, **kwargs) -> Reply:
    event = api_event(method, path, **kwargs)
    event["requestContext"]["authorizer"] = {"iam": {"userArn": principal}}
    response = handler(event, LambdaContext.api())
    return Reply(response["statusCode"], response.get("headers", {}), response["body"])


def start(principal: str, graph_id: str) -> Reply:
    return call(principal, "POST", "/graph/run", body={"graph_id": graph_id, "state": {}, "background": True})


def test_a_principal_at_its_cap_is_refused_with_429_until_a_run_ends(capped):
    # GIVEN Alice's two running runs (nothing steps them: no step function here)
    greet = call(ALICE, "POST", "/graph/create", body=GREET).json["graph_id"]
    first, second = (start(ALICE, greet) for _ in range(2))
    assert (first.status, second.status) == (202, 202), first.raw

    # WHEN she starts a third
    refused = start(ALICE, greet)

    # THEN 429 in the one error shape, and no run was stored
    error = assert_error(refused, 429, "too_many_runs")
    assert "2 runs running or waiting" in error["message"] and error["details"] == {"max_running_runs": 2}
    assert len(call(ALICE, "GET", "/runs").json["runs"]) == 2
    # AND Bob is not held back by Alice's runs
    bobs = call(BOB, "POST", "/graph/create", body=GREET).json["graph_id"]
    assert start(BOB, bobs).status == 202

    # WHEN one of hers ends (cancelled), the next start takes its place
    run_id = first.json["run_id"]
    assert call(ALICE, "POST", f"/graph/run/{run_id}/cancel").status == 200
    assert start(ALICE, greet).status == 202
    assert_error(start(ALICE, greet), 429, "too_many_runs")


def test_a_redrive_over_the_cap_is_refused_and_leaves_the_run_failed(capped, aws, stack, clock):
    from functions.step.app import handler as step_handler
    from tests.functional.pump import QueuePump

    # GIVEN a failed run of Alice's, and two running ones after it
    failing = call(ALICE, "POST", "/graph/create", body=FAILING).json["graph_id"]
    failed = start(ALICE, failing).json["run_id"]
    pump = QueuePump(aws.client("sqs"), stack["queue_url"], clock, step_handler)
    pump.drain()
    assert call(ALICE, "GET", f"/graph/state/{failed}").json["status"] == "failed"
    greet = call(ALICE, "POST", "/graph/create", body=GREET).json["graph_id"]
    assert start(ALICE, greet).status == 202 and start(ALICE, greet).status == 202

    # WHEN she redrives the failed run
    refused = call(ALICE, "POST", f"/graph/run/{failed}/redrive", body={})

    # THEN 429, and the run is still failed
    assert_error(refused, 429, "too_many_runs")
    assert call(ALICE, "GET", f"/graph/state/{failed}").json["status"] == "failed"
