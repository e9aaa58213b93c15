"""The ``llm`` tool: one call to a model through Amazon Bedrock Runtime's Converse API.

A node's ``params`` say what to ask::

    {"fn": "llm", "params": {
        "model_id": "anthropic.claude-3-haiku-20240307-v1:0",
        "system": "You summarize technical text.",       # optional
        "prompt": "Summarize:\\n{text}",                   # a template over state paths
        "output": "summary",                              # the state key of the answer
        "max_tokens": 512, "temperature": 0.2}}           # optional

``prompt`` and ``system`` are templates: ``{text}`` is the state's ``text``, ``{doc.title}``
and ``{chunks.0}`` follow dicts and lists, ``{item}`` (and ``{item.title}``) is the item of a
``map``, ``{{`` and ``}}`` are literal braces. A string is inserted as is, anything else as
JSON. A path the state lacks fails the call with :class:`PromptTemplateError`; a template
that cannot be read is a problem at its path when the graph is created.

In a map the tool runs once per item and its answer is the item's result (the map's
``results`` list), so a mapped node has no ``output``. Each call notes ``model_id``,
``usage`` (``inputTokens``, ``outputTokens``, ``totalTokens``) and ``stopReason`` in its
log entry. Errors are typed for the node's ``retry`` and ``catch``: :class:`LlmThrottled`
(throttling, service unavailable, model not ready) and :class:`LlmServerError` (internal
error, model timeout) are both :class:`LlmRetryableError`; :class:`LlmRequestError` is a
request Bedrock refused (validation, access denied, unknown model). The node's
``timeout_s`` bounds the call. The client comes from ``ctx.clients("bedrock-runtime")``;
it makes one attempt per call, so retries are the node's, visible in the log.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import string
from collections.abc import Mapping
from typing import Any

from engine import FlowForgeError, Problem, ToolContext, tool
from engine.conditions import _MISSING, resolve

#: Bedrock's own error codes, by how a node should treat them.
THROTTLING_CODES = frozenset({"ThrottlingException", "ServiceUnavailableException", "ModelNotReadyException"})
SERVER_CODES = frozenset({"InternalServerException", "ModelTimeoutException"})
PARAMS = ("model_id", "system", "prompt", "output", "max_tokens", "temperature")
MAX_TOKENS_RANGE = (1, 200_000)
TEMPERATURE_RANGE = (0.0, 2.0)
MAX_TEMPLATE_CHARS = 100_000
_SEGMENT = re.compile(r"[^\s{}.!:\[\]]+")
_FORMATTER = string.Formatter()


class LlmError(FlowForgeError):
    """A model call failed (base of the ``llm`` tool's errors)."""

    code = "llm_error"


class LlmRetryableError(LlmError):
    """A failure that a later attempt may not meet: retry it with the node's ``retry``."""

    code = "llm_retryable"


class LlmThrottled(LlmRetryableError):
    """Bedrock throttled the call or could not take it now (ThrottlingException,
    ServiceUnavailableException, ModelNotReadyException)."""

    code = "llm_throttled"


class LlmServerError(LlmRetryableError):
    """Bedrock or the model failed on its side (InternalServerException, ModelTimeoutException)."""

    code = "llm_server_error"


class LlmRequestError(LlmError):
    """Bedrock refused the request (validation, access denied, unknown model, ...): the
    same request fails again."""

    code = "llm_request_error"


class PromptTemplateError(LlmError):
    """A prompt or system template names a state path the state does not have, or its
    params are unusable."""

    code = "prompt_template_error"


# -- templates -----------------------------------------------------------------------------
def template_fields(template: str) -> list[tuple[str, ...]]:
    """The state paths ``template`` refers to, in order; ValueError says what is wrong."""
    paths = []
    for _, field, spec, conversion in _FORMATTER.parse(template):
        if field is None:
            continue
        shown = "{" + field + "}"
        if conversion is not None or spec:
            raise ValueError(f"{shown}: conversions and format specs (!r, :>10) are not supported")
        if not field:
            raise ValueError("{}: name a state path, e.g. {text}")
        parts = tuple(field.split("."))
        if not all(_SEGMENT.fullmatch(part) for part in parts):
            raise ValueError(f"{shown}: a path is keys and list indexes joined by dots, e.g. {{doc.title}}")
        paths.append(parts)
    return paths


def render(template: str, state: Mapping[str, Any], ctx: ToolContext, param: str) -> str:
    """``template`` with each ``{path}`` replaced by its value (``{item…}`` in a map: the item)."""
    out = []
    for literal, field, _, _ in _FORMATTER.parse(template):
        out.append(literal)
        if field is None:
            continue
        parts = field.split(".")
        if ctx.index is not None and parts[0] == "item":
            value = resolve(ctx.item, tuple(parts[1:]))
            where = "the map's item"
        else:
            value = resolve(dict(state), tuple(parts))
            where = "the state"
        if value is _MISSING:
            raise PromptTemplateError(
                f"{param} refers to {{{field}}}, but {where} has no {'.'.join(parts)!r}"
                + (f" (keys: {', '.join(sorted(map(str, state))[:20])})" if where == "the state" else "")
            )
        out.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return "".join(out)


# -- params ----------------------------------------------------------------------------------
def check_params(params: Mapping[str, Any], mapped: bool) -> list[Problem]:
    """The problems with an ``llm`` node's params (see the module docstring)."""
    problems = [
        Problem(name, f"unknown param; the llm tool takes {', '.join(PARAMS)}")
        for name in params
        if name not in PARAMS
    ]
    model_id = params.get("model_id")
    if not isinstance(model_id, str) or not model_id.strip():
        problems.append(
            Problem(
                "model_id",
                "required: the Bedrock model or inference profile id, e.g. anthropic.claude-3-haiku-20240307-v1:0",
            )
        )
    for name, required in (("prompt", True), ("system", False)):
        value = params.get(name)
        if value is None:
            if required:
                problems.append(
                    Problem(name, 'required: a template over state paths, e.g. "Summarize:\\n{text}"')
                )
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(name, "must be a non-empty string (a template over state paths)"))
        elif len(value) > MAX_TEMPLATE_CHARS:
            problems.append(Problem(name, f"{len(value)} characters; the limit is {MAX_TEMPLATE_CHARS}"))
        else:
            try:
                template_fields(value)
            except ValueError as exc:
                problems.append(Problem(name, f"bad template: {exc}"))
    output = params.get("output")
    if mapped and output is not None:
        problems.append(Problem("output", "a map node's answers go to the map's results list: drop output"))
    elif not mapped and (not isinstance(output, str) or not output):
        problems.append(Problem("output", "required: the state key the answer text is written to"))
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and (
        type(max_tokens) is not int or not MAX_TOKENS_RANGE[0] <= max_tokens <= MAX_TOKENS_RANGE[1]
    ):
        problems.append(
            Problem("max_tokens", f"must be an integer from {MAX_TOKENS_RANGE[0]} to {MAX_TOKENS_RANGE[1]}")
        )
    temperature = params.get("temperature")
    if temperature is not None and (
        type(temperature) not in (int, float)
        or not math.isfinite(temperature)
        or not TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1]
    ):
        problems.append(
            Problem(
                "temperature", f"must be a number from {TEMPERATURE_RANGE[0]:g} to {TEMPERATURE_RANGE[1]:g}"
            )
        )
    return problems


