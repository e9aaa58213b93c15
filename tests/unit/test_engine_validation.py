"""Validation: every problem in a graph is reported at once, each at its path."""

from __future__ import annotations

import copy
import difflib
from typing import Any

import pytest

import engine
from engine import GraphValidationError
from engine.suggest import MAX_COMPARISONS

registry = engine.Registry()


@registry.tool
def split_text(state, ctx):
    return {}


@registry.tool
def summarize(state, ctx):
    return {}


@registry.tool
def merge(state, ctx):
    return {}


@registry.condition
def length_ok(state):
    return True


VALID: dict[str, Any] = {
    "name": "summarization",
    "start": "split",
    "max_steps": 200,
    "nodes": {
        "split": {"fn": "split_text", "next": "summarize"},
        "summarize": {
            "fn": "summarize",
            "loop_condition": "length_ok",
            "max_iterations": 5,
            "retry": {"max_attempts": 3, "on": ["TimeoutError"]},
            "catch": [{"on": ["*"], "next": "fallback"}],
            "next": "merge",
        },
        "merge": {
            "fn": "merge",
            "branches": [{"when": {"var": "summary.length", "gt": 100}, "next": "summarize"}],
        },
        "fallback": {"fn": "merge"},
    },
}


def graph_with(**changes: Any) -> dict[str, Any]:
    """A copy of VALID with top-level keys replaced (``None`` removes one)."""
    graph = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            graph.pop(key)
        else:
            graph[key] = value
    return graph


def node_with(node_id: str, **fields: Any) -> dict[str, Any]:
    """A copy of VALID with fields of one node replaced (``None`` removes one)."""
    graph = copy.deepcopy(VALID)
    node = graph["nodes"].setdefault(node_id, {})
    for key, value in fields.items():
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
    return graph


def problems_of(data: Any) -> list[str]:
    """The problems validation reports for ``data``, as ``path: message`` lines."""
    with pytest.raises(GraphValidationError) as excinfo:
        engine.compile_graph(data, registry)
    assert excinfo.value.code == "invalid_graph"
    return [str(problem) for problem in excinfo.value.problems]


def paths_of(data: Any) -> list[str]:
    with pytest.raises(GraphValidationError) as excinfo:
        engine.compile_graph(data, registry)
    return [problem.path for problem in excinfo.value.problems]


# -- a valid graph ------------------------------------------------------------------------


def test_a_valid_graph_compiles_with_its_tools_resolved():
    # GIVEN a graph using loops, branches, retries and catches
    # WHEN it is compiled
    graph = engine.compile_graph(VALID, registry)

    # THEN its start, limits and nodes are as written, with tools looked up by name
    assert graph.start == "split"
    assert graph.max_steps == 200
    assert set(graph.nodes) == {"split", "summarize", "merge", "fallback"}
    assert graph.nodes["split"].tool.fn is split_text
    assert graph.name == "summarization"


def test_defaults_apply_when_limits_are_not_given():
    # GIVEN a minimal graph
    graph = engine.compile_graph({"start": "a", "nodes": {"a": {"fn": "merge"}}}, registry)

    # THEN max_steps defaults to 1000 and max_iterations to 100
    assert graph.max_steps == 1000
    assert graph.nodes["a"].max_iterations == 100


def test_a_graph_model_instance_is_accepted_too():
    # GIVEN a graph already parsed into the pydantic model
    model = engine.Graph.model_validate(VALID)

    # WHEN / THEN it compiles like the raw definition
    assert set(engine.compile_graph(model, registry).nodes) == set(VALID["nodes"])


# -- several problems at once ---------------------------------------------------------------


