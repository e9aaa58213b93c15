"""The commands for runs that wait: ``approve`` and ``reject`` a callback, ``runs`` (with
``--waiting``: the runs waiting, with their callback URLs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from flowforge import remote
from flowforge.inputs import EXIT_OK, UsageError, parse_json, read_text

CALLBACKS_PATH = "/callbacks/"


def split_callback(value: str) -> tuple[str | None, str]:
    """``(API base URL or None, token)`` from a token or a callback URL
    (``https://…/v1/callbacks/<token>``)."""
    if "://" not in value:
        if "/" in value or not value:
            raise UsageError(f"{value!r} is neither a callback token nor a callback URL")
        return None, value
    parts = urlsplit(value)
    base, sep, rest = parts.path.partition(CALLBACKS_PATH)
    token = unquote(rest.split("/")[0]) if sep else ""
    if not token:
        raise UsageError(f"{value!r} is not a callback URL (…/callbacks/<token>)")
    return f"{parts.scheme}://{parts.netloc}{base}", token


def read_output(value: str) -> Any:
    """``--output``: inline JSON (any value), else a JSON file's path."""
    try:
        return json.loads(value)
    except ValueError:
        pass
    if Path(value).is_file():
        return parse_json(read_text(value, "--output file"), f"--output file {value!r}")
    raise UsageError(f"--output: {value!r} is neither JSON nor a JSON file")


def answer_arguments(parser: argparse.ArgumentParser, *, approve: bool) -> None:
    parser.add_argument("callback", metavar="TOKEN|URL", help="ctx.callback_token, or ctx.callback_url")
    if approve:
        parser.add_argument(
            "--output",
            metavar="JSON",
            help="the approval's output (state[result]): inline JSON or a JSON file",
        )
    else:
        parser.add_argument("--reason", metavar="TEXT", help="the CallbackRejected error's message")
    remote._endpoint_arguments(parser)


def approve_arguments(parser: argparse.ArgumentParser) -> None:
    answer_arguments(parser, approve=True)


def reject_arguments(parser: argparse.ArgumentParser) -> None:
    answer_arguments(parser, approve=False)


def with_callback_endpoint(command):
    """A command that answers at the callback URL's API unless --endpoint says otherwise."""
    run = remote.api_command(command)

    def run_with_endpoint(args: argparse.Namespace) -> int:
        base, args.token = split_callback(args.callback)
        if args.endpoint is None and base is not None:
            args.endpoint = base
        return run(args)

    return run_with_endpoint


async def approve_command(api: Any, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"status": "approved"}
    if args.output is not None:
        body["output"] = read_output(args.output)
    return _print_answer((await api.request("POST", f"{CALLBACKS_PATH}{args.token}", body))[1], args)


async def reject_command(api: Any, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"status": "rejected"}
    if args.reason is not None:
        body["reason"] = args.reason
    return _print_answer((await api.request("POST", f"{CALLBACKS_PATH}{args.token}", body))[1], args)


def _print_answer(answer: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        remote._print_json(answer, compact=True)
    else:
        note = "" if answer["applied"] else " (applied when the node's tool returns)"
        print(f"{answer['run_id']}: {answer['callback']}; the run is {answer['status']}{note}")
    return EXIT_OK


def runs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--waiting", action="store_true", help="only waiting runs, with their callback URLs")
    parser.add_argument("--limit", type=int, default=50, metavar="N", help="at most N runs (default 50)")
    remote._endpoint_arguments(parser)


async def runs_command(api: Any, args: argparse.Namespace) -> int:
    """Runs newest first: ``run_id status step created_at``, and what a waiting run waits for."""
    shown, query = 0, {"limit": 100}
    while shown < args.limit:
        page = (await api.request("GET", "/runs", query=query))[1]
        for run in page["runs"]:
            if args.waiting and run["status"] != "waiting":
                continue
            _print_run_line(run, args)
            shown += 1
            if shown >= args.limit:
                break
        if not page.get("next_token"):
            break
        query = {"limit": 100, "next_token": page["next_token"]}
    if not shown and not args.json:
        print("no waiting runs" if args.waiting else "no runs", file=sys.stderr)
    return EXIT_OK


def _print_run_line(run: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        remote._print_json(run, compact=True)
        return
    line = f"{run['run_id']}  {run['status']:<9}  step {run['step']:<5}  {run['created_at']}"
    waiting = run.get("waiting")
    if waiting:
        if waiting.get("callback_url"):
            line += (
                f"\n    at {waiting['node']}: {waiting['callback_url']}  (expires {waiting['expires_at']})"
            )
        else:
            line += f"\n    at {waiting['node']}: until {waiting.get('until')}"
    print(line)
