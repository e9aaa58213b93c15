"""Declarative rules and registered predicates, as branches and loops evaluate them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.conditions import OPERATORS, check, compile_condition

registry = engine.Registry()


@registry.condition
def approved(state):
    """Someone signed off."""
    return state.get("approved_by") is not None


@registry.condition
def has_items(state):
    # A predicate may return any value; only its truthiness counts.
    return state.get("items", [])


def holds(cond: Any, state: dict[str, Any]) -> bool:
    """Whether ``cond`` holds on ``state``, after checking it as validation would."""
    assert check(cond, registry, "when") == []
    return compile_condition(cond, registry)(state)


STATE = {
    "score": 0.85,
    "count": 3,
    "title": "Quarterly report",
    "tags": ["finance", "draft"],
    "empty": "",
    "zero": 0,
    "nothing": None,
    "flag": True,
    "summary": {"length": 120, "lang": "en", "sections": [{"name": "intro"}, {"name": "body"}]},
    "matrix": [[1, 2], [3, 4]],
}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"var": "count", "eq": 3}, True),
        ({"var": "count", "eq": 4}, False),
        ({"var": "title", "eq": "Quarterly report"}, True),
        ({"var": "tags", "eq": ["finance", "draft"]}, True),
        ({"var": "summary.lang", "eq": "en"}, True),
        ({"var": "nothing", "eq": None}, True),
        ({"var": "count", "ne": 4}, True),
        ({"var": "count", "ne": 3}, False),
        ({"var": "score", "lt": 0.9}, True),
        ({"var": "score", "lt": 0.85}, False),
        ({"var": "score", "lte": 0.85}, True),
        ({"var": "score", "lte": 0.84}, False),
        ({"var": "score", "gt": 0.8}, True),
        ({"var": "score", "gt": 0.85}, False),
        ({"var": "score", "gte": 0.85}, True),
        ({"var": "score", "gte": 0.86}, False),
        ({"var": "title", "gt": "Annual"}, True),
        ({"var": "count", "in": [1, 2, 3]}, True),
        ({"var": "count", "in": [4, 5]}, False),
        ({"var": "summary.lang", "in": "en-GB"}, True),
        ({"var": "summary.lang", "in": "de-DE"}, False),
        ({"var": "tags", "contains": "draft"}, True),
        ({"var": "tags", "contains": "final"}, False),
        ({"var": "title", "contains": "report"}, True),
        ({"var": "title", "contains": "memo"}, False),
        ({"var": "summary", "contains": "lang"}, True),
        ({"var": "summary", "contains": "author"}, False),
        ({"var": "nothing", "exists": True}, True),
        ({"var": "absent", "exists": True}, False),
        ({"var": "absent", "exists": False}, True),
        ({"var": "count", "exists": False}, False),
        ({"var": "flag", "truthy": True}, True),
        ({"var": "title", "truthy": True}, True),
        ({"var": "empty", "truthy": True}, False),
        ({"var": "zero", "truthy": True}, False),
        ({"var": "nothing", "truthy": True}, False),
        ({"var": "empty", "truthy": False}, True),
        ({"var": "flag", "truthy": False}, False),
    ],
)
def test_each_operator(rule, expected):
    # GIVEN a state and a rule using one operator
    # WHEN the rule is evaluated
    # THEN it holds exactly when the operator's meaning says so
    assert holds(rule, STATE) is expected


@pytest.mark.parametrize(
    ("var", "expected"),
    [
        ("summary.length", 120),
        ("summary.sections.0.name", "intro"),
        ("summary.sections.1.name", "body"),
        ("summary.sections.-1.name", "body"),
        ("matrix.1.0", 3),
        ("tags.-2", "finance"),
    ],
)
def test_var_walks_nested_dicts_and_list_indexes(var, expected):
    # GIVEN a nested state
    # WHEN a rule names a dotted path through dict keys and list indexes
    # THEN it reaches the nested value
    assert holds({"var": var, "eq": expected}, STATE)
    assert holds({"var": var, "exists": True}, STATE)


@pytest.mark.parametrize(
    "var",
    [
        "absent",
        "summary.author",
        "summary.sections.2.name",
        "summary.sections.-3",
        "summary.sections.first",
        "summary.length.digits",
        "tags.--1",
        "tags.1.5",
        "tags.²",
        "tags. 1",
        "title.0",
    ],
)
def test_a_missing_var_makes_every_operator_false_except_exists_false(var):
    # GIVEN a path that leads nowhere in the state
    # WHEN any operator is applied to it
    rules = [
        {"var": var, "eq": None},
        {"var": var, "ne": 1},
        {"var": var, "lt": 10},
        {"var": var, "lte": 10},
        {"var": var, "gt": -10},
        {"var": var, "gte": -10},
        {"var": var, "in": [None, 1]},
        {"var": var, "contains": "x"},
        {"var": var, "exists": True},
        {"var": var, "truthy": True},
    ]

    # THEN none holds; only "does not exist" (and "is not truthy") does
    assert [holds(rule, STATE) for rule in rules] == [False] * len(rules)
    assert holds({"var": var, "exists": False}, STATE)
    assert holds({"var": var, "truthy": False}, STATE)


@pytest.mark.parametrize(
    "rule",
    [
        {"var": "title", "lt": 3},
        {"var": "count", "gt": "2"},
        {"var": "nothing", "gte": 0},
        {"var": "summary", "lt": 5},
        {"var": "tags", "lte": "finance"},
        {"var": "count", "in": "123"},
        {"var": "count", "contains": 3},
        {"var": "title", "contains": 1},
        {"var": "summary", "contains": ["lang"]},
        {"var": "summary", "eq": "summary"},
    ],
)
def test_incompatible_types_are_false_not_an_error(rule):
    # GIVEN a rule comparing values that have no ordering or membership between them
    # WHEN it is evaluated
    # THEN it is simply false
    assert holds(rule, STATE) is False


@pytest.mark.parametrize(
    "var",
    [
        "__class__",
        "__class__.__name__",
        "summary.__dict__",
        "summary.keys",
        "summary.items",
        "title.__len__",
        "title.upper",
        "tags.__class__",
        "tags.append",
    ],
)
def test_var_never_reaches_attributes(var):
    # GIVEN paths that would name Python attributes of the state's objects
    # WHEN rules probe them
    # THEN nothing is found: vars walk keys and indexes only
    assert not holds({"var": var, "exists": True}, STATE)
    assert not holds({"var": var, "truthy": True}, STATE)
    assert not holds({"var": var, "ne": None}, STATE)


def test_dunder_names_are_ordinary_keys_when_the_state_has_them():
    # GIVEN a state that really has a key named "__class__"
    state = {"__class__": {"__name__": "mine"}}

    # WHEN / THEN a rule finds it like any other key
    assert holds({"var": "__class__.__name__", "eq": "mine"}, state)


def test_all_holds_when_every_item_holds():
    # GIVEN two true rules and a false one
    yes1, yes2 = {"var": "count", "eq": 3}, {"var": "flag", "truthy": True}
    no = {"var": "count", "gt": 10}

    # THEN all is true only when every item is
    assert holds({"all": [yes1, yes2]}, STATE)
    assert not holds({"all": [yes1, no, yes2]}, STATE)


def test_any_holds_when_some_item_holds():
    # GIVEN one true rule and two false ones
    yes = {"var": "count", "eq": 3}
    no1, no2 = {"var": "count", "gt": 10}, {"var": "absent", "exists": True}

    # THEN any is true as soon as one item is
    assert holds({"any": [no1, yes]}, STATE)
    assert not holds({"any": [no1, no2]}, STATE)


def test_not_negates():
    # GIVEN a rule and its negation
    rule = {"var": "summary.length", "gte": 100}

    # THEN they never agree
    assert holds(rule, STATE)
    assert not holds({"not": rule}, STATE)
    assert holds({"not": {"not": rule}}, STATE)


def test_combinators_nest_and_mix_with_registered_predicates():
    # GIVEN a rule that mixes combinators, plain rules and registered predicate names
    rule = {
        "all": [
            "has_items",
            {"any": ["approved", {"var": "priority", "in": ["high", "urgent"]}]},
            {"not": {"var": "blocked", "truthy": True}},
        ]
    }

    # THEN it follows the state
    assert holds(rule, {"items": [1], "approved_by": "kim"})
    assert holds(rule, {"items": [1], "priority": "urgent"})
    assert not holds(rule, {"items": [], "approved_by": "kim"})
    assert not holds(rule, {"items": [1], "priority": "low"})
    assert not holds(rule, {"items": [1], "approved_by": "kim", "blocked": True})


def test_registered_predicates_count_by_truthiness():
    # GIVEN a predicate that returns a list rather than a bool
    # WHEN it is used as a condition
    # THEN a non-empty list counts as true and an empty one as false, as a real bool
    assert holds("has_items", {"items": ["a"]}) is True
    assert holds("has_items", {"items": []}) is False
    assert holds("approved", {"approved_by": "kim"}) is True


def test_a_branch_in_a_graph_uses_the_rule_on_the_merged_state():
    # GIVEN a node whose tool sets a nested value and a branch that reads it
    graph_registry = engine.Registry()

    @graph_registry.tool
    def analyse(state, ctx):
        return {"report": {"scores": [0.2, 0.95]}}

    @graph_registry.tool
    def publish(state, ctx):
        return {"published": True}

    @graph_registry.tool
    def review(state, ctx):
        return {"reviewed": True}

    graph = engine.compile_graph(
        {
            "start": "analyse",
            "nodes": {
                "analyse": {
                    "fn": "analyse",
                    "branches": [{"when": {"var": "report.scores.-1", "gte": 0.9}, "next": "pub"}],
                    "next": "rev",
                },
                "pub": {"fn": "publish"},
                "rev": {"fn": "review"},
            },
        },
        graph_registry,
    )

    # WHEN the graph runs
    result = engine.run_graph_sync(graph, {}, sleep=None)

    # THEN the branch saw the value the tool just returned
    assert [log["node"] for log in result.logs] == ["analyse", "pub"]
    assert result.state["published"] is True


# -- property: the engine agrees with a small independent evaluator --------------------

_ABSENT = object()
_INDEX = re.compile(r"-?[0-9]+")
_KEYS = ["a", "b", "c", "0", "1"]
_PARTS = [*_KEYS, "-1", "2", "x"]


def reference_lookup(state: Any, var: str) -> Any:
    current = state
    for part in var.split("."):
        if type(current) is dict:
            if part not in current:
                return _ABSENT
            current = current[part]
        elif type(current) is list and _INDEX.fullmatch(part):
            index = int(part)
            if index < 0:
                index += len(current)
            if not 0 <= index < len(current):
                return _ABSENT
            current = current[index]
        else:
            return _ABSENT
    return current


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def reference_holds(rule: Any, state: dict[str, Any]) -> bool:
    if "all" in rule:
        return all(reference_holds(item, state) for item in rule["all"])
    if "any" in rule:
        return any(reference_holds(item, state) for item in rule["any"])
    if "not" in rule:
        return not reference_holds(rule["not"], state)
    (op,) = set(rule) - {"var"}
    expected = rule[op]
    value = reference_lookup(state, rule["var"])
    if op == "exists":
        return (value is not _ABSENT) == expected
    if op == "truthy":
        return (value is not _ABSENT and bool(value)) == expected
    if value is _ABSENT:
        return False
    if op == "eq":
        return value == expected
    if op == "ne":
        return value != expected
    if op in ("lt", "lte", "gt", "gte"):
        comparable = (_is_number(value) and _is_number(expected)) or (
            isinstance(value, str) and isinstance(expected, str)
        )
        if not comparable:
            return False
        return {
            "lt": value < expected,
            "lte": value <= expected,
            "gt": value > expected,
            "gte": value >= expected,
        }[op]
    if op == "in":
        if isinstance(expected, str):
            return isinstance(value, str) and value in expected
        return any(item == value for item in expected)
    if op == "contains":
        if isinstance(value, list):
            return any(item == expected for item in value)
        if isinstance(value, str | dict):
            return isinstance(expected, str) and expected in value
        return False
    raise AssertionError(op)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "a", "b", "ab", "0", "1"]),
)
json_values = scalars | st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner),
    max_leaves=10,
)
small_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner),
    max_leaves=4,
)
rule_values = small_values.filter(lambda v: _usable(v))
item_values = small_values.filter(lambda v: _usable([v]))
random_vars = st.lists(st.sampled_from(_PARTS), min_size=1, max_size=3).map(".".join)


def _paths(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (dotted path, value) in ``value``, lists also by negative index."""
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = [(str(i), v) for i, v in enumerate(value)]
        children += [("-1", value[-1])] if value else []
    else:
        return []
    found = []
    for part, child in children:
        path = f"{prefix}.{part}" if prefix else part
        found += [(path, child), *_paths(child, path)]
    return found