def test_three_mistakes_are_reported_as_three_problems_with_paths_and_hints():
    # GIVEN a graph with a misspelt tool, a misspelt next and a branch to nowhere
    graph = node_with("split", fn="split_txt", next="sumarize")
    graph["nodes"]["merge"]["branches"][0]["next"] = "publish"

    # WHEN it is validated
    with pytest.raises(GraphValidationError) as excinfo:
        engine.compile_graph(graph, registry)

    # THEN all three are listed, each at its path, with "did you mean" where one is close
    assert [str(p) for p in excinfo.value.problems] == [
        "nodes.split.fn: unknown tool 'split_txt' (did you mean 'split_text'?)",
        "nodes.split.next: unknown node 'sumarize' (did you mean 'summarize'?)",
        "nodes.merge.branches.0.next: unknown node 'publish'",
    ]
    assert str(excinfo.value).startswith("graph has 3 problems: nodes.split.fn: unknown tool")
    assert excinfo.value.details[1] == {
        "path": "nodes.split.next",
        "message": "unknown node 'sumarize' (did you mean 'summarize'?)",
    }


def test_problems_in_different_nodes_and_the_graph_itself_are_all_reported():
    # GIVEN type errors at the top level and in two different nodes
    graph = node_with("split", timeout_s="soon")
    graph["max_steps"] = 0
    graph["nodes"]["merge"]["retry"] = {"max_attempts": 0}

    # WHEN / THEN each is reported
    assert paths_of(graph) == ["max_steps", "nodes.split.timeout_s", "nodes.merge.retry.max_attempts"]


# -- references ---------------------------------------------------------------------------


def test_unknown_start_node_has_a_hint():
    assert problems_of(graph_with(start="splt")) == ["start: unknown node 'splt' (did you mean 'split'?)"]


def test_unknown_next_node():
    assert problems_of(node_with("merge", next="publish")) == ["nodes.merge.next: unknown node 'publish'"]


def test_unknown_branch_target():
    graph = copy.deepcopy(VALID)
    graph["nodes"]["merge"]["branches"].append({"when": "length_ok", "next": "fallbak"})
    assert problems_of(graph) == [
        "nodes.merge.branches.1.next: unknown node 'fallbak' (did you mean 'fallback'?)"
    ]


def test_unknown_catch_target():
    graph = node_with("summarize", catch=[{"next": "merge"}, {"on": ["ValueError"], "next": "x"}])
    assert problems_of(graph) == ["nodes.summarize.catch.1.next: unknown node 'x'"]


def test_unregistered_tool_with_hint():
    assert problems_of(node_with("merge", fn="summarise")) == [
        "nodes.merge.fn: unknown tool 'summarise' (did you mean 'summarize'?)"
    ]


def test_unregistered_condition_in_a_loop_and_in_a_branch():
    graph = node_with("summarize", loop_condition="length_okay")
    graph["nodes"]["merge"]["branches"][0]["when"] = {"any": [{"var": "x", "eq": 1}, "is_done"]}
    assert problems_of(graph) == [
        "nodes.summarize.loop_condition: unknown condition 'length_okay' (did you mean 'length_ok'?); "
        "register it with @condition",
        "nodes.merge.branches.0.when.any.1: unknown condition 'is_done'; register it with @condition",
    ]


# -- malformed rules ----------------------------------------------------------------------


def _when(rule: Any) -> dict[str, Any]:
    graph = copy.deepcopy(VALID)
    graph["nodes"]["merge"]["branches"][0]["when"] = rule
    return graph


