"""The engine's one error family: every error carries a stable ``code``."""

from __future__ import annotations

from dataclasses import dataclass


class FlowForgeError(Exception):
    """Base of every error FlowForge raises on purpose.

    ``code`` is stable and machine-readable; callers branch on it (or on the class),
    never on the message text.
    """

    code = "flowforge_error"

    def __init__(self, message: str, *, details: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a graph, at a dotted path such as ``nodes.refine.next``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class GraphValidationError(FlowForgeError):
    """A graph definition has one or more problems; all of them are listed."""

    code = "invalid_graph"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        summary = "; ".join(str(p) for p in problems[:5])
        more = f" (and {count - 5} more)" if count > 5 else ""
        super().__init__(
            f"graph has {count} problem{'s' if count != 1 else ''}: {summary}{more}",
            details=[{"path": p.path, "message": p.message} for p in problems],
        )


class UnknownToolError(FlowForgeError):
    """A graph names a tool or condition that is not registered."""

    code = "unknown_tool"


class RegistryError(FlowForgeError):
    """A tool or condition was registered twice or with a bad name."""

    code = "registry_error"


class ToolsImportError(FlowForgeError):
    """A module that registers tools cannot be imported (absent, or failing on import)."""

    code = "tools_import"


class StateTooLargeError(FlowForgeError):
    """The run's state, serialized as JSON, exceeds the configured cap."""

    code = "state_too_large"


class InvalidStateError(FlowForgeError):
    """The state is not a JSON object, or a tool returned something unusable."""

    code = "invalid_state"


class NotFoundError(FlowForgeError):
    """A graph or run id that does not exist."""

    code = "not_found"


class ConflictError(FlowForgeError):
    """A conditional write lost: the run is not in the state the caller expected.

    For the step loop this is the normal outcome of a duplicate or concurrent delivery:
    someone else already made the transition.
    """

    code = "conflict"


class StoreUnavailableError(FlowForgeError):
    """The store or queue is throttled or unreachable; the operation may be retried."""

    code = "unavailable"
