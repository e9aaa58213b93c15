"""Event source mapping filters: the broadcaster wakes only for what the template says."""

from __future__ import annotations

import pytest

from flowforge.local.patterns import PatternError, compile_filters, matches
from flowforge.local.stack import DEFAULT_TEMPLATE
from flowforge.local.template import read_template


def _record(event_name: str, **image) -> dict:
    return {"eventName": event_name, "dynamodb": {"NewImage": {k: {"S": v} for k, v in image.items()}}}


@pytest.fixture(scope="module")
def broadcast_filter():
    (source,) = read_template(DEFAULT_TEMPLATE).stream_sources
    return compile_filters(source.filters)


@pytest.mark.parametrize(
    ("record", "wakes"),
    [
        (_record("INSERT", kind="log"), True),
        (_record("MODIFY", kind="run", status="completed"), True),
        (_record("MODIFY", kind="run", status="cancelled"), True),
        (_record("MODIFY", kind="run", status="running"), False),
        (_record("INSERT", kind="graph"), False),
        (_record("MODIFY", kind="sub", replay="lease-1"), True),
        (_record("MODIFY", kind="sub"), False),
        ({"eventName": "REMOVE", "dynamodb": {"Keys": {}}}, False),
    ],
)
def test_the_templates_broadcast_filter(broadcast_filter, record, wakes):
    assert broadcast_filter(record) is wakes


@pytest.mark.parametrize(
    ("pattern", "record", "expected"),
    [
        ({"a": [{"prefix": "RUN#"}]}, {"a": "RUN#1"}, True),
        ({"a": [{"prefix": "RUN#"}]}, {"a": "GRAPH#1"}, False),
        ({"a": [{"suffix": ".json"}]}, {"a": "x.json"}, True),
        ({"a": [{"anything-but": ["x", "y"]}]}, {"a": "z"}, True),
        ({"a": [{"anything-but": ["x", "y"]}]}, {"a": "x"}, False),
        ({"a": [{"anything-but": {"prefix": "t"}}]}, {"a": "tmp"}, False),
        ({"a": [{"exists": True}]}, {"a": 1}, True),
        ({"a": [{"exists": False}]}, {}, True),
        ({"a": [{"exists": False}]}, {"a": 1}, False),
        ({"a": [{"numeric": [">", 1, "<=", 5]}]}, {"a": 5}, True),
        ({"a": [{"numeric": [">", 1, "<=", 5]}]}, {"a": 6}, False),
        ({"a": [{"equals-ignore-case": "DONE"}]}, {"a": "done"}, True),
        ({"a": [1]}, {"a": "1"}, False),  # types must match
        ({"a": ["x"]}, {"a": ["y", "x"]}, True),  # any element of a list
        ({"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "y"}, True),
        ({"a": {"b": ["x"]}}, {"a": {"b": "x"}}, True),
        ({"a": {"b": ["x"]}}, {}, False),
    ],
)
def test_pattern_operators(pattern, record, expected):
    assert matches(pattern, record) is expected


def test_no_filters_let_every_record_through():
    assert compile_filters([])({"anything": 1})


def test_unsupported_operators_fail_at_start_not_per_record():
    with pytest.raises(PatternError, match="wildcard"):
        compile_filters([{"Pattern": '{"a": [{"wildcard": "x*"}]}'}])
    with pytest.raises(PatternError, match="not JSON"):
        compile_filters([{"Pattern": "{nope"}])
