"""Request and response bodies of the HTTP API; /openapi.json is generated from them.

Requests forbid unknown fields and coerce nothing (``"true"`` is not a boolean), so a
typo is a 400 rather than a silently ignored option. Responses allow extra fields so
the engine can add to a log entry or a tool listing without breaking the API.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, model_serializer
from pydantic_core import CoreSchema

from engine.cost import price
from engine.logpages import MAX_LOG_PAGE_BYTES, LogPage
from engine.ports import GraphRecord, RunRecord
from engine.prices import LIST_PRICES, PriceTable
from engine.state import decode_state
from engine.step import LIVE, TERMINAL

#: The longest a foreground ``POST /graph/run`` waits (API Gateway gives up at 30 s).
MAX_WAIT_S = 25.0


class _Model(BaseModel):
    # Each model's validator is built when first used: a request uses two or three of them.
    model_config = ConfigDict(defer_build=True)


class GraphDefinition:
    """A graph definition in a request body, with :class:`engine.model.Graph`'s schema.

    The graph model is imported when a route first needs its schema (creating a graph,
    or the OpenAPI document), not by every request.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from engine.model import Graph

        return handler(Graph)


class RunRequest(_Model):
    """Start a run of a stored graph."""

    model_config = ConfigDict(extra="forbid", strict=True)

    graph_id: str = Field(min_length=1, max_length=128, description="Id from POST /graph/create.")
    state: dict[str, Any] = Field(
        default_factory=dict,
        description="Initial shared state, a JSON object (at most the state cap, 256 KiB).",
    )
    background: bool = Field(
        False, description="true: return 202 at once; false: wait for the run to finish."
    )
    wait_s: float = Field(
        MAX_WAIT_S,
        ge=0,
        le=MAX_WAIT_S,
        description="Foreground only: how long to wait before answering 202 with a state_url.",
    )


class RedriveRequest(_Model):
    """Resume a failed run, optionally with a patched state."""

    model_config = ConfigDict(extra="forbid", strict=True)

    state_patch: dict[str, Any] = Field(
        default_factory=dict,
        description="Top-level keys merged into the run's state before the failed node runs "
        "again (checked like an initial state: JSON only, the state cap).",
    )


class _Response(_Model):
    model_config = ConfigDict(extra="allow")


class GraphCreated(_Response):
    graph_id: str = Field(description="Id to run the graph with.")
    name: str | None = Field(description="The graph's name, if it has one.")
    nodes: int = Field(description="Number of nodes.")

    @classmethod
    def of(cls, graph: GraphRecord) -> GraphCreated:
        return cls(graph_id=graph.graph_id, name=graph.name, nodes=len(graph.definition["nodes"]))


class GraphSummary(_Response):
    graph_id: str
    name: str | None = Field(description="The graph's name, if it has one.")
    created_at: str = Field(description="ISO 8601 UTC timestamp.")
    nodes: int | None = Field(None, description="Number of nodes.")


class GraphPage(_Response):
    graphs: list[GraphSummary] = Field(description="Newest first.")
    next_token: str | None = Field(description="Pass as ?next_token= for the next page; null at the end.")

    @classmethod
    def of(cls, graphs: list[GraphRecord], next_token: str | None) -> GraphPage:
        summaries = [
            GraphSummary(
                graph_id=g.graph_id, name=g.name, created_at=g.created_at, nodes=len(g.definition["nodes"])
            )
            for g in graphs
        ]
        return cls(graphs=summaries, next_token=next_token)


class GraphProblem(_Model):
    path: str = Field(
        description="Dotted path of what is wrong, e.g. nodes.refine.next ('' for the whole graph)."
    )
    message: str


class GraphValidation(_Response):
    """What POST /graph/validate found; nothing is stored."""

    valid: bool = Field(description="true when POST /graph/create would accept the graph.")
    problems: list[GraphProblem] = Field(description="Every problem, each at its path; empty when valid.")


class GraphDetail(GraphSummary):
    version: int = Field(description="Runs pin the version they started with.")
    definition: dict[str, Any] = Field(description="The graph as it was created.")

    @classmethod
    def of(cls, graph: GraphRecord) -> GraphDetail:
        return cls(
            graph_id=graph.graph_id,
            name=graph.name,
            created_at=graph.created_at,
            nodes=len(graph.definition["nodes"]),
            version=graph.version,
            definition=graph.definition,
        )