WHEN = "nodes.merge.branches.0.when"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"var": "x", "equals": 1},
            f"{WHEN}: unknown operator 'equals'; "
            "use one of eq, ne, lt, lte, gt, gte, in, contains, exists, truthy",
        ),
        ({"var": "x", "eq": 1, "ne": 2}, f"{WHEN}: a rule has exactly one operator besides 'var'"),
        ({"var": "x"}, f"{WHEN}: a rule has exactly one operator besides 'var'"),
        ({"eq": 1}, f"{WHEN}: a rule needs 'var' and one operator, or all/any/not"),
        ({"var": "", "eq": 1}, f"{WHEN}.var: must be a dotted path such as 'summary.length'"),
        ({"var": 3, "eq": 1}, f"{WHEN}.var: must be a dotted path such as 'summary.length'"),
        ({"var": "x", "exists": "yes"}, f"{WHEN}.exists: expects true or false"),
        ({"var": "x", "truthy": 1}, f"{WHEN}.truthy: expects true or false"),
        ({"var": "x", "in": 5}, f"{WHEN}.in: expects a list or a string"),
        ({"all": []}, f"{WHEN}.all: expects a non-empty list of conditions"),
        ({"any": {"var": "x", "eq": 1}}, f"{WHEN}.any: expects a non-empty list of conditions"),
        (
            {"all": [{"var": "x", "eq": 1}], "var": "x"},
            f"{WHEN}: ['all', 'var']: a combinator stands alone in its object",
        ),
        ({"not": [1]}, f"{WHEN}.not: a condition is a registered name or a rule object"),
        (
            {"any": [{"var": "x", "eq": 1}, {"var": "y", "bogus": 1}]},
            f"{WHEN}.any.1: unknown operator 'bogus'; "
            "use one of eq, ne, lt, lte, gt, gte, in, contains, exists, truthy",
        ),
    ],
)
def test_malformed_rules_are_reported_at_their_path(rule, expected):
    # GIVEN a branch whose condition is malformed
    # WHEN the graph is validated
    # THEN the problem names the exact spot inside the rule
    assert problems_of(_when(rule)) == [expected]


def _nested_not(levels: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"var": "x", "truthy": True}
    for _ in range(levels):
        rule = {"not": rule}
    return rule


def test_rules_nested_too_deeply_are_rejected():
    # GIVEN a rule 16 combinators deep, and one 15 deep
    # WHEN each is validated
    # THEN the deeper one is refused where the limit is crossed; the other is fine
    assert problems_of(_when(_nested_not(16))) == [f"{WHEN}{'.not' * 16}: rule nested deeper than 16 levels"]
    engine.compile_graph(_when(_nested_not(15)), registry)


def test_a_condition_of_the_wrong_type_is_reported_at_its_path():
    # GIVEN a branch condition that is neither a name nor an object
    # WHEN / THEN the problem points into that branch
    assert all(path.startswith(WHEN) for path in paths_of(_when(5)))


# -- graph shape --------------------------------------------------------------------------


def test_unreachable_nodes_are_reported():
    # GIVEN two nodes nothing leads to
    graph = copy.deepcopy(VALID)
    graph["nodes"]["orphan"] = {"fn": "merge", "next": "orphan_child"}
    graph["nodes"]["orphan_child"] = {"fn": "merge"}

    # WHEN / THEN both are named
    assert problems_of(graph) == [
        "nodes.orphan: unreachable from start node 'split'",
        "nodes.orphan_child: unreachable from start node 'split'",
    ]


def test_nodes_reached_only_through_branches_or_catch_are_reachable():
    # GIVEN VALID, where "fallback" is reached only through a catch rule
    # WHEN / THEN it compiles
    assert "fallback" in engine.compile_graph(VALID, registry).nodes


def test_a_cycle_of_unconditional_next_edges_is_rejected():
    # GIVEN a -> b -> c -> a with no way out
    graph = {
        "start": "a",
        "nodes": {
            "a": {"fn": "merge", "next": "b"},
            "b": {"fn": "merge", "next": "c"},
            "c": {"fn": "merge", "next": "a"},
        },
    }

    # WHEN / THEN the cycle is spelled out once, at the edge that closes it
    assert problems_of(graph) == [
        "nodes.c.next: cycle a -> b -> c -> a follows only unconditional 'next' edges and "
        "never ends; leave it with a branch, or use loop_condition to repeat a node"
    ]


def test_a_node_whose_next_is_itself_is_a_cycle():
    graph = {"start": "a", "nodes": {"a": {"fn": "merge", "next": "a"}}}
    assert paths_of(graph) == ["nodes.a.next"]


