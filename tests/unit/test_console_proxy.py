"""``flowforge console``: pages from here, API and WebSocket calls forwarded to the stack,
signed with SigV4 as the CLI signs them."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from botocore.credentials import Credentials

from flowforge.client import ClientError, Endpoint, Signer
from flowforge.console import ConsoleProxy

SIGNER = Signer(Credentials("AKIDEXAMPLE", "secret", "token"), "eu-west-1")


class Upstream:
    """A stand-in stack that records what reached it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.answer)
        return app

    async def answer(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": dict(request.headers),
                "body": await request.text(),
            }
        )
        if request.headers.get("Upgrade", "").lower() == "websocket":
            socket = web.WebSocketResponse()
            await socket.prepare(request)
            async for frame in socket:
                await socket.send_str(json.dumps({"echo": json.loads(frame.data)}))
            return socket
        return web.json_response(
            {"error": {"code": "conflict", "message": "finished"}}, status=409, headers={"Allow": "POST"}
        )


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"127.0.0.1:{port}"


def through_proxy(scenario) -> tuple[Upstream, Any]:
    async def main():
        upstream = Upstream()
        up_runner, up_host = await serve(upstream.application())
        endpoint = Endpoint(f"http://{up_host}/v1", f"ws://{up_host}/v1", SIGNER)
        proxy_runner, proxy_host = await serve(ConsoleProxy(endpoint).application())
        try:
            async with aiohttp.ClientSession() as session:
                return upstream, await scenario(session, f"http://{proxy_host}")
        finally:
            await proxy_runner.cleanup()
            await up_runner.cleanup()

    return asyncio.run(asyncio.wait_for(main(), 20))


def assert_signed(headers: dict[str, str]) -> None:
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "token"


def test_api_calls_are_forwarded_signed_and_answered_as_the_stack_answered():
    async def scenario(session, url):
        async with session.post(f"{url}/graph/run/r1/cancel?x=1", json={"a": 1}) as response:
            return response.status, dict(response.headers), await response.json()

    upstream, (status, headers, body) = through_proxy(scenario)

    # THEN the stack got the request under its stage, with the body, signed
    [seen] = upstream.requests
    assert (seen["method"], seen["path"], json.loads(seen["body"])) == (
        "POST",
        "/v1/graph/run/r1/cancel?x=1",
        {"a": 1},
    )
    assert_signed(seen["headers"])
    # AND the browser got the stack's answer
    assert status == 409 and body["error"]["code"] == "conflict" and headers["Allow"] == "POST"


TOKEN = "run-1.3.cDuHjBkOr1R1Ve7SqBBKtCAhYyyw2uBnjk6fQ1ss0sU"


def test_a_callback_answer_is_forwarded_signed_and_its_409_returned():
    # A waiting run's Approve/Reject: with CallbackAuth=IAM the stack needs the signature;
    # with CallbackAuth=TOKEN it ignores it (the token is the credential)
    async def scenario(session, url):
        answer = {"status": "rejected", "reason": "late"}
        async with session.post(f"{url}/callbacks/{TOKEN}", json=answer) as response:
            return response.status, await response.json()

    upstream, (status, body) = through_proxy(scenario)

    [seen] = upstream.requests
    assert (seen["method"], seen["path"]) == ("POST", f"/v1/callbacks/{TOKEN}")
    assert json.loads(seen["body"]) == {"status": "rejected", "reason": "late"}
    assert seen["headers"]["Content-Type"] == "application/json"
    assert_signed(seen["headers"])
    assert status == 409 and body == {"error": {"code": "conflict", "message": "finished"}}


def test_a_callback_token_stays_out_of_the_log_when_the_stack_is_unreachable(caplog):
    async def main():
        # a port nothing listens on: bound, then closed
        runner, host = await serve(web.Application())
        await runner.cleanup()
        endpoint = Endpoint(f"http://{host}/v1", f"ws://{host}/v1", SIGNER)
        proxy_runner, proxy_host = await serve(ConsoleProxy(endpoint).application())
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://{proxy_host}/callbacks/{TOKEN}?x=1"
                async with session.post(url, json={"status": "approved"}) as response:
                    return response.status, await response.json()
        finally:
            await proxy_runner.cleanup()

    with caplog.at_level(logging.WARNING, logger="flowforge.console"):
        status, body = asyncio.run(asyncio.wait_for(main(), 20))

    assert status == 502 and body["error"]["code"] == "unavailable"
    [record] = [r for r in caplog.records if r.name == "flowforge.console"]
    assert "/v1/callbacks/…?x=1" in record.getMessage()
    assert TOKEN not in caplog.text and TOKEN.rsplit(".", 1)[1] not in caplog.text


def test_websocket_is_joined_to_a_signed_connection_to_the_stack():
    async def scenario(session, url):
        async with session.ws_connect(url.replace("http", "ws", 1) + "/ws") as socket:
            await socket.send_str(json.dumps({"action": "subscribe", "run_id": "r1"}))
            return json.loads((await socket.receive()).data)

    upstream, reply = through_proxy(scenario)

    assert reply == {"echo": {"action": "subscribe", "run_id": "r1"}}
    [handshake] = upstream.requests
    assert handshake["path"] == "/v1"
    assert_signed(handshake["headers"])


def test_stopping_the_proxy_closes_the_browsers_sockets_at_once():
    # A console tab left open must not hold `flowforge console` up when it stops (aiohttp
    # waits for open handlers, up to a minute, unless the sockets are closed on shutdown)
    async def main():
        upstream = Upstream()
        up_runner, up_host = await serve(upstream.application())
        endpoint = Endpoint(f"http://{up_host}/v1", f"ws://{up_host}/v1", SIGNER)
        proxy_runner = web.AppRunner(ConsoleProxy(endpoint).application(), shutdown_timeout=30)
        await proxy_runner.setup()
        site = web.TCPSite(proxy_runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(f"ws://127.0.0.1:{port}/ws") as socket,
            ):
                await socket.send_str(json.dumps({"action": "subscribe", "run_id": "r1"}))
                await socket.receive()  # joined to the stack
                started = asyncio.get_running_loop().time()
                await proxy_runner.cleanup()
                elapsed = asyncio.get_running_loop().time() - started
                closing = await socket.receive()
                return elapsed, closing.type
        finally:
            await up_runner.cleanup()

    elapsed, closing = asyncio.run(asyncio.wait_for(main(), 60))

    assert elapsed < 5
    assert closing in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


def test_console_pages_and_assets_are_served_here_without_a_stage():
    async def scenario(session, url):
        async with (
            session.get(f"{url}/console/runs/r1") as page,
            session.get(f"{url}/console/assets/graph.js") as js,
        ):
            return page.status, await page.text(), js.status, js.headers["Content-Type"]

    upstream, (status, html, js_status, js_type) = through_proxy(scenario)

    assert status == 200 and 'data-base=""' in html and 'src="/console/assets/console.js"' in html
    assert js_status == 200 and js_type.startswith("text/javascript")
    assert upstream.requests == []


def test_a_deployed_stack_without_a_websocket_url_is_refused():
    with pytest.raises(ClientError, match="--ws-url"):
        ConsoleProxy(Endpoint("https://abc.execute-api.eu-west-1.amazonaws.com/v1", None, SIGNER))
