"""Validation: turn a raw definition into a :class:`~engine.graph.CompiledGraph`, or list
every problem. The graph is then built by :func:`engine.graph.load_graph`, which the step
Lambda also calls, without validation, on definitions stored after passing this one."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError

from engine.conditions import check
from engine.errors import GraphValidationError, Problem
from engine.graph import CompiledGraph, load_graph
from engine.model import ID_PATTERN, MAX_GRAPH_BYTES, MAX_NODES, Graph, Node
from engine.registry import Registry, default_registry
from engine.suggest import Suggester
from engine.validate_fanout import check_node_kinds

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


def compile_graph(data: Any, registry: Registry | None = None) -> CompiledGraph:
    """Validate ``data`` (a parsed JSON object) and resolve its tools and conditions.

    Raises :class:`GraphValidationError` listing every problem, each with its path: a
    field of the wrong type hides nothing else (references and structure are checked on
    whatever the definition says, with type guards, not on the nodes that parsed).
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

    parsed: dict[str, Node] = {}  # the nodes that match the model (the fan-out checks read them)
    for node_id, raw in raw_nodes.items():
        if not _ID.match(node_id):
            problems.append(Problem(f"nodes.{node_id}", f"node id must match {ID_PATTERN}"))
        try:
            parsed[node_id] = Node.model_validate(raw)
        except ValidationError as exc:
            problems += _pydantic_problems(exc, f"nodes.{node_id}")

    nodes = {nid: _Edges.of(raw) for nid, raw in raw_nodes.items()}
    suggester = Suggester()
    start = data.get("start")
    problems += _check_references(start, raw_nodes, registry, suggester)
    problems += _check_reachability(start, nodes, suggester)
    problems += _check_unconditional_cycles(nodes)
    problems += check_node_kinds(start, parsed, registry, suggester)
    if problems:
        raise GraphValidationError(problems)
    return load_graph(data, registry)


@dataclass(frozen=True, slots=True)
class _Edges:
    """Where a node may go, read from its raw definition (targets that are strings)."""

    next: str | None
    branches: tuple[str, ...]
    catch: tuple[str, ...]
    has_branches: bool
    parallel: tuple[str, ...]
    #: Whether every target is a string (else a wrong type hides where the node goes).
    complete: bool

    @classmethod
    def of(cls, raw: Any) -> _Edges:
        raw = raw if isinstance(raw, dict) else {}
        branches, catch = _targets(raw.get("branches", [])), _targets(raw.get("catch", []))
        following = raw.get("next")
        parallel = raw.get("parallel")
        return cls(
            next=following if isinstance(following, str) else None,
            branches=branches or (),
            catch=catch or (),
            has_branches=isinstance(raw.get("branches"), list) and bool(raw["branches"]),
            parallel=tuple(t for t in parallel if isinstance(t, str)) if isinstance(parallel, list) else (),
            complete=isinstance(following, str | None) and branches is not None and catch is not None,
        )

    def successors(self) -> list[str]:
        return [*self.branches, *self.catch, *self.parallel, *([self.next] if self.next is not None else [])]


def _targets(items: Any) -> tuple[str, ...] | None:
    """The ``next`` of each branch or catch rule; None if one is not a string. (A parallel
    branch's catch rules have no ``next``: they route nowhere.)"""
    if not isinstance(items, list):
        return None
    items = [i for i in items if not (isinstance(i, dict) and "next" not in i)]
    targets = tuple(i.get("next") for i in items if isinstance(i, dict))
    if len(targets) != len(items) or not all(isinstance(t, str) for t in targets):
        return None
    return targets  # type: ignore[return-value]


def _items(raw: dict[str, Any], field: str) -> list[tuple[int, dict[str, Any]]]:
    items = raw.get(field)
    return (
        [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]
        if isinstance(items, list)
        else []
    )


def _check_references(
    start: Any, raw_nodes: dict[str, Any], registry: Registry, suggester: Suggester
) -> list[Problem]:
    problems: list[Problem] = []
    known = list(raw_nodes)
    described = registry.describe()
    tools = [r["name"] for r in described["tools"]]
    conditions = [r["name"] for r in described["conditions"]]

    def node_ref(path: str, target: Any) -> None:
        if isinstance(target, str) and target not in raw_nodes:
            problems.append(Problem(path, f"unknown node {target!r}{suggester.hint('node', target, known)}"))

    def condition_ref(path: str, cond: Any) -> None:
        if isinstance(cond, str | dict):
            problems.extend(
                check(cond, registry, path, hint=lambda n: suggester.hint("condition", n, conditions))
            )

    node_ref("start", start)
    for nid, raw in raw_nodes.items():
        if not isinstance(raw, dict):
            continue
        base = f"nodes.{nid}"
        fn = raw.get("fn")
        if isinstance(fn, str) and not registry.has_tool(fn):
            problems.append(Problem(f"{base}.fn", f"unknown tool {fn!r}{suggester.hint('tool', fn, tools)}"))
        node_ref(f"{base}.next", raw.get("next"))
        for i, branch in _items(raw, "branches"):
            node_ref(f"{base}.branches.{i}.next", branch.get("next"))
            condition_ref(f"{base}.branches.{i}.when", branch.get("when"))
        condition_ref(f"{base}.loop_condition", raw.get("loop_condition"))
        for i, rule in _items(raw, "catch"):
            node_ref(f"{base}.catch.{i}.next", rule.get("next"))
    return problems


def _check_reachability(start: Any, nodes: dict[str, _Edges], suggester: Suggester) -> list[Problem]:
    """Nodes no path from the start leads to. A misspelt start or target is read as the
    node "did you mean" names, so a typo does not hide what lies behind it, nor make it
    look unreachable. An unknown name with no close node says nothing about where it
    was meant to go, nor does a target of the wrong type: then nothing is reported
    (the name or the type is)."""
    known = list(nodes)

    def resolved(target: str) -> str | None:
        return target if target in nodes else suggester.closest("node", target, known)

    first = resolved(start) if isinstance(start, str) else None
    targets = [t for edges in nodes.values() for t in edges.successors()]
    if first is None or not all(e.complete for e in nodes.values()) or None in map(resolved, targets):
        return []
    seen, stack = {first}, [first]
    while stack:
        for target in nodes[stack.pop()].successors():
            found = resolved(target)
            if found is not None and found not in seen:
                seen.add(found)
                stack.append(found)
    return [
        Problem(f"nodes.{nid}", f"unreachable from start node {start!r}") for nid in nodes if nid not in seen
    ]


def _check_unconditional_cycles(nodes: dict[str, _Edges]) -> list[Problem]:
    """A cycle of nodes that have no branches only ever follows ``next``: it never ends."""
    problems: list[Problem] = []
    reported: set[str] = set()
    for first in nodes:
        path: list[str] = []
        nid: str | None = first
        while nid in nodes and nid not in path and nid not in reported:
            node = nodes[nid]
            if node.has_branches:
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