def test_a_catch_route_does_not_break_an_unconditional_cycle():
    # GIVEN a cycle whose first node can only leave it by failing
    graph = {
        "start": "a",
        "nodes": {
            "a": {"fn": "merge", "next": "b", "catch": [{"next": "out"}]},
            "b": {"fn": "merge", "next": "a"},
            "out": {"fn": "merge"},
        },
    }

    # WHEN / THEN it is still a cycle that never ends on success
    assert paths_of(graph) == ["nodes.b.next"]


def test_a_cycle_with_a_branch_is_allowed():
    # GIVEN VALID, where merge branches back to summarize, which leads to merge again
    # WHEN / THEN the cycle is accepted: the branch decides when to leave
    engine.compile_graph(VALID, registry)


def test_a_loop_condition_self_loop_is_allowed():
    # GIVEN a node that repeats itself through loop_condition and then ends
    graph = {"start": "a", "nodes": {"a": {"fn": "merge", "loop_condition": "length_ok"}}}

    # WHEN / THEN it compiles
    assert engine.compile_graph(graph, registry).nodes["a"].loop is not None


# -- limits -------------------------------------------------------------------------------


def test_more_than_500_nodes_is_rejected():
    # GIVEN a chain of 501 nodes
    nodes = {f"n{i}": {"fn": "merge", "next": f"n{i + 1}"} for i in range(501)}
    del nodes["n500"]["next"]

    # WHEN / THEN the node count is the problem
    assert problems_of({"start": "n0", "nodes": nodes}) == ["nodes: 501 nodes; the limit is 500"]


def test_exactly_500_nodes_is_allowed():
    nodes = {f"n{i}": {"fn": "merge", "next": f"n{i + 1}"} for i in range(500)}
    del nodes["n499"]["next"]
    assert len(engine.compile_graph({"start": "n0", "nodes": nodes}, registry).nodes) == 500


def test_a_definition_over_256_kib_is_rejected():
    # GIVEN a graph whose params make it larger than 256 KiB as JSON
    graph = node_with("merge", params={"blob": "x" * (256 * 1024)})

    # WHEN / THEN its size is the one problem reported
    (problem,) = problems_of(graph)
    assert problem.startswith("definition is 262")
    assert problem.endswith("bytes; the limit is 262144")


def test_max_steps_over_the_cap_is_rejected():
    assert problems_of(graph_with(max_steps=25_001)) == [
        "max_steps: Input should be less than or equal to 25000"
    ]
    assert engine.compile_graph(graph_with(max_steps=25_000), registry).max_steps == 25_000


@pytest.mark.parametrize("node_id", ["bad id", "1st", "a.b", "x" * 65, "ünïcode"])
def test_bad_node_ids_are_rejected(node_id):
    # GIVEN a node id that is not short and URL/log safe, reachable from start
    graph = node_with(node_id, fn="merge")
    graph["nodes"]["merge"]["next"] = node_id

    # WHEN / THEN the id itself is the problem
    assert problems_of(graph) == [f"nodes.{node_id}: node id must match ^[A-Za-z_][A-Za-z0-9_\\-]{{0,63}}$"]


# -- fields and types ---------------------------------------------------------------------


def test_unknown_fields_are_rejected_everywhere():
    # GIVEN misspelt or invented fields on the graph, a node, a retry and a catch rule
    graph = graph_with(owner="me")
    graph["nodes"]["split"]["nxt"] = "merge"
    graph["nodes"]["summarize"]["retry"]["max_attemps"] = 2
    graph["nodes"]["summarize"]["catch"][0]["goto"] = "merge"
    graph["nodes"]["merge"]["branches"][0]["then"] = "merge"

    # WHEN / THEN each is an "unknown field" at its own path
    assert problems_of(graph) == [
        "owner: unknown field",
        "nodes.split.nxt: unknown field",
        "nodes.summarize.retry.max_attemps: unknown field",
        "nodes.summarize.catch.0.goto: unknown field",
        "nodes.merge.branches.0.then: unknown field",
    ]


