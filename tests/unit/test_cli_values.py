"""``flowforge state <run_id> --full``: offloaded values fetched through the values route
(a small one answered inline, a large one by a 303 to a presigned URL, fetched unsigned)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from flowforge.cli import main

REF = {"$blob": {"sha256": "ab" * 32, "bytes": 50_002}}
STATE = {"n": 1, "mid": REF, "big": REF, "a key/é": REF}
VALUES = {"mid": "m" * 50_000, "a key/é": [1, 2]}
BIG = "b" * 2_000_000


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A stand-in API: GET /graph/state/r1 shows references; the values route answers."""
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            seen.append((path, self.headers.get("Authorization")))
            if path == "/graph/state/r1":
                self._json(
                    200,
                    {
                        "run_id": "r1",
                        "status": "completed",
                        "done": True,
                        "state": STATE,
                        "logs": [],
                        "logs_next": None,
                    },
                )
            elif path == "/graph/state/r1/values/big":
                self.send_response(303)
                self.send_header(
                    "Location",
                    f"http://127.0.0.1:{self.server.server_address[1]}/s3/object?X-Amz-Signature=x",
                )
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/s3/object":
                self._json(200, BIG)
            elif path.startswith("/graph/state/r1/values/") and unquote(path.rsplit("/", 1)[1]) in VALUES:
                self._json(200, VALUES[unquote(path.rsplit("/", 1)[1])])
            else:
                self._json(404, {"error": {"code": "not_found", "message": "run 'r1' has no state key"}})

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    thread.join(timeout=5)


def test_state_full_fetches_each_offloaded_value(endpoint, capsys):
    url, seen = endpoint

    assert main(["state", "r1", "--endpoint", url, "--full"]) == 0

    view = json.loads(capsys.readouterr().out)
    assert view["state"] == {"n": 1, "mid": VALUES["mid"], "big": BIG, "a key/é": [1, 2]}
    assert ("/graph/state/r1/values/a%20key%2F%C3%A9", None) in seen  # the key percent-encoded
    assert "/graph/state/r1/values/n" not in [path for path, _ in seen]  # inline: not fetched


def test_state_without_full_shows_the_references(endpoint, capsys):
    url, seen = endpoint

    assert main(["state", "r1", "--endpoint", url, "--json"]) == 0

    assert json.loads(capsys.readouterr().out)["state"] == STATE
    assert [path for path, _ in seen] == ["/graph/state/r1"]


def test_a_value_that_is_gone_is_a_one_line_error(endpoint, capsys):
    url, _ = endpoint
    STATE["gone"] = REF
    try:
        code = main(["state", "r1", "--endpoint", url, "--full"])
    finally:
        del STATE["gone"]

    assert code != 0
    assert capsys.readouterr().err.startswith("flowforge state: error: ")
