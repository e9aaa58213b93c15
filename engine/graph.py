"""The compiled graph: what a run executes, loaded from a definition that passed validation.

:func:`engine.validate.compile_graph` checks a definition against the graph model
(pydantic) and reports every problem; then it calls :func:`load_graph`, which resolves
tools and conditions and fills in defaults. The step Lambda calls :func:`load_graph`
directly on definitions stored by ``create_graph``, validated when they were created, so
its cold start never loads pydantic. One loader serves both paths, and the defaults of
the optional fields are defined here only: the model takes its defaults from this module.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from engine.conditions import Predicate, compile_condition
from engine.registry import Registered, Registry
from engine.waits import CompiledCallback, CompiledWait

DEFAULT_MAX_STEPS = 1000
#: No run makes more steps than this; a log entry's seq is below it.
MAX_STEPS_CAP = 25_000
DEFAULT_MAX_ITERATIONS = 100
#: SQS DelaySeconds tops out at 15 minutes, so no single retry delay may exceed it.
MAX_DELAY_S = 900.0
#: Error type names a retry or catch rule applies to when it names none: every error.
ANY_ERROR = ("*",)
DEFAULT_RESULT_KEY = "error"
#: Fan-out bounds: a map's list and concurrency, a parallel node's branch count.
MAX_MAP_ITEMS = 10_000
DEFAULT_MAX_CONCURRENCY = 10
MAX_CONCURRENCY_CAP = 1_000
MIN_BRANCHES = 2
MAX_BRANCHES = 50


@dataclass(frozen=True, slots=True)
class CompiledRetry:
    """How a failing node is retried. ``max_attempts`` counts the first attempt too."""

    max_attempts: int = 3
    interval_s: float = 1.0
    backoff_rate: float = 2.0
    max_delay_s: float = MAX_DELAY_S
    jitter: Literal["none", "full"] = "none"
    on: tuple[str, ...] = ANY_ERROR

    def delay_s(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed."""
        delay = min(self.interval_s * self.backoff_rate ** (failed_attempt - 1), self.max_delay_s)
        if self.jitter == "full":
            delay = (rng or random).uniform(0.0, delay)
        return delay


@dataclass(frozen=True, slots=True)
class CompiledCatch:
    """Route a node's final failure to ``next``, storing the error under ``result_key``."""

    next: str | None  # None only on a parallel branch: the run goes on by its parallel node
    on: tuple[str, ...] = ANY_ERROR
    result_key: str = DEFAULT_RESULT_KEY


#: A retry policy's defaults, field by field.
DEFAULT_RETRY = CompiledRetry()


@dataclass(frozen=True, slots=True)
class CompiledFanOut:
    """A ``map`` (``branches`` empty) or ``parallel`` node's executions and their join.

    A map runs its node's tool once per item of the list at ``items``; a parallel node
    runs each of ``branches`` (node ids) once. ``max_concurrency`` bounds how many run
    at once (all branches of a parallel node do).
    """

    items: tuple[str, ...] = ()
    results: str = ""
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    tolerated_failures: int = 0
    branches: tuple[str, ...] = ()

    @property
    def is_map(self) -> bool:
        return not self.branches


@dataclass(frozen=True, slots=True)
class CompiledNode:
    """A node with its tool and conditions resolved, ready to run (a parallel node has
    no tool of its own: ``fanout`` names its branches)."""

    id: str
    tool: Registered | None
    next: str | None
    branches: tuple[tuple[Predicate, str], ...]
    loop: Predicate | None
    max_iterations: int
    #: Read-only (built once): a tool must not change the compiled graph for later runs.
    params: Mapping[str, Any]
    timeout_s: float | None
    retry: CompiledRetry | None
    catch: tuple[CompiledCatch, ...]
    fanout: CompiledFanOut | None = None
    #: A callback (approval) node's wait, a ``wait`` node's timer (engine/waits.py).
    callback: CompiledCallback | None = None
    wait: CompiledWait | None = None


@dataclass(frozen=True, slots=True)
class CompiledGraph:
    """A validated graph: the definition as given plus its resolved nodes."""

    definition: Mapping[str, Any]
    name: str | None
    start: str
    max_steps: int
    nodes: dict[str, CompiledNode]


