"""The graph language as pydantic models: what a workflow definition may say.

Validation only: what runs is built by :mod:`engine.graph`, which also holds the
defaults these models document. Values are taken as given (strict): a definition is
JSON, so ``"5"`` is not a number here, and a definition that passed validation runs
exactly as it is written and stored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.graph import (
    ANY_ERROR,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_MAX_STEPS,
    DEFAULT_RESULT_KEY,
    DEFAULT_RETRY,
    MAX_BRANCHES,
    MAX_CONCURRENCY_CAP,
    MAX_DELAY_S,
    MAX_MAP_ITEMS,
    MAX_STEPS_CAP,
    MIN_BRANCHES,
)
from engine.waits import MAX_WAIT_S, MIN_WAIT_S

#: Node ids, tool names and graph names: short, printable, URL- and log-safe.
ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"
MAX_NODES = 500
MAX_GRAPH_BYTES = 256 * 1024
MAX_TIMEOUT_S = 900.0
MAX_PATH_CHARS = 256
MAX_RESULTS_KEY_CHARS = 1000


#: A condition is a registered predicate's name or a declarative rule (see conditions.py).
Condition = str | dict[str, Any]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RetryPolicy(_Model):
    """How a failing node is retried. ``max_attempts`` counts the first attempt too."""

    max_attempts: int = Field(
        DEFAULT_RETRY.max_attempts, ge=1, le=10, description="Total attempts, first included."
    )
    interval_s: float = Field(
        DEFAULT_RETRY.interval_s, ge=0, le=MAX_DELAY_S, description="Delay before attempt 2."
    )
    backoff_rate: float = Field(
        DEFAULT_RETRY.backoff_rate, ge=1, le=10, description="Delay multiplier per attempt."
    )
    max_delay_s: float = Field(DEFAULT_RETRY.max_delay_s, ge=0, le=MAX_DELAY_S, description="Cap on a delay.")
    jitter: Literal["none", "full"] = Field(
        DEFAULT_RETRY.jitter, description="'full': uniform in [0, delay]."
    )
    on: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RETRY.on),
        min_length=1,
        description="Error type names to retry ('*' for any), e.g. ['TimeoutError'].",
    )


class CatchRule(_Model):
    """Route a node's final failure to another node instead of failing the run."""

    on: list[str] = Field(default_factory=lambda: list(ANY_ERROR), min_length=1)
    next: str | None = Field(None, description="Where the run goes (none on a parallel branch's own catch).")
    result_key: str = Field(
        DEFAULT_RESULT_KEY, min_length=1, max_length=64, description="State key the error is stored under."
    )


class Branch(_Model):
    """``when`` the condition holds after the node ran, go to ``next``."""

    when: Condition
    next: str


class MapSpec(_Model):
    """Run ``fn`` once per item of the list at ``items``; the results go to ``results``."""

    items: str = Field(min_length=1, max_length=MAX_PATH_CHARS, description="State path to the list.")
    fn: str = Field(description="Name of the registered tool run once per item.")
    results: str = Field(
        min_length=1, max_length=MAX_RESULTS_KEY_CHARS, description="State key of the results."
    )
    max_concurrency: int = Field(
        DEFAULT_MAX_CONCURRENCY, ge=1, le=MAX_CONCURRENCY_CAP, description="Items running at once, at most."
    )
    tolerated_failures: int = Field(
        0, ge=0, le=MAX_MAP_ITEMS, description="Failed items allowed before the node fails with MapFailed."
    )


class CallbackSpec(_Model):
    """Wait for an answer at ``POST /callbacks/{token}`` (see the README's Runs that wait)."""

    timeout_s: float = Field(
        ge=MIN_WAIT_S, le=MAX_WAIT_S, description="CallbackTimeout when no answer comes within it."
    )
    heartbeat_s: float | None = Field(
        None,
        ge=MIN_WAIT_S,
        le=MAX_WAIT_S,
        description="CallbackTimeout when no heartbeat (POST /callbacks/{token}/heartbeat) comes within it.",
    )
    result: str | None = Field(
        None, min_length=1, max_length=MAX_RESULTS_KEY_CHARS, description="State key of the approved output."
    )


class WaitSpec(_Model):
    """A durable timer: ``seconds`` after the node is reached, or ``until`` the time at a state path."""

    seconds: float | None = Field(None, ge=MIN_WAIT_S, le=MAX_WAIT_S)
    until: str | None = Field(
        None, min_length=1, max_length=MAX_PATH_CHARS, description="State path holding an ISO-8601 time."
    )


class Node(_Model):
    """One step of a workflow: a registered tool (or a map, or parallel branches) plus
    where to go afterwards."""

    fn: str | None = Field(None, description="Name of a registered tool (not with map or parallel).")
    map: MapSpec | None = Field(None, description="Run a tool once per item of a list, concurrently.")
    parallel: list[str] | None = Field(
        None,
        min_length=MIN_BRANCHES,
        max_length=MAX_BRANCHES,
        description="Branch node ids run concurrently.",
    )
    callback: CallbackSpec | None = Field(None, description="Wait for an answer after the optional fn ran.")
    wait: WaitSpec | None = Field(None, description="Wait a while, or until a time (no fn).")
    next: str | None = Field(None, description="Default successor; none ends the run.")
    branches: list[Branch] = Field(default_factory=list, max_length=50)
    loop_condition: Condition | None = Field(None, description="Repeat this node until the condition holds.")
    max_iterations: int = Field(
        DEFAULT_MAX_ITERATIONS, ge=1, le=10_000, description="Cap on loop repetitions."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Passed to the tool as ctx.params.")
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)
    retry: RetryPolicy | None = None
    catch: list[CatchRule] = Field(default_factory=list, max_length=20)
    description: str | None = Field(None, max_length=1000)


class Graph(_Model):
    """A workflow definition. Node ids are the keys of ``nodes``."""

    name: str | None = Field(None, pattern=ID_PATTERN)
    description: str | None = Field(None, max_length=2000)
    start: str
    max_steps: int = Field(DEFAULT_MAX_STEPS, ge=1, le=MAX_STEPS_CAP)
    nodes: dict[str, Node] = Field(min_length=1)
