"""What the command line reads (files, inline JSON) and its exit codes, shared by every command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.jsontext import json_problem

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
#: The run is not in a state the command can act on: cancelling a finished run, redriving
#: one that did not fail (409).
EXIT_CONFLICT = 3


class UsageError(Exception):
    """Bad input on the command line (a missing file, invalid JSON, an unknown module)."""


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


def read_state(value: str | None, option: str = "--state") -> dict[str, Any]:
    """``--state`` (or ``--patch``): inline JSON when it starts with ``{``, otherwise a
    JSON file's path."""
    if value is None:
        return {}
    if value.lstrip().startswith(("{", "[")):
        state = parse_json(value, option)
    else:
        state = parse_json(read_text(value, f"{option} file"), f"{option} file {value!r}")
    if not isinstance(state, dict):
        raise UsageError(f"{option}: must be a JSON object, not {type(state).__name__}")
    return state