class LogEntry(_Response):
    """What one step did; the WebSocket streams the same entries."""

    seq: int = Field(description="Step number, 0-based; continue after it with ?after=.")
    node: str | None = Field(None, description="Node that ran.")
    attempt: int | None = Field(None, description="1 for the first try, 2+ for retries.")
    status: str | None = Field(None, description="ok, retry, caught or failed.")
    started_at: str | None = None
    duration_ms: float | None = None
    result: Any = Field(None, description="The update the node merged into the state.")
    next: str | None = Field(None, description="Node the run went to next; null when it ended.")
    error: dict[str, Any] | None = Field(None, description="{node, type, message} on failure.")
    index: int | None = Field(None, description="A map item's execution: the item's index in the list.")
    branch: str | None = Field(None, description="A parallel branch's execution: the branch node.")

    @model_serializer(mode="wrap")
    def _omit_absent_execution_fields(self, serialize):
        # An entry has index or branch only when it is one of a fan-out's executions.
        data = serialize(self)
        for name in ("index", "branch"):
            if data.get(name) is None:
                data.pop(name, None)
        return data


class FanOutProgress(_Response):
    """A running map or parallel node's items (branches)."""

    node: str
    total: int = Field(description="Items (branches) to run.")
    done: int = Field(description="Items finished for good, failed ones included.")
    failed: int = Field(description="Items that failed after their retries.")


class WaitingInfo(_Response):
    """What a waiting run waits for."""

    node: str
    callback_url: str | None = Field(
        None, description="A callback node: POST an answer here (the token is the last path segment)."
    )
    expires_at: str | None = Field(None, description="A callback node: CallbackTimeout after this time.")
    until: str | None = Field(None, description="A wait node: when it goes on.")

    @model_serializer(mode="wrap")
    def _omit_absent(self, serialize):
        return {name: value for name, value in serialize(self).items() if value is not None}


class RunView(_Response):
    """A run as clients see it (GET /graph/state/{run_id})."""

    run_id: str
    graph_id: str
    status: str = Field(description="running, waiting, completed, failed or cancelled.")
    done: bool = Field(description="true once the status is final.")
    state: dict[str, Any] = Field(description="The shared state after the last step.")
    current_node: str | None = Field(description="Node to run next; null once done.")
    step: int = Field(description="Steps made so far.")
    created_at: str
    updated_at: str
    finished_at: str | None
    error: dict[str, Any] | None = Field(description="{node, type, message} when the run failed.")
    redrive_count: int = Field(0, description="How many times the run was redriven after failing.")
    progress: FanOutProgress | None = Field(
        None, description="While the run is at a map or parallel node: how far its items are."
    )
    waiting: WaitingInfo | None = Field(None, description="While the run waits: for what, until when.")
    cost: dict[str, Any] | None = Field(
        None,
        description="An estimate of what the run's committed steps cost on AWS so far: "
        '{"usd", "estimate": true, "breakdown": {lambda, sqs, dynamodb, s3, bedrock}, "prices"}, '
        "each line with what was counted and its USD, priced with the stack's price table "
        "(us-east-1 list prices unless PriceOverrides says otherwise). See the README's Cost per run.",
    )
    logs: list[LogEntry] | None = Field(
        None,
        description="One page of log entries with seq > after, in order: at most limit entries "
        f"and {MAX_LOG_PAGE_BYTES // 1024} KiB of JSON (an entry larger than that comes alone). "
        "Absent with ?logs=false.",
    )
    logs_next: int | None = Field(
        None,
        description="More log entries follow this page: pass this seq as ?after= to GET "
        "/graph/state/{run_id} for the next one. null when logs reaches the last entry "
        "stored (a running run may add more). Absent with ?logs=false.",
    )

    @model_serializer(mode="wrap")
    def _omit_absent_logs(self, serialize):
        data = serialize(self)
        if self.logs is None:
            data.pop("logs", None)
            data.pop("logs_next", None)
        return data

    @classmethod
    def of(
        cls,
        run: RunRecord,
        logs: LogPage | None,
        progress: dict[str, Any] | None = None,
        waiting: dict[str, Any] | None = None,
        prices: PriceTable = LIST_PRICES,
    ) -> RunView:
        return cls.model_validate(run_view(run, logs, progress, waiting, prices))


class SelectedRunFields(_Response):
    """A run with only the fields ?fields= named (and of its state only the keys named)."""

    run_id: str | None = None
    graph_id: str | None = None
    status: str | None = None
    done: bool | None = None
    state: dict[str, Any] | None = None
    current_node: str | None = None
    step: int | None = None
    created_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    error: dict[str, Any] | None = None
    redrive_count: int | None = None
    waiting: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    logs: list[LogEntry] | None = None
    logs_next: int | None = None


