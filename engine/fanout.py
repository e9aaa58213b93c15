"""Fan-out nodes: a ``map`` over a list and ``parallel`` branches, and their join.

A fan-out node at step ``base`` runs *executions*: attempts of its items (a map runs its
tool once per item of a list) or branches (a parallel node runs each branch node once).
Each execution is one log entry, numbered in the order executions finish: ``base``,
``base + 1``, ... When every item or branch has finished for good, the *join* — the
node's own log entry, right after the last execution's — stores the results and routes
the run on. Nothing here does I/O besides calling tools: the in-process runner
(:func:`engine.runner.run_graph`) and the step Lambda (:mod:`engine.service`) call
:func:`run_execution` and :func:`join` and commit what they return.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.blobs import merge_state, parse_ref
from engine.conditions import _MISSING, resolve
from engine.errors import FlowForgeError, StateTooLargeError
from engine.graph import MAX_MAP_ITEMS
from engine.jsontext import json_problem
from engine.notes import log_notes
from engine.state import MAX_LOG_RESULT_BYTES
from engine.step import (
    Cursor,
    InvalidToolResult,
    MaxStepsExceeded,
    StepResult,
    ToolContext,
    _call,
    _elapsed_ms,
    _error,
    _is_update,
    _matches,
    _result,
    _route,
    _type_names,
    iso_time,
    read_only,
)

if TYPE_CHECKING:
    from engine.graph import CompiledFanOut, CompiledGraph, CompiledNode

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

#: An item's (or branch's) result, in UTF-8 bytes of JSON. Its execution's record holds
#: it with a log entry (at most ~50 KB: a result over 32 KiB is logged as a marker) in one
#: DynamoDB item of at most 400 KB; a larger result fails the execution before anything
#: is written, at its first attempt (it is not retried) — never at the store.
MAX_RESULT_BYTES = 320 * 1024


class MapFailed(FlowForgeError):
    """More items of a map failed for good than its ``tolerated_failures`` (catchable)."""

    code = "map_failed"


class ParallelFailed(FlowForgeError):
    """A parallel branch failed for good and its own catch did not take it (catchable)."""

    code = "parallel_failed"


class ParallelConflict(FlowForgeError):
    """Two parallel branches wrote the same state key (catchable)."""

    code = "parallel_conflict"


class InvalidMapItems(FlowForgeError):
    """A map's ``items`` path does not hold a list of at most 10,000 items (catchable)."""

    code = "invalid_map_items"


@dataclass(frozen=True, slots=True)
class Execution:
    """One committed attempt of an item or branch.

    ``value`` is a map item's result (any JSON) or a branch's update (a dict); ``status``
    is ``retry`` when another attempt follows, else final: ``ok``, ``caught`` (a branch's
    own catch took its error) or ``failed``.
    """

    index: int
    attempt: int
    status: str
    value: Any
    error: dict[str, Any] | None
    entry: dict[str, Any]
    delay_s: float = 0.0

    @property
    def final(self) -> bool:
        return self.status != "retry"

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def fanout_of(node: CompiledNode) -> CompiledFanOut:
    assert node.fanout is not None, f"node {node.id!r} is not a map or parallel node"
    return node.fanout


def item_list(node: CompiledNode, state: Mapping[str, Any]) -> list[Any]:
    """What the fan-out runs: a map's items, or a parallel node's branch ids.

    Raises :class:`InvalidMapItems` when a map's path does not hold a list it can run.
    """
    fanout = fanout_of(node)
    if not fanout.is_map:
        return list(fanout.branches)
    items = resolve(state, fanout.items)
    path = ".".join(fanout.items)
    if items is _MISSING:
        raise InvalidMapItems(f"map items {path!r}: no such key in the state")
    if not isinstance(items, list):
        raise InvalidMapItems(f"map items {path!r} is a {type(items).__name__}, not a list")
    if len(items) > MAX_MAP_ITEMS:
        raise InvalidMapItems(f"map items {path!r} has {len(items)} items; the limit is {MAX_MAP_ITEMS}")
    return items


def policy_node(graph: CompiledGraph, node: CompiledNode, index: int) -> CompiledNode:
    """The node whose tool, retry, timeout and catch an execution follows: the map node
    itself, or the parallel branch's node."""
    fanout = fanout_of(node)
    return node if fanout.is_map else graph.nodes[fanout.branches[index]]


