"""The client and the CLI follow a run's log pages (``logs_next``) to the last one."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from flowforge.cli import main
from flowforge.client import POLL_INTERVAL_S, ClientError, Endpoint, FlowForgeClient


class PagedRun:
    """A finished run of ``entries`` steps whose API answers ``per_page`` entries a page."""

    def __init__(self, entries: int = 7, per_page: int = 3, stuck: bool = False) -> None:
        self.entries = entries
        self.per_page = per_page
        self.stuck = stuck  # a broken server: logs_next never advances
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def view(self, after: int) -> dict[str, Any]:
        logs = [
            {"seq": seq, "node": "n", "status": "ok", "attempt": 1, "result": {"i": seq}}
            for seq in range(after + 1, min(after + 1 + self.per_page, self.entries))
        ]
        more = bool(logs) and logs[-1]["seq"] < self.entries - 1
        return {
            "run_id": "r1",
            "status": "completed",
            "done": True,
            "step": self.entries,
            "state": {"answer": len(self.requests)},
            "error": None,
            "cost": {"usd": 4.2e-06, "estimate": True, "breakdown": {"dynamodb": {"usd": 4.2e-06}}},
            "logs": logs,
            "logs_next": (0 if self.stuck else logs[-1]["seq"]) if more else None,
        }

    def answer(self, method: str, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path, query))
        if (method, path) == ("POST", "/graph/run"):
            return 200, self.view(-1)
        if (method, path) == ("GET", "/graph/state/r1"):
            if query.get("logs") == "false":
                view = self.view(-1)
                del view["logs"], view["logs_next"]
                return 200, view
            return 200, self.view(int(query.get("after", "-1")))
        return 404, {"error": {"code": "not_found", "message": f"no route {method} {path}"}}

    def state_afters(self) -> list[int]:
        """The ``after`` of each request for a page of logs."""
        pages = [query for _, path, query in self.requests if path == "/graph/state/r1"]
        return [int(query.get("after", -1)) for query in pages if "logs" not in query]


def run_with_server(paged: PagedRun, scenario):
    async def handler(request: web.Request) -> web.Response:
        status, body = paged.answer(request.method, request.path, dict(request.query))
        return web.json_response(body, status=status)

    async def main_() -> Any:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with FlowForgeClient(Endpoint(f"http://127.0.0.1:{server.port}", None, None)) as api:
                return await scenario(api)
        finally:
            await server.close()

    return asyncio.run(asyncio.wait_for(main_(), 20))


def test_get_state_returns_every_entry_of_every_page():
    paged = PagedRun(entries=7, per_page=3)

    view = run_with_server(paged, lambda api: api.get_state("r1"))

    assert [e["seq"] for e in view["logs"]] == list(range(7)) and view["logs_next"] is None
    assert paged.state_afters() == [-1, 2, 5]
    assert view["state"] == {"answer": 3}  # the run as of the last page read


def test_a_foreground_run_answer_is_completed_with_the_pages_after_it():
    paged = PagedRun(entries=5, per_page=2)

    status, view = run_with_server(paged, lambda api: api.start_run("g1", {}, background=False))

    assert status == 200 and [e["seq"] for e in view["logs"]] == [0, 1, 2, 3, 4]
    assert paged.state_afters() == [1, 3]


def test_following_by_polling_reads_the_pages_at_once_and_ends_after_the_last_entry():
    paged = PagedRun(entries=8, per_page=3)

    async def follow(api):
        started = time.monotonic()
        messages = [m async for m in api.follow("r1")]
        return messages, time.monotonic() - started

    messages, took = run_with_server(paged, follow)

    assert [m.get("seq") for m in messages] == [*range(8), None]
    assert messages[-1] == {"run_id": "r1", "done": True, "status": "completed"}
    assert paged.state_afters() == [-1, 2, 5] and took < POLL_INTERVAL_S  # no wait between pages


def test_pages_that_do_not_advance_are_an_error_not_a_loop():
    paged = PagedRun(entries=7, per_page=3, stuck=True)

    with pytest.raises(ClientError, match="log pages of run r1 do not advance"):
        run_with_server(paged, lambda api: api.get_state("r1"))


# -- the CLI -------------------------------------------------------------------------------
@pytest.fixture
def paged_endpoint() -> Iterator[tuple[PagedRun, str]]:
    paged = PagedRun(entries=7, per_page=3)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            if self.command == "POST":
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body = paged.answer(self.command, parts.path, dict(parse_qsl(parts.query)))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield paged, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=5)


def test_flowforge_state_prints_every_entry(paged_endpoint, capsys):
    _, url = paged_endpoint

    assert main(["state", "r1", "--endpoint", url, "--json"]) == 0

    view = json.loads(capsys.readouterr().out)
    assert [e["seq"] for e in view["logs"]] == list(range(7)) and view["logs_next"] is None


def test_flowforge_state_prints_the_cost_estimate(paged_endpoint, capsys):
    _, url = paged_endpoint

    assert main(["state", "r1", "--endpoint", url]) == 0

    assert "  cost ≈ $0.0000042, an estimate (DynamoDB $0.0000042)" in capsys.readouterr().out.splitlines()


def test_flowforge_logs_prints_every_entry_page_by_page(paged_endpoint, capsys):
    paged, url = paged_endpoint

    assert main(["logs", "r1", "--endpoint", url, "--json"]) == 0

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seq"] for line in lines] == list(range(7))
    assert paged.state_afters() == [-1, 2, 5]


def test_flowforge_logs_counts_the_steps_of_every_page(paged_endpoint, capsys):
    _, url = paged_endpoint

    assert main(["logs", "r1", "--endpoint", url]) == 0

    assert capsys.readouterr().out.splitlines()[-1] == "completed (7 steps)"


def test_flowforge_run_in_the_foreground_prints_every_entry(paged_endpoint, capsys):
    _, url = paged_endpoint

    assert main(["run", "g1", "--endpoint", url, "--json"]) == 0

    view = json.loads(capsys.readouterr().out)
    assert [e["seq"] for e in view["logs"]] == list(range(7))
