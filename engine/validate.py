"""Validation: turn a raw definition into a :class:`~engine.graph.CompiledGraph`, or list
every problem. The graph is then built by :func:`engine.graph.load_graph`, which the step
Lambda also calls, without validation, on definitions stored after passing this one."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from pydantic import Field, ValidationError

from engine.conditions import check
from engine.errors import GraphValidationError, Problem
from engine.graph import CompiledGraph, load_graph
from engine.model import ID_PATTERN, MAX_GRAPH_BYTES, MAX_NODES, Graph, Node
from engine.registry import Registry, default_registry

_ID = re.compile(ID_PATTERN)


class _GraphShape(Graph):
    """The graph's own fields; nodes are checked one by one so one bad node hides nothing."""

    nodes: dict[str, Any] = Field(min_length=1)


def _pydantic_problems(error: ValidationError, prefix: str) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(Problem(path, message))
    return problems


def _unknown(kind: str, name: str, known: list[str]) -> str:
    hint = difflib.get_close_matches(name, known, n=1)
    return f"unknown {kind} {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")


def compile_graph(data: Any, registry: Registry | None = None) -> CompiledGraph:
    """Validate ``data`` (a parsed JSON object) and resolve its tools and conditions.

    Raises :class:`GraphValidationError` listing every problem, each with its path.
    """
    registry = registry or default_registry
    if isinstance(data, Graph):
        data = data.model_dump(exclude_unset=True)
    if not isinstance(data, dict):
        raise GraphValidationError([Problem("", "a graph is a JSON object")])
    size = len(json.dumps(data, separators=(",", ":"), default=str))
    if size > MAX_GRAPH_BYTES:
        raise GraphValidationError(
            [Problem("", f"definition is {size} bytes; the limit is {MAX_GRAPH_BYTES}")]
        )
    problems: list[Problem] = []
    try:
        _GraphShape.model_validate(data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, "")
    found = data.get("nodes")
    raw_nodes: dict[str, Any] = found if isinstance(found, dict) else {}
    if len(raw_nodes) > MAX_NODES:
        problems.append(Problem("nodes", f"{len(raw_nodes)} nodes; the limit is {MAX_NODES}"))
        raise GraphValidationError(problems)

    nodes: dict[str, Node] = {}
    for node_id, raw in raw_nodes.items():
        if not _ID.match(node_id):
            problems.append(Problem(f"nodes.{node_id}", f"node id must match {ID_PATTERN}"))
        try:
            nodes[node_id] = Node.model_validate(raw)
        except ValidationError as exc:
            problems += _pydantic_problems(exc, f"nodes.{node_id}")

    known = list(raw_nodes)
    problems += _check_references(data.get("start"), nodes, known, registry)
    # Structure checks need every node parsed. A misspelt target would make the nodes
    # behind it look unreachable, so reachability waits until every edge resolves.
    if len(nodes) == len(raw_nodes):
        start = data.get("start")
        dangling = any(t not in nodes for n in nodes.values() for t in _successors(n))
        if isinstance(start, str) and start in nodes and not dangling:
            problems += _check_reachability(start, nodes)
        problems += _check_unconditional_cycles(nodes)
    if problems:
        raise GraphValidationError(problems)
    return load_graph(data, registry)


def _check_references(
    start: Any, nodes: dict[str, Node], known: list[str], registry: Registry
) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(start, str) and start not in known:
        problems.append(Problem("start", _unknown("node", start, known)))
    tools = [r["name"] for r in registry.describe()["tools"]]
    for nid, node in nodes.items():
        base = f"nodes.{nid}"
        if not registry.has_tool(node.fn):
            problems.append(Problem(f"{base}.fn", _unknown("tool", node.fn, tools)))
        if node.next is not None and node.next not in known:
            problems.append(Problem(f"{base}.next", _unknown("node", node.next, known)))
        for i, branch in enumerate(node.branches):
            if branch.next not in known:
                problems.append(Problem(f"{base}.branches.{i}.next", _unknown("node", branch.next, known)))
            problems += check(branch.when, registry, f"{base}.branches.{i}.when")
        if node.loop_condition is not None:
            problems += check(node.loop_condition, registry, f"{base}.loop_condition")
        for i, rule in enumerate(node.catch):
            if rule.next not in known:
                problems.append(Problem(f"{base}.catch.{i}.next", _unknown("node", rule.next, known)))
    return problems


def _successors(node: Node) -> list[str]:
    targets = [b.next for b in node.branches] + [c.next for c in node.catch]
    if node.next is not None:
        targets.append(node.next)
    return targets


def _check_reachability(start: str, nodes: dict[str, Node]) -> list[Problem]:
    seen, stack = {start}, [start]
    while stack:
        for target in _successors(nodes[stack.pop()]):
            if target not in seen and target in nodes:
                seen.add(target)
                stack.append(target)
    return [
        Problem(f"nodes.{nid}", f"unreachable from start node {start!r}") for nid in nodes if nid not in seen
    ]


def _check_unconditional_cycles(nodes: dict[str, Node]) -> list[Problem]:
    """A cycle of nodes that have no branches only ever follows ``next``: it never ends."""
    problems: list[Problem] = []
    reported: set[str] = set()
    for first in nodes:
        path: list[str] = []
        nid: str | None = first
        while nid in nodes and nid not in path and nid not in reported:
            node = nodes[nid]
            if node.branches:
                break
            path.append(nid)
            nid = node.next
        if nid in path:
            cycle = path[path.index(nid) :]
            reported.update(cycle)
            loop = " -> ".join([*cycle, nid])
            problems.append(
                Problem(
                    f"nodes.{cycle[-1]}.next",
                    f"cycle {loop} follows only unconditional 'next' edges and never ends; "
                    "leave it with a branch, or use loop_condition to repeat a node",
                )
            )
        reported.update(path)
    return problems
