"""The local API Gateway: HTTP API, WebSocket API and the ``@connections`` management API
on one aiohttp server.

- HTTP: requests matching a template route become payload 2.0 events for that route's
  function; anything else is API Gateway's own ``404 {"message": "Not Found"}``, so a
  route missing from template.yaml fails locally as it would on AWS.
- WebSocket at ``/``, ``/ws`` and the seed's ``/ws/logs/{run_id}`` (which connects with
  ``run_id`` in the query, and is closed normally once that run's ``done`` was sent):
  ``$connect`` decides whether the upgrade happens, messages are
  routed by the template's ``RouteSelectionExpression``, ``$disconnect`` follows a close.
- ``POST|GET|DELETE /@connections/{id}`` (also under ``/{stage}/``) is what boto3's
  ``apigatewaymanagementapi`` client calls with ``endpoint_url`` pointed here: it
  delivers to the live socket, or answers 410 GoneException (closed, unknown, or still
  in ``$connect``, as on AWS) and 413 over 128 KB.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import WSCloseCode, WSMsgType, web
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HeadersDict
from botocore.exceptions import ReadTimeoutError
from botocore.handlers import BUILTIN_HANDLERS

from flowforge.local import events
from flowforge.local.aws import ResponseBody, request_bytes
from flowforge.local.lambdas import InvocationError, LocalFunction
from flowforge.local.sigv4 import AuthError, KeyRing, Principal, SignedRequest
from flowforge.local.template import HttpRoute

log = logging.getLogger("flowforge.local")

#: API Gateway quotas the local gateway enforces.
HTTP_INTEGRATION_TIMEOUT_S = 30.0
MAX_HTTP_BODY = 10 * 1024 * 1024
#: The request line and header values together (an HTTP API's quota: a longer request is
#: refused before any route, "Total combined size of request line and header values").
MAX_REQUEST_LINE_AND_HEADERS = 10_240
#: What the HTTP parser reads of one line before it gives up with a plain-text 400: far
#: above the quota, so that a request over it gets the gateway's JSON answer instead.
PARSER_LINE_LIMIT = 128 * 1024
MAX_WS_MESSAGE = 128 * 1024
#: How long an in-process push waits for the loop: the push client's read timeout
#: (functions/aws/push.py), after which botocore would have given up too.
PUSH_TIMEOUT_S = 5.0
_CONNECTIONS = re.compile(r"^(?:/[^/@]+)?/@connections/(?P<id>[^/]+)$")
_WS_LOGS = re.compile(r"^/ws/logs/(?P<run_id>[^/]+)$")
#: A callback's token in a URL: a credential, so kept out of log lines.
_TOKEN = re.compile(r"(/callbacks/)[^/?#]+")


def shown_path(url: str) -> str:
    """``url`` (or a path) as a log line may show it: a callback token replaced by an ellipsis."""
    return _TOKEN.sub(r"\1…", url)


_WS_PATHS = ("/", "/ws")
_HOP_BY_HOP = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive", "upgrade"})


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: HttpRoute
    pattern: re.Pattern[str]
    literal_segments: int

    @property
    def route_key(self) -> str:
        return f"{self.route.method} {self.route.path}"


def compile_route(route: HttpRoute) -> CompiledRoute:
    """``/graph/{graph_id}`` → a regex with named groups; ``{proxy+}`` is greedy."""
    parts, literals = [], 0
    for segment in route.path.strip("/").split("/"):
        greedy = re.fullmatch(r"\{(\w+)\+\}", segment)
        param = re.fullmatch(r"\{(\w+)\}", segment)
        if greedy:
            parts.append(f"(?P<{greedy[1]}>.+)")
        elif param:
            parts.append(f"(?P<{param[1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
            literals += 1
    return CompiledRoute(route, re.compile("^/" + "/".join(parts) + "$"), literals)


class RouteTable:
    """HTTP routes, most specific first, as API Gateway picks them."""

    def __init__(self, routes: list[HttpRoute]) -> None:
        compiled = [compile_route(r) for r in routes]
        # Literal segments beat parameters, parameters beat greedy paths; ANY comes last.
        compiled.sort(key=lambda c: (-c.literal_segments, "+}" in c.route.path, c.route.method == "ANY"))
        self.routes = compiled

    def match(self, method: str, path: str) -> tuple[CompiledRoute, dict[str, str]] | None:
        for compiled in self.routes:
            if compiled.route.method not in (method, "ANY"):
                continue
            found = compiled.pattern.match(path)
            if found:
                return compiled, found.groupdict()
        return None


def select_route(body: str | bytes, expression: str, routes: Mapping[str, Any]) -> str:
    """The route key for a message: ``$request.body.<path>`` if it names a route, else $default."""
    prefix = "$request.body."
    if not isinstance(body, str) or not expression.startswith(prefix):
        return "$default"
    try:
        value: Any = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return "$default"
    for part in expression[len(prefix) :].split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, str) and value in routes else "$default"


def _json_response(status: int, payload: Any, error_type: str | None = None) -> web.Response:
    headers = {"x-amzn-RequestId": events.new_request_id()}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
    return web.json_response(payload, status=status, headers=headers)


def _refusal(error: AuthError) -> web.Response:
    """API Gateway's answer to a request its IAM authorizer refused."""
    return _json_response(error.status, {"message": error.message}, error.error_type)


