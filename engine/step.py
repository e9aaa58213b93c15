"""One tick of a run: execute exactly one node and decide what happens next.

:func:`run_step` does no I/O besides calling the tool, so the step Lambda calls it once
per SQS message and the in-process runner calls it in a loop. Both then commit the
returned :class:`StepResult` — the state update, the log entry and the next cursor.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from engine.blobs import StateView, merge_state, parse_ref
from engine.errors import FlowForgeError
from engine.jsontext import escape_surrogates
from engine.notes import log_notes
from engine.records import record
from engine.state import MAX_LOG_RESULT_BYTES, MAX_MARKER_KEY_BYTES, StateSize, encode_value

if TYPE_CHECKING:
    from engine.graph import CompiledGraph, CompiledNode
    from engine.waits import CallbackTicket

StepStatus = Literal["ok", "retry", "caught", "failed", "waiting"]
RunStatus = Literal["running", "waiting", "completed", "failed", "cancelled"]
TERMINAL = frozenset({"completed", "failed", "cancelled"})
#: Statuses of a run that has not ended: it runs, or waits (engine/waits.py).
LIVE = frozenset({"running", "waiting"})
#: A failure's message is cut to this length: a tool's exception text is unbounded, and a
#: log entry and a run are each one DynamoDB item (at most 400 KB).
MAX_ERROR_MESSAGE_CHARS = 4096


class LoopLimitExceeded(FlowForgeError):
    """A node's loop_condition still did not hold after max_iterations runs (catchable)."""

    code = "loop_limit_exceeded"


class MaxStepsExceeded(FlowForgeError):
    """The run reached its graph's max_steps (not catchable: it bounds the whole run)."""

    code = "max_steps_exceeded"


class InvalidToolResult(FlowForgeError):
    """A tool returned something other than a dict with string keys, or None."""

    code = "invalid_tool_result"


@record
class Cursor:
    """Where a run stands: the node to execute at ``step`` (0-based, one per log entry)."""

    node: str
    step: int = 0
    attempt: int = 1
    iteration: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "step": self.step, "attempt": self.attempt, "iteration": self.iteration}


@record
class ToolContext:
    """What a tool knows about the call it is serving (read-only: a tool's own copy)."""

    run_id: str
    node: str
    step: int
    attempt: int
    iteration: int
    deadline: float | None
    params: Mapping[str, Any] = field(default_factory=dict)
    #: A map's item and its index in the list (None outside a map).
    item: Any = None
    index: int | None = None
    #: The container's AWS clients by service name (``ctx.clients("bedrock-runtime")``),
    #: each built on first use; None when whoever runs the step passed none.
    clients: Callable[[str], Any] | None = None
    #: What this call adds to its log entry: see :meth:`note`.
    notes: dict[str, Any] = field(default_factory=dict)
    #: A callback node's token and the URL that answers it (None elsewhere): send them
    #: to whoever answers (a mail, a chat message, a webhook registration).
    callback_token: str | None = None
    callback_url: str | None = None

    def note(self, **fields: Any) -> None:
        """Add ``fields`` (JSON values) to this call's log entry, under ``notes`` — e.g. a
        model call's token usage. Kept whether the call succeeds or fails; notes over
        :data:`~engine.notes.MAX_NOTES_BYTES` are replaced by a marker with their size."""
        self.notes.update(fields)

    @property
    def idempotency_key(self) -> str:
        """Stable across re-executions of this step (tools run at least once); a map item's
        and a parallel branch's key also names its index."""
        if self.index is not None:
            return f"{self.run_id}:{self.step}:{self.index}"
        return f"{self.run_id}:{self.step}"

    def remaining_s(self, now: Callable[[], float] = time.time) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - now())


@record
class StepResult:
    """The outcome of one step. ``next`` is None when the run has ended."""

    status: StepStatus
    run_status: RunStatus
    update: dict[str, Any]
    state: Mapping[str, Any]
    next: Cursor | None
    log: dict[str, Any]
    delay_s: float = 0.0
    error: dict[str, Any] | None = None
    #: A step that starts a wait: when the wait ends at the latest (epoch seconds).
    until: float | None = None


