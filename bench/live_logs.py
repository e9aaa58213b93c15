"""Live logs on the local stack: how soon a follower hears that a run ended, and how soon
a replay of a finished run starts — the WebSocket side of the local stack benchmark.

``follow_runs`` starts runs in the background and follows each over its own WebSocket
connection (``?run_id=``, as ``flowforge run --follow`` does), all at once. A run's
*done lag* is the time from its ``finished_at`` (the step handler's clock) to the
arrival of its ``done`` message at the client (the same machine's clock). ``replay_starts``
then reconnects to finished runs one at a time: the *replay start* is the time from
opening the connection to the first log entry received.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

#: How long a follower waits for its run's done message before the benchmark fails.
FOLLOW_TIMEOUT_S = 120.0


class LiveLogsError(RuntimeError):
    """A follower did not get what the WebSocket API promises."""


@dataclass(frozen=True, slots=True)
class Followed:
    """One followed run: when its done message arrived, and the run as the API reports it."""

    run_id: str
    done_at: float  # epoch seconds, the client's clock
    entries: int
    run: dict[str, Any]

    @property
    def done_lag_s(self) -> float:
        return self.done_at - datetime.fromisoformat(self.run["finished_at"]).timestamp()


async def _follow(session: aiohttp.ClientSession, ws_url: str, run_id: str) -> tuple[float, int]:
    """(arrival time of the done message, log entries received before it)."""
    entries = 0
    async with session.ws_connect(f"{ws_url}/ws?run_id={run_id}") as socket:
        async for frame in socket:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            message = json.loads(frame.data)
            if message.get("done"):
                return time.time(), entries
            if "seq" in message:
                entries += 1
    raise LiveLogsError(f"run {run_id}: the socket closed before its done message")


async def _follow_runs(url: str, ws_url: str, body: dict[str, Any], count: int) -> list[Followed]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FOLLOW_TIMEOUT_S)) as session:

        async def one() -> Followed:
            async with session.post(f"{url}/graph/run", json=body) as response:
                run_id = (await response.json())["run_id"]
            done_at, entries = await _follow(session, ws_url, run_id)
            async with session.get(f"{url}/graph/state/{run_id}?logs=false") as response:
                run = await response.json()
            return Followed(run_id, done_at, entries, run)

        return list(await asyncio.gather(*(one() for _ in range(count))))


def follow_runs(url: str, ws_url: str, graph_id: str, state: dict[str, Any], count: int) -> list[Followed]:
    """Start ``count`` background runs at once, each followed over its own connection."""
    body = {"graph_id": graph_id, "state": state, "background": True}
    followed = asyncio.run(_follow_runs(url, ws_url, body, count))
    for run in followed:
        if run.run["status"] != "completed" or run.entries != run.run["step"]:
            raise LiveLogsError(
                f"run {run.run_id}: {run.entries} entries of {run.run['step']}, status {run.run['status']}"
            )
    return followed


async def _replay_start(ws_url: str, run_id: str) -> float:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FOLLOW_TIMEOUT_S)) as session:
        began = time.perf_counter()
        async with session.ws_connect(f"{ws_url}/ws?run_id={run_id}") as socket:
            frame = await socket.receive()
            took = time.perf_counter() - began
            if frame.type != aiohttp.WSMsgType.TEXT or json.loads(frame.data).get("seq") != 0:
                raise LiveLogsError(f"run {run_id}: the replay did not start with entry 0: {frame.data!r}")
            return took


def replay_starts(ws_url: str, run_ids: list[str]) -> list[float]:
    """Seconds from opening a connection to a finished run to its first entry, one run at a time."""
    return [asyncio.run(_replay_start(ws_url, run_id)) for run_id in run_ids]
