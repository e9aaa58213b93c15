"""Hypothesis strategies: random valid graphs over the ``rel_`` tools, and initial states.

A graph has up to :data:`MAX_NODES` nodes. ``next`` edges only point forward (so no cycle
is made of unconditional edges), while branches and catch routes may point anywhere —
loops that only ``max_steps`` or the state ends. Nodes may loop with ``loop_condition`` +
``max_iterations``, branch on declarative rules, retry (interval 0 or 1 s, either
jitter), catch, run flaky tools that fail their first attempts and slow tools that time
out. Unreachable nodes are pruned, so every graph drawn is valid.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

import tests.reliability.tools  # noqa: F401  (registers the rel_ tools)

MAX_NODES = 6
KEYS = ("a", "b", "c")
#: Tiny, so a timed-out attempt costs almost nothing; the slow tool sleeps far longer.
TIMEOUT_S = 0.01

_scalars = st.one_of(st.integers(-5, 10), st.booleans(), st.none(), st.text(max_size=3))
_error_lists = st.sampled_from(
    [
        ["*"],
        ["ConnectionError"],
        ["TimeoutError"],
        ["ValueError", "TimeoutError"],
        ["Exception"],
        ["KeyError"],
    ]
)


@st.composite
def rules(draw, ids: list[str], depth: int = 0) -> Any:
    """A declarative condition over the state's keys, its trail, or a combination."""
    kind = draw(
        st.sampled_from(["compare", "compare", "trail", "exists", "all", "any", "not"][: 4 if depth else 7])
    )
    if kind == "compare":
        op = draw(st.sampled_from(["eq", "ne", "lt", "lte", "gt", "gte", "truthy"]))
        value = draw(st.booleans()) if op == "truthy" else draw(st.integers(-3, 8))
        return {"var": draw(st.sampled_from(KEYS)), op: value}
    if kind == "trail":
        if draw(st.booleans()):
            return {"var": "trail", "contains": draw(st.sampled_from(ids))}
        return {
            "var": f"trail.{draw(st.integers(-3, 3))}",
            "in": draw(st.lists(st.sampled_from(ids), max_size=2)),
        }
    if kind == "exists":
        return {"var": draw(st.sampled_from([*KEYS, "error", "caught"])), "exists": draw(st.booleans())}
    if kind == "not":
        return {"not": draw(rules(ids, depth + 1))}
    return {kind: draw(st.lists(rules(ids, depth + 1), min_size=1, max_size=2))}


@st.composite
def nodes(draw, index: int, ids: list[str]) -> dict[str, Any]:
    tool = draw(
        st.sampled_from(
            ["rel_add", "rel_add_sync", "rel_add_in_place", "rel_flaky", "rel_flaky", "rel_slow", "rel_noop"]
        )
    )
    node: dict[str, Any] = {
        "fn": tool,
        "params": {"key": draw(st.sampled_from(KEYS)), "by": draw(st.integers(-2, 3))},
    }
    if tool == "rel_flaky":
        node["params"]["fail_times"] = draw(st.integers(0, 4))
        node["params"]["error"] = draw(st.sampled_from(["ConnectionError", "ValueError", "KeyError"]))
    if tool == "rel_slow":
        node["params"]["slow_times"] = draw(st.integers(0, 3))
        node["timeout_s"] = TIMEOUT_S
    later = ids[index + 1 :]
    if later and draw(st.integers(0, 3)):
        node["next"] = draw(st.sampled_from(later))
    branches = draw(st.lists(st.tuples(rules(ids), st.sampled_from(ids)), max_size=2))
    if branches:
        node["branches"] = [{"when": when, "next": target} for when, target in branches]
    if draw(st.integers(0, 3)) == 0:
        node["loop_condition"] = {"var": node["params"]["key"], "gte": draw(st.integers(0, 6))}
        node["max_iterations"] = draw(st.integers(1, 5))
    if draw(st.booleans()):
        node["retry"] = {
            "max_attempts": draw(st.integers(1, 4)),
            "interval_s": draw(st.sampled_from([0, 0, 0, 1])),
            "backoff_rate": draw(st.sampled_from([1, 2])),
            "jitter": draw(st.sampled_from(["none", "full"])),
            "on": draw(_error_lists),
        }
    if draw(st.integers(0, 2)) == 0:
        node["catch"] = [
            {
                "on": draw(_error_lists),
                "next": draw(st.sampled_from(ids)),
                "result_key": draw(st.sampled_from(["error", "caught"])),
            }
        ]
    return node


def successors(node: dict[str, Any]) -> list[str]:
    targets = [b["next"] for b in node.get("branches", [])] + [
        c["next"] for c in node.get("catch", []) if "next" in c
    ]
    targets += node.get("parallel", [])
    return [*targets, node["next"]] if node.get("next") else targets


_FANOUT_ERRORS = ["MapFailed", "ParallelFailed", "ParallelConflict", "InvalidMapItems", "*"]


@st.composite
def map_nodes(draw) -> dict[str, Any]:
    """A map over ``state["items"]`` with items that fail their first attempts."""
    node: dict[str, Any] = {
        "map": {
            "items": "items",
            "fn": "rel_item",
            "results": draw(st.sampled_from(["ys", "zs"])),
            "max_concurrency": draw(st.integers(1, 4)),
            "tolerated_failures": draw(st.integers(0, 2)),
        },
        "params": {
            "fail_every": draw(st.integers(0, 3)),
            "fail_times": draw(st.integers(0, 3)),
            "error": draw(st.sampled_from(["ConnectionError", "ValueError"])),
        },
    }
    if draw(st.booleans()):
        node["retry"] = {
            "max_attempts": draw(st.integers(1, 3)),
            "interval_s": draw(st.sampled_from([0, 0, 1])),
            "on": draw(_error_lists),
        }
    return node


