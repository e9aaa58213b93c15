"""The local gateway against stand-in handlers: HTTP API events, WebSocket routes, and the
``@connections`` API driven by boto3's own apigatewaymanagementapi client."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import boto3
import pytest
import urllib3.connection
from aiohttp.test_utils import TestServer

from flowforge.local.gateway import MAX_WS_MESSAGE, Gateway, InProcessConnections
from flowforge.local.lambdas import MAX_RESPONSE_BYTES, LocalFunction
from flowforge.local.template import HttpRoute

ROUTES = [
    HttpRoute("POST", "/graph/run/{run_id}/cancel", "Api"),
    HttpRoute("GET", "/graph/{graph_id}", "Api"),
    HttpRoute("GET", "/graphs", "Api"),
]
WS_ROUTES = {"$connect": "Ws", "$disconnect": "Ws", "$default": "Ws", "subscribe": "Ws"}


def management_client(url: str):
    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    return session.client("apigatewaymanagementapi", endpoint_url=url)


class StandIns:
    """Handlers that record their events; the WebSocket one answers through @connections."""

    def __init__(self) -> None:
        self.api_events: list[dict] = []
        self.ws_events: list[dict] = []
        self.url = ""

    def api(self, event, context):
        self.api_events.append(event)
        if "boom" in event["rawPath"]:
            raise RuntimeError("the handler crashed")
        if "sized" in event["rawPath"]:  # /graph/sized-N: a result of exactly N bytes of JSON
            size = int(event["rawPath"].rsplit("-", 1)[1])
            return {
                "statusCode": 200,
                "body": "x" * (size - len(json.dumps({"statusCode": 200, "body": ""}))),
            }
        assert context.get_remaining_time_in_millis() > 0
        body = {"route": event["routeKey"], "params": event.get("pathParameters")}
        return {
            "statusCode": 201,
            "headers": {"X-Handler": "api"},
            "body": json.dumps(body),
            "cookies": ["a=b"],
        }

    def ws(self, event, context):
        self.ws_events.append(event)
        context_ = event["requestContext"]
        if context_["routeKey"] == "$connect":
            refused = (event.get("queryStringParameters") or {}).get("deny")
            return {"statusCode": 403} if refused else {"statusCode": 200}
        if context_["eventType"] == "MESSAGE":
            reply = json.dumps({"route": context_["routeKey"], "body": event["body"]})
            management_client(self.url).post_to_connection(
                ConnectionId=context_["connectionId"], Data=reply.encode()
            )
        return {"statusCode": 200}


def gateway_for(stand_ins: StandIns) -> Gateway:
    functions = {
        "Api": LocalFunction("Api", stand_ins.api, timeout_s=5, concurrency=4),
        "Ws": LocalFunction("Ws", stand_ins.ws, timeout_s=5, concurrency=4),
    }
    return Gateway(functions, ROUTES, WS_ROUTES)


async def with_gateway(test):
    stand_ins = StandIns()
    gateway = gateway_for(stand_ins)
    server = TestServer(gateway.application(), host="127.0.0.1")
    await server.start_server()
    stand_ins.url = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as session:
            await test(session, stand_ins.url, stand_ins, gateway)
    finally:
        await server.close()


def run(test):
    asyncio.run(asyncio.wait_for(with_gateway(test), 20))


def test_a_template_route_reaches_its_function_as_a_v2_event():
    async def test(session, url, stand_ins, gateway):
        # WHEN a request matches a route with a path parameter
        async with session.post(f"{url}/graph/run/r-1/cancel?x=1", json={}) as response:
            body = await response.json()
            # THEN the function's response is what the client gets
            assert response.status == 201
            assert response.headers["X-Handler"] == "api"
            assert response.headers["Set-Cookie"].startswith("a=b")
        assert body == {"route": "POST /graph/run/{run_id}/cancel", "params": {"run_id": "r-1"}}
        (event,) = stand_ins.api_events
        assert event["rawQueryString"] == "x=1" and event["body"] == "{}"

    run(test)


def test_the_most_specific_route_wins():
    async def test(session, url, stand_ins, gateway):
        async with session.get(f"{url}/graphs") as response:
            assert (await response.json())["route"] == "GET /graphs"
        async with session.get(f"{url}/graph/g1") as response:
            assert (await response.json())["params"] == {"graph_id": "g1"}

    run(test)


def test_what_the_template_does_not_route_is_api_gateways_404_and_a_crash_is_a_500():
    async def test(session, url, stand_ins, gateway):
        for method, path in (("GET", "/nope"), ("DELETE", "/graphs"), ("GET", "/graphs/")):
            async with session.request(method, f"{url}{path}") as response:
                assert response.status == 404
                assert await response.json() == {"message": "Not Found"}
        async with session.get(f"{url}/graph/boom") as response:
            assert response.status == 500
            assert await response.json() == {"message": "Internal Server Error"}
        assert [e["rawPath"] for e in stand_ins.api_events] == ["/graph/boom"]

    run(test)


def test_a_response_over_lambdas_6_mb_limit_is_a_500_as_on_aws():
    async def test(session, url, stand_ins, gateway):
        async with session.get(f"{url}/graph/sized-{MAX_RESPONSE_BYTES}") as response:
            assert response.status == 200 and len(await response.read()) > 6_000_000
        async with session.get(f"{url}/graph/sized-{MAX_RESPONSE_BYTES + 1}") as response:
            assert response.status == 500
            assert await response.json() == {"message": "Internal Server Error"}

    run(test)


def test_websocket_messages_are_routed_by_action_and_answered_through_connections():
    async def test(session, url, stand_ins, gateway):
        async with session.ws_connect(f"{url}/ws/logs/run-7") as socket:
            await socket.send_str(json.dumps({"action": "subscribe", "run_id": "run-7"}))
            first = json.loads((await socket.receive(timeout=5)).data)
            await socket.send_str(json.dumps({"action": "unknown"}))
            second = json.loads((await socket.receive(timeout=5)).data)
            await socket.send_str("not json")
            third = json.loads((await socket.receive(timeout=5)).data)
        assert [first["route"], second["route"], third["route"]] == ["subscribe", "$default", "$default"]
        connect = stand_ins.ws_events[0]
        assert connect["requestContext"]["routeKey"] == "$connect"
        assert connect["queryStringParameters"] == {"run_id": "run-7"}
        deadline = time.monotonic() + 5
        while stand_ins.ws_events[-1]["requestContext"]["routeKey"] != "$disconnect":
            assert time.monotonic() < deadline, "no $disconnect after the client closed"
            await asyncio.sleep(0.05)
        assert not gateway.connections

    run(test)


def test_a_refused_connect_fails_the_handshake():
    async def test(session, url, stand_ins, gateway):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{url}/ws?deny=1")
        assert refused.value.status == 403
        assert not gateway.connections

    run(test)


@pytest.mark.parametrize("in_process", [False, True], ids=["over_http", "in_process"])
def test_connections_api_gone_too_large_get_and_delete(in_process, monkeypatch):
    async def test(session, url, stand_ins, gateway):
        if in_process:  # as the local stack's pushes go: no HTTP request, same answers
            pushes = InProcessConnections(gateway, asyncio.get_running_loop(), url.split("//", 1)[1])
            pushes.register()

            def no_socket(self, *args, **kwargs):
                raise AssertionError("an in-process @connections request opened a connection")

            monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", no_socket)
        client = management_client(url)
        if in_process:
            pushes.unregister()  # the client keeps it; sessions made from now on do not
        async with session.ws_connect(f"{url}/") as socket:
            (connection_id,) = gateway.connections
            info = await asyncio.to_thread(client.get_connection, ConnectionId=connection_id)
            assert info["Identity"]["SourceIp"] == "127.0.0.1"
            with pytest.raises(client.exceptions.PayloadTooLargeException):
                await asyncio.to_thread(
                    client.post_to_connection, ConnectionId=connection_id, Data=b"x" * (MAX_WS_MESSAGE + 1)
                )
            await asyncio.to_thread(client.post_to_connection, ConnectionId=connection_id, Data=b'{"ok": 1}')
            assert json.loads((await socket.receive(timeout=5)).data) == {"ok": 1}
            # The server closes the connection: the client sees the close.
            await asyncio.to_thread(client.delete_connection, ConnectionId=connection_id)
            assert (await socket.receive(timeout=5)).type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
            )
        with pytest.raises(client.exceptions.GoneException):
            await asyncio.to_thread(client.post_to_connection, ConnectionId=connection_id, Data=b"late")
        with pytest.raises(client.exceptions.GoneException):
            await asyncio.to_thread(client.post_to_connection, ConnectionId="never+/existed=", Data=b"x")

    run(test)


def test_the_per_run_path_closes_normally_after_its_runs_done_and_ws_stays_open():
    async def test(session, url, stand_ins, gateway):
        client = management_client(url)
        async with (
            session.ws_connect(f"{url}/ws/logs/run-7") as per_run,
            session.ws_connect(f"{url}/ws") as multi,
        ):
            ids = {c.run_id: i for i, c in gateway.connections.items()}
            done = json.dumps({"run_id": "run-7", "done": True, "status": "completed"}).encode()
            other = json.dumps({"run_id": "run-8", "done": True, "status": "completed"}).encode()
            # WHEN another run's done, then the path's own run's done reach the per-run socket,
            # and the same done reaches the multi-run socket
            for data in (other, done):
                await asyncio.to_thread(client.post_to_connection, ConnectionId=ids["run-7"], Data=data)
            await asyncio.to_thread(client.post_to_connection, ConnectionId=ids[None], Data=done)

            # THEN the per-run socket gets both, then a normal close
            assert json.loads((await per_run.receive(timeout=5)).data)["run_id"] == "run-8"
            assert json.loads((await per_run.receive(timeout=5)).data)["run_id"] == "run-7"
            closing = await per_run.receive(timeout=5)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.OK
            # AND the multi-run socket stays open
            assert json.loads((await multi.receive(timeout=5)).data)["done"] is True
            await multi.send_str(json.dumps({"action": "subscribe", "run_id": "run-9"}))
            assert json.loads((await multi.receive(timeout=5)).data)["route"] == "subscribe"

    run(test)


def test_a_path_parameter_with_a_newline_still_reaches_its_route():
    async def test(session, url, stand_ins, gateway):
        # WHEN a path parameter holds an encoded newline (as a fuzzer sends)
        async with session.get(f"{url}/graph/a%0Ab%0D") as response:
            # THEN the route's function answers it, as API Gateway would route it
            assert response.status == 201, await response.text()
            assert (await response.json())["params"] == {"graph_id": "a\nb\r"}

    run(test)


def test_a_callback_token_in_a_request_path_is_not_written_to_the_log(caplog):
    # GIVEN the gateway logging each request (--log-level INFO)
    caplog.set_level("INFO", logger="flowforge.local")
    token = "r1.2.c2VjcmV0LW1hYw"

    async def test(session, url, stand_ins, gateway):
        # WHEN a callback is answered (the route is unknown to this gateway: the log line is the same)
        async with session.post(f"{url}/callbacks/{token}/heartbeat?x=1", json={}) as response:
            assert response.status == 404

    run(test)
    # THEN the request is logged, its token (a credential) shown as an ellipsis
    lines = [r.getMessage() for r in caplog.records if "/callbacks/" in r.getMessage()]
    assert lines and all("/callbacks/…/heartbeat?x=1" in line for line in lines)
    assert token not in caplog.text
