"""``flowforge console``: the web console for a deployed stack, on this machine.

A browser cannot sign requests with SigV4, and a deployed stack's HTTP API and WebSocket
``$connect`` require it (AuthMode=IAM). This server serves the console's pages and assets
(the same files the API function serves) and forwards everything else to the stack:
HTTP requests to the HTTP API, ``/ws`` to the WebSocket API, each signed with the user's
AWS credentials by :class:`flowforge.client.Signer`, exactly as the CLI signs. It listens
on 127.0.0.1 only: whoever reaches it acts with those credentials.

A waiting run's Approve and Reject post to ``/callbacks/{token}``, forwarded like the rest
and signed: a stack with CallbackAuth=IAM needs the signature, one with CallbackAuth=TOKEN
(the token is the credential) ignores it. The token never appears in what this server logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from engine.errors import NotFoundError
from flowforge.client import HTTP_TIMEOUT_S, ClientError, Endpoint
from flowforge.local.gateway import shown_path
from functions.api import console as pages

log = logging.getLogger("flowforge.console")

#: Request headers passed on to the stack (the rest are the browser's own business).
_FORWARDED = ("Content-Type", "Accept")
#: Response headers passed back to the browser.
_RETURNED = ("Content-Type", "Allow", "Retry-After")
_PAGES = ("/console", "/console/edit")
_PAGE_PREFIXES = ("/console/graphs/", "/console/runs/")
_ASSETS = "/console/assets/"


class ConsoleProxy:
    """The aiohttp application: console files from here, the API from ``endpoint``."""

    def __init__(self, endpoint: Endpoint) -> None:
        if endpoint.ws is None:
            raise ClientError(
                "flowforge console needs the WebSocket API's URL for live runs: pass --ws-url or set "
                "FLOWFORGE_WS_URL (the stack output WebSocketUrl)"
            )
        self.endpoint = endpoint
        self._session: aiohttp.ClientSession | None = None
        self._sockets: set[web.WebSocketResponse] = set()

    def application(self) -> web.Application:
        app = web.Application(client_max_size=6 * 1024 * 1024)  # the API takes up to 5.5 MiB
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        app.on_startup.append(self._open)
        app.on_shutdown.append(self._close_sockets)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, app: web.Application) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))

    async def _close_sockets(self, app: web.Application) -> None:
        """Close the browsers' sockets: else a stop waits for each open tab's handler."""
        for socket in list(self._sockets):
            await socket.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"console stopping")

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.headers.get("Upgrade", "").lower() == "websocket" and path == "/ws":
            return await self.websocket(request)
        if request.method == "GET" and (path in _PAGES or path.startswith(_PAGE_PREFIXES)):
            return web.Response(
                text=pages.render_shell("", None),
                content_type="text/html",
                headers={"Cache-Control": "no-store", "Content-Security-Policy": pages.POLICY},
            )
        if request.method == "GET" and path.startswith(_ASSETS):
            try:
                text, content_type = pages.asset(path.removeprefix(_ASSETS))
            except NotFoundError:
                return web.json_response(
                    {"error": {"code": "not_found", "message": "no such asset"}}, status=404
                )
            return web.Response(body=text.encode(), headers={"Content-Type": content_type})
        return await self.forward(request)

    async def forward(self, request: web.Request) -> web.Response:
        """The request, signed, to the HTTP API; its answer back as it came."""
        assert self._session is not None
        url = self.endpoint.http + request.rel_url.path_qs
        body = await request.read()
        headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
        if self.endpoint.signer is not None:
            headers = self.endpoint.signer.headers(request.method, url, body, headers)
        try:
            async with self._session.request(
                request.method, url, data=body or None, headers=headers
            ) as upstream:
                payload = await upstream.read()
                returned = {name: upstream.headers[name] for name in _RETURNED if name in upstream.headers}
                return web.Response(status=upstream.status, body=payload, headers=returned)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "%s %s: %s", request.method, shown_path(url), shown_path(str(exc) or type(exc).__name__)
            )
            message = f"cannot reach {self.endpoint.http}: {exc or type(exc).__name__}"
            return web.json_response({"error": {"code": "unavailable", "message": message}}, status=502)

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        """The browser's socket, joined to a signed connection to the WebSocket API."""
        assert self._session is not None and self.endpoint.ws is not None
        browser = web.WebSocketResponse(heartbeat=30)
        await browser.prepare(request)
        self._sockets.add(browser)
        url = self.endpoint.ws
        headers = {}
        if self.endpoint.signer is not None:
            headers = self.endpoint.signer.headers("GET", url.replace("wss://", "https://", 1))
        try:
            async with self._session.ws_connect(url, headers=headers, heartbeat=30) as stack:
                await _join(browser, stack)
        except (aiohttp.ClientError, aiohttp.WSServerHandshakeError) as exc:
            log.warning("WebSocket %s: %s", url, exc)
        finally:
            self._sockets.discard(browser)
        await browser.close()
        return browser


async def _join(browser: web.WebSocketResponse, stack: aiohttp.ClientWebSocketResponse) -> None:
    """Relay text frames both ways until either side closes."""

    async def relay(source: Any, target: Any) -> None:
        async for frame in source:
            if frame.type == WSMsgType.TEXT:
                await target.send_str(frame.data)
            elif frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                return

    tasks = [asyncio.ensure_future(relay(browser, stack)), asyncio.ensure_future(relay(stack, browser))]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await stack.close()


def serve(endpoint: Endpoint, host: str, port: int) -> None:
    """Serve until Ctrl-C, printing where."""
    proxy = ConsoleProxy(endpoint)
    print(
        f"FlowForge console for {endpoint.http}: http://{host}:{port}/console  (Ctrl-C to stop)", flush=True
    )
    web.run_app(proxy.application(), host=host, port=port, print=None)