def iso_time(ts: float) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp with milliseconds."""
    # The text of the last millisecond stamped, while ``ts`` is well inside it: a step's
    # start and its commit, and the steps of a chain, are most often that close.
    low, high, text = _last_milli
    if low <= ts < high:
        return text
    # The same text as datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    # with "Z": round to microseconds half-even (round() and datetime agree), carry into
    # the seconds, truncate to milliseconds.
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    millis = micros // 1000
    text = _iso_second(int(whole)) + _MILLIS[millis]
    if 0 <= whole < _REMEMBERED_BELOW:
        start = whole + millis / 1000
        _remember_milli(start + _MILLI_EDGE_S, start + 0.001 - _MILLI_EDGE_S, text)
    return text


#: ".000Z" … ".999Z".
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
#: A timestamp this close to a millisecond's edge is formatted anew: far more than the
#: float error of ``start + millis / 1000`` below :data:`_REMEMBERED_BELOW` (2**32 s,
#: where a float's step is under a microsecond), so the text is the one computed.
_MILLI_EDGE_S = 4e-6
_REMEMBERED_BELOW = 2.0**32
#: The last millisecond stamped: where its timestamps begin and end, and its text (one
#: tuple: a thread reads all three or none).
_last_milli: tuple[float, float, str] = (math.inf, -math.inf, "")


def _remember_milli(low: float, high: float, text: str) -> None:
    global _last_milli
    _last_milli = (low, high, text)


@lru_cache(maxsize=16)
def _iso_second(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _type_names(exc: BaseException) -> tuple[str, ...]:
    return tuple(c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException))


def _matches(patterns: Sequence[str], names: tuple[str, ...]) -> bool:
    return any(p == "*" or p in names for p in patterns)


def _is_update(result: Any) -> bool:
    """A dict with string keys: what a tool may return besides None."""
    if not isinstance(result, dict):
        return False
    for key in result:  # noqa: SIM110 - a loop costs less than all(<genexpr>), once per step
        if not isinstance(key, str):
            return False
    return True


async def _call(node: CompiledNode, state: Mapping[str, Any], ctx: ToolContext, timeout: float | None) -> Any:
    tool = node.tool
    assert tool is not None, f"node {node.id!r} runs no tool of its own"
    fn = tool.fn
    if tool.is_async:
        if timeout is None:
            return await fn(state, ctx)
        async with asyncio.timeout(timeout):
            return await fn(state, ctx)
    if timeout is None:
        return fn(state, ctx)
    # A sync tool only honours a timeout when it runs off the event loop.
    async with asyncio.timeout(timeout):
        return await asyncio.to_thread(fn, state, ctx)


async def run_step(
    graph: CompiledGraph,
    cursor: Cursor,
    state: Mapping[str, Any],
    *,
    run_id: str,
    now: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    deadline: float | None = None,
    clients: Callable[[str], Any] | None = None,
    callback: CallbackTicket | None = None,
) -> StepResult:
    """Execute ``cursor.node`` once against ``state`` and route the run onwards.

    Never raises for a tool's failure: exceptions and timeouts become a retry, a caught
    route or a failed run according to the node's policy. ``deadline`` (epoch seconds on
    ``now``'s clock) is when the caller must have the step back — the step Lambda's end,
    less what its commit needs: the node's ``timeout_s`` is capped by it, and a node
    without one gets it, so the node's retry and catch see a ``TimeoutError`` rather
    than the function being killed. ``clients`` reaches the tool as ``ctx.clients``.
    A callback node's ``callback`` (stored before this call) reaches it as
    ``ctx.callback_token`` and ``ctx.callback_url``.
    """
    node = graph.nodes[cursor.node]
    started = now()
    if cursor.step >= graph.max_steps:
        exc = MaxStepsExceeded(f"run reached max_steps={graph.max_steps}")
        return _result(cursor, state, {}, None, "failed", started, 0.0, _error(node.id, exc, str(exc)))
    if node.wait is not None:
        return _start_timer(node, cursor, state, started)
    timeout, capped = node.timeout_s, False
    if deadline is not None and (timeout is None or deadline - started < timeout):
        timeout, capped = max(deadline - started, 0.001), True
    deadline = started + timeout if timeout is not None else None
    # Positional, in ToolContext's field order (cheaper than keywords, once per step).
    ctx = ToolContext(
        run_id,
        node.id,
        cursor.step,
        cursor.attempt,
        cursor.iteration,
        deadline,
        node.params,
        None,
        None,
        clients,
        {},
        None if callback is None else callback.token,
        None if callback is None else callback.url,
    )
    tool = node.tool
    if node.callback is not None:
        assert callback is not None, f"callback node {node.id!r} runs only once its callback is stored"
        if tool is None:
            return _start_callback(cursor, state, {}, callback, started, 0.0)
    assert tool is not None, f"node {node.id!r} is a map or parallel node: engine.fanout runs it"
    t0 = time.perf_counter_ns()
    update: dict[str, Any] = {}
    try:
        if tool.is_async and timeout is None:
            result = await tool.fn(read_only(state), ctx)  # the common case, inline
        else:
            result = await _call(node, read_only(state), ctx, timeout)
        if result is not None:
            if not _is_update(result):
                raise InvalidToolResult(
                    f"tool {tool.name!r} returned {type(result).__name__}; "
                    "return a dict with string keys, or None"
                )
            update = result
        merged = merge_state(state, update) if update else state
        if callback is not None:
            duration = _elapsed_ms(t0)
            return _noted(_start_callback(cursor, merged, update, callback, started, duration), ctx.notes)
        target = _route(node, cursor, merged)
    except Exception as exc:  # a tool's failure is data: it routes the run
        duration = _elapsed_ms(t0)
        message = str(exc)
        if not message and isinstance(exc, TimeoutError) and timeout is not None:
            message = (
                f"node timed out after {timeout:.3g}s, the time the step function had left"
                if capped
                else f"node timed out after {timeout}s"
            )
        failed = _on_failure(node, cursor, state, update, exc, message, started, duration, rng, run_id)
        return _noted(failed, ctx.notes)
    duration = _elapsed_ms(t0)
    return _noted(_result(cursor, merged, update, target, "ok", started, duration, None), ctx.notes)


def _elapsed_ms(t0_ns: int) -> float:
    """Milliseconds since ``t0_ns`` (``time.perf_counter_ns()``) to the microsecond below:
    a log entry's ``duration_ms`` (integer arithmetic, cheaper than ``round(ms, 3)``)."""
    return (time.perf_counter_ns() - t0_ns) // 1000 / 1000


