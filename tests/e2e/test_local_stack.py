"""The local stack end to end, through real HTTP and WebSocket clients only."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.e2e.conftest import ROOT, LocalStack

pytestmark = pytest.mark.e2e

SUMMARIZATION = json.loads((ROOT / "workflows" / "graphs" / "summarization.json").read_text())
SUMMARIZATION_STATE = json.loads((ROOT / "workflows" / "graphs" / "summarization.state.json").read_text())


def napping(seconds: float) -> dict:
    """mark → nap(seconds) → mark: a run that spends its time in one slow step."""
    return {
        "name": "napping",
        "start": "before",
        "nodes": {
            "before": {"fn": "e2e_mark", "next": "nap"},
            "nap": {"fn": "e2e_nap", "params": {"seconds": seconds}, "next": "after"},
            "after": {"fn": "e2e_mark"},
        },
    }


def run(coroutine, timeout: float = 25):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def call(session: aiohttp.ClientSession, method: str, url: str, body=None) -> tuple[int, dict]:
    async with session.request(method, url, json=body) as response:
        return response.status, await response.json()


async def create(session, stack: LocalStack, graph: dict) -> str:
    status, body = await call(session, "POST", f"{stack.url}/graph/create", graph)
    assert status == 201, body
    return body["graph_id"]


async def messages_until_done(socket: aiohttp.ClientWebSocketResponse) -> list[dict]:
    received = []
    async for frame in socket:
        message = json.loads(frame.data)
        received.append(message)
        if message.get("done"):
            break
    return received


async def wait_for(session, stack: LocalStack, run_id: str, predicate, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, view = await call(session, "GET", f"{stack.url}/graph/state/{run_id}")
        assert status == 200, view
        if predicate(view):
            return view
        assert time.monotonic() < deadline, f"gave up waiting; last state: {view}"
        await asyncio.sleep(0.1)


def test_create_then_a_foreground_run_answers_with_the_final_state_and_logs(stack):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            graph_id = await create(session, stack, SUMMARIZATION)
            status, graphs = await call(session, "GET", f"{stack.url}/graphs")
            assert graph_id in [g["graph_id"] for g in graphs["graphs"]]
            status, result = await call(
                session,
                "POST",
                f"{stack.url}/graph/run",
                {"graph_id": graph_id, "state": SUMMARIZATION_STATE},
            )
        assert status == 200, result
        assert result["status"] == "completed" and result["done"] is True
        assert len(result["state"]["summary"]) <= SUMMARIZATION_STATE["target_length"]
        assert [entry["seq"] for entry in result["logs"]] == list(range(len(result["logs"])))
        steps = [entry["node"] for entry in result["logs"] if "index" not in entry]  # not the map's items
        assert steps[:3] == ["split", "summarize", "merge"]

    run(scenario())


def test_a_background_run_streams_its_log_live_then_done(stack):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            graph_id = await create(session, stack, napping(0.5))
            status, accepted = await call(
                session, "POST", f"{stack.url}/graph/run", {"graph_id": graph_id, "background": True}
            )
            assert status == 202 and accepted["status"] == "running"
            run_id = accepted["run_id"]
            # the seed's path: connecting subscribes, the log is replayed then streamed
            async with session.ws_connect(f"{stack.ws_url}/ws/logs/{run_id}") as socket:
                received = await messages_until_done(socket)
            status, view = await call(session, "GET", f"{stack.url}/graph/state/{run_id}")
        entries = [m for m in received if not m.get("done")]
        assert [(m["seq"], m["node"]) for m in entries] == [(0, "before"), (1, "nap"), (2, "after")]
        done = received[-1]
        # the done message carries the run's cost estimate, as GET /graph/state has it
        assert done.pop("cost") == view["cost"] and view["cost"]["usd"] > 0
        assert done == {"run_id": run_id, "done": True, "status": "completed"}
        assert view["status"] == "completed" and view["state"]["marks"] == ["before", "after"]

    run(scenario())


def test_a_subscribe_frame_resumes_after_the_last_seq_seen(stack):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            graph_id = await create(session, stack, napping(0.1))
            _, finished = await call(session, "POST", f"{stack.url}/graph/run", {"graph_id": graph_id})
            async with session.ws_connect(stack.ws_url) as socket:
                await socket.send_json({"action": "subscribe", "run_id": finished["run_id"], "after": 0})
                received = await messages_until_done(socket)
                await socket.send_json({"action": "subscribe", "run_id": "no-such-run"})
                refused = json.loads((await socket.receive(timeout=10)).data)
        assert [m.get("seq") for m in received] == [1, 2, None]
        assert refused["error"]["code"] == "not_found"

    run(scenario())


def test_cancelling_a_running_run(stack):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            graph_id = await create(session, stack, napping(3))
            _, accepted = await call(
                session, "POST", f"{stack.url}/graph/run", {"graph_id": graph_id, "background": True}
            )
            run_id = accepted["run_id"]
            async with session.ws_connect(f"{stack.ws_url}/ws?run_id={run_id}") as socket:
                await wait_for(session, stack, run_id, lambda v: v["current_node"] == "nap")
                status, cancelled = await call(session, "POST", f"{stack.url}/graph/run/{run_id}/cancel")
                assert status == 200 and cancelled["status"] == "cancelled"
                received = await messages_until_done(socket)
            status, again = await call(session, "POST", f"{stack.url}/graph/run/{run_id}/cancel")
            assert status == 409 and again["error"]["code"] == "conflict"
            # the nap finishes, but its commit loses to the cancellation
            await asyncio.sleep(3.5)
            _, view = await call(session, "GET", f"{stack.url}/graph/state/{run_id}")
        assert received[-1]["done"] is True and received[-1]["status"] == "cancelled"
        assert view["status"] == "cancelled" and [e["node"] for e in view["logs"]] == ["before"]

    run(scenario())


def test_bad_requests_are_answered_with_4xx_and_say_what_is_wrong(stack):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            headers = {"Content-Type": "application/json"}
            async with session.post(
                f"{stack.url}/graph/create", data=b"{not json", headers=headers
            ) as response:
                assert response.status == 400
                assert (await response.json())["error"]["code"] == "invalid_json"
            bad_graph = {"start": "a", "nodes": {"a": {"fn": "no_such_tool", "next": "nowhere"}}}
            status, body = await call(session, "POST", f"{stack.url}/graph/create", bad_graph)
            assert status == 400 and body["error"]["code"] == "invalid_graph"
            assert {p["path"] for p in body["error"]["details"]} >= {"nodes.a.fn", "nodes.a.next"}
            status, body = await call(session, "POST", f"{stack.url}/graph/run", {"graph_id": "nope"})
            assert status == 404 and body["error"]["code"] == "not_found"
            status, body = await call(
                session, "POST", f"{stack.url}/graph/run", {"graph_id": "x", "background": "yes"}
            )
            assert status == 400
            status, body = await call(session, "GET", f"{stack.url}/graph/state/nope")
            assert status == 404
            status, body = await call(session, "GET", f"{stack.url}/no/such/route")
            assert status == 404 and body["error"]["code"] == "not_found"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{stack.ws_url}/ws/logs/no-such-run")
            assert refused.value.status == 404

    run(scenario())


def test_a_request_line_over_the_http_apis_quota_is_414_in_json_and_one_under_it_reaches_the_api(stack):
    # Requests whose line is over aiohttp's own 8,190 bytes got its plain-text 400; the HTTP
    # API's quota is 10,240 bytes of request line and header values.
    async def scenario():
        async with aiohttp.ClientSession() as session:
            under = "é" * 1_500  # 9,000 bytes percent-encoded
            async with session.get(f"{stack.url}/runs", params={"next_token": under}) as response:
                assert response.status == 400, await response.text()
                assert (await response.json())["error"]["code"] == "invalid_request"
            over = "é" * 2_000  # 12,000 bytes
            async with session.get(f"{stack.url}/runs", params={"next_token": over}) as response:
                assert (response.status, response.content_type) == (414, "application/json")
                assert await response.json() == {"message": "Request-URI Too Long"}

    run(scenario())


def test_the_cli_creates_runs_and_follows_against_the_stack(stack):
    env = {**os.environ, "FLOWFORGE_ENDPOINT": stack.url}
    flowforge = [sys.executable, "-m", "flowforge.cli"]
    graph_file = ROOT / "workflows" / "graphs" / "summarization.json"
    created = subprocess.run(
        [*flowforge, "graph", "create", str(graph_file)], env=env, capture_output=True, text=True, timeout=30
    )
    assert created.returncode == 0, created.stderr
    graph_id = created.stdout.strip()
    state = json.dumps(SUMMARIZATION_STATE)
    followed = subprocess.run(
        [*flowforge, "run", graph_id, "--state", state, "--follow", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert followed.returncode == 0, followed.stderr
    lines = [json.loads(line) for line in followed.stdout.splitlines()]
    assert lines[-1]["done"] is True and lines[-1]["status"] == "completed"
    assert [line["seq"] for line in lines[:-1]] == list(range(len(lines) - 1))
    missing = subprocess.run(
        [*flowforge, "state", "nope"], env=env, capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 2 and "404 not_found" in missing.stderr


def test_the_cli_shows_the_outcome_and_what_changed_and_says_what_went_wrong(stack):
    env = {**os.environ, "FLOWFORGE_ENDPOINT": stack.url}

    def flowforge(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "flowforge.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    graph_file = ROOT / "workflows" / "graphs" / "summarization.json"
    graph_id = flowforge("graph", "create", str(graph_file)).stdout.strip()
    # WHEN the seed's graph runs on a state of just {"text": ...}
    ran = flowforge("run", graph_id, "--state", json.dumps({"text": SUMMARIZATION_STATE["text"]}))

    # THEN the answer is the outcome and the keys the run changed, not the input text
    assert ran.returncode == 0, ran.stderr
    first, *changed = ran.stdout.splitlines()
    assert first.startswith("completed (") and "[run " in first
    run_id = first.rsplit("[run ", 1)[1].rstrip("]")
    assert any(line.startswith("  summary = ") for line in changed)
    assert SUMMARIZATION_STATE["text"][:60] not in ran.stdout
    assert changed[-2].endswith("--full prints the whole run)")
    assert changed[-1].startswith("  cost ≈ $") and ", an estimate (" in changed[-1]
    full = flowforge("state", run_id, "--full")
    assert json.loads(full.stdout)["state"]["text"] == SUMMARIZATION_STATE["text"]

    # WHEN the finished run is cancelled, or an unknown run is followed
    cancelled = flowforge("cancel", run_id)
    unknown = flowforge("logs", "nope", "--follow")

    # THEN the exit codes say so: 3 for a run that already finished, 2 for an unknown one
    assert cancelled.returncode == 3 and "409 conflict" in cancelled.stderr
    assert unknown.returncode == 2 and "run 'nope' not found" in unknown.stderr


@pytest.mark.parametrize(
    ("option", "what"), [("--port", "the API gateway"), ("--moto-port", "moto (local AWS)")]
)
def test_a_taken_port_is_one_clear_line_naming_its_option_and_exit_2(stack, tmp_path, option, what):
    # GIVEN a running stack: its gateway port, or its moto port, is taken
    port = stack.port if option == "--port" else stack.moto_port
    other = "--moto-port" if option == "--port" else "--port"
    command = [
        sys.executable,
        "-m",
        "flowforge.local",
        option,
        str(port),
        other,
        "0",
        "--data-dir",
        str(tmp_path),
    ]

    # WHEN another stack starts on it
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)

    # THEN one line names the port, what it is for, and the option that moves it
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"flowforge dev: 127.0.0.1:{port} ({what}) is already in use (another `make run`?); "
        f"choose another with {option}: bin/flowforge dev {option} <port>"
    ]


def test_a_run_in_flight_survives_kill_9_and_finishes_after_restart(own_stack: LocalStack):
    own_stack.start()

    async def before_the_crash() -> tuple[str, str]:
        async with aiohttp.ClientSession() as session:
            graph_id = await create(session, own_stack, napping(3))
            _, accepted = await call(
                session, "POST", f"{own_stack.url}/graph/run", {"graph_id": graph_id, "background": True}
            )
            await wait_for(session, own_stack, accepted["run_id"], lambda v: v["current_node"] == "nap")
            await asyncio.sleep(1.0)  # into the nap (the step before it was on disk when stored)
            return graph_id, accepted["run_id"]

    graph_id, run_id = run(before_the_crash())
    own_stack.kill()  # kill -9 while the slow tool runs
    own_stack.start()

    async def after_the_restart() -> dict:
        async with aiohttp.ClientSession() as session:
            _, graphs = await call(session, "GET", f"{own_stack.url}/graphs")
            assert graph_id in [g["graph_id"] for g in graphs["graphs"]]
            return await wait_for(session, own_stack, run_id, lambda v: v["done"], timeout=15)

    view = run(after_the_restart())
    assert view["status"] == "completed"
    assert [(e["seq"], e["node"]) for e in view["logs"]] == [(0, "before"), (1, "nap"), (2, "after")]
    assert view["state"]["marks"] == ["before", "after"]
    # and a clean stop (Ctrl-C) exits 0
    assert own_stack.stop() == 0
    assert "1 run resumed" in own_stack.log()


def test_runs_lists_map_executions_and_waiting_runs_survive_a_restart(own_stack: LocalStack):
    own_stack.start()
    approval = json.loads((ROOT / "workflows" / "graphs" / "approval.json").read_text())

    async def before_the_crash() -> tuple[dict, dict]:
        async with aiohttp.ClientSession() as session:
            # a finished summarization run (its map's fan-out and executions) and a run
            # waiting at its review node (its wait)
            graph_id = await create(session, own_stack, SUMMARIZATION)
            body = {"graph_id": graph_id, "state": SUMMARIZATION_STATE}
            _, done = await call(session, "POST", f"{own_stack.url}/graph/run", body)
            assert done["status"] == "completed", done
            graph_id = await create(session, own_stack, approval)
            body = {"graph_id": graph_id, "state": {"topic": "tides"}}
            _, waiting = await call(session, "POST", f"{own_stack.url}/graph/run", body)
            assert waiting["status"] == "waiting", waiting
            return done, waiting

    done, waiting = run(before_the_crash())
    own_stack.kill()
    own_stack.start()

    async def after_the_restart() -> dict:
        async with aiohttp.ClientSession() as session:
            # the runs are still listed
            _, listed = await call(session, "GET", f"{own_stack.url}/runs")
            assert {done["run_id"], waiting["run_id"]} <= {r["run_id"] for r in listed["runs"]}
            # the finished run reads as it did, every map execution in its log
            _, again = await call(session, "GET", f"{own_stack.url}/graph/state/{done['run_id']}")
            assert (again["status"], again["state"], again["logs"]) == (
                done["status"],
                done["state"],
                done["logs"],
            )
            # and the waiting run takes its answer and completes
            answer = {"status": "approved", "output": {"by": "ann"}}
            status, _ = await call(session, "POST", waiting["waiting"]["callback_url"], answer)
            assert status == 200
            return await wait_for(session, own_stack, waiting["run_id"], lambda v: v["done"], timeout=15)

    finished = run(after_the_restart())
    assert finished["status"] == "completed" and finished["state"]["review"] == {"by": "ann"}


def test_quick_run_script_prints_the_final_state_and_logs(stack):
    script = ROOT / "tests" / "quick_run.sh"
    result = subprocess.run(
        ["bash", str(script)],
        env={**os.environ, "FLOWFORGE_ENDPOINT": stack.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"status": "completed"' in result.stdout
    assert '"node": "refine"' in result.stdout
