"""``GET /graph/state/{run_id}`` and foreground ``POST /graph/run`` answer a run's log a
page at a time: at most ``limit`` entries and the service's byte budget, with
``logs_next`` pointing to the rest. Through the real API handler, in memory and on
template.yaml's DynamoDB table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from engine import default_registry
from engine.logpages import MAX_LOG_PAGE_ENTRIES, entry_size
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.model import MAX_STEPS_CAP
from engine.service import RunService
from functions.api.app import handler
from functions.runtime import current_app, set_app
from functions.step.app import handler as step_handler
from tests.functional import fixtures as moto
from tests.functional.pump import QueuePump, run_queued, step_loop
from tests.reliability.api_client import Reply, call

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

aws, clock, stack = moto.aws, moto.clock, moto.stack


@default_registry.tool("pages_write")
async def pages_write(state, ctx):
    """Count in ``i`` and log ``params.size`` copies of ``params.char`` (default "x")."""
    return {"i": state.get("i", 0) + 1, "text": ctx.params.get("char", "x") * ctx.params["size"]}


def writer(steps: int, size: int, char: str = "x") -> dict[str, Any]:
    """A graph of ``steps`` steps, each logging a result of about ``size`` characters."""
    return {
        "start": "w",
        "nodes": {
            "w": {
                "fn": "pages_write",
                "params": {"size": size, "char": char},
                "loop_condition": {"var": "i", "gte": steps},
                "max_iterations": 10_000,
            }
        },
    }


@pytest.fixture
def service() -> Iterator[RunService]:
    service = RunService(InMemoryRunStore(), InMemoryStepQueue())
    set_app(moto.service_app(service))
    yield service
    set_app(None)


def finished_run(service: RunService, graph: dict[str, Any]) -> str:
    run_id = service.start_run(service.create_graph(graph).graph_id, {}).run_id
    run_queued(service)
    assert service.get_run(run_id).status == "completed"
    return run_id


def budget_for(service: RunService, run_id: str, entries: int) -> int:
    """A budget that holds exactly ``entries`` of the run's (similar-sized) log entries."""
    sizes = [entry_size(e) for e in service.store.list_logs(run_id)]
    budget = entries * max(sizes)
    assert budget < (entries + 1) * min(sizes)
    return budget


def state(run_id: str, **query: Any) -> Reply:
    reply = call(handler, "GET", f"/graph/state/{run_id}", query=query or None)
    assert reply.status == 200, reply.text[:300]
    return reply


def pages_after(run_id: str, first: Reply) -> list[Reply]:
    """``first`` and the pages its ``logs_next`` leads to."""
    pages = [first]
    while pages[-1].json["logs_next"] is not None:
        pages.append(state(run_id, after=pages[-1].json["logs_next"]))
    return pages


def logs_bytes(reply: Reply) -> int:
    """Bytes of the page's log entries as the response carries them."""
    return sum(len(json.dumps(entry, separators=(",", ":"))) + 1 for entry in reply.json["logs"])


def test_the_first_page_holds_what_fits_the_budget_and_points_to_the_next(service):
    # GIVEN a finished run of 10 steps and a budget of 3 of its entries
    run_id = finished_run(service, writer(10, 500))
    service.log_page_bytes = budget_for(service, run_id, 3)

    # WHEN its state is read
    page = state(run_id).json

    # THEN the run comes with its first 3 entries, and logs_next says where to go on
    assert page["status"] == "completed" and page["step"] == 10 and page["state"]["i"] == 10
    assert [e["seq"] for e in page["logs"]] == [0, 1, 2]
    assert page["logs_next"] == 2


def test_following_logs_next_reads_every_entry_once_then_null(service):
    # GIVEN a finished run of 10 steps and a budget of 3 of its entries
    run_id = finished_run(service, writer(10, 500))
    service.log_page_bytes = budget_for(service, run_id, 3)

    # WHEN its pages are read, each from the previous page's logs_next
    pages = pages_after(run_id, state(run_id))

    # THEN 4 pages hold every entry once, in order, each within the budget
    assert [[e["seq"] for e in p.json["logs"]] for p in pages] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert [p.json["logs_next"] for p in pages] == [2, 5, 8, None]
    assert all(logs_bytes(p) <= service.log_page_bytes for p in pages)
    assert [e for p in pages for e in p.json["logs"]] == service.store.list_logs(run_id)


def test_limit_bounds_a_page_by_count_and_the_last_page_says_so(service):
    run_id = finished_run(service, writer(5, 10))

    two = state(run_id, limit=2).json
    rest = state(run_id, after=two["logs_next"], limit=3).json  # exactly what is left

    assert ([e["seq"] for e in two["logs"]], two["logs_next"]) == ([0, 1], 1)
    assert ([e["seq"] for e in rest["logs"]], rest["logs_next"]) == ([2, 3, 4], None)
    assert (state(run_id).json["logs_next"], len(state(run_id).json["logs"])) == (None, 5)


def test_after_the_last_entry_the_page_is_empty_and_final(service):
    run_id = finished_run(service, writer(3, 10))

    page = state(run_id, after=2).json

    assert (page["logs"], page["logs_next"], page["status"]) == ([], None, "completed")


