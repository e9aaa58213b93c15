"""Redrive on moto: a failed run resumed at the node that failed, after each kind of
failure, exactly once, through the API and the real step, DLQ and sweeper handlers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

import pytest

from engine import default_registry
from engine.errors import ConflictError
from engine.registry import Registry
from engine.service import RunService
from functions.api.app import handler as api_handler
from functions.runtime import current_app, set_app
from functions.sweeper import app as sweeper_app
from tests.functional import fixtures
from tests.functional.pump import LambdaContext, load_event
from tests.functional.test_api import Reply, api_event, assert_error
from tests.functional.tools import VANISHING

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

#: What the test tools saw: (node, attempt, idempotency key) per call, items per index.
CALLS: list[tuple[str, int, str]] = []
ITEM_CALLS: Counter[int] = Counter()


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()
    ITEM_CALLS.clear()


@default_registry.tool("redrive_test_fragile")
async def fragile(state, ctx):
    """Fails until the state says it is fixed."""
    CALLS.append((ctx.node, ctx.attempt, ctx.idempotency_key))
    if not state.get("fixed"):
        raise ConnectionError("backend down")
    return {"done_by": ctx.node}


@default_registry.tool("redrive_test_slow")
async def slow(state, ctx):
    """Sleeps ``sleep_s`` (longer than its node's timeout until patched)."""
    CALLS.append((ctx.node, ctx.attempt, ctx.idempotency_key))
    await asyncio.sleep(state.get("sleep_s", 0))
    return {"slept": True}


@default_registry.tool("redrive_test_big")
async def big(state, ctx):
    """Returns ``blob_bytes`` of text: over the state cap until patched."""
    return {"blob": "x" * state["blob_bytes"]}


@default_registry.tool("redrive_test_item")
async def item_tool(state, ctx):
    """Fails for the items in ``bad`` until the state says it is fixed."""
    ITEM_CALLS[ctx.index] += 1
    if ctx.item in state.get("bad", []) and not state.get("fixed"):
        raise ValueError(f"bad item {ctx.item}")
    return ctx.item * 10


@default_registry.tool("redrive_test_branch_ok")
async def branch_ok(state, ctx):
    CALLS.append((ctx.node, ctx.attempt, ctx.idempotency_key))
    return {"ok_branch": True}


FRAGILE = {
    "name": "fragile",
    "start": "first",
    "nodes": {
        "first": {"fn": "redrive_test_branch_ok", "next": "call"},
        "call": {"fn": "redrive_test_fragile", "retry": {"max_attempts": 2, "interval_s": 1}, "next": "last"},
        "last": {"fn": "test_vanishing"},
    },
}
SLOW = {"start": "wait", "nodes": {"wait": {"fn": "redrive_test_slow", "timeout_s": 0.05}}}
BIG = {"start": "grow", "nodes": {"grow": {"fn": "redrive_test_big"}}}
MAP = {
    "start": "each",
    "nodes": {
        "each": {"map": {"items": "xs", "fn": "redrive_test_item", "results": "ys", "max_concurrency": 2}}
    },
}
PARALLEL = {
    "start": "both",
    "nodes": {
        "both": {"parallel": ["good", "bad"]},
        "good": {"fn": "redrive_test_branch_ok"},
        "bad": {"fn": "redrive_test_fragile"},
    },
}


# -- helpers --------------------------------------------------------------------------------
def call(method: str, path: str, **kwargs: Any) -> Reply:
    response = api_handler(api_event(method, path, **kwargs), LambdaContext.api())
    return Reply(response["statusCode"], response.get("headers", {}), response["body"])


def start(service: RunService, graph: dict[str, Any], state: dict[str, Any]) -> str:
    return service.start_run(service.create_graph(graph).graph_id, state).run_id


def redrive(run_id: str, patch: dict[str, Any] | None = None) -> Reply:
    body = None if patch is None else {"state_patch": patch}
    return call("POST", f"/graph/run/{run_id}/redrive", body=body)


def seqs(service: RunService, run_id: str) -> list[int]:
    return [entry["seq"] for entry in service.store.list_logs(run_id)]


def statuses(service: RunService, run_id: str) -> list[tuple[str, str]]:
    return [(e["node"], e["status"]) for e in service.store.list_logs(run_id)]


# -- after each kind of failure ---------------------------------------------------------------
def test_a_tool_failing_after_its_retries_is_redriven_with_a_patch_to_completion(service, pump):
    # GIVEN a run whose middle node failed after both its attempts
    run_id = start(service, FRAGILE, {})
    pump.drain()
    failed = service.get_run(run_id)
    assert failed.status == "failed" and failed.error["node"] == "call"
    assert seqs(service, run_id) == [0, 1, 2]

    # WHEN it is redriven with a patch that fixes the backend
    reply = redrive(run_id, {"fixed": True})

    # THEN it runs again from the failed node, with a fresh attempt count, to completion
    assert reply.status == 200, reply.raw
    assert reply.json["status"] == "running" and reply.json["redrive_count"] == 1
    assert reply.json["current_node"] == "call" and reply.json["state"]["fixed"] is True
    pump.drain()
    run = service.get_run(run_id)
    assert run.status == "completed" and run.error is None and run.redrive_count == 1
    assert seqs(service, run_id) == [0, 1, 2, 3, 4, 5]
    assert statuses(service, run_id) == [
        ("first", "ok"), ("call", "retry"), ("call", "failed"),
        ("call", "redriven"), ("call", "ok"), ("last", "ok"),
    ]  # fmt: skip
    entry = service.store.list_logs(run_id)[3]
    assert entry["result"] == {"fixed": True} and entry["redrive"] == 1 and entry["next"] == "call"
    # the first node did not run again; the failed one restarted at attempt 1, new keys
    assert [(node, attempt) for node, attempt, _ in CALLS] == [
        ("first", 1), ("call", 1), ("call", 2), ("call", 1)
    ]
    keys = [key for _, _, key in CALLS]
    assert len(set(keys)) == len(keys)
    view = call("GET", f"/graph/state/{run_id}").json
    assert view["redrive_count"] == 1 and view["status"] == "completed"
