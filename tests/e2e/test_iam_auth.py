"""The local stack with IAM auth (``--auth iam``) and isolation by principal: SigV4 verified
as API Gateway does, through the CLI, curl and raw HTTP/WebSocket clients.

One stack for the module: two principals, ``testing`` (the README's key pair, the default
user) and ``bob``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from unittest import mock

import aiohttp
import pytest
from playwright.sync_api import expect

from flowforge import cli
from tests.e2e.conftest import ROOT, LocalStack
from tests.e2e.test_console import browser, create, flowforge_console, page, start
from tests.e2e.test_console_approvals import APPROVAL, expect_waiting_at_review, until_waiting

pytestmark = pytest.mark.e2e
__all__ = ["browser", "page"]

REGION = "us-east-1"
LOCAL_ARN = "arn:aws:iam::123456789012:user/local"
BOB_ARN = "arn:aws:iam::123456789012:user/bob"
KEYS = [
    {"AccessKeyId": "testing", "SecretAccessKey": "testing", "Arn": LOCAL_ARN},
    {"AccessKeyId": "bob", "SecretAccessKey": "bob-secret", "Arn": BOB_ARN},
]
GRAPH_FILE = ROOT / "workflows" / "graphs" / "summarization.json"
STATE_FILE = ROOT / "workflows" / "graphs" / "summarization.state.json"


def as_principal(stack: LocalStack, key: tuple[str, str]) -> LocalStack:
    """The module's stack seen by one key pair: its requests are signed with that pair."""
    view = copy.copy(stack)
    view.signing_key = key
    return view


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("iam")
    credentials = directory / "keys.json"
    credentials.write_text(json.dumps(KEYS))
    local = LocalStack(
        directory / "data",
        directory / "stack.log",
        options=["--auth", "iam", "--credentials", str(credentials), "--isolation", "principal"],
        signing_key=("testing", "testing"),  # what start() checks readiness with
    )
    local.start()
    yield local
    local.stop()


@pytest.fixture(scope="module")
def alice(stack):
    return as_principal(stack, ("testing", "testing"))


@pytest.fixture(scope="module")
def bob(stack):
    return as_principal(stack, ("bob", "bob-secret"))


