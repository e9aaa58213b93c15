"""What a run does: routing, loops, retries, catches, timeouts, limits and the run log."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import engine
from engine import InvalidStateError, RunResult, StateTooLargeError

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def registry() -> engine.Registry:
    return engine.Registry()


def run(
    registry: engine.Registry, graph: dict[str, Any], state: dict[str, Any] | None = None, **kw
) -> RunResult:
    """Compile ``graph`` against ``registry`` and run it to the end without real sleeps."""
    kw.setdefault("sleep", None)
    return engine.run_graph_sync(engine.compile_graph(graph, registry), state or {}, **kw)


class RecordingSleep:
    """An injected ``sleep`` that records the retry delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def fail_times(registry: engine.Registry, name: str, times: int, exc: type[BaseException]):
    """Register a tool that raises ``exc`` on its first ``times`` calls, then succeeds."""
    calls: list[int] = []

    @registry.tool(name)
    def flaky(state, ctx):
        calls.append(ctx.attempt)
        if len(calls) <= times:
            raise exc(f"attempt {ctx.attempt} failed")
        return {name: "done"}

    return calls


def statuses(result: RunResult) -> list[tuple[str, str]]:
    return [(log["node"], log["status"]) for log in result.logs]


# -- routing ------------------------------------------------------------------------------


def test_linear_next_runs_nodes_in_order_and_merges_each_update(registry):
    # GIVEN three nodes chained by next, each returning part of the state
    @registry.tool
    def fetch(state, ctx):
        return {"text": "hello world", "meta": {"source": "a"}}

    @registry.tool
    async def count(state, ctx):
        return {"words": len(state["text"].split())}

    @registry.tool
    def tag(state, ctx):
        return {"meta": {"counted": True}}

    graph = {
        "start": "fetch",
        "nodes": {
            "fetch": {"fn": "fetch", "next": "count"},
            "count": {"fn": "count", "next": "tag"},
            "tag": {"fn": "tag"},
        },
    }

    # WHEN it runs on an initial state
    result = run(registry, graph, {"user": "kim"})

    # THEN every node ran once, in order, each seeing the previous updates; the merge is
    # shallow, so "meta" is replaced rather than deep-merged
    assert result.status == "completed"
    assert result.error is None
    assert [log["node"] for log in result.logs] == ["fetch", "count", "tag"]
    assert result.state == {
        "user": "kim",
        "text": "hello world",
        "words": 2,
        "meta": {"counted": True},
    }


def test_a_node_without_next_ends_the_run(registry):
    # GIVEN a node with no next and another node after it that is reachable only by branch
    registry.tool("noop")(lambda state, ctx: None)

    graph = {
        "start": "only",
        "nodes": {
            "only": {"fn": "noop", "branches": [{"when": "never", "next": "other"}]},
            "other": {"fn": "noop"},
        },
    }
    registry.condition("never")(lambda state: False)

    # WHEN it runs
    result = run(registry, graph, {"k": 1})

    # THEN the run completes after the first node, state untouched by a None result
    assert statuses(result) == [("only", "ok")]
    assert result.logs[-1]["next"] is None
    assert result.status == "completed"
    assert result.state == {"k": 1}


@pytest.fixture
def router(registry):
    @registry.tool
    def score(state, ctx):
        return {"score": state["input"]}

    for name in ("publish", "review", "rewrite"):
        registry.tool(name)(lambda state, ctx, name=name: {"went": name})
    return registry


ROUTES = {
    "start": "score",
    "nodes": {
        "score": {
            "fn": "score",
            "branches": [
                {"when": {"var": "score", "gte": 0.8}, "next": "publish"},
                {"when": {"var": "score", "gte": 0.5}, "next": "review"},
            ],
            "next": "rewrite",
        },
        "publish": {"fn": "publish"},
        "review": {"fn": "review"},
        "rewrite": {"fn": "rewrite"},
    },
}


