"""Chaos and load on the local stack (``flowforge dev`` in a subprocess), over loopback HTTP
and WebSockets only.

Chaos: runs are started, each followed by a WebSocket subscriber, and the whole stack —
gateway, pollers and moto — is killed with SIGKILL and restarted at random moments while
they are in flight. Every run must end exactly as the in-process runner ends it, with
each log entry stored once, and every subscriber (reconnecting with ``after`` = the last
seq it got) must receive each entry exactly once, in order, then ``done``.

Acknowledgements: clients create graphs and start runs while the stack is killed with
SIGKILL; every graph and run the stack answered 201 or 202 for is there after the
restart, and every such run finishes.

Load: many summarization runs at once, each with its own subscriber; every run completes
and every subscriber gets every entry and ``done``. Throughput and the slowest run are
reported (tests/reliability/figures.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
import uuid
from typing import Any

import aiohttp
import pytest

import tests.e2e.slow_tools  # noqa: F401  (the stack's e2e_ tools, for the reference runs too)
from engine import compile_graph, run_graph
from tests.e2e.conftest import ROOT, LocalStack
from tests.reliability import figures
from tests.reliability.canonical import canonical_logs, log_length
from tests.reliability.test_hostile_input import HOSTILE_FRAMES, HOSTILE_HTTP

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

SUMMARIZATION = json.loads((ROOT / "workflows" / "graphs" / "summarization.json").read_text())
SUMMARIZATION_STATE = json.loads((ROOT / "workflows" / "graphs" / "summarization.state.json").read_text())
#: mark → nap 3 times (a loop) → a flaky call retried once → mark: 7 steps, ~0.3 s asleep.
CHAOS_GRAPH = {
    "name": "chaos",
    "start": "mark",
    "nodes": {
        "mark": {"fn": "e2e_mark", "next": "nap"},
        "nap": {
            "fn": "e2e_nap",
            "params": {"seconds": 0.1},
            "loop_condition": {"var": "naps", "gte": 3},
            "max_iterations": 5,
            "next": "flaky",
        },
        "flaky": {
            "fn": "rel_flaky",
            "params": {"fail_times": 1, "key": "a"},
            "retry": {"max_attempts": 3, "interval_s": 0},
            "next": "end",
        },
        "end": {"fn": "e2e_mark"},
    },
}


@pytest.fixture
def local_stack(tmp_path):
    """The e2e tests' local stack, with the reliability tests' tools loaded too."""
    tools = "workflows,tests.e2e.slow_tools,tests.reliability.tools"
    stack = LocalStack(tmp_path / "data", tmp_path / "stack.log", tools_modules=tools)
    stack.start()
    yield stack
    stack.kill()


def comparable(entries: list[dict[str, Any]]) -> list[Any]:
    return canonical_logs(entries)


async def reference(graph: dict[str, Any], states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the in-process runner makes of each state (all at once: the tools sleep)."""
    compiled = compile_graph(graph)
    results = await asyncio.gather(*(run_graph(compiled, s, sleep=None) for s in states))
    return [{"status": r.status, "state": r.state, "logs": comparable(r.logs)} for r in results]


async def request(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body) as response:
        return response.status, await response.json()


async def follow(
    session: aiohttp.ClientSession, stack: LocalStack, run_id: str, deadline: float
) -> list[dict]:
    """Every message of ``run_id`` until ``done``, reconnecting after the last seq received."""
    received: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        after = received[-1]["seq"] if received else -1
        try:
            async with session.ws_connect(f"{stack.ws_url}/?run_id={run_id}&after={after}") as socket:
                async for frame in socket:
                    if frame.type != aiohttp.WSMsgType.TEXT:
                        break
                    message = json.loads(frame.data)
                    received.append(message)
                    if message.get("done"):
                        return received
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            pass  # the stack is down (or not up yet): try again
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id}: no done before the deadline; got {[m.get('seq') for m in received]}")