def request_size(request: web.BaseRequest) -> int:
    """Bytes of the request line (``GET /path?query HTTP/1.1``) and the header values."""
    line = len(request.method) + len(request.raw_path.encode()) + len(" HTTP/1.1") + 1
    return line + sum(len(value) for _, value in request.raw_headers)


def lambda_response(result: Any) -> web.Response:
    """A payload 2.0 function result → the HTTP response API Gateway would send."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # HTTP API's rule: a result without statusCode is a 200 JSON body.
        return web.Response(status=200, text=json.dumps(result), content_type="application/json")
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    response = web.Response(status=int(result["statusCode"]), body=data)
    response.content_type = "application/json"  # HTTP API's default; the function's header wins
    for name, value in (result.get("headers") or {}).items():
        if name.lower() not in _HOP_BY_HOP:
            response.headers[name] = str(value)
    for name, values in (result.get("multiValueHeaders") or {}).items():
        for value in values:
            response.headers.add(name, str(value))
    for cookie in result.get("cookies") or []:
        response.headers.add("Set-Cookie", cookie)
    return response


@dataclass(slots=True)
class Connection:
    client: events.WsClient
    socket: web.WebSocketResponse
    #: The run of the seed's per-run path (``/ws/logs/<run_id>``): once its ``done``
    #: message is sent, the server closes the socket normally (1000).
    run_id: str | None = None

    def ends_with(self, data: bytes) -> bool:
        """Whether ``data`` is the ``done`` message of this per-run connection's run."""
        if self.run_id is None or b'"done"' not in data:
            return False
        with contextlib.suppress(ValueError):
            message = json.loads(data)
            return (
                isinstance(message, dict)
                and message.get("done") is True
                and message.get("run_id") == self.run_id
            )
        return False