@pytest.mark.parametrize(
    ("score", "target"),
    [
        (0.9, "publish"),  # both branches hold: the first one wins
        (0.8, "publish"),
        (0.6, "review"),
        (0.1, "rewrite"),  # none holds: the default next
    ],
)
def test_branches_are_tried_in_order_and_the_first_match_wins(router, score, target):
    # GIVEN a scoring node with two overlapping branches and a default next
    # WHEN it runs with a given score
    result = run(router, ROUTES, {"input": score})

    # THEN the run goes to the first matching branch, or next when none matches
    assert [log["node"] for log in result.logs] == ["score", target]
    assert result.logs[0]["next"] == target
    assert result.state["went"] == target


def test_no_matching_branch_and_no_next_ends_the_run(router):
    # GIVEN the scoring node without a default next
    graph = {**ROUTES, "nodes": {**ROUTES["nodes"], "score": {**ROUTES["nodes"]["score"]}}}
    del graph["nodes"]["score"]["next"]
    graph["nodes"]["rewrite"] = {"fn": "rewrite"}
    graph["nodes"]["publish"] = {"fn": "publish", "next": "rewrite"}

    # WHEN no branch matches
    result = run(router, graph, {"input": 0.1})

    # THEN the run completes at the scoring node
    assert statuses(result) == [("score", "ok")]
    assert result.status == "completed"


# -- loops --------------------------------------------------------------------------------


@pytest.fixture
def refine(registry):
    """A tool that lengthens a draft by one word per call and records its ctx."""
    seen: list[engine.ToolContext] = []

    @registry.tool
    def refine(state, ctx):
        seen.append(ctx)
        return {"words": state.get("words", 0) + 1}

    registry.tool("done")(lambda state, ctx: {"finished": True})
    return seen


def loop_graph(until: int, max_iterations: int = 10, **node: Any) -> dict[str, Any]:
    """refine (looping until ``until`` words) -> done; a "fallback" node when routed to."""
    nodes = {
        "refine": {
            "fn": "refine",
            "loop_condition": {"var": "words", "gte": until},
            "max_iterations": max_iterations,
            "next": "done",
            **node,
        },
        "done": {"fn": "done"},
    }
    if "fallback" in str(node):
        nodes["fallback"] = {"fn": "done"}
    return {"start": "refine", "nodes": nodes}


def test_loop_condition_repeats_the_node_until_it_holds(registry, refine):
    # GIVEN a node that repeats until three words are written
    # WHEN the run goes
    result = run(registry, loop_graph(until=3))

    # THEN the node ran three times (one log entry each), then moved on
    assert statuses(result) == [("refine", "ok")] * 3 + [("done", "ok")]
    assert [log["next"] for log in result.logs] == ["refine", "refine", "done", None]
    assert [ctx.iteration for ctx in refine] == [1, 2, 3]
    assert [ctx.attempt for ctx in refine] == [1, 1, 1]
    assert result.state == {"words": 3, "finished": True}


def test_a_loop_condition_that_holds_at_once_runs_the_node_once(registry, refine):
    result = run(registry, loop_graph(until=1))
    assert statuses(result) == [("refine", "ok"), ("done", "ok")]


def test_exceeding_max_iterations_fails_the_run_with_loop_limit_exceeded(registry, refine):
    # GIVEN a loop that needs 10 iterations but may run 3
    # WHEN it runs
    result = run(registry, loop_graph(until=10, max_iterations=3))

    # THEN the third run fails the run; the first two updates were kept
    assert result.status == "failed"
    assert result.error == {
        "node": "refine",
        "type": "LoopLimitExceeded",
        "message": "loop_condition still false after max_iterations=3",
    }
    assert statuses(result) == [("refine", "ok"), ("refine", "ok"), ("refine", "failed")]
    assert result.state == {"words": 2}


def test_loop_limit_exceeded_can_be_caught(registry, refine):
    # GIVEN the same loop with a catch for LoopLimitExceeded
    graph = loop_graph(
        until=10,
        max_iterations=3,
        catch=[{"on": ["LoopLimitExceeded"], "next": "fallback", "result_key": "loop_error"}],
    )

    # WHEN it runs
    result = run(registry, graph)

    # THEN the run continues at the fallback with the error (and last update) in state
    assert result.status == "completed"
    assert statuses(result) == [("refine", "ok")] * 2 + [("refine", "caught"), ("fallback", "ok")]
    assert result.state["loop_error"]["type"] == "LoopLimitExceeded"
    assert result.state["words"] == 3


