"""The local stack's Bedrock Runtime stand-in: Converse's shapes, deterministic answers."""

from __future__ import annotations

import asyncio
import threading

import boto3
import pytest
from botocore.exceptions import ClientError

from flowforge.local.bedrock import BedrockStandIn, converse, extract, source_text

TEXT = (
    "Lighthouses guide ships along dangerous coasts. The first ones burned wood on towers. "
    "Fresnel lenses made their light visible for twenty miles. Automation replaced the keepers."
)


def ask(prompt: str, **config) -> dict:
    body = {"messages": [{"role": "user", "content": [{"text": prompt}]}]}
    if config:
        body["inferenceConfig"] = config
    return converse(body)


def test_the_answer_is_the_leading_half_of_the_text_after_the_instruction():
    response = ask(f"Summarize:\n{TEXT}")
    text = response["output"]["message"]["content"][0]["text"]
    assert text == "Lighthouses guide ships along dangerous coasts. The first ones burned wood on towers."
    assert response["stopReason"] == "end_turn"
    assert ask(f"Summarize:\n{TEXT}") == response  # deterministic


def test_usage_counts_four_characters_a_token():
    usage = ask(f"Summarize:\n{TEXT}")["usage"]
    assert usage["inputTokens"] == -(-len(f"Summarize:\n{TEXT}") // 4)
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]


def test_max_tokens_cuts_the_answer_and_says_so():
    response = ask(f"Summarize:\n{TEXT}", maxTokens=3)
    text = response["output"]["message"]["content"][0]["text"]
    assert len(text) <= 12 and TEXT.startswith(text)
    assert response["stopReason"] == "max_tokens"


def test_each_answer_is_shorter_so_a_refine_loop_ends():
    text, lengths = TEXT, []
    for _ in range(6):
        text, _ = extract(source_text(f"Shorten:\n{text}"))
        lengths.append(len(text))
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] < 20


def test_a_prompt_without_an_instruction_line_is_answered_whole():
    assert source_text("Just this.") == "Just this."
    assert source_text("No colon here\nsecond line") == "No colon here\nsecond line"


@pytest.fixture(scope="module")
def endpoint():
    loop = asyncio.new_event_loop()
    standin = BedrockStandIn()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(standin.start(), loop).result(10)
    yield standin.endpoint
    asyncio.run_coroutine_threadsafe(standin.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def client(endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=endpoint)


def test_boto3_calls_it_as_bedrock(client):
    response = client.converse(
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        system=[{"text": "Be brief."}],
        messages=[{"role": "user", "content": [{"text": f"Summarize:\n{TEXT}"}]}],
        inferenceConfig={"maxTokens": 100, "temperature": 0.2},
    )
    assert response["output"]["message"]["role"] == "assistant"
    assert response["output"]["message"]["content"][0]["text"].startswith("Lighthouses guide ships")
    assert response["stopReason"] == "end_turn"
    assert set(response["usage"]) == {"inputTokens", "outputTokens", "totalTokens"}


def test_a_malformed_request_is_a_validation_exception(client):
    with pytest.raises(ClientError) as caught:
        client.converse(modelId="m", messages=[{"role": "assistant", "content": [{"text": "hi"}]}])
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "role user" in caught.value.response["Error"]["Message"]