def load_graph(definition: Mapping[str, Any], registry: Registry) -> CompiledGraph:
    """Build the graph a run executes from a definition that passed validation.

    Raises :class:`~engine.errors.UnknownToolError` when a tool or condition it names
    is not registered (any other problem means the definition was never validated).
    """
    nodes = {nid: _load_node(nid, raw, registry) for nid, raw in definition["nodes"].items()}
    return CompiledGraph(
        definition=definition,
        name=definition.get("name"),
        start=definition["start"],
        max_steps=definition.get("max_steps", DEFAULT_MAX_STEPS),
        nodes=nodes,
    )


def _load_node(nid: str, raw: Mapping[str, Any], registry: Registry) -> CompiledNode:
    loop = raw.get("loop_condition")
    timeout_s = raw.get("timeout_s")
    retry = raw.get("retry")
    fanout, fn = _load_fanout(raw)
    return CompiledNode(
        id=nid,
        tool=registry.get_tool(fn) if fn is not None else None,
        next=raw.get("next"),
        branches=tuple((compile_condition(b["when"], registry), b["next"]) for b in raw.get("branches", ())),
        loop=compile_condition(loop, registry) if loop else None,
        max_iterations=raw.get("max_iterations", DEFAULT_MAX_ITERATIONS),
        params=MappingProxyType(dict(raw.get("params", {}))),
        timeout_s=None if timeout_s is None else float(timeout_s),
        retry=None if retry is None else _load_retry(retry),
        catch=tuple(_load_catch(rule) for rule in raw.get("catch", ())),
        fanout=fanout,
        callback=_load_callback(raw.get("callback")),
        wait=_load_wait(raw.get("wait")),
    )


def _load_callback(raw: Mapping[str, Any] | None) -> CompiledCallback | None:
    if raw is None:
        return None
    heartbeat = raw.get("heartbeat_s")
    return CompiledCallback(
        timeout_s=float(raw["timeout_s"]),
        heartbeat_s=None if heartbeat is None else float(heartbeat),
        result=raw.get("result"),
    )


def _load_wait(raw: Mapping[str, Any] | None) -> CompiledWait | None:
    if raw is None:
        return None
    seconds, until = raw.get("seconds"), raw.get("until")
    return CompiledWait(
        seconds=None if seconds is None else float(seconds),
        until=None if until is None else tuple(until.split(".")),
    )


def _load_fanout(raw: Mapping[str, Any]) -> tuple[CompiledFanOut | None, str | None]:
    """A node's fan-out, if any, and the name of the tool it runs (None: no tool)."""
    spec = raw.get("map")
    if spec is not None:
        fanout = CompiledFanOut(
            items=tuple(spec["items"].split(".")),
            results=spec["results"],
            max_concurrency=spec.get("max_concurrency", DEFAULT_MAX_CONCURRENCY),
            tolerated_failures=spec.get("tolerated_failures", 0),
        )
        return fanout, spec["fn"]
    branches = raw.get("parallel")
    if branches is not None:
        return CompiledFanOut(max_concurrency=len(branches), branches=tuple(branches)), None
    return None, raw.get("fn")  # a callback node's tool is optional; a wait node has none


def _load_retry(raw: Mapping[str, Any]) -> CompiledRetry:
    # Numbers are JSON numbers (the model is strict); a float field may hold an integer.
    d = DEFAULT_RETRY
    return CompiledRetry(
        max_attempts=raw.get("max_attempts", d.max_attempts),
        interval_s=float(raw.get("interval_s", d.interval_s)),
        backoff_rate=float(raw.get("backoff_rate", d.backoff_rate)),
        max_delay_s=float(raw.get("max_delay_s", d.max_delay_s)),
        jitter=raw.get("jitter", d.jitter),
        on=tuple(raw.get("on", d.on)),
    )


def _load_catch(raw: Mapping[str, Any]) -> CompiledCatch:
    return CompiledCatch(
        next=raw.get("next"),
        on=tuple(raw.get("on", ANY_ERROR)),
        result_key=raw.get("result_key", DEFAULT_RESULT_KEY),
    )