@st.composite
def branch_nodes(draw, bid: str) -> dict[str, Any]:
    """A parallel branch: one tool, maybe a retry and a catch of its own, no routing. It
    writes a key of its own, or now and then one another branch may write too."""
    node: dict[str, Any] = {
        "fn": "rel_branch",
        "params": {
            "key": draw(st.sampled_from([bid, bid, bid, "a", "b"])),
            "by": draw(st.integers(-2, 3)),
            "fail_times": draw(st.sampled_from([0, 0, 0, 1, 3])),
            "error": draw(st.sampled_from(["ConnectionError", "KeyError"])),
        },
    }
    if draw(st.booleans()):
        node["retry"] = {"max_attempts": draw(st.integers(1, 3)), "interval_s": 0, "on": draw(_error_lists)}
    if draw(st.integers(0, 2)) == 0:
        node["catch"] = [
            {"on": draw(_error_lists), "result_key": draw(st.sampled_from([f"{bid}_err", "err"]))}
        ]
    return node


@st.composite
def fanout_node(draw, index: int, ids: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    """A map or parallel node (its branch nodes go into ``extra``), routed like the others."""
    if draw(st.booleans()):
        node = draw(map_nodes())
    else:
        branches = [f"{ids[index]}_b{j}" for j in range(draw(st.integers(2, 3)))]
        for bid in branches:
            extra[bid] = draw(branch_nodes(bid))
        node = {"parallel": branches}
    later = ids[index + 1 :]
    if later and draw(st.integers(0, 3)):
        node["next"] = draw(st.sampled_from(later))
    if draw(st.integers(0, 1)) == 0:
        node["catch"] = [{"on": [draw(st.sampled_from(_FANOUT_ERRORS))], "next": draw(st.sampled_from(ids)),
                          "result_key": "caught"}]  # fmt: skip
    return node


#: A wait node's seconds: within SQS's delay (a delayed step message), or beyond it (an
#: EventBridge Scheduler one-time schedule, fired at the harness's time).
WAIT_SECONDS = (1, 600, 7200)
#: A callback's timeout: a year, so that only an answer meant as a timeout times it out.
CALLBACK_TIMEOUT_S = 365 * 86400


@st.composite
def waiting_node(draw, node: dict[str, Any]) -> dict[str, Any]:
    """``node`` turned into a callback node (its tool runs first) or a wait node (no tool),
    routed as it was; a catch rule may take CallbackRejected or CallbackTimeout."""
    node = {k: v for k, v in node.items() if k not in ("loop_condition", "max_iterations")}
    if draw(st.booleans()):
        node["callback"] = {
            "timeout_s": CALLBACK_TIMEOUT_S,
            "result": draw(st.sampled_from([*KEYS, "answer"])),
        }
        errors = ["CallbackRejected", "CallbackTimeout", "*"]
    else:
        node = {k: v for k, v in node.items() if k not in ("fn", "params", "retry", "timeout_s")}
        node["wait"] = {"seconds": draw(st.sampled_from(WAIT_SECONDS))}
        errors = ["*"]
    for rule in node.get("catch", []):
        if draw(st.booleans()):
            rule["on"] = [draw(st.sampled_from(errors))]
    return node


def prune_unreachable(graph: dict[str, Any]) -> dict[str, Any]:
    seen, stack = {graph["start"]}, [graph["start"]]
    while stack:
        for target in successors(graph["nodes"][stack.pop()]):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return {**graph, "nodes": {nid: n for nid, n in graph["nodes"].items() if nid in seen}}


@st.composite
def graphs(draw, max_steps: int = 40, with_fanouts: bool = False, with_waits: bool = False) -> dict[str, Any]:
    """A valid graph whose runs take at most ``max_steps`` steps (map and parallel nodes
    among its nodes ``with_fanouts``; callback and wait nodes ``with_waits``)."""
    ids = [f"n{i}" for i in range(draw(st.integers(1, MAX_NODES)))]
    fanouts = {ids[0], *draw(st.sets(st.sampled_from(ids), max_size=1))} if with_fanouts else set()
    # the start node waits, so that every run meets a wait
    waits = {ids[0], *draw(st.sets(st.sampled_from(ids), max_size=1))} if with_waits else set()
    extra: dict[str, Any] = {}
    graph = {
        "name": "differential",
        "start": ids[0],
        "max_steps": draw(st.integers(max_steps // 2 if with_fanouts else 1, max_steps)),
        "nodes": {
            nid: draw(fanout_node(i, ids, extra)) if nid in fanouts else draw(nodes(i, ids))
            for i, nid in enumerate(ids)
        },
    }
    for nid in waits - fanouts:
        graph["nodes"][nid] = draw(waiting_node(graph["nodes"][nid]))
    graph["nodes"].update(extra)
    return prune_unreachable(graph)


#: Initial states: the tools' keys (sometimes of the wrong type), a trail, and unicode extras.
states = st.fixed_dictionaries(
    {},
    optional={
        "a": st.integers(-5, 5),
        "b": st.one_of(st.integers(-5, 5), _scalars),
        "c": st.integers(0, 3),
        "trail": st.lists(st.sampled_from(["x", "n0"]), max_size=2),
        "note": st.text(max_size=12),
        "nested": st.dictionaries(st.text(min_size=1, max_size=4), _scalars, max_size=3),
    },
)
#: States for graphs with map nodes: a list of items (rarely not a list).
fanout_states = st.builds(
    lambda state, items: {**state, "items": items},
    states,
    st.one_of(st.lists(st.integers(0, 9), max_size=8), st.lists(st.integers(0, 9), max_size=8), st.just(3)),
)