def test_retry_does_not_stretch_a_loop_beyond_max_iterations(registry, refine):
    # GIVEN a looping node that also retries any error
    graph = loop_graph(until=10, max_iterations=3, retry={"max_attempts": 3, "on": ["*"]})

    # WHEN the loop runs out of iterations
    result = run(registry, graph)

    # THEN the tool ran exactly max_iterations times: an exhausted loop is not retried
    assert len(refine) == 3
    assert result.error["type"] == "LoopLimitExceeded"


def test_branches_are_evaluated_after_the_loop_condition_holds(registry, refine):
    # GIVEN a looping node with a branch that already holds during the loop
    graph = loop_graph(until=2, branches=[{"when": {"var": "words", "gte": 1}, "next": "fallback"}])

    # WHEN it runs
    result = run(registry, graph)

    # THEN the loop finishes first, then the branch routes
    assert [log["node"] for log in result.logs] == ["refine", "refine", "fallback"]


# -- catch --------------------------------------------------------------------------------


def test_catch_routes_a_failure_and_records_the_error_in_state(registry):
    # GIVEN a node that raises, with catch rules tried in order
    @registry.tool
    def parse(state, ctx):
        raise ValueError("bad input")

    seen: dict[str, Any] = {}

    @registry.tool
    def recover(state, ctx):
        seen.update(state)
        return {"recovered": True}

    graph = {
        "start": "parse",
        "nodes": {
            "parse": {
                "fn": "parse",
                "next": "recover",
                "catch": [
                    {"on": ["KeyError"], "next": "recover", "result_key": "wrong"},
                    {"on": ["ValueError"], "next": "recover", "result_key": "parse_error"},
                ],
            },
            "recover": {"fn": "recover"},
        },
    }

    # WHEN it runs
    result = run(registry, graph)

    # THEN the matching rule routes on, the error is in state under its result_key, and
    # the log says the step was caught
    error = {"node": "parse", "type": "ValueError", "message": "bad input"}
    assert result.status == "completed"
    assert seen["parse_error"] == error
    assert result.state == {"parse_error": error, "recovered": True}
    caught = result.logs[0]
    assert caught["status"] == "caught"
    assert caught["error"] == error
    assert caught["result"] == {"parse_error": error}
    assert caught["next"] == "recover"


def test_catch_stores_the_error_under_error_by_default(registry):
    registry.tool("boom")(lambda state, ctx: 1 / 0)
    registry.tool("noop")(lambda state, ctx: None)
    graph = {
        "start": "a",
        "nodes": {"a": {"fn": "boom", "catch": [{"next": "b"}]}, "b": {"fn": "noop"}},
    }
    result = run(registry, graph)
    assert result.state["error"]["type"] == "ZeroDivisionError"


def test_a_failure_no_catch_rule_matches_fails_the_run(registry):
    # GIVEN a node whose catch rules cover other errors
    @registry.tool
    def lookup(state, ctx):
        return {"value": state["missing"]}

    registry.tool("noop")(lambda state, ctx: None)
    graph = {
        "start": "lookup",
        "nodes": {
            "lookup": {"fn": "lookup", "catch": [{"on": ["ValueError"], "next": "noop"}]},
            "noop": {"fn": "noop"},
        },
    }

    # WHEN it fails with a KeyError
    result = run(registry, graph, {"kept": 1})

    # THEN the run fails with the error, and the state is what it was
    assert result.status == "failed"
    assert result.error == {"node": "lookup", "type": "KeyError", "message": "'missing'"}
    assert result.state == {"kept": 1}
    assert result.logs[-1]["status"] == "failed"
    assert result.logs[-1]["next"] is None


# -- retry --------------------------------------------------------------------------------


