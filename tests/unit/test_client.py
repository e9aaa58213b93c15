"""The CLI's API client: endpoints, SigV4 signing, errors, and following a run."""

from __future__ import annotations

import asyncio
import io
import json
import os

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from flowforge.client import ApiError, ClientError, Endpoint, FlowForgeClient, Unreachable
from flowforge.follow import Display, entry_line, show

DEPLOYED = "https://abc123def4.execute-api.eu-west-1.amazonaws.com/v1"


@pytest.fixture
def no_aws_config(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("AWS_", "FLOWFORGE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_the_local_stack_is_the_default_unsigned_with_its_websocket_on_the_same_port(no_aws_config):
    endpoint = Endpoint.resolve()
    assert (endpoint.http, endpoint.ws, endpoint.signer) == (
        "http://127.0.0.1:3000",
        "ws://127.0.0.1:3000/ws",
        None,
    )


def test_flowforge_endpoint_and_bad_urls(no_aws_config, monkeypatch):
    monkeypatch.setenv("FLOWFORGE_ENDPOINT", "http://localhost:3100/")
    assert Endpoint.resolve().http == "http://localhost:3100"
    with pytest.raises(ClientError, match="must be an http"):
        Endpoint.resolve("127.0.0.1:3000")


def test_a_deployed_stack_is_signed_for_execute_api_in_its_region(no_aws_config, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    monkeypatch.setenv("FLOWFORGE_WS_URL", "wss://xyz.execute-api.eu-west-1.amazonaws.com/v1")
    endpoint = Endpoint.resolve(DEPLOYED)
    assert endpoint.ws == "wss://xyz.execute-api.eu-west-1.amazonaws.com/v1"
    assert endpoint.signer is not None and endpoint.signer.region == "eu-west-1"
    headers = endpoint.signer.headers(
        "POST", f"{DEPLOYED}/graph/run", b"{}", {"Content-Type": "application/json"}
    )
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert headers["X-Amz-Security-Token"] == "token" and "X-Amz-Date" in headers


def test_without_credentials_a_deployed_stack_says_how_to_get_them(no_aws_config):
    with pytest.raises(ClientError, match="no AWS credentials"):
        Endpoint.resolve(DEPLOYED)


async def _serve(handler) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


def _client(server: TestServer, ws: str | None = None) -> FlowForgeClient:
    return FlowForgeClient(Endpoint(f"http://127.0.0.1:{server.port}", ws, None))


def test_api_errors_and_api_gateways_own_answers_become_api_errors():
    async def handler(request):
        if request.path == "/graph/state/nope":
            return web.json_response(
                {"error": {"code": "not_found", "message": "run 'nope' not found"}}, status=404
            )
        return web.json_response({"message": "Forbidden"}, status=403)

    async def scenario():
        server = await _serve(handler)
        try:
            async with _client(server) as api:
                with pytest.raises(ApiError) as missing:
                    await api.get_state("nope")
                with pytest.raises(ApiError) as forbidden:
                    await api.list_graphs()
        finally:
            await server.close()
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        assert (forbidden.value.status, forbidden.value.code, forbidden.value.message) == (
            403,
            "gateway",
            "Forbidden",
        )

    asyncio.run(scenario())


def test_nothing_listening_is_one_line_that_says_to_start_the_stack():
    async def scenario():
        async with FlowForgeClient(Endpoint("http://127.0.0.1:9", None, None)) as api:
            await api.list_graphs()

    with pytest.raises(
        Unreachable, match=r"cannot reach http://127.0.0.1:9 \(connection refused\) — is `make run` running\?"
    ):
        asyncio.run(scenario())


def test_without_a_websocket_url_follow_polls_the_state_without_gaps_or_repeats():
    polls = []

    async def handler(request):
        after = int(request.query["after"])
        polls.append(after)
        logs = [{"seq": s, "node": f"n{s}"} for s in range(after + 1, min(after + 2, 3))]
        done = after >= 1
        return web.json_response({"done": done, "status": "completed" if done else "running", "logs": logs})

    async def scenario():
        server = await _serve(handler)
        try:
            async with _client(server) as api:
                return [m async for m in api.follow("r1")]
        finally:
            await server.close()

    messages = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert [m.get("seq") for m in messages] == [0, 1, 2, None]
    assert messages[-1] == {"run_id": "r1", "done": True, "status": "completed"}
    assert polls[:3] == [-1, 0, 1]


async def _messages(*messages):
    for message in messages:
        await asyncio.sleep(0)
        yield message


def test_show_prints_one_line_per_node_and_the_outcome():
    out = io.StringIO()
    entries = [
        {
            "run_id": "r",
            "seq": 0,
            "node": "split",
            "status": "ok",
            "attempt": 1,
            "duration_ms": 1.5,
            "next": "merge",
            "result": {"n": 2},
        },
        {
            "run_id": "r",
            "seq": 1,
            "node": "merge",
            "status": "failed",
            "attempt": 2,
            "duration_ms": 12.0,
            "next": None,
            "error": {"type": "ValueError", "message": "bad"},
        },
        {
            "run_id": "r",
            "done": True,
            "status": "failed",
            "error": {"node": "merge", "type": "ValueError", "message": "bad"},
        },
    ]
    done = asyncio.run(show(_messages(*entries), Display(out, live=False)))
    lines = out.getvalue().splitlines()
    assert done["steps"] == 2
    assert lines[0].startswith("  ") and "#0" in lines[0] and "split" in lines[0] and "merge" in lines[0]
    assert "(attempt 2)" in lines[1] and "ValueError: bad" in lines[1]
    assert lines[2].startswith("failed at node 'merge': ValueError: bad (2 steps")


def test_show_with_json_prints_the_messages_as_json_lines():
    out = io.StringIO()
    messages = [{"run_id": "r", "seq": 0, "node": "a"}, {"run_id": "r", "done": True, "status": "completed"}]
    asyncio.run(show(_messages(*messages), Display(out, as_json=True)))
    assert [json.loads(line) for line in out.getvalue().splitlines()] == messages


def test_entry_lines_fit_a_terminal_line():
    line = entry_line(
        {"seq": 3, "node": "refine", "status": "ok", "duration_ms": 250.0, "result": {"text": "x" * 500}}
    )
    assert len(line) < 120 and line.endswith("…")


def test_following_an_unknown_run_over_the_websocket_says_run_not_found():
    # GIVEN a WebSocket API that refuses the handshake with 404, as $connect does for an
    # unknown run_id
    async def handler(request):
        return web.json_response(
            {"error": {"code": "not_found", "message": "run 'nope' not found"}}, status=404
        )

    async def scenario():
        server = await _serve(handler)
        try:
            async with _client(server, ws=f"ws://127.0.0.1:{server.port}/ws") as api:
                return [m async for m in api.follow("nope")]
        finally:
            await server.close()

    # WHEN the run is followed / THEN the error says the run was not found
    with pytest.raises(ApiError) as refused:
        asyncio.run(asyncio.wait_for(scenario(), 20))
    assert (refused.value.status, refused.value.code) == (404, "not_found")
    assert str(refused.value) == "404 not_found: run 'nope' not found"


def test_a_cancelled_run_ends_without_a_node_none():
    out = io.StringIO()
    done = {"run_id": "r", "done": True, "status": "cancelled"}
    done["error"] = {"node": None, "type": "Cancelled", "message": "run cancelled by request"}
    asyncio.run(show(_messages(done), Display(out, live=False)))
    assert out.getvalue().splitlines()[-1].startswith("cancelled: run cancelled by request (0 steps")
    assert "None" not in out.getvalue()


def test_wait_polls_only_the_status_and_fetches_the_whole_run_once_at_the_end(monkeypatch):
    # GIVEN a run that is still running for two polls, then completed
    monkeypatch.setattr("flowforge.client.POLL_INTERVAL_S", 0)
    queries: list[dict[str, str]] = []

    async def handler(request):
        queries.append(dict(request.query))
        polls = sum(1 for q in queries if q.get("fields"))
        done = polls > 2
        view = {"run_id": "r", "status": "completed" if done else "running", "done": done}
        if not request.query.get("fields"):
            view |= {"state": {"summary": "s"}, "logs": [{"seq": 0}], "logs_next": None}
        return web.json_response(view)

    async def scenario():
        server = await _serve(handler)
        try:
            async with _client(server) as api:
                return await api.wait("r")
        finally:
            await server.close()

    # WHEN the CLI waits for it
    view = asyncio.run(asyncio.wait_for(scenario(), 20))

    # THEN each poll asks for status and done alone, and the run with its state and logs
    # is fetched once, after it ended
    assert queries[:3] == [{"fields": "status,done"}] * 3
    assert len(queries) == 4 and "fields" not in queries[3]
    assert view["state"] == {"summary": "s"} and view["logs"] == [{"seq": 0}]