@pytest.fixture
def signed_cli(monkeypatch, stack):
    """``flowforge`` in this process, against the stack, signing with the given secret."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("FLOWFORGE_ENDPOINT", stack.url)
    monkeypatch.setenv("FLOWFORGE_SIGN", "1")

    def flowforge(*argv: str, secret: str = "testing") -> int:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        return cli.main(list(argv))

    return flowforge


def run(coroutine, timeout: float = 25):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


# -- the CLI, signing as it does for a deployed stack -----------------------------------------
def test_the_cli_signs_create_list_run_follow_and_logs_follow(signed_cli, capsys):
    assert signed_cli("graph", "create", str(GRAPH_FILE)) == 0
    graph_id = capsys.readouterr().out.strip()
    assert signed_cli("graph", "list", "--json") == 0
    assert graph_id in capsys.readouterr().out
    assert signed_cli("run", graph_id, "--state", str(STATE_FILE), "--follow", "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["done"] is True and lines[-1]["status"] == "completed"
    run_id = lines[-1]["run_id"]
    assert signed_cli("logs", run_id, "--follow", "--json") == 0
    followed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["seq"] for m in followed if "seq" in m] == [m["seq"] for m in lines if "seq" in m]
    assert followed[-1]["done"] is True


def test_the_cli_with_a_wrong_secret_fails_with_api_gateways_reason(signed_cli, capsys):
    assert signed_cli("graph", "list", secret="not-the-secret") == 2
    error = capsys.readouterr().err
    assert "403" in error
    assert "The request signature we calculated does not match the signature you provided" in error


def test_the_cli_with_a_skewed_clock_fails_with_signature_expired(signed_cli, capsys):
    skewed = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=skewed):
        assert signed_cli("graph", "list") == 2
    error = capsys.readouterr().err
    assert "403" in error and "Signature expired" in error and "- 5 min.)" in error


# -- curl, as the README prints it ------------------------------------------------------------
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readmes_curl_example_works_as_printed(stack):
    readme = (ROOT / "README.md").read_text()
    (command,) = [line for line in readme.splitlines() if line.startswith("curl") and "--aws-sigv4" in line]
    command = command.replace("http://127.0.0.1:3000", stack.url)
    result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30, check=True)
    assert "graphs" in json.loads(result.stdout)
    unsigned = re.sub(r"--aws-sigv4 \S+ --user \S+", "", command)
    refused = subprocess.run(
        [*shlex.split(unsigned), "-w", "%{http_code}"], capture_output=True, text=True, timeout=30
    )
    assert refused.stdout.endswith("403")


# -- what is refused ------------------------------------------------------------------------
def test_unsigned_http_is_refused_before_any_handler(stack):
    async def unsigned():
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{stack.url}/graph/create", json={"start": "x", "nodes": {}}) as response,
        ):
            return response.status, response.headers.get("x-amzn-ErrorType"), await response.json()

    status, error_type, body = run(unsigned())
    assert (status, error_type, body) == (
        403,
        "MissingAuthenticationTokenException",
        {"message": "Missing Authentication Token"},
    )


def test_unsigned_and_badly_signed_websocket_handshakes_are_refused(stack):
    async def handshake(headers):
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{stack.ws_url}/ws", headers=headers)
            return refused.value.status

    assert run(handshake({})) == 403
    forged = as_principal(stack, ("bob", "wrong")).signed_headers("GET", f"{stack.url}/ws")
    assert run(handshake(forged)) == 403


# -- isolation by principal -----------------------------------------------------------------
def test_principals_see_only_their_own_graphs_and_runs(alice, bob):
    definition = json.loads(GRAPH_FILE.read_text())
    status, graph = alice.request("POST", "/graph/create", definition)
    assert status == 201
    state = json.loads(STATE_FILE.read_text())
    status, started = alice.request(
        "POST", "/graph/run", {"graph_id": graph["graph_id"], "state": state, "background": True}
    )
    assert status == 202
    run_id = started["run_id"]
    # Bob lists none of Alice's graphs and runs, and every one of her ids is unknown to him.
    assert graph["graph_id"] not in [g["graph_id"] for g in bob.request("GET", "/graphs")[1]["graphs"]]
    assert run_id not in [r["run_id"] for r in bob.request("GET", "/runs")[1]["runs"]]
    for method, path, body in [
        ("GET", f"/graph/{graph['graph_id']}", None),
        ("POST", "/graph/run", {"graph_id": graph["graph_id"], "state": state}),
        ("GET", f"/graph/state/{run_id}", None),
        ("POST", f"/graph/run/{run_id}/cancel", {}),
    ]:
        status, answer = bob.request(method, path, body)
        assert (status, answer["error"]["code"]) == (404, "not_found"), (method, path, answer)
    # Alice still sees hers.
    assert graph["graph_id"] in [g["graph_id"] for g in alice.request("GET", "/graphs")[1]["graphs"]]
    assert alice.request("GET", f"/graph/state/{run_id}?logs=false")[0] == 200
    assert run_id in [r["run_id"] for r in alice.request("GET", "/runs")[1]["runs"]]


def test_a_principal_cannot_follow_another_principals_run_over_the_websocket(alice, bob):
    definition = json.loads(GRAPH_FILE.read_text())
    graph_id = alice.request("POST", "/graph/create", definition)[1]["graph_id"]
    state = json.loads(STATE_FILE.read_text())
    run_id = alice.request("POST", "/graph/run", {"graph_id": graph_id, "state": state})[1]["run_id"]

    async def follow(who: LocalStack, query: str):
        url = f"{who.ws_url}/ws{query}"
        headers = who.signed_headers("GET", url.replace("ws://", "http://", 1))
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url, headers=headers) as socket:
                    if not query:
                        await socket.send_json({"action": "subscribe", "run_id": run_id})
                    return json.loads((await socket.receive(timeout=10)).data)
            except aiohttp.WSServerHandshakeError as refused:
                return refused.status

    # The handshake with Bob's ?run_id= is refused as for an unknown run; his subscribe frame
    # is answered not_found.
    assert run(follow(bob, f"?run_id={run_id}")) == 404
    assert run(follow(bob, ""))["error"]["code"] == "not_found"
    # Alice's own connection replays her run.
    assert run(follow(alice, f"?run_id={run_id}"))["seq"] == 0


def test_isolation_by_principal_without_auth_refuses_to_start(tmp_path):
    from flowforge.local.process import free_port

    command = [
        sys.executable, "-m", "flowforge.local", "--isolation", "principal",
        "--port", str(free_port()), "--moto-port", str(free_port()), "--data-dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "flowforge dev: isolation by principal needs --auth iam: with auth off no request carries a principal"
        " to isolate by"
    ]


def test_a_principal_at_its_running_runs_cap_is_429_until_one_of_its_runs_ends(tmp_path):
    # GIVEN a stack that lets each principal have 2 runs running or waiting
    credentials = tmp_path / "keys.json"
    credentials.write_text(json.dumps(KEYS))
    capped = LocalStack(
        tmp_path / "data",
        tmp_path / "stack.log",
        options=["--auth", "iam", "--credentials", str(credentials), "--isolation", "principal",
                 "--max-running-runs", "2"],
        signing_key=("testing", "testing"),
    )  # fmt: skip
    capped.start()
    try:
        alice, bob = as_principal(capped, ("testing", "testing")), as_principal(capped, ("bob", "bob-secret"))
        graph_id = alice.request("POST", "/graph/create", APPROVAL)[1]["graph_id"]
        bob_graph = bob.request("POST", "/graph/create", APPROVAL)[1]["graph_id"]
        body = {"graph_id": graph_id, "state": {"topic": "tides"}, "background": True}
        waiting = [alice.request("POST", "/graph/run", body)[1]["run_id"] for _ in range(2)]
        for run_id in waiting:
            until_waiting(alice, run_id)

        # WHEN Alice starts a third, and Bob his first
        status, refused = alice.request("POST", "/graph/run", body)
        bob_status, _ = bob.request("POST", "/graph/run", {**body, "graph_id": bob_graph})

        # THEN hers is refused, naming the cap, and nothing is stored; Bob's own count is his
        assert (status, refused["error"]["code"]) == (429, "too_many_runs"), refused
        assert refused["error"]["details"] == {"max_running_runs": 2}
        assert len(alice.request("GET", "/runs")[1]["runs"]) == 2
        assert bob_status == 202
        # AND once one of her runs ends (cancelled), she may start another
        assert alice.request("POST", f"/graph/run/{waiting[0]}/cancel", {})[0] == 200
        assert alice.request("POST", "/graph/run", body)[0] == 202
    finally:
        capped.stop()


# -- the web console, signed ------------------------------------------------------------------
def test_the_console_answers_a_callback_through_flowforge_console_signed(stack, page, tmp_path):
    # GIVEN a run waiting for approval on a stack that wants every route signed (as with
    # CallbackAuth=IAM on AWS): an unsigned answer is refused
    run_id = start(stack, create(stack, APPROVAL), {"topic": "signed"})["run_id"]
    view = until_waiting(stack, run_id)
    unsigned = unsigned_post(view["waiting"]["callback_url"], {"status": "approved"})
    assert unsigned == 403
    environment = {
        **{k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")},
        "FLOWFORGE_SIGN": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }

    # WHEN it is approved on its page served by `flowforge console`, which signs
    with flowforge_console(stack.url, tmp_path, environment) as console:
        page.goto(f"{console}/console/runs/{run_id}")
        expect_waiting_at_review(page)
        page.locator("#approve-output").fill('{"signed": true}')
        page.locator("#approve").click()

        # THEN the run goes on and the page follows it to completed
        expect(page.locator("#run-status")).to_have_text("completed")
    status, view = stack.request("GET", f"/graph/state/{run_id}?logs=false")
    assert status == 200 and view["state"]["review"] == {"signed": True}


def unsigned_post(url: str, body: dict) -> int:
    """(urllib: Playwright's sync API owns this thread's event loop)"""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