def test_an_entry_larger_than_the_budget_comes_alone(service):
    # GIVEN entries of about 2 KB and a budget of 500 bytes
    run_id = finished_run(service, writer(3, 2000))
    service.log_page_bytes = 500

    # WHEN the pages are read
    first = state(run_id).json
    second = state(run_id, after=first["logs_next"]).json
    third = state(run_id, after=second["logs_next"]).json

    # THEN each page holds one entry, in full, so paging still moves on
    pages = (first, second, third)
    assert [[e["seq"] for e in p["logs"]] for p in pages] == [[0], [1], [2]]
    assert [p["logs_next"] for p in pages] == [0, 1, None]
    assert all(p["logs"][0]["result"]["text"] == "x" * 2000 for p in pages)


def test_the_budget_counts_entries_as_sent_with_non_ascii_escaped(service):
    # GIVEN entries of 1,000 emoji each: 4 KB in UTF-8, 12 KB as the response escapes them
    run_id = finished_run(service, writer(6, 1000, char="\U0001f600"))
    service.log_page_bytes = 40_000

    page = state(run_id)

    # THEN the page holds what fits 40 KB as sent: 3 entries, not 9
    assert [e["seq"] for e in page.json["logs"]] == [0, 1, 2] and page.json["logs_next"] == 2
    assert logs_bytes(page) <= 40_000 < len(page.text) < 50_000


def test_without_logs_neither_logs_nor_logs_next_is_sent(service):
    run_id = finished_run(service, writer(3, 10))

    page = state(run_id, logs="false").json

    assert "logs" not in page and "logs_next" not in page and page["step"] == 3


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"after": "-2"}, "query.after: Input should be greater than or equal to -1"),
        ({"after": str(MAX_STEPS_CAP + 1)}, f"query.after: Input should be less than or equal to {MAX_STEPS_CAP}"),
        ({"after": "seq-3"}, "query.after: Input should be a valid integer, unable to parse string as an integer"),
        ({"after": "10000000000000000000000"}, f"query.after: Input should be less than or equal to {MAX_STEPS_CAP}"),
        ({"limit": "0"}, "query.limit: Input should be greater than or equal to 1"),
        ({"limit": str(MAX_LOG_PAGE_ENTRIES + 1)}, f"query.limit: Input should be less than or equal to {MAX_LOG_PAGE_ENTRIES}"),
        ({"limit": "all"}, "query.limit: Input should be a valid integer, unable to parse string as an integer"),
    ],
    ids=["after-below", "after-above", "after-text", "after-huge", "limit-0", "limit-above", "limit-text"],
)  # fmt: skip
def test_a_bad_cursor_or_page_size_is_a_400_naming_it(service, query, message):
    run_id = finished_run(service, writer(2, 10))

    reply = call(handler, "GET", f"/graph/state/{run_id}", query=query)

    assert reply.status == 400
    assert reply.json["error"]["code"] == "invalid_request"
    assert reply.json["error"]["message"] == f"invalid request: {message}"


def test_a_foreground_run_answers_its_first_page_and_where_the_rest_is(service):
    # GIVEN a graph of 10 steps, a budget of 4 entries and the step loop running
    graph_id = service.create_graph(writer(10, 500)).graph_id
    service.log_page_bytes = 4 * 700

    # WHEN it runs in the foreground, the step loop running
    with step_loop(service):
        reply = call(handler, "POST", "/graph/run", json_body={"graph_id": graph_id})

    # THEN the finished run comes with a first page within the budget, and the rest follows
    assert reply.status == 200 and reply.json["status"] == "completed", reply.text[:300]
    first = reply.json
    assert len(first["logs"]) < 10 and first["logs_next"] == first["logs"][-1]["seq"]
    pages = pages_after(first["run_id"], reply)
    assert all(logs_bytes(page) <= service.log_page_bytes for page in pages)
    assert [e["seq"] for page in pages for e in page.json["logs"]] == list(range(10))


# -- on template.yaml's DynamoDB table (moto) ------------------------------------------
@pytest.fixture
def aws_service(stack, clock, monkeypatch) -> Iterator[RunService]:
    for name, value in stack["env"].items():
        monkeypatch.setenv(name, value)
    set_app(moto.moto_app())
    service = current_app().service
    service.clock = clock
    yield service
    set_app(None)


def test_pages_on_dynamodb_hold_every_entry_once(aws_service, aws, stack, clock):
    # GIVEN a run of 30 steps, made by the step Lambda, with a budget of 7 entries
    graph_id = aws_service.create_graph(writer(30, 300)).graph_id
    run_id = aws_service.start_run(graph_id, {}).run_id
    QueuePump(aws.client("sqs"), stack["queue_url"], clock, step_handler).drain()
    aws_service.log_page_bytes = budget_for(aws_service, run_id, 7)

    # WHEN its pages are read through the API
    pages = pages_after(run_id, state(run_id))

    # THEN they hold the 30 entries once, in order, 7 at a time
    assert [len(p.json["logs"]) for p in pages] == [7, 7, 7, 7, 2]
    assert [e["seq"] for p in pages for e in p.json["logs"]] == list(range(30))
