"""Tools and conditions are registered by name; graphs refer to them only by name."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from engine.errors import Problem, RegistryError, ToolsImportError, UnknownToolError

#: A tool or condition function, as registered (and returned unchanged by the decorators).
F = TypeVar("F", bound=Callable[..., Any])
#: A tool's check of a node's ``params`` when the graph is created: ``(params, mapped)``
#: (``mapped``: the node is a map, the tool runs once per item) to the problems found,
#: each at its path inside ``params`` ("" for params as a whole).
ParamsCheck = Callable[[Mapping[str, Any], bool], list[Problem]]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Registered:
    """A registered callable with what a listing shows about it."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    doc: str
    check_params: ParamsCheck | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "async": self.is_async, "doc": self.doc}


def _origin(fn: Callable[..., Any]) -> str:
    """Where a function was defined: re-importing its module re-registers it, not a clash."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _doc(fn: Callable[..., Any]) -> str:
    return inspect.cleandoc(fn.__doc__ or "")


class Registry:
    """Named tools (``async def tool(state, ctx)``) and conditions (``def pred(state)``)."""

    def __init__(self) -> None:
        self._tools: dict[str, Registered] = {}
        self._conditions: dict[str, Registered] = {}

    # -- registration ---------------------------------------------------------------
    def _add(
        self,
        table: dict[str, Registered],
        kind: str,
        name: str,
        fn: Callable[..., Any],
        check_params: ParamsCheck | None = None,
    ) -> None:
        if not callable(fn):
            raise RegistryError(f"{kind} {name!r} is not callable")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(f"{kind} name {name!r} must match {_NAME.pattern}")
        existing = table.get(name)
        if existing is not None and _origin(existing.fn) != _origin(fn):
            raise RegistryError(f"{kind} {name!r} is already registered by {_origin(existing.fn)}")
        table[name] = Registered(name, fn, inspect.iscoroutinefunction(fn), _doc(fn), check_params)

    def _decorator(
        self,
        table: dict[str, Registered],
        kind: str,
        name_or_fn: str | F | None,
        check_params: ParamsCheck | None = None,
    ) -> F | Callable[[F], F]:
        if callable(name_or_fn):
            self._add(table, kind, name_or_fn.__name__, name_or_fn)
            return name_or_fn

        def register(fn: F) -> F:
            self._add(table, kind, fn.__name__ if name_or_fn is None else name_or_fn, fn, check_params)
            return fn

        return register

    @overload
    def tool(self, name_or_fn: F) -> F: ...
    @overload
    def tool(
        self, name_or_fn: str | None = None, *, params: ParamsCheck | None = None
    ) -> Callable[[F], F]: ...
    def tool(
        self, name_or_fn: str | F | None = None, *, params: ParamsCheck | None = None
    ) -> F | Callable[[F], F]:
        """Register a tool: ``@tool`` uses the function's name, ``@tool("name")`` another.
        ``params`` checks the ``params`` of every node that names the tool, when its graph
        is created (see :data:`ParamsCheck`): problems are reported at their path."""
        return self._decorator(self._tools, "tool", name_or_fn, params)

    @overload
    def condition(self, name_or_fn: F) -> F: ...
    @overload
    def condition(self, name_or_fn: str | None = None) -> Callable[[F], F]: ...
    def condition(self, name_or_fn: str | F | None = None) -> F | Callable[[F], F]:
        """Register a predicate ``(state) -> bool`` usable wherever a condition is allowed."""
        return self._decorator(self._conditions, "condition", name_or_fn)

    # -- lookup ---------------------------------------------------------------------
    def get_tool(self, name: str) -> Registered:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(f"tool {name!r} is not registered") from None

    def get_condition(self, name: str) -> Registered:
        try:
            return self._conditions[name]
        except KeyError:
            raise UnknownToolError(f"condition {name!r} is not registered") from None

    def has_tool(self, name: str) -> bool:
        return name in self._tools

    def has_condition(self, name: str) -> bool:
        return name in self._conditions

    def describe(self) -> dict[str, list[dict[str, Any]]]:
        """Everything registered, sorted by name, with docstrings (for ``GET /tools``)."""
        return {
            "tools": [r.describe() for _, r in sorted(self._tools.items())],
            "conditions": [r.describe() for _, r in sorted(self._conditions.items())],
        }


#: The process-wide registry that ``@tool`` and ``@condition`` write to.
default_registry = Registry()
tool = default_registry.tool
condition = default_registry.condition


def load_tools(modules: Iterable[str], *, optional: Iterable[str] = ()) -> None:
    """Import the modules that register tools: each of ``optional`` if it exists, then
    each of ``modules``. :class:`ToolsImportError` names a module that cannot be imported
    and says why."""
    for name in optional:
        _import_tools(name, required=False)
    for name in modules:
        _import_tools(name, required=True)


def _import_tools(name: str, *, required: bool) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise ToolsImportError(f"cannot import tools module {name!r}: {exc}") from exc
        if required:
            raise ToolsImportError(
                f"no tools module {name!r} in the current directory or on PYTHONPATH"
            ) from None
    except Exception as exc:  # a broken module is reported in one line, naming it
        raise ToolsImportError(f"cannot import tools module {name!r}: {type(exc).__name__}: {exc}") from exc
