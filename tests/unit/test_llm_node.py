"""The ``llm`` tool: params checked at graph creation, prompt templates, the Converse call,
usage in the log entry, throttling through the node's retry, the node's timeout."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber

import workflows  # noqa: F401 - registers llm, split_text, length_ok, merge_answers
from engine import GraphValidationError, compile_graph, run_graph_sync
from engine.cost import price
from workflows.llm import render, template_fields

GRAPHS = Path(__file__).resolve().parents[2] / "workflows" / "graphs"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(autouse=True)
def offline_aws(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def bedrock():
    """A Bedrock Runtime client whose answers the test queues (botocore's Stubber)."""
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def answer(text: str, inputs: int = 12, outputs: int = 5, stop: str = "end_turn") -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop,
        "usage": {"inputTokens": inputs, "outputTokens": outputs, "totalTokens": inputs + outputs},
        "metrics": {"latencyMs": 42},
    }


def one_node(params: dict | None = None, **node) -> dict:
    params = (
        {"model_id": MODEL, "prompt": "Summarize:\n{text}", "output": "summary"} if params is None else params
    )
    return {"start": "ask", "nodes": {"ask": {"fn": "llm", "params": params, **node}}}


def problems(definition: dict) -> dict[str, str]:
    with pytest.raises(GraphValidationError) as caught:
        compile_graph(definition)
    return {p.path: p.message for p in caught.value.problems}


# -- params, checked when the graph is created -----------------------------------------------
def test_missing_prompt_and_output_are_problems_at_their_paths():
    found = problems(one_node({"model_id": MODEL}))
    assert set(found) == {"nodes.ask.params.prompt", "nodes.ask.params.output"}
    assert "required" in found["nodes.ask.params.prompt"]
    assert "state key" in found["nodes.ask.params.output"]


@pytest.mark.parametrize(
    ("prompt", "says"),
    [
        ("Summarize: {text!r}", "conversions and format specs"),
        ("Summarize: {text:>10}", "conversions and format specs"),
        ("Summarize: {}", "name a state path"),
        ("Summarize: {text", "bad template"),
        ("Summarize: text}", "bad template"),
        ("Summarize: {doc..title}", "keys and list indexes joined by dots"),
        ("Summarize: {a[0]}", "keys and list indexes joined by dots"),
    ],
)
def test_an_unreadable_template_is_a_problem_at_params_prompt(prompt, says):
    found = problems(one_node({"model_id": MODEL, "prompt": prompt, "output": "summary"}))
    assert list(found) == ["nodes.ask.params.prompt"]
    assert says in found["nodes.ask.params.prompt"]


def test_every_bad_param_is_listed():
    params = {
        "model_id": "",
        "prompt": "{text}",
        "output": "s",
        "max_tokens": 0,
        "temperature": "hot",
        "top_k": 5,
    }
    found = problems(one_node(params))
    assert set(found) == {
        "nodes.ask.params.model_id",
        "nodes.ask.params.max_tokens",
        "nodes.ask.params.temperature",
        "nodes.ask.params.top_k",
    }


def test_a_mapped_llm_node_has_no_output_of_its_own():
    node = {
        "map": {"items": "chunks", "fn": "llm", "results": "answers"},
        "params": {"model_id": MODEL, "prompt": "Summarize:\n{item}", "output": "summary"},
    }
    found = problems({"start": "m", "nodes": {"m": node}})
    assert list(found) == ["nodes.m.params.output"]
    assert "results" in found["nodes.m.params.output"]


def test_the_example_graph_is_valid():
    compile_graph(json.loads((GRAPHS / "summarization_llm.json").read_text()))


# -- templates ---------------------------------------------------------------------------------
def test_a_template_reads_state_paths_and_braces():
    assert template_fields("{a} {{x}} {b.c.0}") == [("a",), ("b", "c", "0")]


