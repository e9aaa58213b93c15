"""Checks for JSON that comes from outside (request bodies, WebSocket frames, CLI files).

``json.loads`` accepts escapes of lone UTF-16 surrogates (``"\\ud800"``) and builds
Python strings that UTF-8 cannot encode: DynamoDB, the WebSocket and every log would
fail on them later, far from the input. :func:`json_problem` finds them (and nesting
too deep to walk safely) at the boundary, with the dotted path of the first offender.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import Problem


@dataclass(frozen=True, slots=True)
class JsonProblem(Problem):
    """A :class:`Problem` in a JSON value; ``too_deep`` tells nesting from bad text."""

    too_deep: bool = False


def lone_surrogate(text: str) -> str | None:
    """A description of the first character of ``text`` UTF-8 cannot encode, if any."""
    if text.isascii():  # the common case, without encoding
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}"
    return None


def _join(path: str, part: str | int) -> str:
    return f"{path}.{part}" if path else str(part)


def escape_surrogates(text: str) -> str:
    """``text`` as UTF-8 can carry it: lone surrogates escaped as ``\\udXXX``."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_problem(value: Any, prefix: str = "", max_depth: int | None = None) -> JsonProblem | None:
    """The first problem in a parsed JSON ``value``: a string (object key or value) that
    is not valid UTF-8 text, or arrays/objects nested deeper than ``max_depth``.

    Walks without recursion, so any depth is safe to check.
    """
    if isinstance(value, str):
        reason = lone_surrogate(value)
        return JsonProblem(prefix, f"not valid UTF-8 text ({reason})") if reason else None
    pending: list[tuple[Any, str, int]] = [(value, prefix, 1)]
    while pending:
        item, path, depth = pending.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in pairs:
            if isinstance(key, str) and (reason := lone_surrogate(key)):
                return JsonProblem(
                    _join(path, escape_surrogates(key)), f"key is not valid UTF-8 text ({reason})"
                )
            where = _join(path, key)
            if isinstance(child, str):
                if reason := lone_surrogate(child):
                    return JsonProblem(where, f"not valid UTF-8 text ({reason})")
            elif isinstance(child, dict | list):
                if max_depth is not None and depth >= max_depth:
                    return JsonProblem(
                        where, f"arrays and objects nest deeper than {max_depth} levels", too_deep=True
                    )
                pending.append((child, where, depth + 1))
    return None
