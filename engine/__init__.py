"""FlowForge's pure engine: graph model, validation, conditions, registry, step, runner.

It imports no AWS SDK and reads no environment variables; adapters live in ``functions/``.
"""

from engine.errors import (
    FlowForgeError,
    GraphValidationError,
    InvalidStateError,
    Problem,
    RegistryError,
    StateTooLargeError,
    UnknownToolError,
)
from engine.model import Branch, CatchRule, Graph, Node, RetryPolicy
from engine.registry import Registry, condition, default_registry, tool
from engine.runner import RunResult, run_graph, run_graph_sync
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
from engine.validate import CompiledGraph, CompiledNode, compile_graph

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
    "run_graph",
    "run_graph_sync",
    "run_step",
    "tool",
]