def _start_callback(
    cursor: Cursor,
    state: Mapping[str, Any],
    update: dict[str, Any],
    callback: CallbackTicket,
    started: float,
    duration_ms: float,
) -> StepResult:
    from engine.waits import waiting_outcome  # only callback and wait nodes need it

    info = {"expires_at": iso_time(callback.expires_at)}
    return waiting_outcome(cursor, state, update, callback.expires_at, started, duration_ms, info)


def _start_timer(node: CompiledNode, cursor: Cursor, state: Mapping[str, Any], started: float) -> StepResult:
    """A ``wait`` node: wait until it is due (at once if that has passed)."""
    from engine.waits import InvalidWaitUntil, timer_due, waiting_outcome

    assert node.wait is not None
    try:
        due = timer_due(node.wait, state, started)
        if due > started:
            return waiting_outcome(cursor, state, {}, due, started, 0.0, {"until": iso_time(due)})
        target = _route(node, cursor, state)
    except (InvalidWaitUntil, LoopLimitExceeded) as exc:
        return _on_failure(node, cursor, state, {}, exc, exc.message, started, 0.0, None, "")
    return _result(cursor, state, {}, target, "ok", started, 0.0, None)


def _noted(outcome: StepResult, notes: dict[str, Any]) -> StepResult:
    """``outcome`` with the tool's notes (:meth:`ToolContext.note`) in its log entry."""
    if notes:
        outcome.log["notes"] = log_notes(notes)
    return outcome