def assert_followed(messages: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    """The subscriber got each entry once, in order, as the run made it, then one done."""
    *entries, done = messages
    assert [m["seq"] for m in entries] == list(range(log_length(expected["logs"])))
    assert comparable(entries) == expected["logs"]
    assert done["done"] is True and done["status"] == expected["status"]


async def stored(session: aiohttp.ClientSession, stack: LocalStack, run_id: str) -> dict[str, Any]:
    status, view = await request(session, "GET", f"{stack.url}/graph/state/{run_id}")
    assert status == 200, view
    return {"status": view["status"], "state": view["state"], "logs": comparable(view["logs"])}


# -- chaos ------------------------------------------------------------------------------
CHAOS_RUNS = figures.scaled(10, 20)
CHAOS_KILLS = figures.scaled(1, 3)  # per round
CHAOS_ROUNDS = figures.scaled(1, 3)


def test_runs_in_flight_survive_kill_9_of_the_whole_stack(local_stack):
    rng = random.Random(20_251_125)
    states = [{"a": i, "marks": []} for i in range(CHAOS_RUNS)]
    expected = asyncio.run(reference(CHAOS_GRAPH, states))
    kills = 0

    async def round_of_chaos() -> None:
        nonlocal kills
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            # GIVEN runs in flight, each followed by a subscriber
            status, created = await request(session, "POST", f"{local_stack.url}/graph/create", CHAOS_GRAPH)
            assert status == 201, created
            started = await asyncio.gather(*(
                request(session, "POST", f"{local_stack.url}/graph/run", {"graph_id": created["graph_id"], "state": s, "background": True})
                for s in states
            ))  # fmt: skip
            assert {status for status, _ in started} == {202}
            run_ids = [body["run_id"] for _, body in started]
            deadline = time.monotonic() + 60
            followers = [
                asyncio.create_task(follow(session, local_stack, run_id, deadline)) for run_id in run_ids
            ]

            # WHEN the whole stack is killed (SIGKILL) and restarted at random moments
            for _ in range(CHAOS_KILLS):
                await asyncio.sleep(rng.uniform(0.05, 1.0))
                await asyncio.to_thread(local_stack.kill)
                kills += 1
                await asyncio.to_thread(local_stack.start)
            followed = await asyncio.gather(*followers)

            # THEN every run ended as in the runner, each entry stored once, and every
            # subscriber got every entry once, in order, then done
            for run_id, messages, outcome in zip(run_ids, followed, expected, strict=True):
                assert await stored(session, local_stack, run_id) == outcome, run_id
                assert_followed(messages, outcome)

    started_at = time.monotonic()
    for _ in range(CHAOS_ROUNDS):
        asyncio.run(round_of_chaos())
    figures.record(
        "chaos",
        {
            "runs": CHAOS_RUNS * CHAOS_ROUNDS,
            "kills": kills,
            "steps": CHAOS_ROUNDS * sum(log_length(o["logs"]) for o in expected),
            "seconds": round(time.monotonic() - started_at, 1),
        },
    )


#: One node: the runs finish quickly once the stack is back.
MARK_GRAPH = {"name": "acknowledged", "start": "mark", "nodes": {"mark": {"fn": "e2e_mark"}}}
ACK_ROUNDS = figures.scaled(3, 10)
ACK_PER_ROUND = 20  # graphs and runs at most: the kill usually comes first


def test_every_acknowledged_graph_and_run_survives_kill_9(local_stack):
    """A 201 or 202 is a promise: what the stack acknowledged is there after a kill -9,
    even when the kill comes right after the answer."""
    rng = random.Random(20_260_118)
    acknowledged = {"graphs": 0, "runs": 0}

    async def writer(session: aiohttp.ClientSession, graphs: list[str], runs: list[str]) -> None:
        """Create a graph and start a run on it, again and again, until the stack dies.

        One request at a time: the local stack serves concurrent API requests from threads
        sharing one Powertools resolver, whose per-request context they can clobber (a
        concurrent create may answer 200 instead of 201)."""
        try:
            for n in range(ACK_PER_ROUND):
                graph = {**MARK_GRAPH, "name": f"acknowledged-{uuid.uuid4().hex}"}  # a new graph each time
                status, created = await request(session, "POST", f"{local_stack.url}/graph/create", graph)
                assert status == 201, created
                graphs.append(created["graph_id"])
                body = {"graph_id": created["graph_id"], "state": {"n": n}, "background": True}
                status, accepted = await request(session, "POST", f"{local_stack.url}/graph/run", body)
                assert status == 202, accepted
                runs.append(accepted["run_id"])
        except (aiohttp.ClientError, ConnectionError):
            return  # killed mid-request: that one was never acknowledged

    async def round_of_kills() -> None:
        graphs: list[str] = []
        runs: list[str] = []
        # GIVEN a client creating graphs and starting runs (which run meanwhile)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            writing = asyncio.create_task(writer(session, graphs, runs))
            # WHEN the whole stack is killed (SIGKILL) while it writes, then restarted
            while not graphs and not writing.done():
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0, 0.5))
            await asyncio.to_thread(local_stack.kill)
            await writing
        await asyncio.to_thread(local_stack.start)
        # THEN every acknowledged graph is there, and every acknowledged run finishes
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for graph_id in graphs:
                status, graph = await request(session, "GET", f"{local_stack.url}/graph/{graph_id}")
                assert status == 200, (graph_id, graph)
            deadline = time.monotonic() + 30
            for run_id in runs:
                view = await finished(session, run_id, deadline)
                assert view["status"] == "completed", view
                assert view["state"]["marks"] == ["mark"]
                assert [e["seq"] for e in view["logs"]] == [0]
        acknowledged["graphs"] += len(graphs)
        acknowledged["runs"] += len(runs)

    async def finished(session: aiohttp.ClientSession, run_id: str, deadline: float) -> dict[str, Any]:
        while True:
            status, view = await request(session, "GET", f"{local_stack.url}/graph/state/{run_id}")
            assert status == 200, (run_id, view)
            if view["done"] or time.monotonic() > deadline:
                return view
            await asyncio.sleep(0.1)

    for _ in range(ACK_ROUNDS):
        asyncio.run(round_of_kills())
    figures.record("acknowledged", {"kills": ACK_ROUNDS, **acknowledged})