def test_wrong_types_are_reported_per_field():
    # GIVEN values of the wrong type or out of range
    graph = graph_with(max_steps="many", name="has space")
    graph["nodes"]["split"] = {
        "fn": 5,
        "next": 3,
        "timeout_s": "soon",
        "max_iterations": 0,
        "params": [],
        "retry": {"max_attempts": 11, "jitter": "half", "on": []},
    }

    # WHEN / THEN each field is reported at its path
    assert paths_of(graph) == [
        "name",
        "max_steps",
        "nodes.split.fn",
        "nodes.split.next",
        "nodes.split.max_iterations",
        "nodes.split.params",
        "nodes.split.timeout_s",
        "nodes.split.retry.max_attempts",
        "nodes.split.retry.jitter",
        "nodes.split.retry.on",
    ]


def test_missing_required_fields():
    assert problems_of({"nodes": {"a": {}}}) == [
        "start: Field required",
        "nodes.a.fn: required: a node runs a tool (fn), a map or parallel branches, or waits (callback, wait)",
    ]


def test_a_node_that_is_not_an_object():
    assert problems_of({"start": "a", "nodes": {"a": "merge"}}) == [
        "nodes.a: Input should be a valid dictionary or instance of Node"
    ]


def test_empty_nodes():
    assert problems_of({"start": "a", "nodes": {}}) == [
        "nodes: Dictionary should have at least 1 item after validation, not 0",
        "start: unknown node 'a'",
    ]


@pytest.mark.parametrize("data", [[], "graph", 42, None])
def test_a_graph_that_is_not_an_object(data):
    # GIVEN JSON that is not an object
    # WHEN / THEN one problem at the root says what a graph is
    with pytest.raises(GraphValidationError) as excinfo:
        engine.compile_graph(data, registry)
    assert [(p.path, p.message) for p in excinfo.value.problems] == [("", "a graph is a JSON object")]
    assert str(excinfo.value) == "graph has 1 problem: a graph is a JSON object"


def test_more_than_five_problems_are_summarised_in_the_message_but_all_listed():
    # GIVEN seven nodes each naming an unknown tool
    nodes = {f"n{i}": {"fn": f"tool_{i}", "next": f"n{i + 1}"} for i in range(7)}
    del nodes["n6"]["next"]

    # WHEN it is validated
    with pytest.raises(GraphValidationError) as excinfo:
        engine.compile_graph({"start": "n0", "nodes": nodes}, registry)

    # THEN all seven are in .problems and the message says how many it left out
    assert len(excinfo.value.problems) == 7
    assert str(excinfo.value).endswith("(and 2 more)")


def test_unreachable_nodes_are_reported_alongside_other_mistakes():
    # GIVEN a graph with a misspelt tool, a bad rule and a node nothing leads to
    graph = {
        "start": "a",
        "nodes": {
            "a": {"fn": "no_such_tool", "next": "b"},
            "b": {"fn": "split_text", "loop_condition": {"var": "n", "lower_than": 3}},
            "orphan": {"fn": "split_text"},
        },
    }

    # WHEN it is validated
    with pytest.raises(GraphValidationError) as excinfo:
        engine.compile_graph(graph, registry)

    # THEN all three are reported at once, the unreachable node included
    paths = [p.path for p in excinfo.value.problems]
    assert paths == ["nodes.a.fn", "nodes.b.loop_condition", "nodes.orphan"]


# -- every problem in one pass ------------------------------------------------------------


