"""The local stack's botocore patch parses DynamoDB's answers as botocore parses them."""

from __future__ import annotations

import base64
import json

import botocore.session
import pytest
from botocore.parsers import BaseJSONParser, ResponseParserError, create_parser
from hypothesis import given, settings
from hypothesis import strategies as st

from flowforge.local.aws import attribute_values_parsed_directly

_names = st.text(alphabet="abcxyz#_", min_size=1, max_size=4)
_blobs = st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode())
_scalars = st.one_of(
    st.builds(lambda v: {"S": v}, st.text(max_size=6)),
    st.builds(lambda v: {"N": v}, st.integers().map(str)),
    st.builds(lambda v: {"BOOL": v}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda v: {"B": v}, _blobs),
    st.builds(lambda v: {"SS": v}, st.lists(st.text(max_size=3), max_size=3)),
    st.builds(lambda v: {"NS": v}, st.lists(st.integers().map(str), max_size=3)),
    st.builds(lambda v: {"BS": v}, st.lists(_blobs, max_size=3)),
)
#: What DynamoDB never sends, each taken botocore's way: no member or two, an unknown
#: one, a null one, null elements, a blob that is not base64, a type botocore would trip on.
_odd = st.sampled_from(
    [
        {},
        {"S": "a", "N": "1"},
        {"X": "?"},
        {"S": None},
        {"S": None, "N": "1"},
        {"__type": "x", "S": "a"},
        {"L": [None, {"S": "a"}]},
        {"M": {"a": None}},
        {"SS": ["a", None]},
        {"BS": [None]},
        {"B": "not base64!"},
        {"M": ["a"]},
        {"L": {"a": {"S": "b"}}},
        {"SS": "ab"},
        {"S": 3},
    ]
)
_values = st.recursive(
    st.one_of(_scalars, _odd),
    lambda inner: st.one_of(
        st.builds(lambda v: {"M": v}, st.dictionaries(_names, inner, max_size=3)),
        st.builds(lambda v: {"L": v}, st.lists(inner, max_size=3)),
    ),
    max_leaves=12,
)
_items = st.dictionaries(_names, _values, max_size=4)


def _model(operation: str) -> object:
    return botocore.session.get_session().get_service_model("dynamodb").operation_model(operation)


QUERY, GET = _model("Query"), _model("GetItem")


def _parse(operation: object, answer: dict) -> object:
    response = {"status_code": 200, "headers": {}, "body": json.dumps(answer).encode()}
    try:
        return create_parser("json").parse(response, operation.output_shape)  # type: ignore[attr-defined]
    except (ResponseParserError, TypeError, ValueError, AttributeError) as exc:
        return type(exc), str(exc)


#: botocore's own (a local stack started in this process installs the patch for good).
_GENERIC = getattr(BaseJSONParser._handle_structure, "__wrapped__", BaseJSONParser._handle_structure)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(_items, max_size=4), key=_items)
def test_an_answer_parses_as_botocore_parses_it(items, key):
    answers = [
        (QUERY, {"Items": items, "Count": len(items), "LastEvaluatedKey": key}),
        (GET, {"Item": items[0]} if items else {}),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseJSONParser, "_handle_structure", _GENERIC)
        by_botocore = [_parse(operation, answer) for operation, answer in answers]
        attribute_values_parsed_directly(patch.setattr)
        assert [_parse(operation, answer) for operation, answer in answers] == by_botocore


def test_an_item_is_parsed_without_botocores_walk_of_each_value(monkeypatch):
    walked: list[str] = []
    generic = _GENERIC
    monkeypatch.setattr(
        BaseJSONParser,
        "_handle_structure",
        lambda self, shape, value: walked.append(shape.name) or generic(self, shape, value),
    )
    item = {
        "pk": {"S": "RUN#1"},
        "n": {"N": "5"},
        "e": {"B": base64.b64encode(b"\x00\x01").decode()},
        "st": {
            "M": {"a": {"L": [{"S": "x"}, {"BS": [base64.b64encode(b"y").decode()]}]}, "b": {"NULL": True}}
        },
    }
    by_botocore = _parse(GET, {"Item": item})
    assert walked.count("AttributeValue") == 8
    attribute_values_parsed_directly(monkeypatch.setattr)
    walked.clear()
    assert _parse(GET, {"Item": item}) == by_botocore
    assert by_botocore["Item"]["e"] == {"B": b"\x00\x01"}
    assert "AttributeValue" not in walked  # each of the item's values parsed directly
    attribute_values_parsed_directly(monkeypatch.setattr)  # a second install wraps nothing
    assert getattr(BaseJSONParser._handle_structure, "__wrapped__", None) is not None
    assert not getattr(BaseJSONParser._handle_structure.__wrapped__, "attribute_values_directly", False)