def test_retry_delays_grow_by_backoff_rate_up_to_max_delay(registry):
    # GIVEN a tool that fails four times, retried up to five attempts
    calls = fail_times(registry, "fetch", 4, ConnectionError)
    retry = {"max_attempts": 5, "interval_s": 1, "backoff_rate": 2, "max_delay_s": 5}
    graph = {"start": "a", "nodes": {"a": {"fn": "fetch", "retry": retry}}}
    sleep = RecordingSleep()

    # WHEN it runs with a recording sleep
    result = run(registry, graph, sleep=sleep)

    # THEN it waited 1, 2, 4 and then 5 (capped) seconds between attempts and succeeded
    assert sleep.delays == [1, 2, 4, 5]
    assert calls == [1, 2, 3, 4, 5]
    assert [log["status"] for log in result.logs] == ["retry"] * 4 + ["ok"]
    assert [log["attempt"] for log in result.logs] == [1, 2, 3, 4, 5]
    assert result.logs[0]["error"] == {
        "node": "a",
        "type": "ConnectionError",
        "message": "attempt 1 failed",
    }
    assert result.state == {"fetch": "done"}


def test_retry_delays_are_skipped_when_sleep_is_none(registry):
    fail_times(registry, "fetch", 2, ConnectionError)
    graph = {"start": "a", "nodes": {"a": {"fn": "fetch", "retry": {"interval_s": 900}}}}
    assert run(registry, graph, sleep=None).status == "completed"


def _jittered_delays(registry: engine.Registry, run_id: str) -> list[float]:
    retry = {"max_attempts": 6, "interval_s": 1, "backoff_rate": 3, "jitter": "full"}
    graph = {"start": "a", "nodes": {"a": {"fn": "always_fails", "retry": retry}}}
    sleep = RecordingSleep()
    run(registry, graph, sleep=sleep, run_id=run_id)
    return sleep.delays


def test_full_jitter_delays_are_random_within_the_delay_and_repeatable_per_run(registry):
    # GIVEN a tool that always fails, retried with full jitter
    @registry.tool
    def always_fails(state, ctx):
        raise RuntimeError("down")

    # WHEN two runs with the same id and one with another id go through the retries
    first = _jittered_delays(registry, "run-1")
    again = _jittered_delays(registry, "run-1")
    other = _jittered_delays(registry, "run-2")

    # THEN each delay lies in [0, interval * rate^(n-1)], the same run id schedules the
    # same delays (a re-executed step waits the same), and another run id differs
    nominal = [1, 3, 9, 27, 81]
    assert len(first) == 5
    assert all(0 <= d <= cap for d, cap in zip(first, nominal, strict=True))
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    ("raised", "on", "retried"),
    [
        (ValueError, ["ValueError"], True),
        (ValueError, ["Exception"], True),
        (ValueError, ["*"], True),
        (ValueError, ["KeyError", "ValueError"], True),
        (KeyError, ["LookupError"], True),
        (UnicodeDecodeError, ["ValueError"], True),
        (TimeoutError, ["OSError"], True),
        (KeyError, ["ValueError"], False),
        (ValueError, ["TimeoutError"], False),
        (ValueError, ["valueerror"], False),
        (ValueError, ["BaseException"], False),
    ],
)
def test_retry_on_matches_the_error_type_or_any_base_class(registry, raised, on, retried):
    # GIVEN a tool that fails once with ``raised``, retried only ``on`` some types
    @registry.tool
    def flaky(state, ctx):
        if ctx.attempt == 1:
            if raised is UnicodeDecodeError:
                raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad byte")
            raise raised("first attempt")
        return {"ok": True}

    graph = {"start": "a", "nodes": {"a": {"fn": "flaky", "retry": {"on": on}}}}

    # WHEN it runs
    result = run(registry, graph)

    # THEN it is retried (and succeeds) exactly when the type or a base class is listed
    assert (result.status == "completed") is retried
    assert len(result.logs) == (2 if retried else 1)
    assert result.logs[0]["status"] == ("retry" if retried else "failed")


