"""Map and parallel nodes in the in-process runner: results, failures, concurrency, logs."""

from __future__ import annotations

import asyncio

import pytest

import engine
from engine import compile_graph, run_graph_sync

registry = engine.Registry()
RUNNING = {"now": 0, "peak": 0}


@registry.tool
async def square(state, ctx):
    """ctx.item squared, finishing later the smaller the item (order of completion reversed);
    a string item fails with ValueError, "flaky" only on its first attempt."""
    RUNNING["now"] += 1
    RUNNING["peak"] = max(RUNNING["peak"], RUNNING["now"])
    try:
        await asyncio.sleep(0.01 * (10 - ctx.index % 10))  # 10 ms apart: an order a busy machine keeps
        if ctx.item == "flaky" and ctx.attempt == 1:
            raise ConnectionError("try again")
        if ctx.item == "slow":
            await asyncio.sleep(5)
        if isinstance(ctx.item, str) and ctx.item != "flaky":
            raise ValueError(f"not a number: {ctx.item}")
        return {
            "i": ctx.index,
            "sq": ctx.item * ctx.item if ctx.item != "flaky" else None,
            "seen": state["tag"],
        }
    finally:
        RUNNING["now"] -= 1


@registry.tool
async def retag(state, ctx):
    return {"tag": "after"}


@registry.tool
async def put(state, ctx):
    RUNNING["now"] += 1
    RUNNING["peak"] = max(RUNNING["peak"], RUNNING["now"])
    await asyncio.sleep(0.001)
    RUNNING["now"] -= 1
    if ctx.params.get("fail"):
        raise KeyError(ctx.params["fail"])
    return dict(ctx.params.get("set", {}))


@pytest.fixture(autouse=True)
def _reset():
    RUNNING.update(now=0, peak=0)


def map_graph(**spec) -> dict:
    return {
        "start": "m",
        "max_steps": spec.pop("max_steps", 1000),
        "nodes": {
            "m": {
                "map": {"items": "xs", "fn": "square", "results": "ys", **spec},
                "retry": {"max_attempts": 2, "interval_s": 0},
                "timeout_s": 0.5,
                "catch": [
                    {"on": ["MapFailed", "InvalidMapItems"], "next": "fallback", "result_key": "error"}
                ],
                "next": "after",
            },
            "after": {"fn": "retag"},
            "fallback": {"fn": "put", "params": {"set": {"fell_back": True}}},
        },
    }


def run(graph: dict, state: dict):
    return run_graph_sync(compile_graph(graph, registry), state, sleep=None)


def test_results_are_in_item_order_and_each_item_sees_the_state_at_the_start_of_the_map():
    result = run(map_graph(max_concurrency=10), {"xs": list(range(10)), "tag": "before"})
    assert result.status == "completed"
    assert result.state["ys"] == [{"i": i, "sq": i * i, "seen": "before"} for i in range(10)]
    assert result.state["ys_errors"] == [] and result.state["tag"] == "after"


def test_at_most_max_concurrency_items_run_at_once():
    run(map_graph(max_concurrency=3), {"xs": list(range(12)), "tag": ""})
    assert RUNNING["peak"] == 3
    run(map_graph(max_concurrency=1000), {"xs": list(range(12)), "tag": ""})
    assert RUNNING["peak"] == 12


def test_log_has_one_entry_per_execution_in_completion_order_then_the_join():
    result = run(map_graph(max_concurrency=3), {"xs": [0, "flaky", 2], "tag": ""})
    entries = [(e["seq"], e["node"], e.get("index"), e["attempt"], e["status"]) for e in result.logs]
    # items finish in reverse order (the tool sleeps less for later items); "flaky" retries
    assert entries == [
        (0, "m", 2, 1, "ok"),
        (1, "m", 1, 1, "retry"),
        (2, "m", 0, 1, "ok"),
        (3, "m", 1, 2, "ok"),
        (4, "m", None, 1, "ok"),
        (5, "after", None, 1, "ok"),
    ]
    assert result.logs[0]["result"] == {"i": 2, "sq": 4, "seen": ""}
    assert result.logs[4]["result"]["ys"][2] == {"i": 2, "sq": 4, "seen": ""}


def test_failed_items_get_null_and_an_error_entry_within_tolerated_failures():
    result = run(map_graph(tolerated_failures=1), {"xs": [1, "a", "slow"][:2], "tag": ""})
    assert result.status == "completed"
    assert result.state["ys"] == [{"i": 0, "sq": 1, "seen": ""}, None]
    assert result.state["ys_errors"] == [{"index": 1, "type": "ValueError", "message": "not a number: a"}]


def test_an_item_timing_out_after_its_retries_is_a_failed_item():
    result = run(map_graph(tolerated_failures=1), {"xs": [1, "slow"], "tag": ""})
    assert result.state["ys_errors"] == [
        {"index": 1, "type": "TimeoutError", "message": "node timed out after 0.5s"}
    ]
    assert [e["status"] for e in result.logs if e.get("index") == 1] == ["retry", "failed"]


