"""State of any size on the local stack, through HTTP only: a 5 MB text summarized to the
end, its values fetched through ``GET /graph/state/{run_id}/values/{key}`` (a 303 to the
local S3 for the large ones), and offloaded values that survive a restart."""

from __future__ import annotations

import asyncio
import json
import random
import time

import aiohttp
import pytest

from tests.e2e.conftest import ROOT, LocalStack
from tests.e2e.test_local_stack import call, create, run

pytestmark = pytest.mark.e2e

SUMMARIZATION = json.loads((ROOT / "workflows" / "graphs" / "summarization.json").read_text())
FIVE_MB = 5_000_000


def five_megabytes_of_text() -> str:
    """Sentences of common words, 5,000,000 characters (ASCII: as many bytes)."""
    rng = random.Random(16)
    words = [
        "the",
        "ship",
        "light",
        "tower",
        "coast",
        "storm",
        "stone",
        "keeper",
        "lamp",
        "sea",
        "night",
        "harbour",
        "rock",
    ]
    sentences, size = [], 0
    while size < FIVE_MB:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(6, 18))).capitalize() + ". "
        sentences.append(sentence)
        size += len(sentence)
    return "".join(sentences)[: FIVE_MB - 1] + "."


async def wait_until_done(session, stack: LocalStack, run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, view = await call(session, "GET", f"{stack.url}/graph/state/{run_id}?logs=false")
        assert status == 200, view
        if view["done"]:
            return view
        assert time.monotonic() < deadline, f"gave up waiting; last state: {view['status']} at {view['step']}"
        await asyncio.sleep(0.5)


async def value(session, url: str) -> tuple[int, object, list[int]]:
    """The value at ``url`` (redirects followed) and the statuses on the way."""
    async with session.get(url) as response:
        return response.status, json.loads(await response.read()), [r.status for r in response.history]


def test_a_5_mb_text_is_summarized_and_its_values_fetched(stack: LocalStack):
    text = five_megabytes_of_text()

    async def scenario():
        async with aiohttp.ClientSession() as session:
            graph_id = await create(session, stack, SUMMARIZATION)
            body = {
                "graph_id": graph_id,
                "state": {"text": text, "chunk_size": 100_000, "target_length": 300},
                "background": True,
            }
            status, accepted = await call(session, "POST", f"{stack.url}/graph/run", body)
            assert status == 202, accepted
            run_id = accepted["run_id"]
            view = await wait_until_done(session, stack, run_id, timeout=240)
            values = f"{stack.url}/graph/state/{run_id}/values"
            return view, await value(session, f"{values}/summary"), await value(session, f"{values}/text")

    view, summary, fetched = run(scenario(), timeout=300)

    # THEN the run completed with a summary within its target; the state shows the text
    # as a reference, and the values route answers both (the text by a 303 to local S3)
    assert view["status"] == "completed", view["error"]
    assert view["state"]["text"] == {
        "$blob": {"sha256": view["state"]["text"]["$blob"]["sha256"], "bytes": FIVE_MB + 2}
    }
    assert summary[0] == 200 and summary[1] == view["state"]["summary"] and 0 < len(summary[1]) <= 300
    status, fetched_text, redirects = fetched
    assert status == 200 and redirects == [303] and fetched_text == text


def test_offloaded_values_survive_a_restart(own_stack: LocalStack):
    own_stack.start()
    big = "v" * 100_000
    graph = {"start": "split", "nodes": {"split": {"fn": "split_text"}}}

    async def before() -> str:
        async with aiohttp.ClientSession() as session:
            graph_id = await create(session, own_stack, graph)
            body = {"graph_id": graph_id, "state": {"text": "One. Two.", "big": big}}
            status, result = await call(session, "POST", f"{own_stack.url}/graph/run", body)
            assert status == 200 and result["status"] == "completed", result
            assert result["state"]["big"]["$blob"]["bytes"] == len(big) + 2
            return result["run_id"]

    run_id = run(before())
    own_stack.kill()  # kill -9: only what reached the disk is left
    own_stack.start()

    async def after() -> tuple[int, object, list[int]]:
        async with aiohttp.ClientSession() as session:
            return await value(session, f"{own_stack.url}/graph/state/{run_id}/values/big")

    assert run(after()) == (200, big, [])
    assert own_stack.stop() == 0