def test_exhausted_retries_go_to_catch(registry):
    # GIVEN a tool that always fails, three attempts, and a catch-all
    calls = fail_times(registry, "fetch", 99, ConnectionError)
    registry.tool("fallback")(lambda state, ctx: {"used_fallback": True})
    graph = {
        "start": "a",
        "nodes": {
            "a": {"fn": "fetch", "retry": {"max_attempts": 3}, "catch": [{"next": "b"}]},
            "b": {"fn": "fallback"},
        },
    }

    # WHEN it runs
    result = run(registry, graph)

    # THEN after the third attempt the catch routes on with the last error
    assert calls == [1, 2, 3]
    assert statuses(result) == [("a", "retry"), ("a", "retry"), ("a", "caught"), ("b", "ok")]
    assert result.state["error"]["message"] == "attempt 3 failed"
    assert result.state["used_fallback"] is True


def test_exhausted_retries_without_catch_fail_the_run(registry):
    fail_times(registry, "fetch", 99, ConnectionError)
    graph = {"start": "a", "nodes": {"a": {"fn": "fetch", "retry": {"max_attempts": 2}}}}

    result = run(registry, graph)

    assert result.status == "failed"
    assert result.error == {"node": "a", "type": "ConnectionError", "message": "attempt 2 failed"}
    assert [log["status"] for log in result.logs] == ["retry", "failed"]


# -- timeouts -----------------------------------------------------------------------------


def test_an_async_tool_past_its_timeout_fails_with_timeout_error(registry):
    # GIVEN an async tool that would take far longer than its node's timeout
    @registry.tool
    async def slow(state, ctx):
        await asyncio.sleep(30)
        return {"never": True}

    graph = {"start": "a", "nodes": {"a": {"fn": "slow", "timeout_s": 0.05}}}

    # WHEN it runs
    result = run(registry, graph)

    # THEN the node is cut off and the run fails with a TimeoutError
    assert result.status == "failed"
    assert result.error == {"node": "a", "type": "TimeoutError", "message": "node timed out after 0.05s"}
    assert result.logs[0]["duration_ms"] < 5000


def test_a_timeout_is_retried_when_retry_on_lists_timeout_error(registry):
    # GIVEN an async tool that hangs on its first attempt only
    @registry.tool
    async def sometimes_slow(state, ctx):
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        return {"attempt": ctx.attempt}

    retry = {"max_attempts": 2, "on": ["TimeoutError"]}
    graph = {"start": "a", "nodes": {"a": {"fn": "sometimes_slow", "timeout_s": 0.05, "retry": retry}}}

    # WHEN it runs
    result = run(registry, graph)

    # THEN the timeout is retried and the second attempt succeeds
    assert [log["status"] for log in result.logs] == ["retry", "ok"]
    assert result.logs[0]["error"]["type"] == "TimeoutError"
    assert result.state == {"attempt": 2}


def test_a_sync_tool_with_a_timeout_runs_in_a_thread_and_is_cut_off(registry):
    # GIVEN a blocking tool that waits until the test lets it go
    release = threading.Event()
    threads: list[threading.Thread] = []

    @registry.tool
    def blocking(state, ctx):
        threads.append(threading.current_thread())
        release.wait(10)
        return {"late": True}

    graph = {"start": "a", "nodes": {"a": {"fn": "blocking", "timeout_s": 0.05}}}

    # WHEN it runs (the log callback releases the thread once the step has failed)
    result = run(registry, graph, on_log=lambda log: release.set())

    # THEN it ran off the main thread, and the node timed out instead of blocking the run
    assert threads and threads[0] is not threading.main_thread()
    assert result.error["type"] == "TimeoutError"
    assert "late" not in result.state


def test_a_tool_raising_its_own_timeout_error_keeps_its_message(registry):
    @registry.tool
    def upstream(state, ctx):
        raise TimeoutError("upstream took too long")

    result = run(registry, {"start": "a", "nodes": {"a": {"fn": "upstream"}}})

    assert result.error == {"node": "a", "type": "TimeoutError", "message": "upstream took too long"}


# -- tool results and ctx -----------------------------------------------------------------


