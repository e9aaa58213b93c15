"""FlowForge's pure engine: graph model, validation, conditions, registry, step, runner.

It imports no AWS SDK and reads no environment variables; adapters live in ``functions/``.

The graph model (pydantic), validation and the in-process runner load on first use of
one of their names: the step Lambda imports ``engine`` at cold start and never needs the
model or validation (it loads stored graphs with :func:`engine.graph.load_graph`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.errors import (
    FlowForgeError,
    GraphValidationError,
    InvalidStateError,
    Problem,
    RegistryError,
    StateTooLargeError,
    UnknownToolError,
)
from engine.registry import Registry, condition, default_registry, tool
from engine.state import DEFAULT_MAX_STATE_BYTES
from engine.step import (
    TERMINAL,
    Cursor,
    InvalidToolResult,
    LoopLimitExceeded,
    MaxStepsExceeded,
    StepResult,
    ToolContext,
    run_step,
)

if TYPE_CHECKING:
    from engine.graph import CompiledGraph, CompiledNode, load_graph
    from engine.model import Branch, CatchRule, Graph, Node, RetryPolicy
    from engine.runner import RunResult, run_graph, run_graph_sync
    from engine.validate import compile_graph

#: Names loaded on first use, and the module each comes from.
_LAZY = {
    **dict.fromkeys(("Branch", "CatchRule", "Graph", "Node", "RetryPolicy"), "engine.model"),
    **dict.fromkeys(("RunResult", "run_graph", "run_graph_sync"), "engine.runner"),
    **dict.fromkeys(("CompiledGraph", "CompiledNode", "load_graph"), "engine.graph"),
    "compile_graph": "engine.validate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DEFAULT_MAX_STATE_BYTES",
    "TERMINAL",
    "Branch",
    "CatchRule",
    "CompiledGraph",
    "CompiledNode",
    "Cursor",
    "FlowForgeError",
    "Graph",
    "GraphValidationError",
    "InvalidStateError",
    "InvalidToolResult",
    "LoopLimitExceeded",
    "MaxStepsExceeded",
    "Node",
    "Problem",
    "Registry",
    "RegistryError",
    "RetryPolicy",
    "RunResult",
    "StateTooLargeError",
    "StepResult",
    "ToolContext",
    "UnknownToolError",
    "compile_graph",
    "condition",
    "default_registry",
    "load_graph",
    "run_graph",
    "run_graph_sync",
    "run_step",
    "tool",
]
