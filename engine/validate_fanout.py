"""Validation of what a node runs: one tool (``fn``), a ``map`` or ``parallel`` branches.

Called by :func:`engine.validate.compile_graph` on nodes that passed the model, next to
its other checks; each problem comes with its path and, for a misspelt name, a hint.
"""

from __future__ import annotations

from collections.abc import Iterator

from engine.errors import Problem
from engine.model import Node
from engine.registry import Registry
from engine.suggest import Suggester
from engine.validate_waits import check_waits

#: What a parallel branch may not have: the run goes on by its parallel node.
_BRANCH_FORBIDDEN = ("next", "branches", "loop_condition", "map", "parallel")


def parallel_targets(node: Node) -> list[str]:
    """The branch node ids a parallel node runs (none for other nodes)."""
    return list(node.parallel or ())


def check_node_kinds(
    start: object, nodes: dict[str, Node], registry: Registry, suggester: Suggester
) -> list[Problem]:
    """Every problem with what the nodes run, their fan-outs and parallel branches
    (``nodes``: those that match the node model)."""
    problems: list[Problem] = []
    tools = [r["name"] for r in registry.describe()["tools"]]
    known = list(nodes)
    branch_of: dict[str, str] = {}
    for nid, node in nodes.items():
        base = f"nodes.{nid}"
        problems += _check_kind(base, node)
        problems += _check_params(base, node, registry)
        if node.map is not None:
            problems += _check_map(base, node, registry, tools, suggester)
        for i, target in enumerate(parallel_targets(node)):
            if target not in nodes:
                hint = suggester.hint("node", target, known)
                problems.append(Problem(f"{base}.parallel.{i}", f"unknown node {target!r}{hint}"))
            elif target == nid:
                problems.append(Problem(f"{base}.parallel.{i}", "a parallel node cannot run itself"))
            elif target in parallel_targets(node)[:i]:
                problems.append(Problem(f"{base}.parallel.{i}", f"node {target!r} is listed twice"))
            else:
                branch_of.setdefault(target, nid)
        if node.parallel is not None and node.retry is not None:
            problems.append(
                Problem(
                    f"{base}.retry", "a parallel node has no retry of its own; give each branch node its own"
                )
            )
        if node.parallel is not None and node.timeout_s is not None:
            problems.append(
                Problem(
                    f"{base}.timeout_s",
                    "a parallel node has no timeout of its own; set it on each branch node",
                )
            )
        problems += _check_catch_targets(base, node, nid in branch_of)
    for target, parent in branch_of.items():
        problems += _check_branch(target, parent, nodes[target], start, nodes)
    return problems


def _check_params(base: str, node: Node, registry: Registry) -> list[Problem]:
    """The node's ``params`` as its tool checks them (a tool registered with ``params=``)."""
    name, mapped = (node.map.fn, True) if node.map is not None else (node.fn, False)
    if name is None or not registry.has_tool(name):
        return []
    check = registry.get_tool(name).check_params
    if check is None:
        return []
    return [
        Problem(f"{base}.params.{p.path}" if p.path else f"{base}.params", p.message)
        for p in check(node.params, mapped)
    ]


def _check_kind(base: str, node: Node) -> list[Problem]:
    if node.wait is not None or node.callback is not None:
        return check_waits(base, node)
    kinds = [name for name in ("fn", "map", "parallel") if getattr(node, name) is not None]
    if not kinds:
        return [
            Problem(
                f"{base}.fn",
                "required: a node runs a tool (fn), a map or parallel branches, or waits (callback, wait)",
            )
        ]
    if len(kinds) > 1:
        return [
            Problem(
                f"{base}.{kinds[1]}",
                f"a node has exactly one of fn, map, parallel; this one has {' and '.join(kinds)}",
            )
        ]
    problems = []
    if kinds[0] != "fn" and node.loop_condition is not None:
        problems.append(
            Problem(
                f"{base}.loop_condition", f"a {kinds[0]} node cannot loop; loop on the node after it instead"
            )
        )
    if node.parallel is not None and node.params:
        problems.append(Problem(f"{base}.params", "a parallel node has no tool to pass params to"))
    return problems


def _check_map(
    base: str, node: Node, registry: Registry, tools: list[str], suggester: Suggester
) -> list[Problem]:
    spec = node.map
    assert spec is not None
    problems = []
    if not registry.has_tool(spec.fn):
        problems.append(
            Problem(f"{base}.map.fn", f"unknown tool {spec.fn!r}{suggester.hint('tool', spec.fn, tools)}")
        )
    if any(not part for part in spec.items.split(".")):
        problems.append(
            Problem(f"{base}.map.items", f"{spec.items!r} is not a state path like 'chunks' or 'doc.parts'")
        )
    if "." in spec.results:
        problems.append(
            Problem(f"{base}.map.results", f"{spec.results!r}: results go to a top-level state key (no '.')")
        )
    return problems


def _check_catch_targets(base: str, node: Node, is_branch: bool) -> Iterator[Problem]:
    for i, rule in enumerate(node.catch):
        if rule.next is None and not is_branch:
            yield Problem(
                f"{base}.catch.{i}.next", "required: the node the run goes to when this rule catches"
            )
        elif rule.next is not None and is_branch:
            yield Problem(
                f"{base}.catch.{i}.next",
                "a parallel branch's catch has no next: its error goes under result_key and "
                "the run goes on by the parallel node's next",
            )


def _check_branch(nid: str, parent: str, node: Node, start: object, nodes: dict[str, Node]) -> list[Problem]:
    base = f"nodes.{nid}"
    problems = []
    if node.callback is not None or node.wait is not None:
        kind = "callback" if node.callback is not None else "wait"
        problems.append(
            Problem(
                f"{base}.{kind}",
                f"branch of parallel node {parent!r}: a branch runs one tool (fn); it cannot wait",
            )
        )
    elif node.fn is None:
        kind = "map" if node.map is not None else "parallel"
        problems.append(
            Problem(
                f"{base}.{kind}",
                f"branch of parallel node {parent!r}: a branch runs one tool (fn), not a {kind}",
            )
        )
    for name in _BRANCH_FORBIDDEN[:3]:
        value = getattr(node, name)
        if value:
            problems.append(
                Problem(
                    f"{base}.{name}",
                    f"branch of parallel node {parent!r}: a branch has no {name}; "
                    f"the run goes on by {parent!r}'s next when every branch is done",
                )
            )
    if start == nid:
        problems.append(Problem("start", f"{nid!r} is a branch of parallel node {parent!r}; start elsewhere"))
    for other_id, other in nodes.items():
        targets = [other.next] + [b.next for b in other.branches] + [c.next for c in other.catch]
        if nid in targets:
            problems.append(
                Problem(
                    f"nodes.{other_id}",
                    f"routes to {nid!r}, a branch of parallel node {parent!r}; a branch runs only from its parallel node",
                )
            )
    return problems