def test_sync_and_async_tools_both_update_the_state(registry):
    registry.tool("sync_tool")(lambda state, ctx: {"sync": True})

    @registry.tool
    async def async_tool(state, ctx):
        await asyncio.sleep(0)
        return {"async": True}

    graph = {
        "start": "a",
        "nodes": {"a": {"fn": "sync_tool", "next": "b"}, "b": {"fn": "async_tool"}},
    }
    assert run(registry, graph).state == {"sync": True, "async": True}


@pytest.mark.parametrize(
    ("value", "kind"),
    [(["a"], "list"), ("text", "str"), (42, "int"), ({1: "x"}, "dict"), (True, "bool")],
)
def test_a_tool_returning_something_other_than_a_dict_fails_the_node(registry, value, kind):
    # GIVEN a tool returning a value that cannot be merged into the state
    registry.tool("odd")(lambda state, ctx: value)

    # WHEN it runs
    result = run(registry, {"start": "a", "nodes": {"a": {"fn": "odd"}}}, {"x": 1})

    # THEN the run fails with InvalidToolResult naming the tool and what it returned
    assert result.status == "failed"
    assert result.error == {
        "node": "a",
        "type": "InvalidToolResult",
        "message": f"tool 'odd' returned {kind}; return a dict with string keys, or None",
    }
    assert result.state == {"x": 1}


def test_ctx_describes_the_call(registry):
    # GIVEN a tool that records its ctx, on a node with params and a timeout
    seen: list[engine.ToolContext] = []

    @registry.tool
    def record(state, ctx):
        seen.append(ctx)
        if ctx.node == "second" and ctx.attempt == 1:
            raise ConnectionError("retry me")

    graph = {
        "start": "first",
        "nodes": {
            "first": {"fn": "record", "next": "second"},
            "second": {
                "fn": "record",
                "params": {"url": "https://example.com", "limit": 3},
                "timeout_s": 10,
                "retry": {"max_attempts": 2},
            },
        },
    }

    # WHEN it runs with a known run id and clock
    run(registry, graph, run_id="run-42", now=lambda: NOW)

    # THEN each ctx names the run, node, step, attempt, iteration, deadline and params
    first, second_1, second_2 = seen
    assert (first.run_id, first.node, first.step, first.attempt, first.iteration) == (
        "run-42",
        "first",
        0,
        1,
        1,
    )
    assert first.deadline is None
    assert dict(first.params) == {}
    assert first.idempotency_key == "run-42:0"
    assert (second_1.step, second_1.attempt, second_2.step, second_2.attempt) == (1, 1, 2, 2)
    assert second_1.deadline == NOW + 10
    assert dict(second_2.params) == {"url": "https://example.com", "limit": 3}
    assert second_2.idempotency_key == "run-42:2"
    assert second_2.remaining_s(now=lambda: NOW + 4) == 6


def test_ctx_params_cannot_be_changed_for_later_runs(registry):
    # GIVEN a tool that tries to change its node's params
    @registry.tool
    def greedy(state, ctx):
        seen = dict(ctx.params)
        ctx.params["limit"] = 1000
        return seen

    registry.tool("noop")(lambda state, ctx: None)
    node = {"fn": "greedy", "params": {"limit": 3}, "catch": [{"next": "b"}]}
    graph = engine.compile_graph({"start": "a", "nodes": {"a": node, "b": {"fn": "noop"}}}, registry)

    # WHEN the graph runs twice
    first = engine.run_graph_sync(graph, {}, sleep=None)
    second = engine.run_graph_sync(graph, {}, sleep=None)

    # THEN the assignment fails the node each time, and params stay as written
    assert first.state["error"]["type"] == "TypeError"
    assert second.state["error"]["type"] == "TypeError"
    assert graph.nodes["a"].params == {"limit": 3}


def test_state_is_read_only_inside_a_tool(registry):
    # GIVEN a tool that assigns into the state instead of returning an update
    @registry.tool
    def sneaky(state, ctx):
        state["hacked"] = True
        return {"never": True}

    # WHEN it runs
    result = run(registry, {"start": "a", "nodes": {"a": {"fn": "sneaky"}}}, {"x": 1})

    # THEN the assignment raises, the node fails and the state is unchanged
    assert result.status == "failed"
    assert result.error["type"] == "TypeError"
    assert result.state == {"x": 1}


