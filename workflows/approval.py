"""The approval example: a draft waits for a person's approval before it is published.

``workflows/graphs/approval.json``: ``draft`` writes a post from the state, ``review``
is a callback node (its tool, ``notify_reviewer``, tells a reviewer where to answer),
then ``publish``; a rejection goes to ``revise`` and back to review, a timeout to
``escalate``.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from engine import tool


@tool
def draft_post(state: Any, ctx: Any) -> dict[str, Any]:
    """Write a draft from state['topic'] (and the reviewer's last note, if any)."""
    note = (state.get("rejection") or {}).get("message")
    text = f"A post about {state.get('topic', 'nothing in particular')}."
    return {"draft": f"{text} (revised: {note})" if note else text}


@tool
def notify_reviewer(state: Any, ctx: Any) -> dict[str, Any]:
    """Tell the reviewer where to answer: POST the draft and ctx.callback_url to the
    webhook in params.webhook_url (a chat's incoming webhook), if one is given.

    The URL carries the token: send it only to whoever may answer (it is never logged
    or stored by FlowForge, which keeps only the token's hash)."""
    webhook = ctx.params.get("webhook_url")
    if not webhook:
        return {"notified": False}
    body = json.dumps(
        {"text": f"Please review: {state.get('draft')}", "answer_url": ctx.callback_url}
    ).encode()
    request = urllib.request.Request(webhook, body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=ctx.remaining_s() or 10):  # the graph's own webhook
        return {"notified": True}


@tool
def publish_post(state: Any, ctx: Any) -> dict[str, Any]:
    """Publish the approved draft (here: mark it published, with the reviewer's output)."""
    return {"published": {"text": state.get("draft"), "review": state.get("review")}}
