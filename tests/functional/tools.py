"""Test tools, registered once on the default registry when this module is imported.

Names start with ``test_`` so they cannot collide with real tools.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from pathlib import Path
from typing import Any

import workflows  # registers the summarization tools
from engine import default_registry

GRAPHS = Path(workflows.__file__).resolve().parent / "graphs"


class Gate:
    """A rendezvous inside a tool: armed with N parties, every caller waits for the others.

    Two workers racing on one message then both execute the tool before either commits.
    """

    def __init__(self) -> None:
        self.barrier: threading.Barrier | None = None
        self.passed = 0
        self._lock = threading.Lock()

    def arm(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)

    def disarm(self) -> None:
        self.barrier = None

    def wait(self) -> None:
        barrier = self.barrier
        if barrier is not None:
            barrier.wait()
        with self._lock:
            self.passed += 1


GATE = Gate()


@default_registry.tool("test_gate")
async def gate_tool(state, ctx):
    """Waits at :data:`GATE` when it is armed, then lets the run through."""
    await asyncio.to_thread(GATE.wait)
    return {"gate": "passed"}


@default_registry.tool("test_flaky")
async def flaky_tool(state, ctx):
    """Fails its first ``state['fail_times']`` attempts, then records the attempt that won."""
    if ctx.attempt <= state.get("fail_times", 0):
        raise ConnectionError(f"flaky backend (attempt {ctx.attempt})")
    return {"flaky_attempts": ctx.attempt}


@default_registry.tool("test_vanishing")
async def vanishing_tool(state, ctx):
    """A tool the next deployment no longer has."""
    return {"vanished": False}


def summarization() -> tuple[dict[str, Any], dict[str, Any]]:
    """The seed's summarization graph and its example initial state."""
    graph = json.loads((GRAPHS / "summarization.json").read_text())
    state = json.loads((GRAPHS / "summarization.state.json").read_text())
    return graph, state


def sequential_summarization() -> tuple[dict[str, Any], dict[str, Any]]:
    """Summarization with summarize as one step (``summarize_chunks``, not a map): one log
    entry per node, for tests that name steps by number."""
    graph, state = summarization()
    graph["nodes"]["summarize"] = {"fn": "summarize_chunks", "next": "merge"}
    return graph, state


def gated_summarization() -> tuple[dict[str, Any], dict[str, Any]]:
    """Summarization behind a ``test_gate`` node, for races on the first step."""
    graph, state = summarization()
    graph = copy.deepcopy(graph)
    graph["nodes"]["gate"] = {"fn": "test_gate", "next": graph["start"]}
    graph["start"] = "gate"
    graph["name"] = "gated_summarization"
    return graph, state


FLAKY = {
    "name": "flaky",
    "start": "call",
    "nodes": {
        "call": {
            "fn": "test_flaky",
            "retry": {"max_attempts": 3, "interval_s": 2, "backoff_rate": 2, "on": ["ConnectionError"]},
            "next": "after",
        },
        "after": {"fn": "test_vanishing"},
    },
}

VANISHING = {"name": "vanishing", "start": "only", "nodes": {"only": {"fn": "test_vanishing"}}}


@default_registry.tool("test_append_in_place")
async def append_in_place(state, ctx):
    """Appends to a list it was given without returning it: a change that is not an update."""
    state["items"].append(ctx.step)
    return {"seen": len(state["items"])}


@default_registry.tool("test_count")
async def count_tool(state, ctx):
    """Adds one to ``i``: the loop of :func:`count_loop`."""
    return {"i": state.get("i", 0) + 1}


def count_loop(steps: int) -> dict[str, Any]:
    """One node run ``steps`` times (``i`` counts up to ``steps``): a chain of due steps."""
    return {
        "name": "count_loop",
        "start": "count",
        "nodes": {
            "count": {
                "fn": "test_count",
                "loop_condition": {"var": "i", "gte": steps},
                "max_iterations": steps,
            }
        },
    }