def converse_request(params: Mapping[str, Any], state: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The Converse request for one call (keyword arguments of ``client.converse``)."""
    request: dict[str, Any] = {
        "modelId": params["model_id"],
        "messages": [{"role": "user", "content": [{"text": render(params["prompt"], state, ctx, "prompt")}]}],
    }
    if params.get("system") is not None:
        request["system"] = [{"text": render(params["system"], state, ctx, "system")}]
    inference = {
        key: params[name]
        for name, key in (("max_tokens", "maxTokens"), ("temperature", "temperature"))
        if params.get(name) is not None
    }
    if inference:
        request["inferenceConfig"] = inference
    return request


def _error_for(exc: Exception, model_id: str) -> Exception:
    """Bedrock's error as the tool's own type (others are returned unchanged)."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    if not code:
        return exc
    message = f"Bedrock {code} for model {model_id!r}: {response.get('Error', {}).get('Message', '')}".rstrip(
        ": "
    )
    if code in THROTTLING_CODES:
        return LlmThrottled(message)
    if code in SERVER_CODES:
        return LlmServerError(message)
    return LlmRequestError(message)


def answer_text(response: Mapping[str, Any]) -> str:
    """The text blocks of a Converse response's message, joined."""
    content = response.get("output", {}).get("message", {}).get("content", [])
    return "".join(block["text"] for block in content if isinstance(block, dict) and "text" in block)


@tool("llm", params=check_params)
async def llm(state: Mapping[str, Any], ctx: ToolContext) -> Any:
    """Ask a model on Amazon Bedrock (Converse API): params model_id, prompt (a template
    over state paths: "Summarize:\\n{text}"; {item} in a map), output (the state key of the
    answer; none in a map, whose results get the answers), system, max_tokens, temperature.
    Notes usage and stopReason in the log entry; raises LlmThrottled (retryable) when
    throttled."""
    params = ctx.params
    problems = check_params(params, ctx.index is not None)
    if problems:  # a stored graph is not validated again: say what is wrong at run time too
        raise PromptTemplateError("; ".join(f"params.{p}" for p in problems))
    if ctx.clients is None:
        raise LlmError(
            "no AWS clients to call Bedrock with: run the graph with clients (the step Lambda has them)"
        )
    request = converse_request(params, state, ctx)
    client = ctx.clients("bedrock-runtime")
    try:
        # In a thread, so the node's timeout ends the wait (the thread's call is abandoned).
        response = await asyncio.to_thread(client.converse, **request)
    except Exception as exc:
        typed = _error_for(exc, params["model_id"])
        if typed is exc:
            raise
        raise typed from exc
    usage = response.get("usage", {})
    ctx.note(
        model_id=params["model_id"],
        usage={key: usage[key] for key in ("inputTokens", "outputTokens", "totalTokens") if key in usage},
        stopReason=response.get("stopReason"),
    )
    text = answer_text(response)
    return text if ctx.index is not None else {params["output"]: text}
