"""A stand-in for Amazon Bedrock Runtime's Converse API, so LLM nodes run with no account.

moto does not implement Converse. This serves ``POST /model/{modelId}/converse`` on its
own port, as Bedrock's endpoint does (boto3 reaches it through
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``), for any model id. It answers deterministically, by
extraction: the text after the prompt's first line when that line ends with a colon
(the instruction, as in ``"Summarize:\\n{text}"``), else the whole prompt, cut to its
leading sentences — about half of it, at least one sentence (a single long sentence is
cut at a word) — and to ``maxTokens``. So a refine loop ("Shorten:\\n{summary}") shortens
its text at every call. Usage counts one token per 4 characters (system and messages in,
answer out); ``stopReason`` is ``max_tokens`` when ``maxTokens`` cut the answer, else
``end_turn``. A malformed request gets Bedrock's ``ValidationException``.
"""

from __future__ import annotations

import json
import math
import re
import socket
from typing import Any

from aiohttp import web

#: Characters per token of the stand-in's usage counts (a common rule of thumb for English).
CHARS_PER_TOKEN = 4
#: The answer's length as a share of the text it is taken from.
ANSWER_SHARE = 0.5
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def _tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def source_text(prompt: str) -> str:
    """What the stand-in answers from: the prompt after an instruction line ending in ":"."""
    first, newline, rest = prompt.partition("\n")
    return rest.strip() if newline and first.rstrip().endswith(":") and rest.strip() else prompt.strip()


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary (at least one word)."""
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(None, 1)[0] if " " in text[: limit + 1] else text[:limit]
    return cut.rstrip(" ,;:") or text[:limit]


def extract(text: str, max_chars: int | None = None) -> tuple[str, bool]:
    """The answer to ``text`` and whether ``max_chars`` cut it (see the module docstring)."""
    budget = max(1, math.floor(len(text) * ANSWER_SHARE))
    sentences = [s for s in _SENTENCE_END.split(text) if s]
    answer = ""
    for sentence in sentences:
        candidate = f"{answer} {sentence}" if answer else sentence
        if answer and len(candidate) > budget:
            break
        answer = candidate
    if len(answer) > budget:
        answer = _cut(answer, budget)
    if max_chars is not None and len(answer) > max_chars:
        return _cut(answer, max_chars), True
    return answer, False


def _texts(blocks: Any) -> list[str]:
    if not isinstance(blocks, list):
        raise ValueError("content must be a list of content blocks")
    return [
        block["text"] for block in blocks if isinstance(block, dict) and isinstance(block.get("text"), str)
    ]


def converse(body: dict[str, Any]) -> dict[str, Any]:
    """The Converse response to request ``body``; ValueError for a malformed request."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: at least one message is required")
    if not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        raise ValueError("messages: the last message must have role user")
    system = _texts(body.get("system", []))
    inputs = [
        text for message in messages if isinstance(message, dict) for text in _texts(message.get("content"))
    ]
    config = body.get("inferenceConfig") or {}
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        raise ValueError("inferenceConfig.maxTokens must be a positive integer")
    prompt = "\n".join(_texts(messages[-1].get("content")))
    answer, cut = extract(source_text(prompt), None if max_tokens is None else max_tokens * CHARS_PER_TOKEN)
    input_tokens = sum(_tokens(text) for text in [*system, *inputs])
    output_tokens = max(1, _tokens(answer))
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
        "stopReason": "max_tokens" if cut else "end_turn",
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
        "metrics": {"latencyMs": 1 + output_tokens // 10},
    }


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status, headers={"x-amzn-ErrorType": code})


async def _converse(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "ValidationException", "the request body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "ValidationException", "the request body must be a JSON object")
    try:
        return web.json_response(converse(body))
    except ValueError as exc:
        return _error(400, "ValidationException", str(exc))


async def _unknown(request: web.Request) -> web.Response:
    return _error(
        404,
        "UnknownOperationException",
        f"the local Bedrock stand-in serves Converse only, not {request.method} {request.path}",
    )


def application() -> web.Application:
    app = web.Application()
    app.router.add_post("/model/{model_id}/converse", _converse)
    app.router.add_route("*", "/{tail:.*}", _unknown)
    return app


class BedrockStandIn:
    """The stand-in on a socket bound by the caller (port 0: a free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.socket = socket.create_server((host, port))
        self.runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self.runner = web.AppRunner(application(), access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.SockSite(self.runner, self.socket).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.socket.close()