def test_a_field_of_the_wrong_type_hides_no_other_problem_of_its_node():
    # GIVEN a node with max_iterations written as a string AND an unknown loop condition,
    # an unknown start, and a node nothing leads to
    graph = node_with("summarize", max_iterations="5", loop_condition="lenght_ok")
    graph["start"] = "splitt"
    graph["nodes"]["orphan"] = {"fn": "merge"}

    # WHEN / THEN each one is reported: the type, the condition (with a hint), the start
    # (with a hint), and the orphan, reachable from no start the hint could mean
    assert problems_of(graph) == [
        "nodes.summarize.max_iterations: Input should be a valid integer",
        "start: unknown node 'splitt' (did you mean 'split'?)",
        "nodes.summarize.loop_condition: unknown condition 'lenght_ok' (did you mean 'length_ok'?); "
        "register it with @condition",
        "nodes.orphan: unreachable from start node 'splitt'",
    ]


def test_the_targets_of_a_node_with_a_type_error_are_still_checked():
    # GIVEN a node whose timeout is a string and whose branch and catch go nowhere
    graph = node_with("merge", timeout_s="soon", catch=[{"next": "fallbak"}])
    graph["nodes"]["merge"]["branches"][0]["next"] = "sumarize"

    # WHEN / THEN the type and both targets are reported
    assert paths_of(graph) == [
        "nodes.merge.timeout_s",
        "nodes.merge.branches.0.next",
        "nodes.merge.catch.0.next",
    ]


def test_reachability_follows_a_misspelt_target_to_the_node_it_means():
    # GIVEN a misspelt next (summarize is meant) and a real orphan
    graph = node_with("split", next="sumarize")
    graph["nodes"]["orphan"] = {"fn": "merge"}

    # WHEN / THEN the typo is reported and the orphan too, but not the nodes behind the typo
    assert paths_of(graph) == ["nodes.split.next", "nodes.orphan"]


# -- "did you mean" at a bounded cost -------------------------------------------------------


class CountingMatcher(difflib.SequenceMatcher):
    """difflib's matcher, counting comparisons (each candidate's similarity is first
    bounded by ``quick_ratio``, difflib's and the suggester's alike)."""

    compared = 0

    def quick_ratio(self):
        CountingMatcher.compared += 1
        return super().quick_ratio()


def test_did_you_mean_compares_a_bounded_number_of_names_however_many_are_unknown(monkeypatch):
    # GIVEN a graph near the size cap: 200 nodes with long ids, each branching to 10
    # unknown targets that look like node ids (the worst case for difflib)
    ids = [f"node_{i:03d}_" + "abcdefghij" * 5 for i in range(200)]
    nodes = {
        nid: {
            "fn": "merge",
            "branches": [{"when": "length_ok", "next": f"{nid[:-3]}x{k}y"} for k in range(10)],
        }
        for nid in ids
    }
    graph = {"start": ids[0], "nodes": nodes}
    monkeypatch.setattr(difflib, "SequenceMatcher", CountingMatcher)
    CountingMatcher.compared = 0

    # WHEN it is validated
    with pytest.raises(GraphValidationError) as excinfo:
        engine.compile_graph(graph, registry)

    # THEN every unknown target is reported, the first ones with a hint, and the names
    # compared stay within the budget (one search per name against every id: 400,000)
    unknown = [p for p in excinfo.value.problems if p.message.startswith("unknown node")]
    assert len(unknown) == 2000
    assert "did you mean" in unknown[0].message
    assert CountingMatcher.compared <= MAX_COMPARISONS


def test_the_same_unknown_name_is_searched_once(monkeypatch):
    # GIVEN 300 nodes that all go to the same misspelt node
    nodes = {f"n{i}": {"fn": "merge", "next": "fallbak"} for i in range(300)}
    nodes["fallback"] = {"fn": "merge"}
    monkeypatch.setattr(difflib, "SequenceMatcher", CountingMatcher)
    CountingMatcher.compared = 0

    # WHEN it is validated
    with pytest.raises(GraphValidationError) as excinfo:
        engine.compile_graph({"start": "n0", "nodes": nodes}, registry)

    # THEN every reference has its hint, from a single search over the node ids
    assert all("did you mean 'fallback'" in p.message for p in excinfo.value.problems[:300])
    assert CountingMatcher.compared <= len(nodes)
