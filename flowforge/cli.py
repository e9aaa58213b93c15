"""``flowforge``: the command line. ``flowforge COMMAND --help`` describes each command.

Each subcommand is a :class:`Command` — one function that declares its arguments and one
that runs it and returns the exit code — listed once, in :data:`COMMANDS`. A command
raises :class:`UsageError` for bad input: ``main`` prints it as one line on stderr and
exits 2, never with a traceback. Exit codes: 0 success, 1 the run failed (or the stack
cannot be reached), 2 bad input, an invalid graph or an unknown id, 3 the run had
already finished (``cancel``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import (
    CompiledGraph,
    FlowForgeError,
    GraphValidationError,
    compile_graph,
    registry,
    run_graph_sync,
)
from engine.errors import ToolsImportError
from engine.jsontext import json_problem
from flowforge.outcome import render_json, render_pretty, run_summary

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
#: The run is not in a state the command can act on: cancelling a finished run (409).
EXIT_CONFLICT = 3
#: Imported before every command that needs tools: the example workflows' package.
DEFAULT_TOOLS_PACKAGE = "workflows"


class UsageError(Exception):
    """Bad input on the command line (a missing file, invalid JSON, an unknown module)."""


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand: its name, one-line help, its arguments and what it does."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- inputs -------------------------------------------------------------------------------


def read_text(path: str, what: str) -> str:
    """The UTF-8 text of ``path``, or a :class:`UsageError` saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path!r}: no such file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path!r}: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{what} {path!r}: {exc.strerror or exc}") from None


