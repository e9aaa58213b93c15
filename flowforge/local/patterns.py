"""Event source mapping ``FilterCriteria``: which records wake a function.

The subset of EventBridge-style patterns that Lambda event filtering supports: literal
values (string, number, boolean, null), ``prefix``, ``suffix``, ``equals-ignore-case``,
``anything-but``, ``numeric``, ``exists`` and ``$or``. A record passes when any filter
matches; a pattern matches when every key in it matches. An operator outside this subset
is refused at start, so a filter never silently lets everything through.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_MISSING = object()
_NUMERIC = {"=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class PatternError(ValueError):
    """A filter pattern the local stack cannot evaluate."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _matches_numeric(spec: list[Any], value: Any) -> bool:
    if not _is_number(value):
        return False
    return all(_NUMERIC[op](value, bound) for op, bound in zip(spec[::2], spec[1::2], strict=True))


def _matches_anything_but(spec: Any, value: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(spec, Mapping):
        if "prefix" in spec:
            return not (isinstance(value, str) and value.startswith(spec["prefix"]))
        if "suffix" in spec:
            return not (isinstance(value, str) and value.endswith(spec["suffix"]))
        raise PatternError(f"unsupported anything-but operator {sorted(spec)}")
    excluded = spec if isinstance(spec, list) else [spec]
    return value not in excluded


def _leaf(matcher: Any, value: Any) -> bool:
    """One element of a pattern's value list against one field value."""
    if not isinstance(matcher, Mapping):
        return value is not _MISSING and value == matcher and type(value) is type(matcher)
    (name, spec), *rest = matcher.items()
    if rest:
        raise PatternError(f"a matcher has one operator, got {sorted(matcher)}")
    if name == "exists":
        return (value is not _MISSING) is bool(spec)
    if name == "prefix":
        return isinstance(value, str) and value.startswith(spec)
    if name == "suffix":
        return isinstance(value, str) and value.endswith(spec)
    if name == "equals-ignore-case":
        return isinstance(value, str) and value.lower() == str(spec).lower()
    if name == "anything-but":
        return _matches_anything_but(spec, value)
    if name == "numeric":
        return _matches_numeric(spec, value)
    raise PatternError(f"unsupported filter operator {name!r}")


def _matches_list(matchers: list[Any], value: Any) -> bool:
    values = value if isinstance(value, list) and value else [value]
    return any(_leaf(m, v) for m in matchers for v in values)


def matches(pattern: Mapping[str, Any], record: Any) -> bool:
    """Whether ``record`` satisfies ``pattern`` (a parsed filter pattern)."""
    for key, expected in pattern.items():
        if key == "$or":
            if not any(matches(option, record) for option in expected):
                return False
            continue
        value = record.get(key, _MISSING) if isinstance(record, Mapping) else _MISSING
        if isinstance(expected, Mapping):
            if not matches(expected, value if value is not _MISSING else {}):
                return False
        elif isinstance(expected, list):
            if not _matches_list(expected, value):
                return False
        else:
            raise PatternError(f"pattern value for {key!r} must be an object or a list")
    return True


_OPERATORS = frozenset({"exists", "prefix", "suffix", "equals-ignore-case", "anything-but", "numeric"})


def _check(pattern: Any) -> None:
    """Walk a pattern so an unsupported operator fails at start, not on some record."""
    if not isinstance(pattern, Mapping):
        raise PatternError("a filter pattern must be a JSON object")
    for key, expected in pattern.items():
        if key == "$or":
            for option in expected:
                _check(option)
        elif isinstance(expected, Mapping):
            _check(expected)
        elif isinstance(expected, list):
            for matcher in expected:
                if isinstance(matcher, Mapping) and (
                    len(matcher) != 1 or next(iter(matcher)) not in _OPERATORS
                ):
                    raise PatternError(f"unsupported filter operator {sorted(matcher)} under {key!r}")
        else:
            raise PatternError(f"pattern value for {key!r} must be an object or a list")


def compile_filters(filters: Iterable[Mapping[str, Any]] | None) -> Callable[[Any], bool]:
    """``FilterCriteria.Filters`` → a predicate; no filters lets every record through."""
    patterns: list[Any] = []
    for entry in filters or ():
        raw = entry.get("Pattern")
        try:
            pattern = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise PatternError(f"filter pattern is not JSON: {raw!r}") from exc
        _check(pattern)
        patterns.append(pattern)
    if not patterns:
        return lambda record: True
    return lambda record: any(matches(p, record) for p in patterns)