async def run_execution(
    graph: CompiledGraph,
    node: CompiledNode,
    index: int,
    attempt: int,
    state: Mapping[str, Any],
    *,
    base: int,
    run_id: str,
    now: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    clients: Callable[[str], Any] | None = None,
    max_result_bytes: int = MAX_RESULT_BYTES,
    deadline: float | None = None,
) -> Execution:
    """Run attempt ``attempt`` of item (or branch) ``index`` against the state as it was
    when the fan-out started. Never raises for a tool's failure. ``clients`` reaches the
    tool as ``ctx.clients``; what it notes goes into the execution's log entry. A result
    over ``max_result_bytes`` of JSON fails the execution (:data:`MAX_RESULT_BYTES` when
    its record holds it; the state's total cap when large results are offloaded).
    ``deadline`` caps the tool's time as it does a step's (see :func:`engine.step.run_step`):
    the step function's end, less what the commit needs."""
    fanout = fanout_of(node)
    policy = policy_node(graph, node, index)
    item = state_item(node, state, index)
    started = now()
    timeout, capped = policy.timeout_s, False
    if deadline is not None and (timeout is None or deadline - started < timeout):
        timeout, capped = max(deadline - started, 0.001), True
    deadline = started + timeout if timeout is not None else None
    ctx = ToolContext(
        run_id,
        node.id,
        base,
        attempt,
        1,
        deadline,
        policy.params,
        item=item,
        index=index,
        clients=clients,
    )
    t0 = time.perf_counter_ns()
    try:
        value = await _call(policy, read_only(state), ctx, timeout)
        value = _checked_value(policy, value, fanout.is_map, max_result_bytes)
    except Exception as exc:  # a tool's failure is data: it is retried, caught or recorded
        message = str(exc)
        if not message and isinstance(exc, TimeoutError):
            message = (
                f"node timed out after {timeout:.3g}s, the time the step function had left"
                if capped
                else f"node timed out after {timeout}s"
            )
        error = _error(policy.id, exc, message)
        status, value, delay = _failure(policy, attempt, exc, error, rng, f"{run_id}:{base}:{index}")
        duration = _elapsed_ms(t0)
        entry = _entry(node, index, attempt, status, started, duration, value, error, ctx.notes)
        return Execution(index, attempt, status, value, error, entry, delay)
    duration = _elapsed_ms(t0)
    entry = _entry(node, index, attempt, "ok", started, duration, value, None, ctx.notes)
    return Execution(index, attempt, "ok", value, None, entry)


def state_item(node: CompiledNode, state: Mapping[str, Any], index: int) -> Any:
    """``ctx.item`` of an execution: the map's item (None for a branch)."""
    return item_list(node, state)[index] if fanout_of(node).is_map else None


def _checked_value(policy: CompiledNode, value: Any, is_map: bool, limit: int) -> Any:
    assert policy.tool is not None
    if is_map:
        try:  # stored as JSON: a result that is not JSON fails the item
            value = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidToolResult(
                f"tool {policy.tool.name!r} returned a value that is not JSON: {exc}"
            ) from None
    elif value is None:
        return {}
    elif not _is_update(value):
        raise InvalidToolResult(
            f"tool {policy.tool.name!r} returned {type(value).__name__}; return a dict with string keys, or None"
        )
    # The execution's record holds the result as UTF-8 text: a lone surrogate fails it.
    if (problem := json_problem(value, "result")) is not None:
        raise InvalidToolResult(f"tool {policy.tool.name!r} returned {problem.path}: {problem.message}")
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > limit:
        raise StateTooLargeError(
            f"tool {policy.tool.name!r} returned {size} bytes of JSON; an item's or branch's "
            f"result is at most {limit}",
            details={"size": size, "limit": limit},
        )
    return value


def _failure(
    policy: CompiledNode,
    attempt: int,
    exc: BaseException,
    error: dict[str, Any],
    rng: random.Random | None,
    seed: str,
) -> tuple[str, Any, float]:
    names = _type_names(exc)
    retry = policy.retry
    retried = not isinstance(exc, StateTooLargeError)  # the same output would be as large
    if retry is not None and retried and attempt < retry.max_attempts and _matches(retry.on, names):
        if retry.jitter == "full" and rng is None:
            rng = random.Random(f"{seed}:{attempt}")  # the same delay when re-executed
        return "retry", None, retry.delay_s(attempt, rng)
    if policy.fanout is None:
        for rule in policy.catch:
            if rule.next is None and _matches(rule.on, names):  # a parallel branch's own catch
                return "caught", {rule.result_key: error}, 0.0
    return "failed", None, 0.0


def _entry(
    node: CompiledNode,
    index: int,
    attempt: int,
    status: str,
    started: float,
    duration: float,
    value: Any,
    error: dict[str, Any] | None,
    notes: dict[str, Any],
) -> dict[str, Any]:
    fanout = fanout_of(node)
    where = {"index": index} if fanout.is_map else {"branch": fanout.branches[index]}
    entry = {
        "node": node.id,
        **where,
        "attempt": attempt,
        "status": status,
        "started_at": iso_time(started),
        "duration_ms": duration,
        "result": _log_result(value),
        "next": None,
        "error": error,
    }
    if notes:
        entry["notes"] = log_notes(notes)
    return entry


