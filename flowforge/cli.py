"""``flowforge``: the command line. ``flowforge COMMAND --help`` describes each command.

Each subcommand is a :class:`Command` — one function that declares its arguments and one
that runs it and returns the exit code — listed once, in :data:`COMMANDS`. A command
raises :class:`UsageError` for bad input: ``main`` prints it as one line on stderr and
exits 2, never with a traceback. Exit codes: 0 success, 1 the run failed (or the stack
cannot be reached), 2 bad input, an invalid graph or an unknown id, 3 the run was not
in a status the command acts on (``cancel`` of a finished run, ``redrive`` of one that
did not fail).
"""

from __future__ import annotations

import argparse
import importlib
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
from flowforge import answers, remote
from flowforge.inputs import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    UsageError,
    parse_json,
    read_state,
    read_text,
)
from flowforge.outcome import render_json, render_pretty

#: Imported before every command that needs tools: the example workflows' package.
DEFAULT_TOOLS_PACKAGE = "workflows"


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand: its name, one-line help, its arguments and what it does."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- inputs -------------------------------------------------------------------------------


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
        return remote.api_command(remote.validate_remotely)(args)
    import_tools(args.tools)
    graph = load_graph(args.graph)
    name = graph.name or Path(args.graph).stem
    count = len(graph.nodes)
    print(f"ok: {name} ({count} node{'s' if count != 1 else ''})")
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
    from functions.runtime import AwsClients  # tools that call AWS (llm) use your credentials

    options["clients"] = AwsClients()
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


# -- the command line ---------------------------------------------------------------------

#: Every subcommand, in the order ``flowforge --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("run-local", "run a graph in this process and print the result", _run_local_arguments, run_local),
    Command("validate", "check a graph and list every problem", _validate_arguments, validate),
    Command("dev", "start the local stack: moto, API + WebSocket gateway, pollers", _dev_arguments, dev),
    Command(
        "graph",
        "create or list graphs on a stack",
        remote.graph_arguments,
        remote.api_command(remote.graph_command),
    ),
    Command(
        "run", "run a stored graph on a stack", remote.run_arguments, remote.api_command(remote.run_command)
    ),
    Command(
        "state",
        "a run's outcome and what it changed (--full: state and logs)",
        remote.state_arguments,
        remote.api_command(remote.state_command),
    ),
    Command(
        "logs",
        "a run's log, or --follow it live",
        remote.logs_arguments,
        remote.api_command(remote.logs_command),
    ),
    Command(
        "cancel",
        "cancel a running run (exit 3 if it had already finished)",
        remote.run_id_arguments,
        remote.api_command(remote.cancel_command),
    ),
    Command(
        "redrive",
        "resume a failed run at the node that failed, optionally patching its state "
        "(exit 3 if it had not failed)",
        remote.redrive_arguments,
        remote.api_command(remote.redrive_command),
    ),
    Command(
        "approve",
        "approve a waiting run's callback, by its token or URL (exit 3 if answered before or timed out)",
        answers.approve_arguments,
        answers.with_callback_endpoint(answers.approve_command),
    ),
    Command(
        "reject",
        "reject a waiting run's callback: CallbackRejected in its node (exit 3 if answered before)",
        answers.reject_arguments,
        answers.with_callback_endpoint(answers.reject_command),
    ),
    Command(
        "runs",
        "list runs, newest first (--waiting: the waiting ones, with their callback URLs)",
        answers.runs_arguments,
        remote.api_command(answers.runs_command),
    ),
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
