"""Loading stored graphs: the step path builds what runs without validating again, and gets
exactly what validation built (defaults, numbers, errors)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

import engine
from engine import GraphValidationError
from engine.graph import DEFAULT_MAX_ITERATIONS, DEFAULT_MAX_STEPS, DEFAULT_RETRY, CompiledCatch
from engine.model import CatchRule, Graph, Node, RetryPolicy
from engine.service import load_stored_graph
from tests.reliability.graphs import graphs

registry = engine.Registry()


@registry.tool
def work(state, ctx):
    return {}


@registry.condition
def done(state):
    return True


FULL: dict[str, Any] = {
    "name": "full",
    "start": "a",
    "nodes": {
        "a": {
            "fn": "work",
            "loop_condition": "done",
            "timeout_s": 10,
            "retry": {"max_attempts": 2, "interval_s": 1, "jitter": "full", "on": ["TimeoutError"]},
            "catch": [{"next": "b"}, {"on": ["KeyError"], "next": "b", "result_key": "oops"}],
            "params": {"n": 1, "nested": {"x": [1, 2]}},
            "next": "b",
        },
        "b": {"fn": "work", "branches": [{"when": {"var": "k", "gte": 2}, "next": "a"}], "max_iterations": 7},
    },
}


def shape(graph: engine.CompiledGraph) -> dict[str, Any]:
    """What a compiled graph runs, with conditions replaced by their verdicts on a probe state."""
    probe = {"k": 3}
    return {
        "name": graph.name,
        "start": graph.start,
        "max_steps": graph.max_steps,
        "nodes": {
            nid: {
                "tool": node.tool.name,
                "next": node.next,
                "branches": [(p(probe), target) for p, target in node.branches],
                "loop": None if node.loop is None else node.loop(probe),
                "max_iterations": node.max_iterations,
                "params": node.params,
                "timeout_s": node.timeout_s,
                "retry": node.retry,
                "catch": node.catch,
            }
            for nid, node in graph.nodes.items()
        },
    }


def stored(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition as the store gives it back: through JSON."""
    return json.loads(json.dumps(definition))


def test_a_stored_graph_loads_as_validation_built_it():
    # GIVEN a graph using every field, validated as create_graph does
    compiled = engine.compile_graph(FULL, registry)

    # WHEN the step path loads it back from the store
    loaded = load_stored_graph(stored(FULL), registry)

    # THEN it runs the same nodes, with the same defaults and number types
    assert shape(loaded) == shape(compiled)
    a = loaded.nodes["a"]
    assert a.timeout_s == 10.0 and isinstance(a.timeout_s, float)
    assert a.retry.interval_s == 1.0 and isinstance(a.retry.interval_s, float)
    assert a.retry.backoff_rate == DEFAULT_RETRY.backoff_rate and a.retry.on == ("TimeoutError",)
    assert a.catch == (CompiledCatch("b"), CompiledCatch("b", ("KeyError",), "oops"))
    assert loaded.max_steps == DEFAULT_MAX_STEPS and a.max_iterations == DEFAULT_MAX_ITERATIONS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_random_valid_graphs_load_from_the_store_as_they_compile(graph):
    assert shape(load_stored_graph(stored(graph), engine.default_registry)) == shape(
        engine.compile_graph(graph)
    )


def test_the_model_documents_the_defaults_the_loader_applies():
    # The pydantic model is what users read (OpenAPI, validation); the loader is what runs.
    retry = RetryPolicy().model_dump()
    assert {**retry, "on": tuple(retry["on"])} == asdict(DEFAULT_RETRY)
    catch = CatchRule(next="b")
    assert (tuple(catch.on), catch.result_key) == (CompiledCatch("b").on, CompiledCatch("b").result_key)
    assert Node(fn="work").max_iterations == DEFAULT_MAX_ITERATIONS
    assert Graph(start="a", nodes={"a": Node(fn="work")}).max_steps == DEFAULT_MAX_STEPS


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("max_iterations", "5", "nodes.a.max_iterations: Input should be a valid integer"),
        ("max_iterations", 5.0, "nodes.a.max_iterations: Input should be a valid integer"),
        ("max_iterations", True, "nodes.a.max_iterations: Input should be a valid integer"),
        ("timeout_s", "10", "nodes.a.timeout_s: Input should be a valid number"),
        ("retry", {"max_attempts": "2"}, "nodes.a.retry.max_attempts: Input should be a valid integer"),
        ("retry", {"interval_s": False}, "nodes.a.retry.interval_s: Input should be a valid number"),
    ],
)
def test_numbers_are_json_numbers_so_what_validates_loads_unchanged(field, value, problem):
    # GIVEN a number written as a string, a float or a boolean where an integer belongs
    graph = {"start": "a", "nodes": {"a": {"fn": "work", field: value}}}

    # WHEN it is validated THEN it is refused (it would not run as written)
    with pytest.raises(GraphValidationError) as caught:
        engine.compile_graph(graph, registry)
    assert [str(p) for p in caught.value.problems] == [problem]


def test_a_stored_graph_that_no_longer_loads_is_reported_by_full_validation():
    # GIVEN stored definitions naming a tool or condition this deployment lacks, or damaged
    gone_tool = {"start": "a", "nodes": {"a": {"fn": "vanished"}}}
    gone_condition = {"start": "a", "nodes": {"a": {"fn": "work", "loop_condition": "gone"}}}
    damaged = {"start": "a", "nodes": []}

    # WHEN the step path loads them THEN the error lists each problem at its path
    for definition, expected in (
        (gone_tool, "nodes.a.fn: unknown tool 'vanished'"),
        (gone_condition, "nodes.a.loop_condition: unknown condition 'gone'"),
        (damaged, "nodes: Input should be a valid dictionary"),
    ):
        with pytest.raises(GraphValidationError) as caught:
            load_stored_graph(definition, registry)
        assert any(str(p).startswith(expected) for p in caught.value.problems), caught.value.problems