class Gateway:
    """The aiohttp application serving HTTP, WebSocket and ``@connections``."""

    def __init__(
        self,
        functions: Mapping[str, LocalFunction],
        http_routes: list[HttpRoute],
        ws_routes: Mapping[str, str],
        route_selection: str = "$request.body.action",
        cors: Mapping[str, Any] | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        """``keys``: verify SigV4 on every route and handshake with these key pairs (IAM
        auth); None leaves requests unchecked."""
        self.functions = functions
        self.keys = keys
        self.routes = RouteTable(http_routes)
        self.ws_routes = dict(ws_routes)
        self.route_selection = route_selection
        self.cors = cors
        self.connections: dict[str, Connection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_HTTP_BODY)
        # Any path, newlines included (API Gateway passes %0A in a path parameter along).
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.dispatch)
        app.on_shutdown.append(self._close_sockets)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        # Match the raw path: a connection id is base64, and its "/" arrives as %2F.
        connection = _CONNECTIONS.match(request.raw_path.partition("?")[0])
        if connection:
            return await self.manage_connection(request, unquote(connection["id"]))
        if request.headers.get("Upgrade", "").lower() == "websocket":
            logs = _WS_LOGS.match(request.path)
            if request.path in _WS_PATHS or logs:
                return await self.websocket(request, logs["run_id"] if logs else None)
        if request.method == "OPTIONS" and self.cors and "Access-Control-Request-Method" in request.headers:
            return self._preflight(request)
        return await self.http(request)

    # -- HTTP API ------------------------------------------------------------------------
    async def http(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        response = await self._http(request)
        elapsed_ms = (time.monotonic() - started) * 1000
        log.info(
            "%s %s → %s (%.0f ms)", request.method, shown_path(request.path_qs), response.status, elapsed_ms
        )
        return response

    async def _http(self, request: web.Request) -> web.Response:
        if request_size(request) > MAX_REQUEST_LINE_AND_HEADERS:
            return web.json_response({"message": "Request-URI Too Long"}, status=414)
        matched = self.routes.match(request.method, request.path)
        if matched is None:
            return web.json_response({"message": "Not Found"}, status=404)
        compiled, params = matched
        body = await request.read()
        raw_path, _, raw_query = request.raw_path.partition("?")
        try:
            principal = self._authenticate(request, body)
        except AuthError as exc:
            return _refusal(exc)
        event = events.http_event(
            events.HttpRequest(
                method=request.method,
                path=raw_path,
                raw_query=raw_query,
                query=list(request.query.items()),
                headers=list(request.headers.items()),
                body=body,
                source_ip=request.remote or "127.0.0.1",
                protocol=f"HTTP/{request.version.major}.{request.version.minor}",
            ),
            route_key=compiled.route_key,
            path_parameters=params,
            domain=request.host,
            authorizer=principal.http_authorizer() if principal else None,
        )
        function = self.functions[compiled.route.function]
        try:
            result = await asyncio.wait_for(
                asyncio.shield(function.invoke(event)), HTTP_INTEGRATION_TIMEOUT_S
            )
        except TimeoutError:
            return web.json_response({"message": "Service Unavailable"}, status=503)
        except InvocationError:
            return web.json_response({"message": "Internal Server Error"}, status=500)
        response = lambda_response(result)
        self._add_cors(request, response)
        return response

    def _authenticate(self, request: web.Request, body: bytes) -> Principal | None:
        """The request's verified signer (None with auth off); AuthError if refused."""
        if self.keys is None:
            return None
        raw_path, _, raw_query = request.raw_path.partition("?")
        signed = SignedRequest(request.method, raw_path, raw_query, list(request.headers.items()), body)
        return self.keys.verify(signed)

    def _preflight(self, request: web.Request) -> web.Response:
        assert self.cors is not None
        response = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = ",".join(self.cors.get("AllowMethods", ["*"]))
        response.headers["Access-Control-Allow-Headers"] = ",".join(self.cors.get("AllowHeaders", ["*"]))
        response.headers["Access-Control-Max-Age"] = str(self.cors.get("MaxAge", 0))
        self._add_cors(request, response)
        return response

    def _add_cors(self, request: web.Request, response: web.Response) -> None:
        origin = request.headers.get("Origin")
        if self.cors and origin and "Access-Control-Allow-Origin" not in response.headers:
            allowed = self.cors.get("AllowOrigins", [])
            if "*" in allowed or origin in allowed:
                response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin

    # -- WebSocket API -------------------------------------------------------------------
    async def websocket(self, request: web.Request, run_id: str | None) -> web.StreamResponse:
        try:
            principal = self._authenticate(request, b"")
        except AuthError as exc:
            log.info("WebSocket %s → %s (%s)", request.path_qs, exc.status, exc.error_type)
            return _refusal(exc)
        client = events.WsClient(
            connection_id=events.new_connection_id(),
            source_ip=request.remote or "127.0.0.1",
            user_agent=request.headers.get("User-Agent", ""),
            domain=request.host,
        )
        query = list(request.query.items())
        if run_id is not None:
            query.append(("run_id", run_id))
        connect = events.ws_connect_event(
            client, request.headers.items(), query, principal.ws_identity() if principal else None
        )
        status, body = await self._connect(connect)
        log.info(
            "WebSocket %s → %s (connection %s)",
            request.path_qs,
            status if status >= 300 else 101,
            client.connection_id,
        )
        if not 200 <= status < 300:
            return body
        socket = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE, autoping=True)
        await socket.prepare(request)
        self.connections[client.connection_id] = Connection(client, socket, run_id)
        try:
            async for message in socket:
                client.last_active_at = datetime.now(UTC)
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._message(client, message.data)
        finally:
            self.connections.pop(client.connection_id, None)
            code = socket.close_code or 1005
            disconnect = events.ws_disconnect_event(
                client, code, "Client closed" if code < 1002 else "Going away"
            )
            self._spawn(self._invoke_route("$disconnect", disconnect))
        return socket

    async def _connect(self, event: dict[str, Any]) -> tuple[int, web.Response]:
        """``$connect``: its status, and the response a refused handshake gets (its body)."""
        name = self.ws_routes.get("$connect")
        if name is None:
            return 200, web.Response()
        try:
            result = await self.functions[name].invoke(event)
        except InvocationError:
            return 500, web.json_response({"message": "Internal server error"}, status=500)
        if isinstance(result, dict) and "statusCode" in result:
            return int(result["statusCode"]), lambda_response(result)
        return 200, web.Response()

    async def _message(self, client: events.WsClient, body: str | bytes) -> None:
        route_key = select_route(body, self.route_selection, self.ws_routes)
        await self._invoke_route(route_key, events.ws_message_event(client, route_key, body))

    async def _invoke_route(self, route_key: str, event: dict[str, Any]) -> None:
        """Invoke the function behind ``route_key``. Without a route response in the
        template, API Gateway sends the client nothing back: the function answers, if at
        all, through @connections (a failure is logged by LocalFunction)."""
        name = self.ws_routes.get(route_key)
        if name is not None:
            with contextlib.suppress(InvocationError):
                await self.functions[name].invoke(event)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- @connections --------------------------------------------------------------------
    async def manage_connection(self, request: web.Request, connection_id: str) -> web.Response:
        return await self.manage(request.method, connection_id, request.read)

    async def manage(
        self, method: str, connection_id: str, read: Callable[[], Awaitable[bytes]]
    ) -> web.Response:
        """One ``@connections`` request: ``read`` gives its body."""
        connection = self.connections.get(connection_id)
        if connection is None or connection.socket.closed:
            return _json_response(410, {"message": None}, "GoneException")
        if method == "GET":
            client = connection.client
            return _json_response(
                200,
                {
                    "connectedAt": client.connected_at.isoformat().replace("+00:00", "Z"),
                    "lastActiveAt": client.last_active_at.isoformat().replace("+00:00", "Z"),
                    "identity": {"sourceIp": client.source_ip, "userAgent": client.user_agent},
                },
            )
        if method == "DELETE":
            await connection.socket.close()
            return web.Response(status=204)
        if method != "POST":
            return _json_response(404, {"message": "Not Found"})
        data = await read()
        if len(data) > MAX_WS_MESSAGE:
            return _json_response(413, {"message": "Message too long"}, "PayloadTooLargeException")
        try:
            try:
                await connection.socket.send_str(data.decode("utf-8"))
            except UnicodeDecodeError:
                await connection.socket.send_bytes(data)
        except ConnectionError:
            return _json_response(410, {"message": None}, "GoneException")
        if connection.ends_with(data):  # not awaited: the close waits for the client's reply
            self._spawn(connection.socket.close(code=WSCloseCode.OK, message=b"run finished"))
        return web.Response(status=200)

    async def _close_sockets(self, app: web.Application) -> None:
        for connection in list(self.connections.values()):
            await connection.socket.close(code=1001, message=b"server shutdown")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)