# -- load -------------------------------------------------------------------------------
#: Runs started at once: 10 in ``make test``, 200 in ``make reliability``
#: (FLOWFORGE_LOAD_RUNS overrides both).
LOAD_RUNS = int(os.environ.get("FLOWFORGE_LOAD_RUNS") or figures.scaled(10, 200))


def test_concurrent_runs_each_followed_over_a_websocket(local_stack):
    (expected,) = asyncio.run(reference(SUMMARIZATION, [SUMMARIZATION_STATE]))

    async def load() -> tuple[list[float], float]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=120)
        ) as session:
            status, created = await request(session, "POST", f"{local_stack.url}/graph/create", SUMMARIZATION)
            assert status == 201, created
            deadline = time.monotonic() + figures.scaled(120, 900)

            async def one_run() -> float:
                began = time.monotonic()
                body = {"graph_id": created["graph_id"], "state": SUMMARIZATION_STATE, "background": True}
                status, accepted = await request(session, "POST", f"{local_stack.url}/graph/run", body)
                assert status == 202, accepted
                messages = await follow(session, local_stack, accepted["run_id"], deadline)
                took = time.monotonic() - began
                assert_followed(messages, expected)
                assert await stored(session, local_stack, accepted["run_id"]) == expected
                return took

            began = time.monotonic()
            latencies = await asyncio.gather(*(one_run() for _ in range(LOAD_RUNS)))
            return latencies, time.monotonic() - began

    # WHEN LOAD_RUNS runs start at once, each followed by its own WebSocket subscriber
    latencies, wall_s = asyncio.run(load())

    # THEN (asserted in one_run) each completed as in the runner and each subscriber got
    # every entry once, in order, then done
    steps = LOAD_RUNS * log_length(expected["logs"])
    figures.record(
        "load",
        {
            "runs": LOAD_RUNS,
            "steps": steps,
            "wall_s": round(wall_s, 2),
            "runs_per_s": round(LOAD_RUNS / wall_s, 1),
            "steps_per_s": round(steps / wall_s, 1),
            "median_run_s": round(statistics.median(latencies), 2),
            "slowest_run_s": round(max(latencies), 2),
        },
    )


# -- hostile input over HTTP and WebSocket --------------------------------------------------
def test_hostile_input_over_http_and_websocket_gets_clear_errors(local_stack):
    """The hand-written hostile cases (test_hostile_input.py) through the local gateway."""
    # Request lines over ~8 KB are refused by the gateway itself (API Gateway: 10 KB), as text.
    cases = [
        case
        for case in HOSTILE_HTTP
        if "<graph>" not in json.dumps(case[3].get("json_body")) and len(case[2]) < 8000
    ]

    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            for name, method, path, kwargs, status, code in cases:
                data = kwargs.get("body")
                if "json_body" in kwargs:
                    data = json.dumps(kwargs["json_body"])
                headers = {"content-type": "application/json", **kwargs.get("headers", {})}
                url = f"{local_stack.url}{path}"
                async with session.request(
                    method, url, data=data, params=kwargs.get("query"), headers=headers
                ) as response:
                    text = await response.text()
                    assert response.status == status, (name, text[:300])
                    assert json.loads(text)["error"]["code"] == code, (name, text[:300])
            frames = {name: frame for name, frame, _ in HOSTILE_FRAMES}
            async with session.ws_connect(local_stack.ws_url) as socket:
                for name, frame, code in HOSTILE_FRAMES:
                    if len(frame.encode()) > 128 * 1024:
                        continue  # below: API Gateway closes the connection (1009)
                    await socket.send_str(frame)
                    received = await socket.receive(timeout=10)
                    assert received.type == aiohttp.WSMsgType.TEXT, (name, received)
                    message = json.loads(received.data)
                    assert message["error"]["code"] == code, name
                await socket.send_bytes(b"\x00\xff")
                message = json.loads((await socket.receive(timeout=10)).data)
                assert message["error"]["code"] == "invalid_message"
            async with session.ws_connect(local_stack.ws_url) as socket:
                await socket.send_str(frames["huge-frame"])
                closed = await socket.receive(timeout=10)
                assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 1009)  # message too big

    asyncio.run(scenario())