class RunSummary(_Response):
    """A run in a list: its status and progress, without state or logs."""

    run_id: str
    graph_id: str
    status: str = Field(description="running, waiting, completed, failed or cancelled.")
    step: int = Field(description="Steps made so far.")
    created_at: str
    updated_at: str
    finished_at: str | None
    waiting: WaitingInfo | None = Field(None, description="A waiting run: what it waits for.")

    @model_serializer(mode="wrap")
    def _omit_not_waiting(self, serialize):
        data = serialize(self)
        if data.get("waiting") is None:
            data.pop("waiting", None)
        return data


class RunPage(_Response):
    runs: list[RunSummary] = Field(description="Newest first.")
    next_token: str | None = Field(description="Pass as ?next_token= for the next page; null at the end.")

    @classmethod
    def of(
        cls, runs: list[RunRecord], next_token: str | None, waiting: dict[str, Any] | None = None
    ) -> RunPage:
        summaries = [
            RunSummary(
                run_id=r.run_id,
                graph_id=r.graph_id,
                status=r.status,
                step=r.step,
                created_at=r.created_at,
                updated_at=r.updated_at,
                finished_at=r.finished_at,
                waiting=(waiting or {}).get(r.run_id),
            )
            for r in runs
        ]
        return cls(runs=summaries, next_token=next_token)


class RunAccepted(_Response):
    """The run is (still) running: poll state_url or watch the WebSocket."""

    run_id: str
    status: str = Field("running", description="Always running here.")
    state_url: str = Field(description="GET it for the run's state and logs.")

    @classmethod
    def of(cls, run_id: str) -> RunAccepted:
        return cls(run_id=run_id, status="running", state_url=f"/graph/state/{run_id}")


class CallbackAnswer(_Model):
    """An answer to a callback: approve it (with an output) or reject it (with a reason)."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    status: Literal["approved", "rejected"] = Field(
        description="approved: the run goes on; rejected: CallbackRejected."
    )
    output: Any = Field(None, description="approved: stored under the node's callback.result.")
    reason: str | None = Field(
        None, max_length=4096, description="rejected: the CallbackRejected error's message."
    )


class CallbackAnswered(_Response):
    """What an answer (or a heartbeat) did."""

    run_id: str
    callback: str = Field(description="The callback's status: approved, rejected, or pending (a heartbeat).")
    status: str = Field(description="The run's status now.")
    applied: bool = Field(
        description="Whether the run moved on already (false: the node's tool is still running; "
        "the answer applies when it returns, or fails)."
    )
    expires_at: str | None = Field(None, description="A heartbeat: when the next one is due at the latest.")

    @model_serializer(mode="wrap")
    def _omit_absent_deadline(self, serialize):
        data = serialize(self)
        if data.get("expires_at") is None:
            data.pop("expires_at", None)
        return data


class RegisteredFunction(_Response):
    name: str
    is_async: bool = Field(alias="async", description="Whether the function is a coroutine.")
    doc: str = Field(description="The function's docstring.")


class ToolListing(_Response):
    tools: list[RegisteredFunction] = Field(description="Tools graphs can name in a node's fn.")
    conditions: list[RegisteredFunction] = Field(description="Predicates usable as conditions.")


class ErrorInfo(_Model):
    code: str = Field(
        description="Stable, machine-readable: invalid_request, invalid_json, invalid_graph, "
        "invalid_state, not_found, method_not_allowed, conflict, body_too_large, "
        "state_too_large, unsupported_media_type, unavailable, internal."
    )
    message: str = Field(description="For people; do not parse it.")
    details: Any = Field(None, description="For invalid_request and invalid_graph: [{path, message}].")


class ErrorResponse(_Model):
    """Every error the API returns has this shape."""

    error: ErrorInfo


def run_view(
    run: RunRecord,
    logs: LogPage | None,
    progress: dict[str, Any] | None = None,
    waiting: dict[str, Any] | None = None,
    prices: PriceTable = LIST_PRICES,
) -> dict[str, Any]:
    """The public shape of a run (``GET /graph/state/{run_id}``), with a page of its log,
    at a map or parallel node its progress (:meth:`engine.service.RunService.progress`),
    while it waits what for (:meth:`engine.wait_service.WaitSteps.view`), and its cost
    estimate priced with ``prices``."""
    view: dict[str, Any] = {
        "run_id": run.run_id,
        "graph_id": run.graph_id,
        "status": run.status,
        "done": run.status in TERMINAL,
        "state": decode_state(run.state),
        "current_node": run.cursor.node if run.cursor and run.status in LIVE else None,
        "step": run.step,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "finished_at": run.finished_at,
        "error": run.error,
        "redrive_count": run.redrive_count,
        "progress": progress,
        "waiting": waiting,
        "cost": price(run.cost, prices),
    }
    if logs is not None:
        view["logs"] = logs.entries
        view["logs_next"] = logs.next_after
    return view
