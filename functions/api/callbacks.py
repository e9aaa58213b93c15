"""The callback routes: answer a waiting run's callback, or send its heartbeat.

On AWS these two routes may be left without IAM auth (template.yaml's ``CallbackAuth``):
the token in the path is then the credential, so a webhook or a link in a mail can
answer. A token names its run and step; only its SHA-256 is stored.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.metrics import MetricUnit

from engine.step import iso_time
from functions.api.models import CallbackAnswer, CallbackAnswered, ErrorResponse
from functions.api.observability import logger, metrics
from functions.api.principal import request_owner
from functions.runtime import current_app

router = Router()

_ERRORS: Any = {"application/json": {"model": ErrorResponse}}
_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "The callback's status and the run's"},
    400: {"description": "Not an answer (status approved or rejected; output any JSON)", "content": _ERRORS},
    404: {"description": "Unknown token", "content": _ERRORS},
    409: {
        "description": "Answered or timed out before, withdrawn (its node's tool failed before "
        "an answer came), or the run no longer waits for it (details.status says which); the "
        "run is untouched",
        "content": _ERRORS,
    },
    503: {"description": "Store or queue unavailable; retry after Retry-After seconds", "content": _ERRORS},
}

Token = Annotated[
    str, Path(min_length=1, max_length=256, description="The callback's token (ctx.callback_token).")
]


def callback_base_url() -> str:
    """The URL callback URLs start with: the setting, else this request's API and stage."""
    configured = current_app().settings.callback_base_url
    if configured:
        return configured
    context = router.current_event.raw_event.get("requestContext", {})
    stage = context.get("stage", "$default")
    return f"https://{context.get('domainName', '')}" + ("" if stage == "$default" else f"/{stage}")


def _owner() -> str | None:
    return request_owner(router.current_event.raw_event, current_app().service.isolated)


@router.post(
    "/callbacks/<token>",
    summary="Answer a waiting run's callback",
    description="approved: output goes to the node's callback.result and the run goes on; "
    "rejected: the node raises CallbackRejected (catchable). An answer accepted while the "
    "node's tool runs is applied when the tool returns, and also if it fails. 409 when the "
    "callback was answered before, timed out, withdrawn, or its run no longer waits for it; "
    "404 for an unknown token.",
    responses=_RESPONSES,
    tags=["callbacks"],
)
def answer_callback(
    token: Token, answer: Annotated[CallbackAnswer, Body(description="The answer.")]
) -> CallbackAnswered:
    service = current_app().service
    done = service.waits.answer(
        token, answer.status, output=answer.output, reason=answer.reason, owner=_owner()
    )
    logger.info("callback answered", extra={"run_id": done.run.run_id, "callback": done.wait.status})
    metrics.add_metric(name="callbacks_answered", unit=MetricUnit.Count, value=1)
    return CallbackAnswered(
        run_id=done.run.run_id,
        callback=done.wait.status,
        status=done.run.status,
        applied=done.applied,
        expires_at=None,
    )


@router.post(
    "/callbacks/<token>/heartbeat",
    summary="Tell a waiting callback that its answer is on its way",
    description="Pushes the heartbeat deadline (callback.heartbeat_s from now, at most the "
    "timeout). 409 once the callback was answered or timed out.",
    responses=_RESPONSES,
    tags=["callbacks"],
)
def heartbeat_callback(token: Token) -> CallbackAnswered:
    service = current_app().service
    wait = service.waits.heartbeat(token, owner=_owner())
    run = service.get_run(wait.run_id)
    return CallbackAnswered(
        run_id=wait.run_id,
        callback=wait.status,
        status=run.status,
        applied=False,
        expires_at=iso_time(wait.due),
    )