def test_more_failures_than_tolerated_fail_the_node_with_a_catchable_map_failed():
    result = run(map_graph(tolerated_failures=0), {"xs": [1, "a", "b"], "tag": ""})
    assert result.status == "completed" and result.state["fell_back"] is True
    assert result.state["error"]["type"] == "MapFailed"
    assert result.state["error"]["message"].startswith("2 of 3 items failed (tolerated: 0); first: item 1")
    assert result.state["ys"] == [{"i": 0, "sq": 1, "seen": ""}, None, None]


def test_an_uncaught_map_failed_fails_the_run():
    graph = map_graph()
    graph["nodes"]["m"].pop("catch")
    graph["nodes"].pop("fallback")
    result = run(graph, {"xs": ["a"], "tag": ""})
    assert result.status == "failed" and result.error["type"] == "MapFailed"


def test_an_empty_list_completes_at_once_with_an_empty_list():
    result = run(map_graph(), {"xs": [], "tag": ""})
    assert result.state["ys"] == [] and [e["node"] for e in result.logs] == ["m", "after"]


@pytest.mark.parametrize(("state", "message"), [({}, "no such key"), ({"xs": 3}, "is a int, not a list")])
def test_items_that_are_not_a_list_fail_the_node_with_invalid_map_items(state, message):
    result = run(map_graph(), state)
    assert result.state["error"]["type"] == "InvalidMapItems" and message in result.state["error"]["message"]


def test_items_over_the_limit_fail_the_node():
    result = run(map_graph(), {"xs": [0] * 10_001})
    assert "has 10001 items; the limit is 10000" in result.state["error"]["message"]


def test_a_nested_items_path_and_ctx_index():
    graph = map_graph()
    graph["nodes"]["m"]["map"]["items"] = "doc.parts"
    result = run(graph, {"doc": {"parts": [3, 4]}, "tag": "t"})
    assert [y["sq"] for y in result.state["ys"]] == [9, 16]


def test_max_steps_counts_every_execution():
    result = run(map_graph(max_steps=4, max_concurrency=1), {"xs": list(range(6)), "tag": ""})
    assert result.status == "failed" and result.error["type"] == "MaxStepsExceeded"
    assert [e["seq"] for e in result.logs] == [0, 1, 2, 3, 4] and result.logs[-1]["status"] == "failed"


def parallel_graph(**branches) -> dict:
    nodes = {
        "p": {"parallel": list(branches), "next": "after",
              "catch": [{"on": ["ParallelFailed", "ParallelConflict"], "next": "fallback"}]},
        "after": {"fn": "retag"},
        "fallback": {"fn": "put", "params": {"set": {"fell_back": True}}},
    }  # fmt: skip
    nodes.update({bid: {"fn": "put", **node} for bid, node in branches.items()})
    return {"start": "p", "nodes": nodes}


def test_parallel_branches_run_at_once_and_merge_in_list_order():
    graph = parallel_graph(a={"params": {"set": {"x": 1}}}, b={"params": {"set": {"y": 2}}}, c={})
    result = run(graph, {"tag": ""})
    assert RUNNING["peak"] == 3
    assert result.status == "completed" and (result.state["x"], result.state["y"]) == (1, 2)
    entries = [(e["node"], e.get("branch"), e["status"]) for e in result.logs]
    assert sorted(entries[:3]) == [("p", "a", "ok"), ("p", "b", "ok"), ("p", "c", "ok")]
    assert entries[3:] == [("p", None, "ok"), ("after", None, "ok")]
    assert result.logs[3]["result"] == {"x": 1, "y": 2}


def test_two_branches_writing_one_key_fail_with_parallel_conflict_naming_both():
    graph = parallel_graph(a={"params": {"set": {"x": 1}}}, b={"params": {"set": {"x": 2}}})
    result = run(graph, {})
    assert result.state["error"]["type"] == "ParallelConflict"
    assert result.state["error"]["message"] == "branches 'a' and 'b' both write state key 'x'"


def test_a_failing_branch_without_catch_fails_the_node_with_parallel_failed():
    graph = parallel_graph(
        a={"params": {"fail": "gone"}, "retry": {"max_attempts": 2, "interval_s": 0}}, b={}
    )
    result = run(graph, {})
    assert result.state["error"]["type"] == "ParallelFailed" and result.state["fell_back"] is True
    assert [e["status"] for e in result.logs if e.get("branch") == "a"] == ["retry", "failed"]


def test_a_branch_whose_catch_fires_contributes_its_error_under_its_result_key():
    graph = parallel_graph(
        a={"params": {"fail": "gone"}, "catch": [{"on": ["KeyError"], "result_key": "a_err"}]}, b={}
    )
    result = run(graph, {})
    assert result.status == "completed"
    assert result.state["a_err"] == {"node": "a", "type": "KeyError", "message": "'gone'"}