def read_only(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """What a tool gets: a read-only view (a StateView is one already)."""
    return state if type(state) is StateView else MappingProxyType(state)


def _route(node: CompiledNode, cursor: Cursor, state: Mapping[str, Any]) -> Cursor | None:
    """Where the run goes after ``node`` succeeded: loop, then branches, then next."""
    step = cursor.step + 1
    if node.loop is not None and not node.loop(state):
        if cursor.iteration >= node.max_iterations:
            raise LoopLimitExceeded(f"loop_condition still false after max_iterations={node.max_iterations}")
        return Cursor(node.id, step, 1, cursor.iteration + 1)
    for predicate, target in node.branches:
        if predicate(state):
            return Cursor(target, step)
    return Cursor(node.next, step) if node.next is not None else None


def _error(node_id: str, exc: BaseException, message: str) -> dict[str, Any]:
    message = escape_surrogates(message)  # a tool's exception may carry text UTF-8 cannot
    cut = len(message) - MAX_ERROR_MESSAGE_CHARS
    if cut > 0:  # it is stored in the log entry and the run
        message = f"{message[:MAX_ERROR_MESSAGE_CHARS]}... ({cut} more characters)"
    return {"node": node_id, "type": type(exc).__name__, "message": message}


def _on_failure(
    node: CompiledNode,
    cursor: Cursor,
    state: Mapping[str, Any],
    update: dict[str, Any],
    exc: BaseException,
    message: str,
    started: float,
    duration: float,
    rng: random.Random | None,
    run_id: str,
) -> StepResult:
    error = _error(node.id, exc, message)
    names = _type_names(exc)
    retry = node.retry
    # Retrying cannot make an exhausted loop succeed; it would only exceed max_iterations.
    if (
        retry is not None
        and not isinstance(exc, LoopLimitExceeded)
        and cursor.attempt < retry.max_attempts
        and _matches(retry.on, names)
    ):
        if retry.jitter == "full" and rng is None:
            # Deterministic per step, so a re-executed step schedules the same delay.
            rng = random.Random(f"{run_id}:{cursor.step}")
        delay = retry.delay_s(cursor.attempt, rng)
        retry_at = Cursor(node.id, cursor.step + 1, cursor.attempt + 1, cursor.iteration)
        return _result(cursor, state, {}, retry_at, "retry", started, duration, error, delay)
    if not isinstance(exc, MaxStepsExceeded):
        for rule in node.catch:
            if rule.next is not None and _matches(rule.on, names):
                caught = {**update, rule.result_key: error}
                target = Cursor(rule.next, cursor.step + 1)
                return _result(
                    cursor, merge_state(state, caught), caught, target, "caught", started, duration, error
                )
    return _result(cursor, state, {}, None, "failed", started, duration, error)


def _result(
    cursor: Cursor,
    state: Mapping[str, Any],
    update: dict[str, Any],
    target: Cursor | None,
    status: StepStatus,
    started: float,
    duration_ms: float,
    error: dict[str, Any] | None,
    delay_s: float = 0.0,
) -> StepResult:
    run_status: RunStatus
    if status == "failed":
        run_status = "failed"
    else:
        run_status = "running" if target is not None else "completed"
    log = {
        "seq": cursor.step,
        "node": cursor.node,
        "attempt": cursor.attempt,
        "status": status,
        "started_at": iso_time(started),
        "duration_ms": duration_ms,
        "result": update,
        "next": target.node if target is not None else None,
        "error": error,
    }
    return StepResult(status, run_status, update, state, target, log, delay_s, error)


def enforce_limits(
    outcome: StepResult,
    size: StateSize,
    before: Mapping[str, Any],
    offload: Callable[[dict[str, str]], dict[str, str]] | None = None,
) -> tuple[StepResult, dict[str, str]]:
    """Encode the outcome's update and check it against the state cap.

    Returns the outcome to commit and the update's per-key JSON. ``offload`` (see
    engine/blobs.py) writes each value over its threshold to the blob store and gives
    the stored texts, references in their place (the very dict it was given when it
    offloads nothing, as :meth:`Blobs.offload` does): the cap then counts the references,
    and the log ``result`` shows them (``{"$blob": {...}}``). An update that is not
    JSON or would push the state over the cap is not applied: the run fails at this
    node instead (:func:`refuse_update`). A log ``result`` over
    :data:`MAX_LOG_RESULT_BYTES` is replaced by a marker (the state still holds the full
    value) listing key names up to :data:`MAX_MARKER_KEY_BYTES`.
    """
    if not outcome.update:
        return outcome, {}
    try:
        encoded = {key: encode_value(key, value) for key, value in outcome.update.items()}
        offloaded = offload is not None and (stored := offload(encoded)) is not encoded
        if offloaded:  # an offload gives back the same dict when it offloads nothing
            encoded = stored
        result_bytes = size.apply(encoded)
    except FlowForgeError as exc:
        return refuse_update(outcome, exc, before), {}
    log = outcome.log
    if offloaded:
        log = {**log, "result": _with_refs(outcome.update, encoded)}
    if result_bytes > MAX_LOG_RESULT_BYTES:
        log = {**log, "result": {"_truncated": True, "bytes": result_bytes, "keys": _marker_keys(encoded)}}
    if log is not outcome.log:
        outcome = StepResult(
            outcome.status,
            outcome.run_status,
            outcome.update,
            outcome.state,
            outcome.next,
            log,
            outcome.delay_s,
            outcome.error,
            outcome.until,
        )
    return outcome, encoded


def _with_refs(update: dict[str, Any], encoded: dict[str, str]) -> dict[str, Any]:
    """The update as its log entry shows it: each offloaded value as its reference."""
    shown = {}
    for key, value in update.items():
        ref = parse_ref(encoded[key])
        shown[key] = value if ref is None else ref.to_json()
    return shown


def refuse_update(outcome: StepResult, exc: FlowForgeError, before: Mapping[str, Any]) -> StepResult:
    """``outcome`` turned into a failed run at its node: its update is not applied (it is
    not JSON, or the state or the step's record would be too large), the state stays
    ``before``."""
    error = {"node": outcome.log["node"], "type": type(exc).__name__, "message": exc.message}
    log = {**outcome.log, "status": "failed", "result": {}, "next": None, "error": error}
    return StepResult("failed", "failed", {}, before, None, log, 0.0, error)


def _marker_keys(encoded: dict[str, str]) -> list[str]:
    """The first key names (sorted) that fit in :data:`MAX_MARKER_KEY_BYTES`."""
    keys, budget = [], MAX_MARKER_KEY_BYTES
    for key in sorted(encoded):
        budget -= len(key.encode()) + 3  # "key", in the JSON list
        if budget < 0:
            break
        keys.append(key)
    return keys
