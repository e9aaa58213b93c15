"""The commands that talk to a stack over its HTTP and WebSocket APIs: ``graph``, ``run``,
``state``, ``logs``, ``cancel``, ``redrive`` and ``validate --endpoint`` (flowforge/client.py, follow.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowforge.inputs import (
    EXIT_CONFLICT,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    parse_json,
    read_state,
    read_text,
)
from flowforge.outcome import run_summary


def _endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="the HTTP API: FLOWFORGE_ENDPOINT, else the local stack (http://127.0.0.1:3000); "
        "a deployed stack's URL is signed with SigV4 from your AWS credentials",
    )
    parser.add_argument(
        "--ws-url",
        metavar="URL",
        help="the WebSocket API for --follow (FLOWFORGE_WS_URL; the stack output WebSocketUrl); "
        "without it a deployed stack is followed by polling",
    )
    parser.add_argument(
        "--sign",
        action="store_true",
        help="sign requests to a local stack too (FLOWFORGE_SIGN=1), for one started with --auth iam",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output (JSON lines)")


def _full_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--full",
        action="store_true",
        help="print the whole run (state and logs) as JSON, offloaded values fetched (`flowforge "
        "state`); by default the outcome and the state keys the run changed",
    )


def _print_run(view: dict[str, Any], args: argparse.Namespace, *, outcome: bool = True) -> None:
    """The run as asked: one JSON line (--json), indented JSON (--full), or a summary."""
    if args.json or args.full:
        _print_json(view, compact=args.json)
    else:
        print(run_summary(view, outcome=outcome))


def api_command(body: Callable[[Any, argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """Run ``body(api, args)`` against the endpoint; API and connection errors in one line."""

    async def call(args: argparse.Namespace) -> int:
        from flowforge.client import Endpoint, FlowForgeClient

        async with FlowForgeClient(Endpoint.resolve(args.endpoint, args.ws_url, args.sign)) as api:
            return await body(api, args)

    def run(args: argparse.Namespace) -> int:
        from flowforge import client  # deferred: aiohttp is only for these commands

        try:
            return asyncio.run(call(args))
        except client.ApiError as exc:
            print(f"flowforge {args.command.name}: error: {exc}", file=sys.stderr)
            for problem in exc.details if isinstance(exc.details, list) else []:
                where = problem.get("path") if isinstance(problem, dict) else None
                text = problem.get("message") if isinstance(problem, dict) else problem
                print(f"  {where}: {text}" if where else f"  {text}", file=sys.stderr)
            if exc.status == 409:
                return EXIT_CONFLICT
            return EXIT_USAGE if 400 <= exc.status < 500 else EXIT_RUN_FAILED
        except client.ClientError as exc:
            print(f"flowforge {args.command.name}: error: {exc}", file=sys.stderr)
            return EXIT_RUN_FAILED
        except KeyboardInterrupt:
            return 130

    return run


def _print_json(value: Any, compact: bool) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=None if compact else 2))


def graph_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="validate and store a graph file; prints its graph_id")
    create.add_argument("file", metavar="GRAPH.json", help="the graph definition")
    create.set_defaults(action="create")
    listing = actions.add_parser("list", help="the stored graphs, newest first")
    listing.set_defaults(action="list")
    for sub in (create, listing):
        _endpoint_arguments(sub)


async def graph_command(api: Any, args: argparse.Namespace) -> int:
    if args.action == "create":
        created = await api.create_graph(
            parse_json(read_text(args.file, "graph file"), f"graph file {args.file!r}")
        )
        if args.json:
            _print_json(created, compact=True)
        else:
            print(created["graph_id"])
        return EXIT_OK
    for graph in await api.list_graphs():
        if args.json:
            _print_json(graph, compact=True)
        else:
            print(f"{graph['graph_id']}  {graph['created_at']}  {graph.get('name') or '-'}")
    return EXIT_OK


def run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph_id", metavar="GRAPH_ID", help="from `flowforge graph create` or `graph list`")
    parser.add_argument("--state", metavar="STATE", help="initial state: a JSON file, or inline JSON '{...}'")
    parser.add_argument("--background", action="store_true", help="print the run_id and return at once")
    parser.add_argument("--follow", action="store_true", help="show each node live as the run goes")
    _endpoint_arguments(parser)
    _full_argument(parser)


async def run_command(api: Any, args: argparse.Namespace) -> int:
    from flowforge.follow import Display, show

    state = read_state(args.state)
    status, body = await api.start_run(args.graph_id, state, background=args.background or args.follow)
    if args.follow:
        display = Display(as_json=args.json)
        if not args.json:
            display.line(f"run {body['run_id']}")
        done = await show(api.follow(body["run_id"]), display)
        if not args.json:
            _print_run(await api.get_state(body["run_id"]), args, outcome=False)
        return EXIT_OK if done.get("status") == "completed" else EXIT_RUN_FAILED
    if args.background:
        if args.json:
            _print_json(body, compact=True)
        else:
            print(body["run_id"])
        return EXIT_OK
    view = body if status == 200 else await api.wait(body["run_id"])
    _print_run(view, args)
    return EXIT_OK if view["status"] in ("completed", "waiting") else EXIT_RUN_FAILED


def run_id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID")
    _endpoint_arguments(parser)


def state_arguments(parser: argparse.ArgumentParser) -> None:
    run_id_arguments(parser)
    _full_argument(parser)


async def state_command(api: Any, args: argparse.Namespace) -> int:
    view = await api.get_state(args.run_id)
    if args.full:  # offloaded values too, each through GET /graph/state/{run_id}/values/{key}
        view["state"] = await api.resolved_state(args.run_id, view.get("state") or {})
    _print_run(view, args)
    return EXIT_OK


def logs_arguments(parser: argparse.ArgumentParser) -> None:
    run_id_arguments(parser)
    parser.add_argument("--follow", action="store_true", help="keep showing entries until the run ends")


async def logs_command(api: Any, args: argparse.Namespace) -> int:
    from flowforge.follow import Display, show

    display = Display(as_json=args.json)
    if args.follow:
        done = await show(api.follow(args.run_id), display)
        return EXIT_OK if done.get("status") == "completed" else EXIT_RUN_FAILED
    steps = 0
    async for view in api.state_pages(args.run_id):  # printed as the pages come
        for entry in view.get("logs") or []:
            display.message({"run_id": args.run_id, **entry})
            steps += 1
    if not args.json:
        display.line(f"{view['status']} ({steps} steps)")
    return EXIT_OK


async def cancel_command(api: Any, args: argparse.Namespace) -> int:
    """Cancel a running run; a run that already finished is exit 3 (the API's 409)."""
    view = await api.cancel(args.run_id)
    if args.json:
        _print_json(view, compact=True)
    else:
        print(f"{args.run_id}: {view['status']}")
    return EXIT_OK


def redrive_arguments(parser: argparse.ArgumentParser) -> None:
    run_id_arguments(parser)
    parser.add_argument(
        "--patch",
        metavar="JSON",
        help="state keys to set before the failed node runs again: a JSON file, or inline "
        'JSON such as \'{"url": "https://…"}\'',
    )
    parser.add_argument("--follow", action="store_true", help="show each node live until the run ends again")
    _full_argument(parser)


async def redrive_command(api: Any, args: argparse.Namespace) -> int:
    """Resume a failed run at the node that failed; exit 3 if it had not failed (the API's 409)."""
    from flowforge.follow import Display, show

    patch = read_state(args.patch, "--patch")
    view = await api.redrive(args.run_id, patch)
    if not args.follow:
        if args.json:
            _print_json(view, compact=True)
        else:
            print(
                f"{args.run_id}: {view['status']} again at {view['current_node']} (redrive {view['redrive_count']})"
            )
        return EXIT_OK
    # From the redrive's own entry (the step before the node's): what happened since.
    done = await show(api.follow(args.run_id, after=view["step"] - 2), Display(as_json=args.json))
    if not args.json:
        _print_run(await api.get_state(args.run_id), args, outcome=False)
    return EXIT_OK if done.get("status") == "completed" else EXIT_RUN_FAILED


async def validate_remotely(api: Any, args: argparse.Namespace) -> int:
    definition = parse_json(read_text(args.graph, "graph file"), f"graph file {args.graph!r}")
    verdict = (await api.request("POST", "/graph/validate", definition))[1]
    for problem in verdict["problems"]:
        print(
            f"{problem['path']}: {problem['message']}" if problem["path"] else problem["message"],
            file=sys.stderr,
        )
    if not verdict["valid"]:
        return EXIT_USAGE
    name = definition.get("name") or Path(args.graph).stem
    count = len(definition["nodes"])
    print(f"ok: {name} ({count} node{'s' if count != 1 else ''}) on {api.endpoint.http}")
    return EXIT_OK
