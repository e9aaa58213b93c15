"""State of any size: values over the offload threshold kept in a blob store (engine/blobs.py).

The service runs on the in-memory store and queue with a :class:`MemoryBlobStore`, and
the in-process runner on its own; both must offload the same values the same way.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from engine import compile_graph, default_registry, run_graph_sync
from engine.blobs import (
    DEFAULT_OFFLOAD_BYTES,
    REF_FIELD,
    Blobs,
    MemoryBlobStore,
    StateView,
    blob_key,
    parse_ref,
    ref_of,
)
from engine.errors import StateTooLargeError
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.service import RunService
from engine.state import decode_state

#: JSON of a string of n characters is n + 2 bytes (its quotes).
EDGE = DEFAULT_OFFLOAD_BYTES - 2


@default_registry.tool("blob_write")
async def blob_write(state, ctx):
    """Writes ``params.key`` as a string of ``params.chars`` characters."""
    return {ctx.params.get("key", "big"): "y" * ctx.params["chars"]}


@default_registry.tool("blob_count")
async def blob_count(state, ctx):
    """Reads only ``n`` (never ``text``)."""
    return {"n": state.get("n", 0) + 1}


@default_registry.tool("blob_measure")
async def blob_measure(state, ctx):
    """Reads ``text``."""
    return {"length": len(state["text"])}


@default_registry.tool("blob_item")
async def blob_item(state, ctx):
    """A map item's result: ``ctx.item`` characters."""
    return "z" * ctx.item


def services(store=None, blob_store=None, **options):
    """A service on the in-memory ports with its own blob cache (one container)."""
    store = store or InMemoryRunStore()
    blob_store = blob_store or MemoryBlobStore()
    queue = InMemoryStepQueue()
    return RunService(store, queue, blobs=Blobs(blob_store, cache_bytes=0), **options), blob_store


def drain(service: RunService) -> None:
    """Deliver every queued message, once, in order."""
    queue = service.queue
    while (message := queue.pop()) is not None:
        if message.item is not None:
            asyncio.run(service.process_item(message.run_id, message.step, message.item, message.attempt))
        else:
            asyncio.run(service.process_step(message.run_id, message.step))


def one_node(fn: str, **params) -> dict:
    return {"start": "a", "nodes": {"a": {"fn": fn, "params": params}}}


@pytest.mark.parametrize(
    ("chars", "offloaded"), [(EDGE - 1, False), (EDGE, False), (EDGE + 1, True)], ids=["under", "at", "over"]
)
def test_a_value_over_the_threshold_is_offloaded_and_read_back_whole(chars, offloaded):
    # GIVEN a value whose JSON is just under, at or just over the 32 KiB threshold
    service, blob_store = services()
    graph = one_node("blob_write", chars=chars)
    run_id = service.start_run(service.create_graph(graph).graph_id, {}).run_id

    # WHEN the step commits
    drain(service)

    # THEN only a value over the threshold is in the blob store, under its run and
    # digest; the state holds its reference, and reads back the same value
    run = service.get_run(run_id)
    value = "y" * chars
    data = json.dumps(value).encode()
    assert len(data) == chars + 2
    if offloaded:
        key = blob_key(run_id, ref_of(data).sha256)
        assert blob_store.objects == {key: data}
        assert parse_ref(run.state["big"]) == ref_of(data)
        assert decode_state(run.state)["big"] == {
            REF_FIELD: {"sha256": ref_of(data).sha256, "bytes": len(data)}
        }
    else:
        assert blob_store.objects == {} and json.loads(run.state["big"]) == value
    assert service.state_value(run, "big") == value
    # the log entry shows the reference, as the in-process runner's does
    entry = service.store.list_logs(run_id)[0]
    local = run_graph_sync(compile_graph(graph), {}, run_id=run_id)
    assert local.logs[0]["result"] == entry["result"]
    assert local.state["big"] == value
    if offloaded:
        assert entry["result"] == {"big": {REF_FIELD: {"sha256": ref_of(data).sha256, "bytes": len(data)}}}
    else:  # a log result over 32 KiB is summarized, as ever
        assert entry["result"]["_truncated"] is True


def test_a_duplicate_delivery_offloads_to_the_same_key():
    # GIVEN two containers (their own caches) sharing the run store and the blob store
    first, blob_store = services()
    second = RunService(first.store, InMemoryStepQueue(), blobs=Blobs(blob_store, cache_bytes=0))
    graph = one_node("blob_write", chars=100_000)
    run_id = first.start_run(first.create_graph(graph).graph_id, {}).run_id

    # WHEN both execute step 0 (a duplicate delivery): both read the run at step 0, one
    # commits, the other offloads its result and then loses the commit's condition
    at_step_0 = first.store.get_run(run_id)
    assert asyncio.run(first.process_step(run_id, 0)) == "committed"
    assert second.commit(at_step_0, 0, asyncio.run(_rerun(second, run_id)), {}, None) is None

    # THEN both wrote the same key with the same bytes: one object
    assert len(blob_store.puts) == 2 and len(set(blob_store.puts)) == 1
    assert list(blob_store.objects.values()) == [json.dumps("y" * 100_000).encode()]


async def _rerun(service: RunService, run_id: str):
    """Step 0 of ``run_id`` executed again, as a duplicate delivery would."""
    from engine.step import Cursor, run_step

    graph = service.compiled(service.get_run(run_id).graph_id)
    return await run_step(graph, Cursor("a"), {}, run_id=run_id)


