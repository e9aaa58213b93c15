"""The registry: how tools and conditions get their names, and what it refuses."""

from __future__ import annotations

import pytest

import engine
from engine import RegistryError, UnknownToolError


@pytest.fixture
def registry() -> engine.Registry:
    return engine.Registry()


def test_tool_decorator_registers_under_the_function_name(registry):
    # GIVEN / WHEN a function decorated with a bare @tool
    @registry.tool
    def split_text(state, ctx):
        return None

    # THEN it is registered under its own name and the decorator hands it back unchanged
    assert registry.has_tool("split_text")
    assert registry.get_tool("split_text").fn is split_text
    assert split_text(None, None) is None


def test_tool_decorator_with_a_name_registers_under_that_name(registry):
    # GIVEN / WHEN a function registered as @tool("fetch-page")
    @registry.tool("fetch-page")
    def _fetch(state, ctx):
        return {}

    # THEN graphs refer to it by the given name, not the function's
    assert registry.has_tool("fetch-page")
    assert not registry.has_tool("_fetch")


def test_tool_decorator_called_without_arguments_uses_the_function_name(registry):
    # GIVEN / WHEN @tool() with empty parentheses
    @registry.tool()
    def merge(state, ctx):
        return {}

    # THEN it behaves like the bare decorator
    assert registry.has_tool("merge")


def test_condition_decorator_registers_a_predicate(registry):
    # GIVEN / WHEN predicates registered both ways
    @registry.condition
    def length_ok(state):
        return True

    @registry.condition("needs-review")
    def _review(state):
        return False

    # THEN both are conditions, and neither is a tool
    assert registry.has_condition("length_ok")
    assert registry.has_condition("needs-review")
    assert not registry.has_tool("length_ok")
    assert registry.get_condition("length_ok").fn is length_ok


def test_registering_a_second_function_under_a_taken_name_is_rejected(registry):
    # GIVEN a tool named "summarize"
    @registry.tool
    def summarize(state, ctx):
        return {}

    # WHEN another function claims the same name
    def other(state, ctx):
        return {}

    with pytest.raises(RegistryError, match="'summarize' is already registered") as excinfo:
        registry.tool("summarize")(other)

    # THEN the first registration stands
    assert excinfo.value.code == "registry_error"
    assert registry.get_tool("summarize").fn is summarize


def test_registering_the_same_function_twice_is_harmless(registry):
    # GIVEN a registered tool
    def score(state, ctx):
        return {}

    registry.tool(score)

    # WHEN the very same function is registered again (e.g. a module imported twice)
    registry.tool(score)

    # THEN nothing changes
    assert [t["name"] for t in registry.describe()["tools"]] == ["score"]


def test_tools_and_conditions_have_separate_namespaces(registry):
    # GIVEN a tool and a condition sharing a name
    @registry.tool("check")
    def check_tool(state, ctx):
        return {}

    @registry.condition("check")
    def check_condition(state):
        return True

    # THEN both are registered
    assert registry.get_tool("check").fn is check_tool
    assert registry.get_condition("check").fn is check_condition


@pytest.mark.parametrize(
    "name",
    ["", "1starts_with_digit", "has space", "dotted.name", "x" * 65, "slash/name", "émoji"],
)
def test_bad_names_are_rejected(registry, name):
    # GIVEN a function and a name graphs could not safely refer to
    def fn(state, ctx):
        return {}

    # WHEN / THEN registering it fails with a RegistryError naming the rule
    with pytest.raises(RegistryError, match="must match"):
        registry.tool(name)(fn)
    with pytest.raises(RegistryError, match="must match"):
        registry.condition(name)(fn)
    assert registry.describe() == {"tools": [], "conditions": []}


def test_a_non_string_name_is_rejected_with_a_registry_error(registry):
    # GIVEN / WHEN a name that is not a string
    # THEN a RegistryError, not a TypeError from deep inside
    with pytest.raises(RegistryError):
        registry.tool(123)(lambda state, ctx: {})


def test_longest_allowed_name_is_accepted(registry):
    # GIVEN a 64-character name (the limit)
    name = "t" + "_" * 62 + "9"

    # WHEN it is registered
    registry.tool(name)(lambda state, ctx: {})

    # THEN it is usable
    assert registry.has_tool(name)


def test_looking_up_an_unknown_name_raises_unknown_tool_error(registry):
    # GIVEN an empty registry
    # WHEN / THEN looking up tools or conditions fails with a stable code
    with pytest.raises(UnknownToolError, match="tool 'nope' is not registered") as excinfo:
        registry.get_tool("nope")
    assert excinfo.value.code == "unknown_tool"
    with pytest.raises(UnknownToolError, match="condition 'nope' is not registered"):
        registry.get_condition("nope")


def test_describe_lists_tools_and_conditions_sorted_with_cleaned_docstrings(registry):
    # GIVEN tools registered out of order, with and without docstrings
    @registry.tool
    async def zeta(state, ctx):
        """Last tool.

        Second paragraph.
        """

    @registry.tool
    def alpha(state, ctx):
        return None

    @registry.condition
    def done(state):
        """The work is finished."""
        return True

    # WHEN the registry is described (what GET /tools shows)
    listing = registry.describe()

    # THEN entries are sorted by name, docstrings are dedented, and async is reported
    assert listing == {
        "tools": [
            {"name": "alpha", "async": False, "doc": ""},
            {"name": "zeta", "async": True, "doc": "Last tool.\n\nSecond paragraph."},
        ],
        "conditions": [{"name": "done", "async": False, "doc": "The work is finished."}],
    }


def test_sync_and_async_tools_are_told_apart(registry):
    # GIVEN one coroutine function and one plain function
    @registry.tool
    async def fetch(state, ctx):
        return {}

    @registry.tool
    def parse(state, ctx):
        return {}

    # THEN the registry knows which one to await
    assert registry.get_tool("fetch").is_async is True
    assert registry.get_tool("parse").is_async is False


def test_registering_something_not_callable_is_rejected(registry):
    # GIVEN / WHEN a name decorator applied to a non-callable
    # THEN it is refused
    with pytest.raises(RegistryError, match="not callable"):
        registry.tool("answer")(42)


def test_module_level_decorators_write_to_the_default_registry():
    # GIVEN the process-wide decorators
    # THEN they are bound to engine.default_registry (what the CLI and Lambdas read)
    assert engine.tool.__self__ is engine.default_registry
    assert engine.condition.__self__ is engine.default_registry
