"""Validation of map and parallel nodes: every problem at once, at its path, with hints."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import engine
from engine import GraphValidationError

registry = engine.Registry()
for name in ("split", "summarize_chunk", "merge", "fallback", "fetch_news", "fetch_prices", "combine"):
    registry.tool(name)(lambda state, ctx: None)

#: The syntax of the graph language's reference, as written there.
VALID: dict[str, Any] = {
    "start": "split",
    "nodes": {
        "split": {"fn": "split", "next": "summarize"},
        "summarize": {
            "map": {"items": "chunks", "fn": "summarize_chunk", "results": "chunk_summaries",
                    "max_concurrency": 10, "tolerated_failures": 0},
            "retry": {"max_attempts": 3}, "timeout_s": 30,
            "catch": [{"on": ["MapFailed"], "next": "fallback", "result_key": "error"}],
            "next": "merge",
        },
        "merge": {"fn": "merge", "next": "fetch"},
        "fallback": {"fn": "fallback"},
        "fetch": {"parallel": ["fetch_news", "fetch_prices"], "next": "combine"},
        "fetch_news": {"fn": "fetch_news", "retry": {"max_attempts": 2},
                       "catch": [{"on": ["*"], "result_key": "news_error"}]},
        "fetch_prices": {"fn": "fetch_prices", "timeout_s": 5},
        "combine": {"fn": "combine"},
    },
}  # fmt: skip


def problems_of(**node_changes: dict[str, Any]) -> list[str]:
    """Problems of VALID with some nodes replaced (``None`` removes one)."""
    graph = copy.deepcopy(VALID)
    for nid, node in node_changes.items():
        if node is None:
            graph["nodes"].pop(nid)
        else:
            graph["nodes"][nid] = node
    try:
        engine.compile_graph(graph, registry)
    except GraphValidationError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_the_reference_syntax_is_valid_and_compiles_to_its_fan_outs():
    graph = engine.compile_graph(copy.deepcopy(VALID), registry)
    summarize, fetch = graph.nodes["summarize"], graph.nodes["fetch"]
    assert summarize.fanout.items == ("chunks",) and summarize.fanout.results == "chunk_summaries"
    assert summarize.tool.name == "summarize_chunk" and summarize.retry.max_attempts == 3
    assert fetch.tool is None and fetch.fanout.branches == ("fetch_news", "fetch_prices")
    assert graph.nodes["fetch_news"].catch[0].next is None


def test_map_defaults():
    node = {**VALID["nodes"]["summarize"], "map": {"items": "xs", "fn": "summarize_chunk", "results": "ys"}}
    fanout = engine.compile_graph({**VALID, "nodes": {**VALID["nodes"], "summarize": node}}, registry)
    assert (
        fanout.nodes["summarize"].fanout.max_concurrency,
        fanout.nodes["summarize"].fanout.tolerated_failures,
    ) == (10, 0)


def test_a_misspelt_map_tool_gets_a_hint():
    node = copy.deepcopy(VALID["nodes"]["summarize"])
    node["map"]["fn"] = "summarise_chunk"
    assert problems_of(summarize=node) == [
        "nodes.summarize.map.fn: unknown tool 'summarise_chunk' (did you mean 'summarize_chunk'?)"
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "max_concurrency",
            0,
            "nodes.summarize.map.max_concurrency: Input should be greater than or equal to 1",
        ),
        (
            "max_concurrency",
            1001,
            "nodes.summarize.map.max_concurrency: Input should be less than or equal to 1000",
        ),
        ("max_concurrency", "5", "nodes.summarize.map.max_concurrency: Input should be a valid integer"),
        (
            "tolerated_failures",
            -1,
            "nodes.summarize.map.tolerated_failures: Input should be greater than or equal to 0",
        ),
        (
            "results",
            "a.b",
            "nodes.summarize.map.results: 'a.b': results go to a top-level state key (no '.')",
        ),
        (
            "items",
            "a..b",
            "nodes.summarize.map.items: 'a..b' is not a state path like 'chunks' or 'doc.parts'",
        ),
        ("extra", 1, "nodes.summarize.map.extra: unknown field"),
    ],
)
def test_map_fields_are_checked(field, value, message):
    node = copy.deepcopy(VALID["nodes"]["summarize"])
    node["map"][field] = value
    assert problems_of(summarize=node) == [message]


def test_a_map_must_name_items_fn_and_results():
    node = {**VALID["nodes"]["summarize"], "map": {}}
    assert problems_of(summarize=node) == [
        "nodes.summarize.map.items: Field required",
        "nodes.summarize.map.fn: Field required",
        "nodes.summarize.map.results: Field required",
    ]


def test_a_node_runs_exactly_one_of_fn_map_parallel_and_fan_outs_do_not_loop():
    both = {
        **copy.deepcopy(VALID["nodes"]["summarize"]),
        "fn": "merge",
        "loop_condition": {"var": "x", "truthy": True},
    }
    assert problems_of(summarize=both) == [
        "nodes.summarize.map: a node has exactly one of fn, map, parallel; this one has fn and map",
    ]
    looping = {**copy.deepcopy(VALID["nodes"]["summarize"]), "loop_condition": {"var": "x", "truthy": True}}
    assert problems_of(summarize=looping) == [
        "nodes.summarize.loop_condition: a map node cannot loop; loop on the node after it instead"
    ]
    assert problems_of(merge={"next": "fetch"}) == [
        "nodes.merge.fn: required: a node runs a tool (fn), a map or parallel branches, or waits (callback, wait)"
    ]


@pytest.mark.parametrize(
    ("branches", "message"),
    [
        (["fetch_news"], "nodes.fetch.parallel: List should have at least 2 items after validation, not 1"),
        (
            [f"b{i}" for i in range(51)],
            "nodes.fetch.parallel: List should have at most 50 items after validation, not 51",
        ),
    ],
)
def test_parallel_takes_2_to_50_branches(branches, message):
    assert message in problems_of(fetch={"parallel": branches, "next": "combine"})


def test_parallel_branches_must_be_distinct_known_other_nodes():
    fetch = {"parallel": ["fetch_news", "fetch_newz", "fetch_news", "fetch"], "next": "combine"}
    assert problems_of(fetch=fetch, fetch_prices=None) == [
        "nodes.fetch.parallel.1: unknown node 'fetch_newz' (did you mean 'fetch_news'?)",
        "nodes.fetch.parallel.2: node 'fetch_news' is listed twice",
        "nodes.fetch.parallel.3: a parallel node cannot run itself",
    ]


def test_a_branch_has_no_routing_of_its_own_and_every_problem_is_listed():
    # GIVEN a branch that routes on, loops, catches to a node, and a parallel node with a retry
    news = {
        "fn": "fetch_news",
        "next": "combine",
        "branches": [{"when": {"var": "x", "truthy": True}, "next": "combine"}],
        "loop_condition": {"var": "x", "truthy": True},
        "catch": [{"on": ["*"], "next": "fallback"}],
    }
    fetch = {**VALID["nodes"]["fetch"], "retry": {"max_attempts": 2}, "timeout_s": 3}
    # THEN each problem is reported at its path, in one pass
    assert problems_of(fetch_news=news, fetch=fetch) == [
        "nodes.fetch.retry: a parallel node has no retry of its own; give each branch node its own",
        "nodes.fetch.timeout_s: a parallel node has no timeout of its own; set it on each branch node",
        "nodes.fetch_news.catch.0.next: a parallel branch's catch has no next: its error goes under "
        "result_key and the run goes on by the parallel node's next",
        "nodes.fetch_news.next: branch of parallel node 'fetch': a branch has no next; the run goes on by "
        "'fetch''s next when every branch is done",
        "nodes.fetch_news.branches: branch of parallel node 'fetch': a branch has no branches; the run goes "
        "on by 'fetch''s next when every branch is done",
        "nodes.fetch_news.loop_condition: branch of parallel node 'fetch': a branch has no loop_condition; "
        "the run goes on by 'fetch''s next when every branch is done",
    ]


def test_a_branch_runs_one_tool_and_only_from_its_parallel_node():
    combine = {"fn": "combine", "next": "fetch_prices"}
    prices = {"map": {"items": "xs", "fn": "fetch_prices", "results": "ys"}}
    assert problems_of(combine=combine, fetch_prices=prices) == [
        "nodes.fetch_prices.map: branch of parallel node 'fetch': a branch runs one tool (fn), not a map",
        "nodes.combine: routes to 'fetch_prices', a branch of parallel node 'fetch'; a branch runs only "
        "from its parallel node",
    ]


def test_an_ordinary_nodes_catch_still_needs_a_next():
    merge = {"fn": "merge", "next": "fetch", "catch": [{"on": ["*"]}]}
    assert problems_of(merge=merge) == [
        "nodes.merge.catch.0.next: required: the node the run goes to when this rule catches"
    ]


def test_parallel_branches_are_reachable_through_their_parallel_node():
    # (fetch_news and fetch_prices are reached only through fetch: no "unreachable" problem)
    assert problems_of() == []