def parse_json(text: str, where: str) -> Any:
    """JSON from a file or the command line; text UTF-8 cannot encode is refused (an
    escaped lone surrogate such as ``"\\ud800"``), with its path."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{where}: invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    problem = json_problem(value)
    if problem is not None:
        raise UsageError(f"{where}: {problem}")
    return value


def read_state(value: str | None) -> dict[str, Any]:
    """``--state``: inline JSON when it starts with ``{``, otherwise a JSON file's path."""
    if value is None:
        return {}
    if value.lstrip().startswith(("{", "[")):
        state = parse_json(value, "--state")
    else:
        state = parse_json(read_text(value, "--state file"), f"--state file {value!r}")
    if not isinstance(state, dict):
        raise UsageError(f"--state: must be a JSON object, not {type(state).__name__}")
    return state


def import_tools(modules: Sequence[str] = ()) -> None:
    """Import the default tools package, then each ``--tools`` module, to register tools.

    Modules are found in the current directory or on ``PYTHONPATH``. The default package
    is optional (a checkout without ``workflows/`` still validates graphs that name no
    example tools); a ``--tools`` module is not.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # modules written since the last import are found too
    try:
        registry.load_tools(modules, optional=(DEFAULT_TOOLS_PACKAGE,))
    except ToolsImportError as exc:  # a missing or broken user module is bad input
        raise UsageError(exc.message) from None


def load_graph(path: str) -> CompiledGraph:
    """Read and compile a graph file; an invalid graph raises GraphValidationError."""
    return compile_graph(parse_json(read_text(path, "graph file"), f"graph file {path!r}"))


def _add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", metavar="GRAPH.json", help="the graph definition")
    parser.add_argument(
        "--tools",
        metavar="MODULE",
        action="append",
        default=[],
        help="import MODULE (from the current directory or PYTHONPATH) to register its "
        "@tool and @condition functions; repeatable",
    )


# -- validate -----------------------------------------------------------------------------


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_graph_arguments(parser)
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="check against a stack's tools with POST /graph/validate (nothing is stored); "
        "a deployed stack's URL is signed with SigV4 from your AWS credentials",
    )
    parser.set_defaults(ws_url=None)


def validate(args: argparse.Namespace) -> int:
    """Check a graph; every problem is printed as ``path: message`` (exit 2)."""
    if args.endpoint:
        return _api_command(_validate_remotely)(args)
    import_tools(args.tools)
    graph = load_graph(args.graph)
    name = graph.name or Path(args.graph).stem
    count = len(graph.nodes)
    print(f"ok: {name} ({count} node{'s' if count != 1 else ''})")
    return EXIT_OK


async def _validate_remotely(api: Any, args: argparse.Namespace) -> int:
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


# -- console ------------------------------------------------------------------------------


def _console_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="the stack's HTTP API (FLOWFORGE_ENDPOINT; the stack output HttpApiUrl), else the local stack",
    )
    parser.add_argument(
        "--ws-url", metavar="URL", help="its WebSocket API (FLOWFORGE_WS_URL; the stack output WebSocketUrl)"
    )
    parser.add_argument("--port", type=int, default=8300, help="local port to serve on (default 8300)")


def console(args: argparse.Namespace) -> int:
    """Serve the web console on 127.0.0.1, forwarding its calls to the stack, signed."""
    from flowforge.client import ClientError, Endpoint
    from flowforge.console import serve

    try:
        serve(Endpoint.resolve(args.endpoint, args.ws_url), "127.0.0.1", args.port)
    except ClientError as exc:
        print(f"flowforge console: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(
            f"flowforge console: error: cannot listen on 127.0.0.1:{args.port} ({exc.strerror})",
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED
    return EXIT_OK


# -- run-local ----------------------------------------------------------------------------


def _run_local_arguments(parser: argparse.ArgumentParser) -> None:
    _add_graph_arguments(parser)
    parser.add_argument(
        "--state",
        metavar="STATE",
        help='initial state: a JSON file, or an inline JSON object such as \'{"text": "..."}\'',
    )
    parser.add_argument("--pretty", action="store_true", help="print a table of the log and the final state")
    parser.add_argument("--no-sleep", action="store_true", help="skip retry delays")


def run_local(args: argparse.Namespace) -> int:
    """Run a graph to the end in this process; exit 0 if it completed, 1 if it failed."""
    import_tools(args.tools)
    graph = load_graph(args.graph)
    state = read_state(args.state)
    options: dict[str, Any] = {"sleep": None} if args.no_sleep else {}
    try:
        result = run_graph_sync(graph, state, **options)
    except FlowForgeError as exc:  # the initial state is over the cap or not JSON
        raise UsageError(f"--state: {exc.message}") from None
    print(render_pretty(result) if args.pretty else render_json(result))
    return EXIT_OK if result.status == "completed" else EXIT_RUN_FAILED


# -- the local stack and the API client (flowforge/local/, client.py, follow.py) ---------


def _dev_arguments(parser: argparse.ArgumentParser) -> None:
    from flowforge.local.dev import add_arguments

    add_arguments(parser)


def dev(args: argparse.Namespace) -> int:
    """Serve the whole stack locally (moto, gateway, pollers) until Ctrl-C."""
    from flowforge.local.dev import run

    return run(args)


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
    parser.add_argument("--json", action="store_true", help="machine-readable output (JSON lines)")


def _full_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--full",
        action="store_true",
        help="print the whole run (state and logs) as JSON; by default the outcome and the "
        "state keys the run changed",
    )


def _print_run(view: dict[str, Any], args: argparse.Namespace, *, outcome: bool = True) -> None:
    """The run as asked: one JSON line (--json), indented JSON (--full), or a summary."""
    if args.json or args.full:
        _print_json(view, compact=args.json)
    else:
        print(run_summary(view, outcome=outcome))


def _api_command(body: Callable[[Any, argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """Run ``body(api, args)`` against the endpoint; API and connection errors in one line."""

    async def call(args: argparse.Namespace) -> int:
        from flowforge.client import Endpoint, FlowForgeClient

        async with FlowForgeClient(Endpoint.resolve(args.endpoint, args.ws_url)) as api:
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


def _graph_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="validate and store a graph file; prints its graph_id")
    create.add_argument("file", metavar="GRAPH.json", help="the graph definition")
    create.set_defaults(action="create")
    listing = actions.add_parser("list", help="the stored graphs, newest first")
    listing.set_defaults(action="list")
    for sub in (create, listing):
        _endpoint_arguments(sub)


async def _graph(api: Any, args: argparse.Namespace) -> int:
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


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph_id", metavar="GRAPH_ID", help="from `flowforge graph create` or `graph list`")
    parser.add_argument("--state", metavar="STATE", help="initial state: a JSON file, or inline JSON '{...}'")
    parser.add_argument("--background", action="store_true", help="print the run_id and return at once")
    parser.add_argument("--follow", action="store_true", help="show each node live as the run goes")
    _endpoint_arguments(parser)
    _full_argument(parser)


async def _run(api: Any, args: argparse.Namespace) -> int:
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
    return EXIT_OK if view["status"] == "completed" else EXIT_RUN_FAILED


def _run_id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID")
    _endpoint_arguments(parser)


def _state_arguments(parser: argparse.ArgumentParser) -> None:
    _run_id_arguments(parser)
    _full_argument(parser)


async def _state(api: Any, args: argparse.Namespace) -> int:
    _print_run(await api.get_state(args.run_id), args)
    return EXIT_OK


def _logs_arguments(parser: argparse.ArgumentParser) -> None:
    _run_id_arguments(parser)
    parser.add_argument("--follow", action="store_true", help="keep showing entries until the run ends")


async def _logs(api: Any, args: argparse.Namespace) -> int:
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


async def _cancel(api: Any, args: argparse.Namespace) -> int:
    """Cancel a running run; a run that already finished is exit 3 (the API's 409)."""
    view = await api.cancel(args.run_id)
    if args.json:
        _print_json(view, compact=True)
    else:
        print(f"{args.run_id}: {view['status']}")
    return EXIT_OK


# -- the command line ---------------------------------------------------------------------

#: Every subcommand, in the order ``flowforge --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("run-local", "run a graph in this process and print the result", _run_local_arguments, run_local),
    Command("validate", "check a graph and list every problem", _validate_arguments, validate),
    Command("dev", "start the local stack: moto, API + WebSocket gateway, pollers", _dev_arguments, dev),
    Command("graph", "create or list graphs on a stack", _graph_arguments, _api_command(_graph)),
    Command("run", "run a stored graph on a stack", _run_arguments, _api_command(_run)),
    Command(
        "state",
        "a run's outcome and what it changed (--full: state and logs)",
        _state_arguments,
        _api_command(_state),
    ),
    Command("logs", "a run's log, or --follow it live", _logs_arguments, _api_command(_logs)),
    Command("cancel", "cancel a running run", _run_id_arguments, _api_command(_cancel)),
    Command("console", "serve the web console for a stack, signing its calls", _console_arguments, console),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowforge", description="FlowForge: graph workflows on AWS serverless."
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``flowforge`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return EXIT_OK if exc.code is None else exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command: Command = args.command
    try:
        return command.run(args)
    except GraphValidationError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"flowforge {command.name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
