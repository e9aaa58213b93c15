"""Callback and wait nodes in the engine: validation, tokens, the in-process runner and
the run service in memory (stored before the tool runs, answered once, timed out)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine import compile_graph, default_registry, run_graph_sync
from engine.errors import ConflictError, GraphValidationError, NotFoundError
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.runner import Answer
from engine.service import RunService
from engine.step import iso_time
from engine.waits import CallbackSigner, parse_time, parse_token, token_hash
from tests.functional.pump import VirtualClock, run_queued

SEEN: list[tuple[str | None, str | None]] = []


@default_registry.tool("waits_unit_notify")
async def notify(state, ctx):
    SEEN.append((ctx.callback_token, ctx.callback_url))
    return {"notified": ctx.node}


@default_registry.tool("waits_unit_done")
def done(state, ctx):
    return {"done": True}


@pytest.fixture(autouse=True)
def _reset():
    SEEN.clear()


REVIEW: dict[str, Any] = {
    "start": "review",
    "nodes": {
        "review": {
            "fn": "waits_unit_notify",
            "callback": {"timeout_s": 86400, "heartbeat_s": 3600, "result": "review"},
            "next": "publish",
            "catch": [
                {"on": ["CallbackTimeout"], "next": "escalate"},
                {"on": ["CallbackRejected"], "next": "revise", "result_key": "rejection"},
            ],
        },
        "publish": {"fn": "waits_unit_done"},
        "escalate": {"fn": "waits_unit_done"},
        "revise": {"fn": "waits_unit_done"},
    },
}


def problems(definition: dict[str, Any]) -> list[str]:
    with pytest.raises(GraphValidationError) as info:
        compile_graph(definition)
    return [str(p) for p in info.value.problems]


# -- validation ---------------------------------------------------------------------------------
def test_the_issues_examples_are_valid_graphs():
    compile_graph(REVIEW)
    compile_graph(
        {
            "start": "cool_off",
            "nodes": {
                "cool_off": {"wait": {"seconds": 172800}, "next": "at_nine"},
                "at_nine": {"wait": {"until": "release_at"}, "next": "publish"},
                "publish": {"fn": "waits_unit_done"},
            },
        }
    )


def test_every_problem_of_waiting_nodes_is_listed_at_once():
    found = problems(
        {
            "start": "a",
            "nodes": {
                "a": {
                    "callback": {"timeout_s": 60, "heartbeat_s": 120, "result": "x.y"},
                    "retry": {},
                    "next": "b",
                },
                "b": {"wait": {"seconds": 5, "until": "t"}, "fn": "waits_unit_done", "next": "c"},
                "c": {"wait": {"until": "a..b"}, "loop_condition": {"var": "x", "eq": 1}, "next": "d"},
                "d": {"wait": {}, "callback": {"timeout_s": 1}, "next": "e"},
                "e": {"wait": {"seconds": 0.5}, "next": "f"},
                "f": {"callback": {"timeout_s": 365 * 86400 + 1}},
            },
        }
    )
    assert found == [
        "nodes.e.wait.seconds: Input should be greater than or equal to 1",
        "nodes.f.callback.timeout_s: Input should be less than or equal to 31536000",
        "nodes.a.callback.heartbeat_s: 120s is longer than timeout_s (60s); a heartbeat is expected within the timeout",
        "nodes.a.callback.result: 'x.y': the output goes to a top-level state key (no '.')",
        "nodes.a.retry: applies to the node's fn, and this callback node has none; "
        "retries never apply to CallbackRejected or CallbackTimeout (catch them)",
        "nodes.b.wait: give exactly one of seconds (1 s to 1 year) or until (a state path)",
        "nodes.b.fn: a wait node runs no tool, so it has no fn; wait, then run one",
        "nodes.c.loop_condition: a node that waits cannot loop; loop on the node after it instead",
        "nodes.c.wait.until: 'a..b' is not a state path like 'release_at' or 'schedule.at'",
        "nodes.d.wait: a node has either callback or wait; wait in a node of its own",
        "nodes.d.wait: give exactly one of seconds (1 s to 1 year) or until (a state path)",
    ]


def test_a_parallel_branch_cannot_wait():
    found = problems(
        {
            "start": "p",
            "nodes": {
                "p": {"parallel": ["x", "y"]},
                "x": {"fn": "waits_unit_done"},
                "y": {"wait": {"seconds": 5}},
            },
        }
    )
    assert found == ["nodes.y.wait: branch of parallel node 'p': a branch runs one tool (fn); it cannot wait"]


# -- tokens -------------------------------------------------------------------------------------
def test_a_token_names_its_run_and_step_and_is_a_256_bit_mac():
    signer = CallbackSigner(b"k" * 32, "https://api.example/v1/")
    token = signer.token("run1", 7)
    assert parse_token(token) == ("run1", 7)
    assert token == signer.token("run1", 7) != signer.token("run1", 8)
    assert token != CallbackSigner(b"j" * 32, "").token("run1", 7)
    assert len(token.split(".")[2]) == 43  # 32 bytes, base64url
    assert signer.url(token) == f"https://api.example/v1/callbacks/{token}"
    assert len(token_hash(token)) == 64 and token not in token_hash(token)
    for bad in ("", "a.b.c", "run1.7", "run1.x." + "a" * 43, ".1." + "a" * 43):
        assert parse_token(bad) is None
    with pytest.raises(ValueError):
        CallbackSigner(b"short", "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-06-15T09:00:00Z", 1781514000.0),
        ("2026-06-15T09:00:00", 1781514000.0),
        ("2026-06-15T11:00:00+02:00", 1781514000.0),
    ],
)
def test_iso_times(text, expected):
    assert parse_time(text) == expected


# -- in process ---------------------------------------------------------------------------------
def test_in_process_a_callback_without_an_answerer_leaves_the_run_waiting():
    result = run_graph_sync(compile_graph(REVIEW), {}, sleep=None)
    assert result.status == "waiting"
    assert [(e["node"], e["status"]) for e in result.logs] == [("review", "waiting")]
    assert SEEN[0][0] is not None and SEEN[0][1].endswith(SEEN[0][0])


@pytest.mark.parametrize(
    ("answer", "expected", "state"),
    [
        (Answer("approved", {"ok": True}), ("review", "ok", "publish"), {"review": {"ok": True}}),
        (Answer("rejected", reason="no"), ("review", "caught", "revise"), {}),
        (Answer("timed_out"), ("review", "caught", "escalate"), {}),
    ],
)
def test_in_process_an_answer_routes_the_run(answer, expected, state):
    async def answerer(request):
        assert request.node == "review" and request.step == 0 and request.token
        return answer

    result = run_graph_sync(compile_graph(REVIEW), {}, sleep=None, answer=answerer)

    assert result.status == "completed"
    assert [(e["node"], e["status"]) for e in result.logs][:2] == [("review", "waiting"), expected[:2]]
    assert result.logs[1]["next"] == expected[2]
    for key, value in state.items():
        assert result.state[key] == value
    if answer.status == "rejected":
        assert result.state["rejection"]["type"] == "CallbackRejected"


def test_in_process_a_timer_sleeps_until_it_is_due():
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    clock = VirtualClock()
    graph = compile_graph(
        {
            "start": "w",
            "nodes": {"w": {"wait": {"until": "at"}, "next": "d"}, "d": {"fn": "waits_unit_done"}},
        }
    )
    result = asyncio.run(
        __import__("engine").run_graph(graph, {"at": iso_time(clock() + 90)}, sleep=sleep, now=clock)
    )
    assert result.status == "completed"
    assert slept == [pytest.approx(90, abs=0.01)]
    assert [e["status"] for e in result.logs] == ["waiting", "ok", "ok"]
    assert result.logs[1]["resumed"] == "elapsed"


# -- the service, in memory -------------------------------------------------------------------
@pytest.fixture
def service() -> RunService:
    return RunService(
        InMemoryRunStore(),
        InMemoryStepQueue(),
        clock=VirtualClock(),
        callbacks=CallbackSigner(b"unit-test-key-0123456789", "https://api.example/v1"),
    )


def waiting(service: RunService) -> tuple[str, str]:
    run_id = service.start_run(service.create_graph(REVIEW).graph_id, {}).run_id
    run_queued(service)
    assert service.get_run(run_id).status == "waiting"
    return run_id, SEEN[-1][0]


def test_the_callback_is_stored_before_the_tool_runs(service):
    stored: list[Any] = []

    @default_registry.tool("waits_unit_peek")
    async def peek(state, ctx):
        stored.append(service.store.get_wait(ctx.run_id, ctx.step))
        return None

    graph = {"start": "r", "nodes": {"r": {"fn": "waits_unit_peek", "callback": {"timeout_s": 60}}}}
    service.start_run(service.create_graph(graph).graph_id, {})
    run_queued(service, limit=1)

    assert stored[0] is not None and stored[0].status == "pending"


def test_a_view_shows_the_callback_url_and_expiry(service):
    run_id, token = waiting(service)
    view = service.waits.view(service.get_run(run_id))
    assert view == {
        "node": "review",
        "callback_url": f"https://api.example/v1/callbacks/{token}",
        "expires_at": iso_time(service.clock() + 86400),
    }


def test_answers_in_memory_win_once(service):
    run_id, token = waiting(service)
    answered = service.waits.answer(token, "approved", output=[1, 2])
    assert answered.applied and answered.wait.status == "approved"
    with pytest.raises(ConflictError) as info:
        service.waits.answer(token, "rejected")
    assert info.value.details == {"status": "approved"}
    with pytest.raises(NotFoundError):
        service.waits.answer(token[:-2] + "AA", "approved")
    run_queued(service)
    assert service.get_run(run_id).status == "completed"


def test_a_callback_node_without_a_key_fails_its_step_loudly():
    service = RunService(InMemoryRunStore(), InMemoryStepQueue())
    service.start_run(service.create_graph(REVIEW).graph_id, {})
    with pytest.raises(Exception, match="no callback key"):
        run_queued(service)


# -- a callback node's tool that fails ---------------------------------------------------------
def failing_review(service: RunService, answer: dict[str, Any] | None) -> tuple[str, list[Any]]:
    """A run of a callback node whose tool (with retries) is answered while it runs when
    ``answer`` is given, then raises; returns the run and what each answer got."""
    replies: list[Any] = []

    @default_registry.tool("waits_unit_notify_then_fail")
    async def notify_then_fail(state, ctx):
        if answer is not None and not replies:
            replies.append(service.waits.answer(ctx.callback_token, **answer))
        raise ConnectionError("mail server went away")

    graph = {
        "start": "r",
        "nodes": {
            "r": {
                "fn": "waits_unit_notify_then_fail",
                "callback": {"timeout_s": 3600, "result": "review"},
                "retry": {"max_attempts": 2, "interval_s": 1},
                "next": "d",
            },
            "d": {"fn": "waits_unit_done"},
        },
    }
    run_id = service.start_run(service.create_graph(graph).graph_id, {}).run_id
    for _ in range(3):
        run_queued(service)
        service.clock.advance(2)  # the retry's delay
    return run_id, replies


def test_an_answer_accepted_while_the_tool_runs_wins_over_the_tools_failure(service):
    run_id, replies = failing_review(service, {"status": "approved", "output": {"ok": 1}})

    assert not replies[0].applied  # accepted while the tool ran: kept, not lost
    run = service.get_run(run_id)
    assert run.status == "completed", run.error
    logs = service.store.list_logs(run_id)
    assert [(e["node"], e["status"]) for e in logs] == [("r", "waiting"), ("r", "ok"), ("d", "ok")]
    assert logs[0]["error"]["type"] == "ConnectionError" and logs[0]["waiting"]["answered"] == "approved"
    assert service.store.get_wait(run_id, 0).status == "approved"


def test_a_tool_that_fails_unanswered_withdraws_its_callback(service):
    run_id, _ = failing_review(service, None)

    assert service.get_run(run_id).status == "failed"
    first = service.waits.signer.token(run_id, 0)
    with pytest.raises(ConflictError) as info:
        service.waits.answer(first, "approved")
    assert info.value.details == {"status": "withdrawn"}
    assert [(e["node"], e["status"]) for e in service.store.list_logs(run_id)] == [
        ("r", "retry"),
        ("r", "failed"),
    ]