def _usable(value: Any) -> bool:
    """Whether a value may appear in a rule (validation limits its nesting)."""
    return check({"var": "v", "eq": value}, registry, "") == []


def _related(value: Any) -> list[Any]:
    """Values likely to make a rule about ``value`` hold: itself, its parts, neighbours."""
    if isinstance(value, bool) or value is None:
        return [value, not value]
    if isinstance(value, int | float):
        return [value, value - 1, value + 0.5]
    if isinstance(value, str):
        return [value, value[:1], value + "b", "a" + value]
    if isinstance(value, dict):
        return [value, *value, *value.values()]
    return [value, *value]


def _one_of(pool: list[Any], fallback: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a value from ``pool`` (related to the state), sometimes any value."""
    return st.one_of(st.sampled_from(pool), st.sampled_from(pool), fallback) if pool else fallback


_SUITED = {
    "contains": dict | list | str,
    **dict.fromkeys(("lt", "lte", "gt", "gte"), int | float | str),
}


def draw_leaf(draw: st.DrawFn, found: list[tuple[str, Any]]) -> dict[str, Any]:
    """One ``{"var", OP: value}`` rule, usually about a path that exists in the state."""
    op = draw(st.sampled_from(OPERATORS))
    if found and draw(st.integers(0, 3)):
        # Prefer values the operator can say something about: containers for contains,
        # scalars for orderings.
        suited = [(path, v) for path, v in found if isinstance(v, _SUITED.get(op, object))]
        var, target = draw(st.sampled_from(suited or found))
        pool = [v for v in _related(target) if _usable(v)]
    else:
        var, target, pool = draw(random_vars), None, []
    if op in ("exists", "truthy"):
        value = draw(st.booleans())
    elif op in ("lt", "lte", "gt", "gte"):
        value = draw(_one_of([v for v in pool if not isinstance(v, list | dict)], scalars))
    elif op == "in":
        # List items sit one level deeper than a value of their own.
        items = _one_of([v for v in pool if _usable([v])], item_values)
        texts = [v + "z" for v in pool if isinstance(v, str)] or ["", "ab"]
        value = draw(st.lists(items, max_size=3) | st.sampled_from(texts))
    elif op == "contains" and isinstance(target, dict | list | str):
        value = draw(_one_of(pool[1:], rule_values))
    else:
        value = draw(_one_of(pool, rule_values))
    return {"var": var, op: value}


def draw_rule(draw: st.DrawFn, found: list[tuple[str, Any]], depth: int = 0) -> Any:
    """A leaf, or all/any/not over further rules, at most three combinators deep."""
    kind = draw(st.sampled_from(("leaf", "leaf", "all", "any", "not"))) if depth < 3 else "leaf"
    if kind == "leaf":
        return draw_leaf(draw, found)
    if kind == "not":
        return {"not": draw_rule(draw, found, depth + 1)}
    return {kind: [draw_rule(draw, found, depth + 1) for _ in range(draw(st.integers(1, 3)))]}


@st.composite
def states_and_rules(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    """A random state, and a rule whose vars and values often come from that state."""
    state = draw(st.dictionaries(st.sampled_from(_KEYS), json_values))
    return state, draw_rule(draw, _paths(state))


def subrules(rule: Any) -> list[Any]:
    """``rule`` and every rule inside it, so a leaf's error cannot hide in a combinator."""
    inner = rule.get("all") or rule.get("any") or ([rule["not"]] if "not" in rule else [])
    return [rule, *(sub for item in inner for sub in subrules(item))]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=states_and_rules())
def test_rules_agree_with_a_reference_evaluator(case):
    # GIVEN a random nested JSON state and a random well-formed rule
    state, rule = case

    # WHEN the engine evaluates the rule and each rule inside it
    # THEN it agrees with the independent evaluator above, and never raises
    for sub in subrules(rule):
        assert holds(sub, state) is reference_holds(sub, state), sub