def _log_result(value: Any) -> Any:
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return {"_truncated": True, "bytes": size} if size > MAX_LOG_RESULT_BYTES else value


def offload_execution(
    execution: Execution, offload_text: Callable[[str], str]
) -> tuple[Execution, str | None]:
    """``execution`` with its value offloaded when over the threshold (``offload_text``,
    see engine/blobs.py): its log entry shows the reference, and the reference's stored
    text is returned for its record (None: the value stays in the record)."""
    if execution.value is None or execution.status == "retry":
        return execution, None
    text = _dumps(execution.value)
    stored = offload_text(text)
    ref = parse_ref(stored) if stored is not text else None
    if ref is None:
        return execution, None
    entry = {**execution.entry, "result": ref.to_json()}
    return replace(execution, entry=entry), stored


def join(
    graph: CompiledGraph,
    node: CompiledNode,
    step: int,
    state: Mapping[str, Any],
    finals: Mapping[int, Execution],
    total: int,
    *,
    now: Callable[[], float] = time.time,
) -> StepResult:
    """The fan-out's join at ``step``: its results merged into the state and the run routed
    on, or the node failed (MapFailed, ParallelFailed, ParallelConflict: caught by its
    ``catch``, else the run fails). ``finals`` holds each index's final execution."""
    started = now()
    cursor = Cursor(node.id, step)
    if step >= graph.max_steps:
        return max_steps_failure(graph, node, step, state, now=now)
    fanout = fanout_of(node)
    try:
        update = _map_update(fanout, finals, total) if fanout.is_map else _parallel_update(fanout, finals)
    except (MapFailed, ParallelFailed, ParallelConflict) as exc:
        update = exc.details if isinstance(exc.details, dict) else {}
        return node_failure(node, cursor, state, update, exc, started)
    merged = merge_state(state, update)
    return _result(cursor, merged, update, _route(node, cursor, merged), "ok", started, 0.0, None)


def node_failure(
    node: CompiledNode,
    cursor: Cursor,
    state: Mapping[str, Any],
    update: dict[str, Any],
    exc: BaseException,
    started: float,
) -> StepResult:
    """A fan-out node failed as a whole: routed by its catch rules (never retried)."""
    error = _error(node.id, exc, str(exc))
    names = _type_names(exc)
    for rule in node.catch:
        if rule.next is not None and _matches(rule.on, names):
            caught = {**update, rule.result_key: error}
            target = Cursor(rule.next, cursor.step + 1)
            return _result(cursor, merge_state(state, caught), caught, target, "caught", started, 0.0, error)
    return _result(cursor, state, {}, None, "failed", started, 0.0, error)


def max_steps_failure(
    graph: CompiledGraph,
    node: CompiledNode,
    step: int,
    state: Mapping[str, Any],
    *,
    now: Callable[[], float] = time.time,
) -> StepResult:
    """The run fails at ``step``: it reached its graph's max_steps inside a fan-out."""
    exc = MaxStepsExceeded(f"run reached max_steps={graph.max_steps}")
    return _result(
        Cursor(node.id, step), state, {}, None, "failed", now(), 0.0, _error(node.id, exc, str(exc))
    )


def _map_update(fanout: CompiledFanOut, finals: Mapping[int, Execution], total: int) -> dict[str, Any]:
    results = [None if finals[i].failed else finals[i].value for i in range(total)]
    errors = [
        {"index": i, "type": error["type"], "message": error["message"]}
        for i in range(total)
        if finals[i].failed and (error := finals[i].error or {"type": "Error", "message": ""})
    ]
    update = {fanout.results: results, f"{fanout.results}_errors": errors}
    if len(errors) > fanout.tolerated_failures:
        first = errors[0]
        raise MapFailed(
            f"{len(errors)} of {total} items failed (tolerated: {fanout.tolerated_failures}); "
            f"first: item {first['index']}: {first['type']}: {first['message']}",
            details=update,
        )
    return update


def _parallel_update(fanout: CompiledFanOut, finals: Mapping[int, Execution]) -> dict[str, Any]:
    for i, branch in enumerate(fanout.branches):
        if finals[i].failed:
            error = finals[i].error or {}
            raise ParallelFailed(f"branch {branch!r} failed: {error.get('type')}: {error.get('message')}")
    update: dict[str, Any] = {}
    writer: dict[str, str] = {}
    for i, branch in enumerate(fanout.branches):
        for key, value in finals[i].value.items():
            if key in writer:
                raise ParallelConflict(
                    f"branches {writer[key]!r} and {branch!r} both write state key {key!r}"
                )
            writer[key] = branch
            update[key] = value
    return update