def test_the_caller_s_state_dict_is_not_modified(registry):
    registry.tool("add")(lambda state, ctx: {"added": True})
    initial = {"x": 1}

    result = run(registry, {"start": "a", "nodes": {"a": {"fn": "add"}}}, initial)

    assert initial == {"x": 1}
    assert result.state == {"x": 1, "added": True}


# -- limits -------------------------------------------------------------------------------


def _endless(max_steps: int, **node: Any) -> dict[str, Any]:
    """Node "a" loops (nearly) forever; node "b" exists for catch rules to route to."""
    nodes = {"a": {"fn": "tick", "loop_condition": "never", "max_iterations": 10_000, **node}}
    if "catch" in node:
        nodes["b"] = {"fn": "tick"}
    return {"start": "a", "max_steps": max_steps, "nodes": nodes}


@pytest.fixture
def ticker(registry):
    registry.tool("tick")(lambda state, ctx: {"ticks": state.get("ticks", 0) + 1})
    registry.condition("never")(lambda state: False)
    return registry


def test_max_steps_ends_a_run_that_would_go_on_forever(ticker):
    # GIVEN a node that loops far longer than the graph's max_steps
    # WHEN it runs
    result = run(ticker, _endless(max_steps=5))

    # THEN five steps ran and the sixth failed the run with MaxStepsExceeded
    assert result.status == "failed"
    assert result.error == {
        "node": "a",
        "type": "MaxStepsExceeded",
        "message": "run reached max_steps=5",
    }
    assert result.state == {"ticks": 5}
    assert len(result.logs) == 6
    assert result.logs[-1]["status"] == "failed"


def test_max_steps_exceeded_is_not_catchable(ticker):
    # GIVEN the endless loop with a catch-all rule
    result = run(ticker, _endless(max_steps=3, catch=[{"on": ["*"], "next": "b"}]))

    # WHEN / THEN the run still fails: max_steps bounds the whole run
    assert result.status == "failed"
    assert result.error["type"] == "MaxStepsExceeded"
    assert "error" not in result.state


def test_an_initial_state_over_the_cap_is_refused(registry):
    registry.tool("noop")(lambda state, ctx: None)
    graph = engine.compile_graph({"start": "a", "nodes": {"a": {"fn": "noop"}}}, registry)

    with pytest.raises(StateTooLargeError) as excinfo:
        engine.run_graph_sync(graph, {"blob": "x" * 200}, sleep=None, max_state_bytes=100)
    assert excinfo.value.code == "state_too_large"


def test_an_initial_state_that_is_not_json_is_refused(registry):
    registry.tool("noop")(lambda state, ctx: None)
    graph = engine.compile_graph({"start": "a", "nodes": {"a": {"fn": "noop"}}}, registry)

    with pytest.raises(InvalidStateError, match="state key 'tags' is not JSON-serializable"):
        engine.run_graph_sync(graph, {"tags": {"a", "b"}}, sleep=None)


def test_an_update_over_the_state_cap_fails_the_run_without_applying_it(registry):
    # GIVEN a first node that fits and a second whose update would exceed a 1 KiB cap
    registry.tool("small")(lambda state, ctx: {"small": "ok"})
    registry.tool("huge")(lambda state, ctx: {"small": "changed", "blob": "x" * 2000})
    graph = {
        "start": "a",
        "nodes": {
            "a": {"fn": "small", "next": "b"},
            "b": {"fn": "huge", "catch": [{"next": "a"}]},
        },
    }

    # WHEN it runs
    result = run(registry, graph, max_state_bytes=1024)

    # THEN the run fails at the second node with StateTooLargeError, and the state is as
    # the first node left it
    assert result.status == "failed"
    assert result.error["node"] == "b"
    assert result.error["type"] == "StateTooLargeError"
    assert result.state == {"small": "ok"}
    assert result.logs[-1] | {"started_at": None, "duration_ms": None} == {
        "seq": 1,
        "node": "b",
        "attempt": 1,
        "status": "failed",
        "started_at": None,
        "duration_ms": None,
        "result": {},
        "next": None,
        "error": result.error,
    }


