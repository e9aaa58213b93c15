"""Parsing what clients send on the WebSocket: every mistake gets a clear answer."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from functions.ws.routes import (
    ConnectQuery,
    InvalidMessageError,
    Subscribe,
    UnknownActionError,
    Unsubscribe,
    parse_frame,
)


def test_subscribe_frame_defaults_to_replaying_from_the_start():
    frame = parse_frame('{"action": "subscribe", "run_id": "abc123"}')
    assert frame == Subscribe(action="subscribe", run_id="abc123", after=-1)


def test_subscribe_frame_with_after_resumes():
    frame = parse_frame('{"action": "subscribe", "run_id": "abc123", "after": 7}')
    assert isinstance(frame, Subscribe) and frame.after == 7


def test_unsubscribe_frame():
    assert parse_frame('{"action": "unsubscribe", "run_id": "abc"}') == Unsubscribe(
        action="unsubscribe", run_id="abc"
    )


@pytest.mark.parametrize("body", ["", "not json", "{", "[1, 2]", '"subscribe"', "null", None])
def test_garbage_is_an_invalid_message_with_an_example(body):
    with pytest.raises(InvalidMessageError) as caught:
        parse_frame(body)
    assert caught.value.code == "invalid_message"
    assert '"action": "subscribe"' in caught.value.message


@pytest.mark.parametrize("action", ["subscrbe", "ping", None, 3, ""])
def test_unknown_actions_are_answered_with_the_known_ones(action):
    body = (
        '{"run_id": "abc"}'
        if action is None
        else f'{{"action": {action!r}, "run_id": "abc"}}'.replace("'", '"')
    )
    with pytest.raises(UnknownActionError) as caught:
        parse_frame(body)
    assert caught.value.code == "unknown_action"
    assert caught.value.details == {"actions": ["subscribe", "unsubscribe"]}
    assert "subscribe, unsubscribe" in caught.value.message


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"action": "subscribe"}', "run_id"),
        ('{"action": "subscribe", "run_id": ""}', "run_id"),
        ('{"action": "subscribe", "run_id": "../../etc"}', "run_id"),
        ('{"action": "subscribe", "run_id": "a", "after": -2}', "after"),
        ('{"action": "subscribe", "run_id": "a", "after": "3"}', "after"),
        ('{"action": "subscribe", "run_id": "a", "after": 1.5}', "after"),
        ('{"action": "subscribe", "run_id": "a", "after": true}', "after"),
        ('{"action": "subscribe", "run_id": "a", "follow": true}', "follow"),
    ],
)
def test_invalid_requests_name_the_field_at_fault(body, where):
    with pytest.raises(InvalidMessageError) as caught:
        parse_frame(body)
    assert where in caught.value.message


def test_connect_query_is_optional_and_validated():
    assert ConnectQuery.model_validate({}) == ConnectQuery(run_id=None, after=-1)
    assert ConnectQuery.model_validate({"run_id": "abc", "after": "4"}).after == 4
    for bad in ({"run_id": "a b"}, {"run_id": "abc", "after": "x"}, {"run_id": "abc", "after": "-5"}):
        with pytest.raises(ValidationError):
            ConnectQuery.model_validate(bad)