def test_a_tool_that_does_not_read_an_offloaded_value_never_downloads_it():
    # GIVEN a run started with a 1 MB text (offloaded at start by the API's container)
    api, blob_store = services()
    graph = {
        "start": "count",
        "nodes": {"count": {"fn": "blob_count", "next": "measure"}, "measure": {"fn": "blob_measure"}},
    }
    run_id = api.start_run(api.create_graph(graph).graph_id, {"text": "t" * 1_000_000}).run_id
    assert len(blob_store.objects) == 1
    step_function = RunService(api.store, api.queue, blobs=Blobs(blob_store, cache_bytes=0))

    # WHEN another container runs the step that does not read text
    asyncio.run(step_function.process_step(run_id, 0))

    # THEN nothing was read from the blob store; the step that reads text reads it once
    assert blob_store.gets == []
    asyncio.run(step_function.process_step(run_id, 1))
    assert blob_store.gets == [blob_key(run_id, ref_of(json.dumps("t" * 1_000_000).encode()).sha256)]
    run = api.get_run(run_id)
    assert run.status == "completed" and decode_state(run.state)["length"] == 1_000_000


def test_the_state_cap_counts_references_and_the_total_cap_counts_values():
    # GIVEN the default caps (256 KiB inline) and a total cap of 3 MB
    service, _ = services(max_total_state_bytes=3_000_000)
    graph_id = service.create_graph(one_node("blob_count")).graph_id

    # WHEN a run starts with 2 MB of large values: it fits, each held as a reference
    run = service.start_run(graph_id, {"a": "a" * 1_000_000, "b": "b" * 1_000_000})
    assert sum(len(text) for text in run.state.values()) < 1000

    # THEN 4 MB in all is over the total cap, and 300 KB of small values over the inline cap
    with pytest.raises(StateTooLargeError, match="with its offloaded values; the limit is 3000000"):
        service.start_run(graph_id, {k: k * 1_000_000 for k in "abcd"})
    with pytest.raises(StateTooLargeError, match="serialized; the limit is 262144"):
        service.start_run(graph_id, {f"k{i}": "x" * 20_000 for i in range(15)})


def test_a_step_over_the_total_cap_fails_the_run_and_is_not_applied():
    service, _ = services(max_total_state_bytes=2_000_000)
    graph_id = service.create_graph(one_node("blob_write", chars=1_500_000)).graph_id
    run_id = service.start_run(graph_id, {"text": "t" * 1_000_000}).run_id

    drain(service)

    run = service.get_run(run_id)
    assert run.status == "failed" and run.error["type"] == "StateTooLargeError"
    assert "big" not in run.state
    local = run_graph_sync(compile_graph(one_node("blob_write", chars=1_500_000)), {"text": "t" * 1_000_000},
                           max_total_state_bytes=2_000_000)  # fmt: skip
    assert (local.status, local.error) == (run.status, run.error)


def test_large_map_results_are_offloaded_and_joined_whole():
    # GIVEN a map whose items return 10 and 200,000 characters
    graph = {
        "start": "m",
        "nodes": {
            "m": {"map": {"items": "sizes", "fn": "blob_item", "results": "out"}, "next": "measure"},
            "measure": {"fn": "blob_count", "loop_condition": {"var": "out.1", "exists": True}},
        },
    }
    service, blob_store = services()
    run_id = service.start_run(service.create_graph(graph).graph_id, {"sizes": [10, 200_000]}).run_id

    drain(service)

    # THEN the large result went to the blob store (its entry shows the reference), the
    # join read it back, and the results list, large too, is offloaded as one value
    run = service.get_run(run_id)
    assert run.status == "completed"
    assert service.state_value(run, "out") == ["z" * 10, "z" * 200_000]
    entries = service.store.list_logs(run_id)
    item = next(e for e in entries if e.get("index") == 1)
    assert REF_FIELD in item["result"]
    assert len(blob_store.objects) == 2
    local = run_graph_sync(compile_graph(graph), {"sizes": [10, 200_000]}, run_id=run_id)
    assert local.state["out"] == ["z" * 10, "z" * 200_000]
    assert _without_times(local.logs) == _without_times(entries)


def _without_times(logs):
    return [{k: v for k, v in e.items() if k not in ("started_at", "duration_ms", "run_id")} for e in logs]


def test_a_state_view_reads_each_value_once_and_merges_without_reading():
    reads = []

    def load(ref):
        reads.append(ref.sha256)
        return "value"

    from engine.blobs import BlobRef, pending

    view = StateView({"a": 1, "b": pending(BlobRef("abc", 10))}, load)
    merged = view.merged({"c": 2})
    assert reads == [] and "b" in merged and len(merged) == 3
    assert merged["b"] == "value" and merged["b"] == "value"
    assert reads == ["abc"]
    assert dict(view) == {"a": 1, "b": "value"}


def test_without_a_blob_store_every_value_stays_in_the_run():
    graph = one_node("blob_write", chars=100_000)
    local = run_graph_sync(compile_graph(graph), {}, offload=False)
    assert local.logs[0]["result"]["_truncated"] is True


def test_a_redrive_patch_over_the_threshold_is_offloaded():
    service, blob_store = services()
    graph = {"start": "a", "nodes": {"a": {"fn": "blob_measure"}}}
    run_id = service.start_run(service.create_graph(graph).graph_id, {}).run_id
    drain(service)
    assert service.get_run(run_id).status == "failed"  # no text

    service.redrive(run_id, {"text": "p" * 500_000})
    drain(service)

    run = service.get_run(run_id)
    assert run.status == "completed" and decode_state(run.state)["length"] == 500_000
    assert parse_ref(run.state["text"]) is not None and len(blob_store.objects) == 1
