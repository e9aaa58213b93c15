"""Conditions: a registered predicate's name, or a declarative rule evaluated without eval.

A rule is ``{"var": "a.b.0", OP: value}`` with OP one of :data:`OPERATORS`, or a
combinator ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": cond}`` whose items are
conditions themselves. ``var`` walks dict keys and list indexes only — never attributes.
A missing variable makes every operator false except ``exists: false`` and
``truthy: false``; comparing values of incompatible types (``"a" < 3``) is false rather
than an error.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from engine.blobs import StateView
from engine.errors import Problem
from engine.registry import Registry

Predicate = Callable[[Mapping[str, Any]], bool]
OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "exists", "truthy")
COMBINATORS = ("all", "any", "not")
MAX_DEPTH = 16
MAX_VAR_LENGTH = 256
_MISSING = object()
_INDEX = re.compile(r"-?[0-9]+")


def resolve(state: Any, path: tuple[str, ...]) -> Any:
    """Follow ``path`` through dicts (by key) and lists (by index); ``_MISSING`` if absent."""
    value = state
    for part in path:
        if isinstance(value, dict) or type(value) is StateView:  # a state with offloaded values
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and _INDEX.fullmatch(part):
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


#: ``OP(value, expected)`` for each comparing operator; ``in`` and ``contains`` are mirrors.
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
    "in": lambda left, right: left in right,
    "contains": lambda left, right: right in left,
}


def _unchecked(op: str) -> Callable[[Any, Any], bool]:
    def fail(left: Any, right: Any) -> bool:
        raise AssertionError(op)  # pragma: no cover - check() rejects unknown operators

    return fail


def _no_hint(name: str) -> str:
    return ""


def check(
    cond: Any, registry: Registry, path: str, depth: int = 0, hint: Callable[[str], str] = _no_hint
) -> list[Problem]:
    """Every problem with ``cond``, each at its dotted path; ``hint(name)`` may add a
    "did you mean" to an unknown condition's message."""
    if isinstance(cond, str):
        if not registry.has_condition(cond):
            return [Problem(path, f"unknown condition {cond!r}{hint(cond)}; register it with @condition")]
        return []
    if not isinstance(cond, dict):
        return [Problem(path, "a condition is a registered name or a rule object")]
    if depth >= MAX_DEPTH:
        return [Problem(path, f"rule nested deeper than {MAX_DEPTH} levels")]
    keys = set(cond)
    combinators = keys & set(COMBINATORS)
    if combinators:
        if len(keys) != 1:
            return [Problem(path, f"{sorted(keys)}: a combinator stands alone in its object")]
        (name,) = combinators
        items = cond[name]
        if name == "not":
            return check(items, registry, f"{path}.not", depth + 1, hint)
        if not isinstance(items, list) or not items:
            return [Problem(f"{path}.{name}", "expects a non-empty list of conditions")]
        problems: list[Problem] = []
        for i, item in enumerate(items):
            problems += check(item, registry, f"{path}.{name}.{i}", depth + 1, hint)
        return problems
    if "var" not in keys:
        return [Problem(path, "a rule needs 'var' and one operator, or all/any/not")]
    problems = []
    var = cond["var"]
    if not isinstance(var, str) or not var or len(var) > MAX_VAR_LENGTH:
        problems.append(Problem(f"{path}.var", "must be a dotted path such as 'summary.length'"))
    ops = keys - {"var"}
    unknown = sorted(ops - set(OPERATORS))
    if unknown:
        problems.append(Problem(path, f"unknown operator {unknown[0]!r}; use one of {', '.join(OPERATORS)}"))
    elif len(ops) != 1:
        problems.append(Problem(path, "a rule has exactly one operator besides 'var'"))
    else:
        (op,) = ops
        value = cond[op]
        if op in ("exists", "truthy") and not isinstance(value, bool):
            problems.append(Problem(f"{path}.{op}", "expects true or false"))
        elif op == "in" and not isinstance(value, list | str):
            problems.append(Problem(f"{path}.in", "expects a list or a string"))
        elif not _is_json_scalar_or_list(value):
            problems.append(Problem(f"{path}.{op}", "expects a JSON value"))
    return problems


def _is_json_scalar_or_list(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list) and depth < 4:
        return all(_is_json_scalar_or_list(v, depth + 1) for v in value)
    if isinstance(value, dict) and depth < 4:
        return all(isinstance(k, str) and _is_json_scalar_or_list(v, depth + 1) for k, v in value.items())
    return False


def compile_condition(cond: Any, registry: Registry) -> Predicate:
    """Turn a checked condition into a fast ``state -> bool`` closure."""
    if isinstance(cond, str):
        fn = registry.get_condition(cond).fn
        return lambda state: bool(fn(state))
    if "all" in cond:
        parts = [compile_condition(c, registry) for c in cond["all"]]
        return lambda state: all(p(state) for p in parts)
    if "any" in cond:
        parts = [compile_condition(c, registry) for c in cond["any"]]
        return lambda state: any(p(state) for p in parts)
    if "not" in cond:
        inner = compile_condition(cond["not"], registry)
        return lambda state: not inner(state)
    path = tuple(cond["var"].split("."))
    (op,) = set(cond) - {"var"}
    expected = cond[op]
    if op == "exists":
        return lambda state: (resolve(state, path) is not _MISSING) is expected
    if op == "truthy":

        def truthy(state: Mapping[str, Any]) -> bool:
            value = resolve(state, path)
            return (value is not _MISSING and bool(value)) is expected

        return truthy

    compare = _COMPARISONS.get(op) or _unchecked(op)  # chosen once, not per evaluation

    def predicate(state: Mapping[str, Any]) -> bool:
        value = resolve(state, path)
        if value is _MISSING:
            return False
        try:
            return compare(value, expected)
        except TypeError:
            return False

    return predicate
