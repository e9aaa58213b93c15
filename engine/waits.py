"""Runs that wait: callback (approval) nodes and durable timers, as pure functions.

A node that waits takes two transitions. At step ``k`` it starts waiting: a callback
node stores its callback (:class:`WaitRecord`, only the token's hash) before its
optional tool runs, a ``wait`` node computes when it is due; the step commits with the
run's status ``waiting`` and a log entry whose status is ``waiting``. Nothing runs
while the run waits. Transition ``k + 1`` ends the wait: an answer (approved: the output
goes to ``state[result]`` and the run goes on by ``next``/``branches``; rejected:
``CallbackRejected``), a missed deadline (``CallbackTimeout``) or a timer that is due.
It is committed like any step — the run's slot ``k + 1``, written once — so of two
answers, an answer and a timeout, or an answer and a cancel, exactly one moves the run.

The token names its run and step and is an HMAC of them (:class:`CallbackSigner`), so
the URL can be shown again (``GET /graph/state``) while the store keeps only its hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.blobs import merge_state
from engine.errors import FlowForgeError
from engine.step import (
    Cursor,
    MaxStepsExceeded,
    StepResult,
    _error,
    _matches,
    _result,
    _route,
    _type_names,
    iso_time,
)

if TYPE_CHECKING:
    from engine.graph import CompiledGraph, CompiledNode

#: Bounds of a wait, a callback's timeout and heartbeat: 1 s to 1 year.
MIN_WAIT_S = 1.0
MAX_WAIT_S = 365 * 86400.0
#: SQS's longest message delay: a wait due sooner is woken by a delayed step message,
#: a later one by the sweeper from the due-time index.
MAX_QUEUE_DELAY_S = 900.0

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
TIMED_OUT = "timed_out"
#: A callback whose node's tool failed before any answer came: no answer is taken any
#: more (the failure is committed; a retried node stores a new callback).
WITHDRAWN = "withdrawn"
#: Log entry and run status of a step that starts a wait.
WAITING = "waiting"
ANSWERS = (APPROVED, REJECTED)


class CallbackRejected(FlowForgeError):
    """The callback was answered ``rejected`` (catchable; retries do not apply)."""

    code = "callback_rejected"


class CallbackTimeout(FlowForgeError):
    """No answer before the callback's timeout, or no heartbeat in time (catchable)."""

    code = "callback_timeout"


class InvalidWaitUntil(FlowForgeError):
    """A wait's ``until`` path holds no ISO-8601 time (catchable)."""

    code = "invalid_wait_until"


@dataclass(frozen=True, slots=True)
class CompiledCallback:
    """A callback node's wait: answered within ``timeout_s`` (and a heartbeat every
    ``heartbeat_s``), its approved output stored under ``result``."""

    timeout_s: float
    heartbeat_s: float | None = None
    result: str | None = None


@dataclass(frozen=True, slots=True)
class CompiledWait:
    """A timer: ``seconds`` after the node is reached, or the time at state path ``until``."""

    seconds: float | None = None
    until: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class WaitRecord:
    """A run's wait, stored before the run starts waiting at step ``step``.

    ``deadline`` is when it ends at the latest (a callback's timeout, a timer's time);
    ``due`` when it must next be looked at: the deadline, a heartbeat's deadline, or
    the moment an answer was stored. ``status`` is ``pending`` until an answer or a
    timeout settles it (once: a conditional write), or ``withdrawn`` when its node's
    tool failed first; ``closed`` once the run has moved past it (it then leaves the
    due-time index).
    """

    run_id: str
    step: int
    node: str
    kind: str  # "callback" or "timer"
    deadline: float
    due: float
    status: str = PENDING
    heartbeat_s: float | None = None
    token_hash: str | None = None
    output: Any = None
    reason: str | None = None
    closed: bool = False

    @property
    def resolved(self) -> bool:
        """Whether the wait may end now: answered or timed out (a pending one may end at
        ``due``; a withdrawn one never ends a wait: its step failed, or is being run again)."""
        return self.status not in (PENDING, WITHDRAWN)

    def settled(self, status: str, now: float, output: Any = None, reason: str | None = None) -> WaitRecord:
        return replace(self, status=status, output=output, reason=reason, due=min(self.due, now))

    def beat(self, now: float) -> WaitRecord:
        """After a heartbeat at ``now``: due at the next heartbeat's deadline (or the timeout)."""
        if self.heartbeat_s is None:
            return self
        return replace(self, due=min(self.deadline, now + self.heartbeat_s))


# -- tokens -------------------------------------------------------------------------------
class CallbackSigner:
    """Makes a callback's token from its run and step, and its URL.

    ``<run_id>.<step>.<mac>``: the MAC is HMAC-SHA256 over ``run_id:step`` with a key the
    store never sees (256 bits, base64url), so the token is unguessable, the store keeps
    only its SHA-256, and whoever holds the key can show the URL again.
    """

    def __init__(self, key: bytes | Callable[[], bytes], base_url: str) -> None:
        """``key``: at least 16 bytes, or a function that reads it on first use (a
        secret store: only callbacks need it)."""
        self._key: bytes | None = key if isinstance(key, bytes) else None
        self._read_key = None if isinstance(key, bytes) else key
        if self._key is not None:
            _check_key(self._key)
        self.base_url = base_url.rstrip("/")

    @property
    def key(self) -> bytes:
        if self._key is None:
            assert self._read_key is not None
            self._key = _check_key(self._read_key())
        return self._key

    def token(self, run_id: str, step: int) -> str:
        mac = hmac.new(self.key, f"{run_id}:{step}".encode(), hashlib.sha256).digest()
        return f"{run_id}.{step}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def url(self, token: str) -> str:
        return f"{self.base_url}/callbacks/{token}"


