"""State of any size on the stack: the API and step functions on moto, with the template's
state bucket. Values over the offload threshold are written to S3 when a run starts or a
step commits; ``GET /graph/state`` shows them as references and
``GET /graph/state/{run_id}/values/{key}`` resolves them (inline, streamed, or a 303 to
a presigned URL)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
import requests

from engine import default_registry
from engine.blobs import DEFAULT_OFFLOAD_BYTES, REF_FIELD, blob_key, parse_ref
from functions.api.app import handler as api_handler
from functions.api.routes import VALUE_INLINE_MAX_BYTES
from tests.reliability.api_client import call

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

#: The JSON of a string of n ASCII characters is n + 2 bytes.
EDGE = DEFAULT_OFFLOAD_BYTES - 2


@default_registry.tool("values_write")
async def values_write(state, ctx):
    """``params.key`` set to ``params.chars`` characters (``params.fill``, default "y")."""
    return {ctx.params["key"]: ctx.params.get("fill", "y") * ctx.params["chars"]}


def api(method: str, path: str, **kwargs: Any):
    return call(api_handler, method, path, **kwargs)


def start(graph: dict[str, Any], state: dict[str, Any]) -> str:
    graph_id = api("POST", "/graph/create", json_body=graph).json["graph_id"]
    reply = api("POST", "/graph/run", json_body={"graph_id": graph_id, "state": state, "background": True})
    assert reply.status == 202, reply.text
    return reply.json["run_id"]


def writer(key: str, chars: int, fill: str = "y") -> dict[str, Any]:
    return {
        "start": "w",
        "nodes": {"w": {"fn": "values_write", "params": {"key": key, "chars": chars, "fill": fill}}},
    }


def objects(aws, stack) -> dict[str, int]:
    listing = aws.client("s3").list_objects_v2(Bucket=stack["bucket"]).get("Contents", [])
    return {o["Key"]: o["Size"] for o in listing}


@pytest.mark.parametrize(("chars", "offloaded"), [(EDGE, False), (EDGE + 1, True)])
def test_a_value_is_offloaded_just_over_the_threshold_on_the_step_path(
    service, pump, aws, stack, chars, offloaded
):
    # GIVEN a run whose step writes a value of exactly the threshold, or one byte over
    run_id = start(writer("big", chars), {})

    # WHEN its step runs on the step function
    pump.drain()

    # THEN the state shows the value, or a reference to the one object written under the run
    state = api("GET", f"/graph/state/{run_id}").json["state"]
    keys = [k for k in objects(aws, stack) if k.startswith(f"runs/{run_id}/")]
    if offloaded:
        assert state["big"] == {REF_FIELD: {"sha256": keys[0].rsplit("/", 1)[1], "bytes": chars + 2}}
        assert len(keys) == 1
    else:
        assert state["big"] == "y" * chars and keys == []
    # ... and the values route answers the value itself either way
    reply = api("GET", f"/graph/state/{run_id}/values/big")
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/json"
    assert reply.json == "y" * chars


def test_a_run_starts_with_a_large_value_offloaded_and_the_inline_cap_still_counts(service, aws, stack):
    graph = writer("out", 1)
    # GIVEN a 1 MB text: it is over the threshold, so the run starts with a reference
    run_id = start(graph, {"text": "t" * 1_000_000, "n": 1})
    run = service.store.get_run(run_id)
    ref = parse_ref(run.state["text"])
    assert ref is not None and objects(aws, stack)[blob_key(run_id, ref.sha256)] == 1_000_002

    # WHEN a state's inline part is over 256 KiB (nine values just under the threshold)
    inline = {f"k{i}": "x" * EDGE for i in range(9)}
    graph_id = api("POST", "/graph/create", json_body=graph).json["graph_id"]
    reply = api("POST", "/graph/run", json_body={"graph_id": graph_id, "state": inline, "background": True})

    # THEN it is refused as before
    assert reply.status == 413 and reply.json["error"]["code"] == "state_too_large"


def test_a_state_over_the_total_cap_is_refused(service):
    service.max_total_state_bytes = 3 * DEFAULT_OFFLOAD_BYTES
    graph_id = api("POST", "/graph/create", json_body=writer("out", 1)).json["graph_id"]
    state = {f"k{i}": "x" * (EDGE + 1) for i in range(3)}  # each offloaded; together over the cap

    reply = api("POST", "/graph/run", json_body={"graph_id": graph_id, "state": state, "background": True})

    assert reply.status == 413 and reply.json["error"]["code"] == "state_too_large"


def test_the_values_route_streams_a_small_offloaded_value_and_redirects_a_large_one(
    service, pump, aws, stack
):
    # GIVEN a run with an inline value, a small offloaded one and one over the stream limit
    text = "é" * (VALUE_INLINE_MAX_BYTES // 2)  # 2 bytes each in UTF-8: over the limit
    run_id = start(writer("out", 100), {"small": "s" * 40_000, "large": text, "n": [1, {"a": None}]})
    pump.drain()
    service.blobs = type(service.blobs)(service.blobs.store)  # the API's own container: no cache

    # WHEN each is fetched
    inline = api("GET", f"/graph/state/{run_id}/values/n")
    small = api("GET", f"/graph/state/{run_id}/values/small")
    large = api("GET", f"/graph/state/{run_id}/values/large")

    # THEN the inline and small ones are answered as JSON, the large one is a 303 to a
    # presigned URL of its object, which answers the value
    assert inline.status == 200 and inline.json == [1, {"a": None}]
    assert small.status == 200 and small.json == "s" * 40_000
    # (regression: the API container kept counting its reads for a commit that never comes)
    assert set(service.blobs.take_usage(run_id).values()) == {0}
    assert large.status == 303 and large.text == ""
    location = large.headers["Location"]
    assert f"runs/{run_id}/" in location and "X-Amz-Signature=" in location
    fetched = requests.get(location, timeout=10)  # moto answers it (mock_aws patches the HTTP layer)
    assert fetched.status_code == 200 and json.loads(fetched.content) == text


def test_the_values_route_answers_404_in_the_one_error_shape(service, pump, aws, stack):
    run_id = start(writer("out", 1), {"big": "b" * 50_000, "here": 1})
    pump.drain()
    ref = parse_ref(service.store.get_run(run_id).state["big"])
    assert ref is not None

    unknown_run = api("GET", "/graph/state/nope/values/here")
    unknown_key = api("GET", f"/graph/state/{run_id}/values/absent")
    # an offloaded value whose object is gone (expired by the bucket's lifecycle)
    aws.client("s3").delete_object(Bucket=stack["bucket"], Key=blob_key(run_id, ref.sha256))
    service.blobs = type(service.blobs)(service.blobs.store)  # a fresh container: no cache
    gone = api("GET", f"/graph/state/{run_id}/values/big")

    for reply in (unknown_run, unknown_key, gone):
        assert reply.status == 404, reply.text
        assert set(reply.json) == {"error"} and reply.json["error"]["code"] == "not_found"


def test_a_key_is_percent_decoded(service, pump):
    run_id = start(writer("out", 1), {"a key/é": 1})

    reply = api("GET", f"/graph/state/{run_id}/values/{quote('a key/é', safe='')}")

    assert reply.status == 200 and reply.json == 1


def test_a_duplicate_delivery_reoffloads_to_the_same_key(service, pump, aws, stack):
    # GIVEN a step that writes a large value, delivered twice (the second a duplicate
    # from another container: its own cache)
    run_id = start(writer("big", 60_000), {})
    pump.drain()
    before = objects(aws, stack)
    run = service.store.get_run(run_id)

    # WHEN the same value is offloaded again by a fresh container
    fresh = type(service.blobs)(service.blobs.store)
    again = fresh.offload_text(run_id, json.dumps("y" * 60_000))

    # THEN it is the same reference to the same single object
    assert again == run.state["big"]
    assert objects(aws, stack) == before and len([k for k in before if run_id in k]) == 1


@default_registry.tool("values_item")
async def values_item(state, ctx):
    """A map item's result: ``ctx.item`` characters."""
    return "z" * ctx.item


