"""The web console: a page shell and static assets shipped with the API function.

Every console page is the same HTML shell (``static/console.html``); the browser script
draws the page its path names and calls the HTTP API and the WebSocket API itself. The
shell carries the stage prefix (``/v1`` on AWS, nothing locally) and the WebSocket URL
(``FLOWFORGE_CONSOLE_WS_URL``; without it the script uses ``/ws`` on its own origin, as
the local stack and ``flowforge console`` serve it).
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from engine.errors import NotFoundError
from functions.runtime import current_app

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

STATIC = Path(__file__).with_name("static")
#: The assets the shell loads, with their content types (nothing else is served).
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "run.js": "text/javascript; charset=utf-8",
    "graph.js": "text/javascript; charset=utf-8",
    "dagre.min.js": "text/javascript; charset=utf-8",
}
#: Scripts and styles come from this origin only; the API and WebSocket calls too (or
#: the WebSocket API's own origin on AWS).
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'"
)

router = Router()


@cache
def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def render_shell(base: str, ws_url: str | None) -> str:
    """The console's HTML for a stage prefix (``""`` or ``"/v1"``) and WebSocket URL."""
    return (
        _read("console.html")
        .replace("__BASE__", html.escape(base, quote=True))
        .replace("__WS_URL__", html.escape(ws_url or "", quote=True))
    )


def asset(name: str) -> tuple[str, str]:
    """An asset's text and content type (NotFoundError for any other name)."""
    if name not in ASSETS:
        raise NotFoundError(f"no console asset {name!r}")
    return _read(name), ASSETS[name]


def _shell() -> Response:
    stage = cast("APIGatewayProxyEventV2", router.current_event).request_context.stage
    base = "" if stage in ("$default", None) else f"/{stage}"
    body = render_shell(base, current_app().settings.console_ws_url)
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": POLICY}
    return Response(200, "text/html; charset=utf-8", body, headers=headers)


@router.get("/console", include_in_schema=False)
def console_home():
    return _shell()


@router.get("/console/edit", include_in_schema=False)
def console_editor():
    return _shell()


@router.get("/console/graphs/<graph_id>", include_in_schema=False)
def console_graph(graph_id: str):
    return _shell()


@router.get("/console/runs/<run_id>", include_in_schema=False)
def console_run(run_id: str):
    return _shell()


@router.get("/console/assets/<name>", include_in_schema=False, compress=True)
def console_asset(name: str):
    text, content_type = asset(name)
    return Response(200, content_type, text, headers={"Cache-Control": "public, max-age=300"})