class InProcessConnections:
    """``@connections`` requests from this process's boto3 (the broadcaster's pushes)
    answered by the gateway on its event loop, without HTTP.

    A botocore ``before-send`` handler, like the one that answers moto's requests
    in-process (aws.py): the request is still built and signed by botocore, and the
    answer parsed by it, but no socket, HTTP text or aiohttp request is made, and the
    event loop only writes the frame. Pushes were half of the broadcaster's time under
    load, most of it that round trip through the loop that also serves the gateway.
    Requests to other endpoints, and any made on the loop's own thread, go out as before.
    """

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop, netloc: str) -> None:
        self.gateway = gateway
        self.loop = loop
        self.netloc = netloc

    def register(self) -> None:
        """For sessions made from now on."""
        if ("before-send", self.answer) not in BUILTIN_HANDLERS:
            BUILTIN_HANDLERS.append(("before-send", self.answer))

    def unregister(self) -> None:
        with contextlib.suppress(ValueError):
            BUILTIN_HANDLERS.remove(("before-send", self.answer))

    def answer(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        url = urlsplit(request.url)
        connection = _CONNECTIONS.match(url.path) if url.netloc == self.netloc else None
        if connection is None or self.loop.is_closed() or _running_loop() is self.loop:
            return None
        data = request_bytes(request)

        async def read() -> bytes:
            return data

        future = asyncio.run_coroutine_threadsafe(
            self.gateway.manage(request.method, unquote(connection["id"]), read), self.loop
        )
        try:
            response = future.result(timeout=PUSH_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise ReadTimeoutError(endpoint_url=request.url) from None
        answered = response.body if isinstance(response.body, bytes | bytearray) else b""
        return AWSResponse(
            request.url, response.status, HeadersDict(dict(response.headers)), ResponseBody(answered)
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