def test_the_prompt_is_rendered_from_the_state(bedrock):
    client, stubber = bedrock
    state = {"text": "Lighthouses guide ships.", "doc": {"title": "Lights", "tags": ["sea", "stone"]}, "n": 3}
    expected = {
        "modelId": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": 'Title: Lights; tags ["sea", "stone"]; {n}=3\nLighthouses guide ships.'}
                ],
            }
        ],
        "system": [{"text": "Be brief about Lights."}],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.5},
    }
    stubber.add_response("converse", answer("Lights guide ships."), expected)
    params = {
        "model_id": MODEL,
        "system": "Be brief about {doc.title}.",
        "prompt": "Title: {doc.title}; tags {doc.tags}; {{n}}={n}\n{text}",
        "output": "summary",
        "max_tokens": 64,
        "temperature": 0.5,
    }

    result = run_graph_sync(compile_graph(one_node(params)), state, clients=lambda name: client, sleep=None)

    assert result.status == "completed"
    assert result.state["summary"] == "Lights guide ships."


def test_a_missing_path_fails_the_node_with_a_clear_error(bedrock):
    client, _ = bedrock  # never called
    result = run_graph_sync(
        compile_graph(one_node()), {"txt": "typo"}, clients=lambda name: client, sleep=None
    )

    assert result.status == "failed"
    assert result.error["type"] == "PromptTemplateError"
    assert "prompt refers to {text}, but the state has no 'text'" in result.error["message"]
    assert "txt" in result.error["message"]  # the keys it does have


def test_in_a_map_item_is_the_item(bedrock):
    client, stubber = bedrock
    for title in ("one", "two"):
        stubber.add_response(
            "converse",
            answer(f"about {title}"),
            {"modelId": MODEL, "messages": [{"role": "user", "content": [{"text": f"Title: {title}"}]}]},
        )
    node = {
        "map": {"items": "docs", "fn": "llm", "results": "answers", "max_concurrency": 1},
        "params": {"model_id": MODEL, "prompt": "Title: {item.title}"},
    }
    result = run_graph_sync(
        compile_graph({"start": "m", "nodes": {"m": node}}),
        {"docs": [{"title": "one"}, {"title": "two"}]},
        clients=lambda name: client,
        sleep=None,
    )
    assert result.status == "completed"
    assert result.state["answers"] == ["about one", "about two"]
    assert [e["notes"]["usage"]["outputTokens"] for e in result.logs if "index" in e] == [5, 5]
    # AND the run's cost counts every item's tokens, priced as Claude 3 Haiku
    bedrock_cost = price(result.cost)["breakdown"]["bedrock"]["models"][MODEL]
    assert (bedrock_cost["input_tokens"], bedrock_cost["output_tokens"]) == (24, 10)
    assert bedrock_cost["usd"] == pytest.approx(24 / 1000 * 0.00025 + 10 / 1000 * 0.00125)


def test_render_outside_a_map_reads_a_state_key_named_item():
    from engine import ToolContext

    ctx = ToolContext("r", "n", 0, 1, 1, None)
    assert render("{item}", {"item": "plain"}, ctx, "prompt") == "plain"


# -- the call ----------------------------------------------------------------------------------
def test_usage_and_stop_reason_are_recorded_in_the_log_entry(bedrock):
    client, stubber = bedrock
    stubber.add_response(
        "converse",
        answer("Short.", inputs=30, outputs=2, stop="max_tokens"),
        {"modelId": MODEL, "messages": ANY},
    )

    result = run_graph_sync(
        compile_graph(one_node()), {"text": "A long text."}, clients=lambda name: client, sleep=None
    )

    (entry,) = result.logs
    assert entry["notes"] == {
        "model_id": MODEL,
        "usage": {"inputTokens": 30, "outputTokens": 2, "totalTokens": 32},
        "stopReason": "max_tokens",
    }
    assert entry["result"] == {"summary": "Short."}


