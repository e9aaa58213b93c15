"""The HTTP routes: each parses its input (validated by Powertools), calls the service, returns.

Errors are raised, never built here: :mod:`functions.api.errors` maps them.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import SkipValidation

from engine.blobs import parse_ref
from engine.errors import GraphValidationError, NotFoundError
from engine.graph import MAX_STEPS_CAP
from engine.logpages import MAX_LOG_PAGE_ENTRIES
from engine.ports import RunRecord
from engine.service import RunService
from functions.api.callbacks import callback_base_url
from functions.api.fields import Fields, FieldSelection, parse_fields
from functions.api.models import (
    ErrorResponse,
    GraphCreated,
    GraphDefinition,
    GraphDetail,
    GraphPage,
    GraphProblem,
    GraphValidation,
    RedriveRequest,
    RunAccepted,
    RunPage,
    RunRequest,
    RunView,
    SelectedRunFields,
    ToolListing,
)
from functions.api.observability import logger, metrics
from functions.api.principal import request_owner
from functions.api.waiting import wait_budget, wait_for_run
from functions.runtime import current_app

router = Router()


def _owner() -> str | None:
    """The caller whose graphs and runs this request sees (None: the account's, all)."""
    return request_owner(router.current_event.raw_event, current_app().service.isolated)


_ERROR_TEXT: dict[int | str, str] = {
    400: "Invalid request, JSON, graph or state; details list each problem",
    404: "Unknown graph or run",
    "404-value": "Unknown run, or the run has no such state key (or its offloaded value expired)",
    409: "The run is not in a status this request can act on (e.g. cancelling a finished run)",
    413: "Body over 5.5 MiB, or state over the state caps (256 KiB as stored, 100 MB in all)",
    415: "The body is not sent as content-type: application/json",
    429: "The caller already has MaxRunningRunsPerPrincipal runs running or waiting",
    503: "Store or queue unavailable; retry after Retry-After seconds",
}


def _errors(*statuses: int | str) -> dict[int, OpenAPIResponse]:
    """OpenAPI entries for the error statuses a route can answer (all share one shape);
    ``"404-value"`` is a 404 with its own description."""
    content: Any = {"application/json": {"model": ErrorResponse}}
    return {
        int(str(status).partition("-")[0]): {"description": _ERROR_TEXT[status], "content": content}
        for status in statuses
    }


def _responses(success: str, *errors: int, status: int = 200) -> dict[int, OpenAPIResponse]:
    """The success entry (its schema comes from the return annotation) plus the errors."""
    return {status: {"description": success}, **_errors(*errors)}


#: A run, or with ?fields= only the fields asked for.
_RUN: Any = RunView | SelectedRunFields

GraphId = Annotated[str, Path(min_length=1, max_length=128, description="Id from POST /graph/create.")]
RunId = Annotated[str, Path(min_length=1, max_length=128, description="Id from POST /graph/run.")]
# A log entry's seq is a step number, and no run makes more than MAX_STEPS_CAP steps.
LogsAfter = Annotated[
    int,
    Query(
        ge=-1,
        le=MAX_STEPS_CAP,
        description="Only log entries with seq > after: the logs_next of the previous page, "
        "or the last seq you have (-1: from the start).",
    ),
]
LogsLimit = Annotated[
    int,
    Query(ge=1, le=MAX_LOG_PAGE_ENTRIES, description="At most this many log entries in the page."),
]


@router.post(
    "/graph/create",
    status_code=201,
    summary="Validate and store a graph",
    description="The body is the graph definition. A 400 lists every problem, each with its path.",
    responses=_responses("Stored", 400, 413, 415, 503, status=201),
    tags=["graphs"],
)
def create_graph(
    definition: Annotated[
        SkipValidation[GraphDefinition], Body(description="The graph: {name?, start, nodes, max_steps?}.")
    ],
) -> GraphCreated:
    # The engine validates (SkipValidation keeps the schema for the docs only), so a
    # 400 reports every problem at once, not just pydantic's first layer.
    graph = current_app().service.create_graph(definition, _owner())
    logger.info("graph created", extra={"graph_id": graph.graph_id})
    metrics.add_metric(name="graphs_created", unit=MetricUnit.Count, value=1)
    return GraphCreated.of(graph)


@router.post(
    "/graph/validate",
    summary="Validate a graph without storing it",
    description="The body is a graph definition, as for POST /graph/create. Answers 200 with "
    "valid and every problem at its path; nothing is stored.",
    responses=_responses("The verdict", 400, 413),
    tags=["graphs"],
)
def validate_graph(
    # Any JSON: whatever the body holds is checked and answered with a verdict, so the
    # schema promises nothing more (a graph that breaks it is an answer, not a 400).
    definition: Annotated[Any, Body(description="A graph definition, as for POST /graph/create.")],
) -> GraphValidation:
    try:
        current_app().service.validate_graph(definition)
    except GraphValidationError as exc:
        problems = [GraphProblem(path=p.path, message=p.message) for p in exc.problems]
        return GraphValidation(valid=False, problems=problems)
    return GraphValidation(valid=True, problems=[])


@router.get(
    "/graphs",
    summary="List graphs, newest first",
    responses=_responses("A page of graphs", 400, 503),
    tags=["graphs"],
)
def list_graphs(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 50,
    next_token: Annotated[str | None, Query(max_length=1024, description="From the previous page.")] = None,
) -> GraphPage:
    graphs, token = current_app().service.store.list_graphs(limit=limit, after=next_token, owner=_owner())
    return GraphPage.of(graphs, token)


@router.get(
    "/graph/<graph_id>",
    summary="Fetch a graph",
    responses=_responses("The graph", 400, 404, 503),
    tags=["graphs"],
)
def get_graph(graph_id: GraphId) -> GraphDetail:
    return GraphDetail.of(current_app().service.get_graph(graph_id, _owner()))


@router.post(
    "/graph/run",
    summary="Start a run",
    description="background: 202 at once. Foreground: waits up to wait_s (25 s) and answers "
    "200 with the final state and the first page of its logs (logs_next says where the rest "
    "continue) — or as soon as the run waits (status waiting, and what it waits for) — or 202 "
    "with a state_url if the run is still going.",
    responses={
        200: {"description": "The run finished, or waits", "content": {"application/json": {"model": _RUN}}},
        202: {
            "description": "The run is running",
            "content": {"application/json": {"model": RunAccepted}},
        },
        **_errors(400, 404, 413, 415, 429, 503),
    },
    tags=["runs"],
)
def start_run(
    request: Annotated[RunRequest, Body(description="What to run, and how.")], fields: Fields = None
):
    selection = parse_fields(fields)
    service = current_app().service
    run = service.start_run(request.graph_id, request.state, _owner())
    logger.append_keys(run_id=run.run_id, graph_id=run.graph_id)
    logger.info("run started", extra={"background": request.background})
    metrics.add_metric(name="runs_started", unit=MetricUnit.Count, value=1)
    if request.background:
        return RunAccepted.of(run.run_id), 202
    remaining = getattr(router.lambda_context, "get_remaining_time_in_millis", None)
    budget = wait_budget(request.wait_s, remaining() if remaining else None)
    finished = wait_for_run(service, run.run_id, budget)
    if finished is None:
        return RunAccepted.of(run.run_id), 202
    return _answer(finished, service, selection), 200


@router.get(
    "/runs",
    summary="List runs, newest first",
    description="Each run's status and progress now, without state or logs.",
    responses=_responses("A page of runs", 400, 503),
    tags=["runs"],
)
def list_runs(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 50,
    next_token: Annotated[str | None, Query(max_length=1024, description="From the previous page.")] = None,
) -> RunPage:
    service = current_app().service
    runs, token = service.store.list_runs(limit=limit, after=next_token, owner=_owner())
    base = callback_base_url()
    return RunPage.of(
        runs, token, {run.run_id: service.waits.view(run, base) for run in runs if run.status == "waiting"}
    )


@router.get(
    "/graph/state/<run_id>",
    summary="A run's status, state and a page of its logs",
    description="The logs come a page at a time, within a size budget: while logs_next is "
    "not null, GET again with ?after=<logs_next> for the next page. ?fields= answers only "
    "the fields (and state keys) it names.",
    responses={
        200: {"description": "The run", "content": {"application/json": {"model": _RUN}}},
        **_errors(400, 404, 503),
    },
    tags=["runs"],
)
def get_state(
    run_id: RunId,
    logs: Annotated[bool, Query(description="false: leave the logs out.")] = True,
    after: LogsAfter = -1,
    limit: LogsLimit = MAX_LOG_PAGE_ENTRIES,
    fields: Fields = None,
):
    selection = parse_fields(fields)
    service = current_app().service
    return _answer(service.get_run(run_id, _owner()), service, selection, logs=logs, after=after, limit=limit)


def _answer(
    run: RunRecord,
    service: RunService,
    selection: FieldSelection | None,
    *,
    logs: bool = True,
    after: int = -1,
    limit: int = MAX_LOG_PAGE_ENTRIES,
) -> dict[str, Any]:
    """The run as clients see it, with the fields ``?fields=`` asked for (default all)."""
    if selection is not None:
        logs = logs and selection.wants_logs
    page = service.shown_log(run, after, limit) if logs else None
    view = RunView.of(
        run,
        page,
        service.progress(run),
        service.waits.view(run, callback_base_url()),
        current_app().settings.prices,
    )
    data = view.model_dump(mode="json")
    return data if selection is None else selection.apply(data)


#: An offloaded value up to this size is sent in the answer; a larger one is a 303 to a
#: presigned URL of its object (a Lambda answer is at most 6 MB).
VALUE_INLINE_MAX_BYTES = 1024 * 1024
StateKey = Annotated[
    str,
    Path(
        min_length=1,
        # A request line must fit the gateways' limits (aiohttp's 8 KB locally, API
        # Gateway's 10 KB with headers): a longer key is read with GET /graph/state.
        max_length=512,
        description="A top-level state key, percent-encoded: at most 512 characters as sent.",
    ),
]


@router.get(
    "/graph/state/<run_id>/values/<key>",
    summary="One value of a run's state, resolved",
    description="The value of state key `key` as JSON, whether it is kept in the run or was "
    'offloaded (GET /graph/state shows those as {"$blob": {"sha256", "bytes"}}). An '
    f"offloaded value over {VALUE_INLINE_MAX_BYTES} bytes is a 303 to a presigned URL of its "
    "object (valid 5 minutes): follow it (curl -L).",
    responses={
        200: {"description": "The value's JSON", "content": {"application/json": {"schema": {}}}},
        303: {"description": "A large offloaded value: Location is a presigned URL of it"},
        **_errors(400, "404-value", 503),
    },
    tags=["runs"],
)
def get_state_value(run_id: RunId, key: StateKey):
    service = current_app().service
    run = service.get_run(run_id, _owner())
    name = unquote(key)
    text = run.state.get(name)
    if text is None:
        raise NotFoundError(f"run {run_id!r} has no state key {name!r}")
    ref = parse_ref(text)
    if ref is None:  # kept in the run: its JSON as stored
        return Response(200, content_types.APPLICATION_JSON, text)
    if service.blobs is None:
        raise NotFoundError(
            f"run {run_id!r}: the value of {name!r} is offloaded and no blob store is configured"
        )
    presign = getattr(service.blobs.store, "presigned_url", None)
    if ref.size > VALUE_INLINE_MAX_BYTES and presign is not None:
        url = presign(ref.key(run_id))
        if url is None:
            raise NotFoundError(f"value {ref.sha256} of run {run_id!r} is not in the blob store (expired?)")
        return Response(303, content_types.APPLICATION_JSON, "", headers={"Location": url})
    text = service.blobs.text(run_id, ref)
    service.blobs.take_usage(run_id)  # reads of values are not in the run's cost: nothing kept
    return Response(200, content_types.APPLICATION_JSON, text)


@router.post(
    "/graph/run/<run_id>/cancel",
    summary="Cancel a running run",
    responses=_responses("The cancelled run (without logs)", 400, 404, 409, 503),
    tags=["runs"],
)
def cancel_run(run_id: RunId) -> RunView:
    run = current_app().service.cancel(run_id, _owner())
    logger.info("run cancelled", extra={"run_id": run_id})
    return RunView.of(run, None, prices=current_app().settings.prices)


@router.post(
    "/graph/run/<run_id>/redrive",
    summary="Resume a failed run at the node that failed",
    description="The node runs again with a fresh attempt count, after state_patch (if any) "
    "is merged into the state (top-level keys, like a tool's update). The log goes on with "
    "the next seq: first a 'redriven' entry, then the node's. 409 unless the run failed.",
    responses=_responses("The redriven run, running again (without logs)", 400, 404, 409, 413, 415, 429, 503),
    tags=["runs"],
)
def redrive_run(
    run_id: RunId,
    request: Annotated[RedriveRequest | None, Body(description="Optional: a state patch.")] = None,
) -> RunView:
    patch = request.state_patch if request is not None else None
    service = current_app().service
    run = service.redrive(run_id, patch, _owner())
    logger.info("run redriven", extra={"run_id": run_id, "redrive_count": run.redrive_count})
    metrics.add_metric(name="runs_redriven", unit=MetricUnit.Count, value=1)
    return RunView.of(run, None, service.progress(run), prices=current_app().settings.prices)


@router.get("/tools", summary="Registered tools and conditions", tags=["tools"])
def list_tools() -> ToolListing:
    # Through the service: building it imports the tool modules (FLOWFORGE_TOOLS_MODULES).
    return ToolListing.model_validate(current_app().service.registry.describe())