@pytest.mark.parametrize("bad", [{"a", "b"}, float("nan"), object(), b"bytes"])
def test_an_update_that_is_not_json_fails_the_run_with_invalid_state_error(registry, bad):
    # GIVEN a tool returning a value JSON cannot hold
    registry.tool("bad")(lambda state, ctx: {"good": 1, "bad": bad})

    # WHEN it runs
    result = run(registry, {"start": "a", "nodes": {"a": {"fn": "bad"}}}, {"x": 1})

    # THEN the run fails and nothing of the update is applied
    assert result.status == "failed"
    assert result.error["type"] == "InvalidStateError"
    assert "'bad'" in result.error["message"]
    assert result.state == {"x": 1}


# -- the run log --------------------------------------------------------------------------


def test_log_entries_describe_every_step(registry):
    # GIVEN a run with a retry, a catch and a normal step
    fail_times(registry, "flaky", 1, ConnectionError)
    registry.tool("boom")(lambda state, ctx: {}["missing"])
    registry.tool("finish")(lambda state, ctx: None)
    graph = {
        "start": "a",
        "nodes": {
            "a": {"fn": "flaky", "retry": {"max_attempts": 2}, "next": "b"},
            "b": {"fn": "boom", "catch": [{"next": "c"}]},
            "c": {"fn": "finish"},
        },
    }
    streamed: list[dict[str, Any]] = []

    # WHEN it runs with a fixed clock
    result = run(registry, graph, now=lambda: NOW, on_log=streamed.append)

    # THEN there is one entry per step, with contiguous seq from 0 and every field set
    assert streamed == result.logs
    assert [log["seq"] for log in result.logs] == [0, 1, 2, 3]
    for log in result.logs:
        assert set(log) == {
            "seq",
            "node",
            "attempt",
            "status",
            "started_at",
            "duration_ms",
            "result",
            "next",
            "error",
        }
        assert log["started_at"] == "2023-11-14T22:13:20.000Z"
        assert isinstance(log["duration_ms"], float)
        assert log["duration_ms"] >= 0
    summary = [
        (log["node"], log["attempt"], log["status"], log["next"], log["result"]) for log in result.logs
    ]
    key_error = {"node": "b", "type": "KeyError", "message": "'missing'"}
    assert summary == [
        ("a", 1, "retry", "a", {}),
        ("a", 2, "ok", "b", {"flaky": "done"}),
        ("b", 1, "caught", "c", {"error": key_error}),
        ("c", 1, "ok", None, {}),
    ]
    assert [log["error"] is None for log in result.logs] == [False, True, False, True]


def test_run_graph_can_be_awaited_and_generates_a_run_id(registry):
    # GIVEN an async caller
    registry.tool("noop")(lambda state, ctx: {"ran": True})
    graph = engine.compile_graph({"start": "a", "nodes": {"a": {"fn": "noop"}}}, registry)

    # WHEN it awaits run_graph without a run id
    result = asyncio.run(engine.run_graph(graph, sleep=None))

    # THEN the run has a fresh hex id and the same result shape as the sync helper
    assert len(result.run_id) == 32
    int(result.run_id, 16)
    assert result.to_dict() == {
        "run_id": result.run_id,
        "status": "completed",
        "state": {"ran": True},
        "logs": result.logs,
        "error": None,
    }


@pytest.mark.parametrize(
    ("update", "named"),
    [({"a": "x\ud800"}, "'a'"), ({"k\udfff": 1}, "'k\\udfff'"), ({"a": {"b\udc00": [1]}}, "'a'")],
)
def test_an_update_with_a_lone_surrogate_fails_the_run_naming_its_key(registry, update, named):
    # regression: text UTF-8 cannot encode raised UnicodeEncodeError out of the runner
    registry.tool("bad")(lambda state, ctx: update)

    result = run(registry, {"start": "a", "nodes": {"a": {"fn": "bad"}}}, {"x": 1})

    assert result.status == "failed" and result.state == {"x": 1}
    assert result.error["type"] == "InvalidStateError"
    assert named in result.error["message"] and "lone surrogate" in result.error["message"]