def _check_key(key: bytes) -> bytes:
    if len(key) < 16:
        raise ValueError("a callback key has at least 16 bytes")
    return key


def token_hash(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, int] | None:
    """The run and step a token names (None: not a token's shape)."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or len(parts[2]) < 22:
        return None
    return parts[0], int(parts[1])


def token_matches(wait: WaitRecord, token: str) -> bool:
    return wait.token_hash is not None and hmac.compare_digest(wait.token_hash, token_hash(token))


@dataclass(frozen=True, slots=True)
class CallbackTicket:
    """What a callback node's tool gets: ``ctx.callback_token``, ``ctx.callback_url``;
    ``expires_at`` (epoch seconds) is the callback's timeout."""

    token: str
    url: str
    expires_at: float


# -- timers ---------------------------------------------------------------------------------
def parse_time(value: Any) -> float:
    """An ISO-8601 time (``2026-06-15T09:00:00Z``; without an offset: UTC) as epoch seconds."""
    if not isinstance(value, str):
        raise InvalidWaitUntil(f"expected an ISO-8601 time string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidWaitUntil(f"{value[:100]!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _lookup(state: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = state
    for part in path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise InvalidWaitUntil(f"the state has no {'.'.join(path)!r}")
    return value


def timer_due(spec: CompiledWait, state: Mapping[str, Any], now: float) -> float:
    """When a ``wait`` node reached at ``now`` is due (InvalidWaitUntil for a bad ``until``).
    An ``until`` more than a year ahead is refused too: a run waits a year at most."""
    if spec.seconds is not None:
        return now + spec.seconds
    assert spec.until is not None
    due = parse_time(_lookup(state, spec.until))
    if due - now > MAX_WAIT_S:
        raise InvalidWaitUntil(
            f"{'.'.join(spec.until)} is more than a year ahead; a run waits a year at most"
        )
    return due


# -- outcomes -------------------------------------------------------------------------------
def waiting_outcome(
    cursor: Cursor,
    state: Mapping[str, Any],
    update: dict[str, Any],
    until: float,
    started: float,
    duration_ms: float,
    info: dict[str, Any],
) -> StepResult:
    """Step ``cursor.step`` starts a wait due at ``until``: the run stays at the node,
    its next transition ends the wait."""
    target = Cursor(cursor.node, cursor.step + 1, cursor.attempt, cursor.iteration)
    log = {
        "seq": cursor.step,
        "node": cursor.node,
        "attempt": cursor.attempt,
        "status": WAITING,
        "started_at": iso_time(started),
        "duration_ms": round(duration_ms, 3),
        "result": update,
        "next": cursor.node,
        "error": None,
        "waiting": info,
    }
    return StepResult("waiting", "waiting", update, state, target, log, 0.0, None, until)


def resume_outcome(
    graph: CompiledGraph, cursor: Cursor, state: Mapping[str, Any], wait: WaitRecord, now: float
) -> StepResult:
    """How the wait at ``cursor`` ends (``wait`` resolved, or a timer due at ``now``):
    transition ``cursor.step``. No tool runs."""
    node = graph.nodes[cursor.node]
    how = wait.status if wait.kind == "callback" else "elapsed"
    if cursor.step >= graph.max_steps:
        exc: FlowForgeError = MaxStepsExceeded(f"run reached max_steps={graph.max_steps}")
        return _resumed(
            _result(cursor, state, {}, None, "failed", now, 0.0, _error(node.id, exc, str(exc))), how
        )
    if wait.kind == "callback" and wait.status != APPROVED:
        if wait.status == REJECTED:
            exc = CallbackRejected(wait.reason or "rejected")
        elif wait.heartbeat_s is not None and wait.due < wait.deadline:
            exc = CallbackTimeout(f"no heartbeat within {wait.heartbeat_s:g}s")
        else:
            exc = CallbackTimeout(
                f"no answer within {node.callback.timeout_s:g}s" if node.callback else "timed out"
            )
        return _resumed(_caught_or_failed(node, cursor, state, exc, now), how)
    update = approved_update(node, wait.output) if wait.kind == "callback" else {}
    merged = merge_state(state, update) if update else state
    return _resumed(_result(cursor, merged, update, _route(node, cursor, merged), "ok", now, 0.0, None), how)


def approved_update(node: CompiledNode, output: Any) -> dict[str, Any]:
    """What an approval adds to the state: ``{result: output}``, or the output object
    itself when the node names no ``result``."""
    result = node.callback.result if node.callback is not None else None
    if result is not None:
        return {result: output}
    return dict(output) if isinstance(output, dict) else {}


def _caught_or_failed(
    node: CompiledNode, cursor: Cursor, state: Mapping[str, Any], exc: FlowForgeError, now: float
) -> StepResult:
    error = _error(node.id, exc, exc.message)
    names = _type_names(exc)
    for rule in node.catch:
        if rule.next is not None and _matches(rule.on, names):
            caught = {rule.result_key: error}
            target = Cursor(rule.next, cursor.step + 1)
            return _result(cursor, merge_state(state, caught), caught, target, "caught", now, 0.0, error)
    return _result(cursor, state, {}, None, "failed", now, 0.0, error)


def _resumed(outcome: StepResult, how: str) -> StepResult:
    outcome.log["resumed"] = how
    return outcome