def test_map_results_over_the_threshold_are_offloaded_and_joined_from_s3(service, pump, aws, stack):
    # GIVEN a map whose middle item's result is over the threshold
    graph = {"start": "m", "nodes": {"m": {"map": {"items": "sizes", "fn": "values_item", "results": "out"}}}}
    run_id = start(graph, {"sizes": [1, EDGE + 1, 2]})

    # WHEN it runs
    pump.drain()

    # THEN the item's result went to S3, and the joined list (over the threshold too)
    # holds it, read back
    assert len([k for k in objects(aws, stack) if k.startswith(f"runs/{run_id}/")]) == 2
    view = api("GET", f"/graph/state/{run_id}").json
    assert REF_FIELD in view["state"]["out"]
    # ... and the run's cost counts both PUTs and their bytes (the item's with its execution)
    s3 = view["cost"]["breakdown"]["s3"]
    assert (s3["put_requests"], s3["bytes"]) == (2, sum(objects(aws, stack).values()))
    assert api("GET", f"/graph/state/{run_id}").json["status"] == "completed"
    reply = api("GET", f"/graph/state/{run_id}/values/out")
    assert reply.status == 200 and reply.json == ["z", "z" * (EDGE + 1), "zz"]


@default_registry.tool("values_fragile")
async def values_fragile(state, ctx):
    """Fails until the state says ``ok``."""
    if not state.get("ok"):
        raise ValueError("not ok yet")
    return {"done": len(state["big"])}


def test_a_redrive_offloads_a_large_patch_and_keeps_no_count_behind(service, pump):
    run_id = start({"start": "f", "nodes": {"f": {"fn": "values_fragile"}}}, {})
    pump.drain()
    assert api("GET", f"/graph/state/{run_id}").json["status"] == "failed"

    reply = api(
        "POST", f"/graph/run/{run_id}/redrive", json_body={"state_patch": {"ok": True, "big": "b" * 50_000}}
    )
    # (regression: the API container kept counting the patch's offload for a commit that never comes)
    assert reply.status == 200 and set(service.blobs.take_usage(run_id).values()) == {0}
    pump.drain()

    view = api("GET", f"/graph/state/{run_id}").json
    assert view["status"] == "completed" and view["state"]["done"] == 50_000
    assert REF_FIELD in view["state"]["big"]