def test_throttling_is_retried_by_the_nodes_retry(bedrock):
    client, stubber = bedrock
    stubber.add_client_error("converse", "ThrottlingException", "Too many requests", 429)
    stubber.add_client_error("converse", "ServiceUnavailableException", "Try later", 503)
    stubber.add_response("converse", answer("Done."))
    retry = {"max_attempts": 3, "interval_s": 1, "on": ["LlmRetryableError"]}
    delays = []

    async def sleep(seconds):
        delays.append(seconds)

    result = run_graph_sync(
        compile_graph(one_node(retry=retry)), {"text": "x"}, clients=lambda name: client, sleep=sleep
    )

    assert result.status == "completed" and result.state["summary"] == "Done."
    assert [(e["status"], (e["error"] or {}).get("type")) for e in result.logs] == [
        ("retry", "LlmThrottled"),
        ("retry", "LlmThrottled"),
        ("ok", None),
    ]
    assert "Bedrock ThrottlingException" in result.logs[0]["error"]["message"]
    assert delays == [1.0, 2.0]  # the node's backoff


def test_a_refused_request_is_not_retried_as_throttling(bedrock):
    client, stubber = bedrock
    stubber.add_client_error("converse", "AccessDeniedException", "not allowed", 403)
    retry = {"max_attempts": 3, "on": ["LlmRetryableError"]}

    result = run_graph_sync(
        compile_graph(one_node(retry=retry)), {"text": "x"}, clients=lambda name: client, sleep=None
    )

    assert result.status == "failed"
    assert result.error["type"] == "LlmRequestError"
    assert len(result.logs) == 1


def test_the_node_timeout_ends_a_call_that_hangs():
    release = threading.Event()

    class Hanging:
        def converse(self, **request):
            release.wait(30)  # until the test is over
            return answer("too late")

    # WHEN the node times out, its log entry releases the call (the runner waits for its thread)
    result = run_graph_sync(
        compile_graph(one_node(timeout_s=0.2)),
        {"text": "x"},
        clients=lambda name: Hanging(),
        sleep=None,
        on_log=lambda entry: release.set(),
    )

    assert result.status == "failed"
    assert result.error["type"] == "TimeoutError"
    assert "timed out after 0.2s" in result.error["message"]


def test_without_clients_the_error_says_so():
    result = run_graph_sync(compile_graph(one_node()), {"text": "x"}, sleep=None)
    assert result.error["type"] == "LlmError"
    assert "no AWS clients" in result.error["message"]


def test_notes_that_are_too_large_or_not_json_leave_a_marker():
    registry = __import__("engine").Registry()

    @registry.tool
    async def chatty(state, ctx):
        ctx.note(**{f"k{i}": "x" * 100 for i in range(100)})

    @registry.tool
    async def odd(state, ctx):
        ctx.note(value=object())

    graph = compile_graph(
        {"start": "a", "nodes": {"a": {"fn": "chatty", "next": "b"}, "b": {"fn": "odd"}}}, registry
    )
    logs = asyncio.run(__import__("engine").run_graph(graph, {})).logs
    assert logs[0]["notes"]["_truncated"] is True and logs[0]["notes"]["bytes"] > 4096
    assert "not JSON" in logs[1]["notes"]["_invalid"]


def test_notes_with_a_lone_surrogate_leave_a_marker_and_the_run_goes_on():
    # regression: text UTF-8 cannot encode raised UnicodeEncodeError out of the step
    registry = __import__("engine").Registry()

    @registry.tool
    async def garbled(state, ctx):
        ctx.note(**{"model\udc80": "x", "reply": "\ud800"})
        return {"done": True}

    result = run_graph_sync(compile_graph({"start": "a", "nodes": {"a": {"fn": "garbled"}}}, registry), {})
    assert result.status == "completed" and result.state == {"done": True}
    assert "lone surrogate" in result.logs[0]["notes"]["_invalid"]
