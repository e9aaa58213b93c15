"""The FlowForge API client: HTTP and WebSocket over aiohttp.

Against the local stack (the default, ``http://127.0.0.1:3000``) requests go unsigned,
unless ``--sign`` or ``FLOWFORGE_SIGN=1`` asks for signing as on AWS (for a local stack
started with ``--auth iam``). Against a deployed stack (``--endpoint`` or
``FLOWFORGE_ENDPOINT``, e.g. ``https://abc.execute-api.eu-west-1.amazonaws.com/v1``)
every request, the WebSocket handshake included, is signed with SigV4 for
``execute-api`` with credentials from the standard AWS chain (environment, profile,
SSO, instance role), because the template's default AuthMode is IAM.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp

LOCAL_ENDPOINT = "http://127.0.0.1:3000"
_EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
#: Reconnects of a follow before giving up (each resumes after the last seq received).
FOLLOW_RECONNECTS = 5
POLL_INTERVAL_S = 1.0
HTTP_TIMEOUT_S = 60.0


class ClientError(Exception):
    """Something the user should read: one line, no traceback."""


class Unreachable(ClientError):
    """The endpoint did not answer at all."""


class ApiError(ClientError):
    """The API answered 4xx/5xx with its ``{"error": {"code", "message", "details"?}}``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Signer:
    """SigV4 for ``execute-api`` with credentials from the standard chain."""

    def __init__(self, credentials: Any, region: str) -> None:
        self.credentials = credentials
        self.region = region

    @classmethod
    def for_host(cls, host: str) -> Signer:
        import boto3  # deferred: only a deployed stack needs it

        session = boto3.session.Session()
        match = _EXECUTE_API_HOST.match(host)
        region = match[1] if match else session.region_name or "us-east-1"
        credentials = session.get_credentials()
        if credentials is None:
            raise ClientError(
                f"{host} needs SigV4-signed requests, but no AWS credentials were found "
                "(set AWS_PROFILE, run `aws sso login`, or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            )
        return cls(credentials, region)

    def headers(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> dict[str, str]:
        """``headers`` plus Authorization, X-Amz-Date (and the session token, if any)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
        SigV4Auth(self.credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(request)
        return dict(request.headers.items())


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the API is: its base URL, its WebSocket URL, and whether to sign."""

    http: str
    ws: str | None
    signer: Signer | None

    @classmethod
    def resolve(cls, endpoint: str | None = None, ws_url: str | None = None, sign: bool = False) -> Endpoint:
        """``endpoint``, else FLOWFORGE_ENDPOINT, else the local stack; a local stack's
        requests are signed only with ``sign`` or FLOWFORGE_SIGN=1."""
        sign = sign or os.environ.get("FLOWFORGE_SIGN", "").lower() in ("1", "true", "yes")
        http = (endpoint or os.environ.get("FLOWFORGE_ENDPOINT") or LOCAL_ENDPOINT).rstrip("/")
        parts = urlsplit(http)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"endpoint {http!r} must be an http(s) URL such as {LOCAL_ENDPOINT}")
        ws = ws_url or os.environ.get("FLOWFORGE_WS_URL")
        if _is_local(parts.hostname):
            # The local gateway serves the WebSocket API on the same port.
            return cls(
                http, ws or f"ws://{parts.netloc}/ws", Signer.for_host(parts.hostname) if sign else None
            )
        return cls(http, ws, Signer.for_host(parts.hostname))


class FlowForgeClient:
    """``async with FlowForgeClient(endpoint) as api: await api.create_graph(...)``."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FlowForgeClient:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use FlowForgeClient as an async context manager"
        return self._session

    def _unreachable(self, exc: Exception) -> Unreachable:
        hint = " — is `make run` running?" if self.endpoint.signer is None else ""
        os_error = getattr(exc, "os_error", None)
        if isinstance(os_error, ConnectionRefusedError):
            reason = "connection refused"
        else:
            reason = getattr(os_error, "strerror", None) or str(exc) or type(exc).__name__
        return Unreachable(f"cannot reach {self.endpoint.http} ({reason}){hint}")

    async def request(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """``(status, JSON body)``; ApiError for 4xx/5xx, Unreachable if nothing answered."""
        url = self.endpoint.http + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.endpoint.signer is not None:
            headers = self.endpoint.signer.headers(method, url, data, headers)
        try:
            async with self.session.request(method, url, data=data or None, headers=headers) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None
        except TimeoutError:
            raise Unreachable(f"{self.endpoint.http} did not answer within {HTTP_TIMEOUT_S:.0f} s") from None
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = None
        if status >= 400:
            raise _api_error(status, payload, text)
        return status, payload

    # -- the API -------------------------------------------------------------------------
    async def create_graph(self, definition: Any) -> dict[str, Any]:
        return (await self.request("POST", "/graph/create", definition))[1]

    async def list_graphs(self) -> list[dict[str, Any]]:
        """Every graph, newest first (all pages)."""
        graphs: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": 100}
        while True:
            page = (await self.request("GET", "/graphs", query=query))[1]
            graphs += page["graphs"]
            if not page.get("next_token"):
                return graphs
            query["next_token"] = page["next_token"]

    async def start_run(
        self, graph_id: str, state: dict[str, Any], *, background: bool
    ) -> tuple[int, dict[str, Any]]:
        """``(200, run view)`` when a foreground run finished, else ``(202, {run_id, ...})``.

        A finished run's view holds all its logs: the pages after the first are fetched.
        """
        status, body = await self.request(
            "POST", "/graph/run", {"graph_id": graph_id, "state": state, "background": background}
        )
        if status == 200:
            body = await self._with_every_page(body)
        return status, body

    async def get_state(
        self, run_id: str, *, after: int = -1, fields: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The run with every log entry after ``after`` (all pages), or only ``fields``
        (``?fields=``: no logs unless named)."""
        if fields is not None:
            query = {"fields": ",".join(fields)}
            return (await self.request("GET", f"/graph/state/{run_id}", query=query))[1]
        return await self._with_every_page(await self.state_page(run_id, after))

    async def state_page(self, run_id: str, after: int = -1) -> dict[str, Any]:
        """One answer of ``GET /graph/state``: the run and the page of logs after ``after``."""
        return (await self.request("GET", f"/graph/state/{run_id}", query={"after": after}))[1]

    async def state_pages(self, run_id: str, after: int = -1) -> AsyncIterator[dict[str, Any]]:
        """The run's log page by page, from ``after`` until a page reaches its last entry."""
        first = await self.state_page(run_id, after)
        yield first
        async for page in self._pages_after(run_id, first):
            yield page

    async def _pages_after(self, run_id: str, page: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        after = page.get("logs_next")
        while after is not None:
            previous = after
            page = await self.state_page(run_id, after)
            yield page
            after = page.get("logs_next")
            if after is not None and after <= previous:
                raise ClientError(f"the log pages of run {run_id} do not advance (logs_next {after})")

    async def _with_every_page(self, view: dict[str, Any]) -> dict[str, Any]:
        """``view`` with the logs of the pages after it; the run as of the last page read."""
        logs = list(view.get("logs") or [])
        async for page in self._pages_after(view["run_id"], view):
            logs += page.get("logs") or []
            view = page
        return {**view, "logs": logs, "logs_next": None}

    async def get_value(self, run_id: str, key: str) -> Any:
        """One value of the run's state, offloaded or not (``GET .../values/{key}``). A
        large offloaded value answers 303 to a presigned S3 URL, fetched here unsigned:
        the URL is its own credential."""
        url = f"{self.endpoint.http}/graph/state/{quote(run_id, safe='')}/values/{quote(key, safe='')}"
        headers = self.endpoint.signer.headers("GET", url) if self.endpoint.signer is not None else {}
        try:
            async with self.session.get(url, headers=headers, allow_redirects=False) as response:
                status, data = response.status, await response.read()
                location = response.headers.get("Location")
            if status == 303 and location:
                async with self.session.get(location) as response:
                    status, data = response.status, await response.read()
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None
        text = data.decode("utf-8", "replace")
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if status >= 400 or (payload is None and text != "null"):
            raise _api_error(status if status >= 400 else 502, payload, text)
        return payload

    async def resolved_state(self, run_id: str, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` (as ``GET /graph/state`` shows it) with each offloaded value, shown as
        ``{"$blob": {...}}``, fetched through the values route."""
        resolved = dict(state)
        for key, value in state.items():
            if isinstance(value, dict) and set(value) == {"$blob"}:
                resolved[key] = await self.get_value(run_id, key)
        return resolved

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return (await self.request("POST", f"/graph/run/{run_id}/cancel", {}))[1]

    async def redrive(self, run_id: str, state_patch: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"state_patch": state_patch} if state_patch else {}
        return (await self.request("POST", f"/graph/run/{run_id}/redrive", body))[1]

    async def wait(self, run_id: str) -> dict[str, Any]:
        """Poll until the run has finished or waits (a callback, a timer); its view with logs."""
        while True:
            # Only what decides: the state and the logs are fetched once, at the end.
            view = await self.get_state(run_id, fields=("status", "done"))
            if view["done"] or view["status"] == "waiting":
                return await self.get_state(run_id)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def follow(self, run_id: str, after: int = -1) -> AsyncIterator[dict[str, Any]]:
        """The run's log messages as they happen, ending with ``{"done": true, ...}``.

        Over the WebSocket API when its URL is known (reconnecting after the last seq
        received, so nothing is missed or repeated); otherwise by polling the state.
        """
        messages = (
            self._follow_socket(run_id, after) if self.endpoint.ws else self._follow_polling(run_id, after)
        )
        async for message in messages:
            yield message

    async def _follow_socket(self, run_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
        assert self.endpoint.ws is not None
        for _ in range(FOLLOW_RECONNECTS + 1):
            url = f"{self.endpoint.ws}?{urlencode({'run_id': run_id, 'after': after})}"
            async for message in self._refused_as_not_found(self._socket_messages(url), run_id):
                if isinstance(message.get("error"), dict) and "run_id" not in message:
                    error = message["error"]  # the request was refused, e.g. unknown run
                    raise ApiError(
                        400, error.get("code", "error"), error.get("message", ""), error.get("details")
                    )
                seq = message.get("seq")
                if isinstance(seq, int):
                    if seq <= after:
                        continue  # a resend after a reconnect
                    after = seq
                yield message
                if message.get("done"):
                    return
        raise ClientError(f"the WebSocket kept closing before run {run_id} finished")

    @staticmethod
    async def _refused_as_not_found(
        messages: AsyncIterator[dict[str, Any]], run_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        """A handshake refused with 404 is an unknown run: say so, as the HTTP API does."""
        try:
            async for message in messages:
                yield message
        except ApiError as exc:
            if exc.status == 404:
                raise ApiError(404, "not_found", f"run {run_id!r} not found") from None
            raise

    async def _socket_messages(self, url: str) -> AsyncIterator[dict[str, Any]]:
        headers = {}
        if self.endpoint.signer is not None:
            # The handshake is an HTTP GET of the same URL: sign it as such.
            http_url = re.sub(r"^ws(s?)://", r"http\1://", url)
            headers = self.endpoint.signer.headers("GET", http_url)
        try:
            async with self.session.ws_connect(url, headers=headers, heartbeat=30) as socket:
                async for frame in socket:
                    if frame.type == aiohttp.WSMsgType.TEXT:
                        yield json.loads(frame.data)
                    elif frame.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        return
        except aiohttp.WSServerHandshakeError as exc:
            raise ApiError(
                exc.status, "websocket_refused", f"the WebSocket refused to connect: {exc.message}"
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None

    async def _follow_polling(self, run_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
        while True:
            async for view in self.state_pages(run_id, after):
                for entry in view.get("logs") or []:
                    if entry["seq"] > after:
                        after = entry["seq"]
                        yield {"run_id": run_id, **entry}
            # The last page reaches the last entry stored after the run was read: once
            # that run is done, every entry has been yielded.
            if view["done"]:
                done = {"run_id": run_id, "done": True, "status": view["status"]}
                if view.get("error"):
                    done["error"] = view["error"]
                yield done
                return
            await asyncio.sleep(POLL_INTERVAL_S)


def _api_error(status: int, payload: Any, text: str) -> ApiError:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return ApiError(status, error.get("code", "error"), error.get("message", ""), error.get("details"))
    # API Gateway's own answers: {"message": "Not Found"}, "Forbidden" (unsigned or wrong region)...
    message = payload.get("message") if isinstance(payload, dict) else None
    return ApiError(status, "gateway", str(message or text.strip() or "no body"))
