"""A run's cost estimate: usage counts, the invocation's shares, pricing, price overrides."""

from __future__ import annotations

import json

import pytest

from engine.cost import (
    EMPTY,
    MICRO,
    InvocationMeter,
    Usage,
    bedrock_usage,
    dollars,
    price,
    share,
    step_usage,
    total_usd,
)
from engine.prices import LIST_PRICES, InvalidPriceOverrides, parse_overrides
from functions.settings import Settings, SettingsError

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


def test_usage_adds_counter_by_counter_and_round_trips_as_text():
    # GIVEN two steps' usage
    a = Usage({"lq": MICRO, "dw": 2})
    b = Usage({"dw": 1, "sq": 3 * MICRO, "b:m:i": 7})

    # WHEN they are added
    total = a + b

    # THEN each counter adds up, zeros are dropped, and the stored text reads back equal
    assert total == {"lq": MICRO, "dw": 3, "sq": 3 * MICRO, "b:m:i": 7}
    assert Usage.decode(total.encode()) == total
    assert a + EMPTY is a and EMPTY + Usage({"x": 0}) == EMPTY
    assert Usage.decode(None) == EMPTY and Usage.decode("") == EMPTY


def test_stored_counts_are_integers_however_large():
    # GIVEN a usage past what a float holds exactly (a long run of a large function)
    big = Usage({"lm": 10**30 + 1})
    # THEN its text keeps every digit (no float, no 38-digit DynamoDB number)
    assert json.loads(big.encode()) == {"lm": 10**30 + 1}
    assert Usage.decode(big.encode())["lm"] == 10**30 + 1


def test_shares_of_a_batch_add_up_to_the_whole():
    assert [share(MICRO, 3, i) for i in range(3)] == [333_334, 333_333, 333_333]
    assert sum(share(2 * MICRO, 7, i) for i in range(7)) == 2 * MICRO


def test_each_message_of_a_batch_carries_its_share_once_and_time_since_its_last_commit():
    # GIVEN an invocation of 2 records, 512 MB, on a clock the test moves
    now = [100.0]
    meter = InvocationMeter(2, 512, clock=lambda: now[0])

    # WHEN the first message commits two steps, 3 ms and 2 ms apart
    message = meter.begin_message()
    now[0] += 0.003
    first = message.take()
    now[0] += 0.002
    second = message.take()
    message.end()

    # THEN its first commit has half the invocation, half the receive and delete, and 3 ms
    assert first == {"lq": MICRO // 2, "sq": MICRO, "lm": 512 * 3000}
    # AND the next one only its own time
    assert second == {"lm": 512 * 2000}

    # WHEN the second message starts later and commits after 1 ms
    now[0] += 0.010
    message = meter.begin_message()
    now[0] += 0.001
    # THEN the time between messages is nobody's, and the other half is its
    assert message.take() == {"lq": MICRO // 2, "sq": MICRO, "lm": 512 * 1000}


def test_messages_running_alongside_share_the_time_they_overlap():
    # GIVEN an invocation of 3 records, 1,000 MB: two item messages start together
    now = [100.0]
    meter = InvocationMeter(3, 1000, clock=lambda: now[0])
    now[0] += 0.002  # (parsing the batch: the first message's)
    a, b = meter.begin_message(), meter.begin_message()

    # WHEN a third joins 10 ms later; a commits at 40 ms, b at 70 ms, c at 100 ms
    now[0] += 0.010
    c = meter.begin_message()
    now[0] += 0.030
    spent_a = a.take()
    a.end()
    now[0] += 0.030
    spent_b = b.take()
    b.end()
    now[0] += 0.030
    spent_c = c.take()
    c.end()

    # THEN each is charged its part of each moment: 2 + 10/2 + 30/3; 10/2 + 30/3 + 30/2;
    # 30/3 + 30/2 + 30
    ms = [round(s["lm"] / 1000 / 1000, 3) for s in (spent_a, spent_b, spent_c)]
    assert ms == [17.0, 30.0, 55.0]
    # AND together they are the invocation's time, billed once
    assert sum(s["lm"] for s in (spent_a, spent_b, spent_c)) == 1000 * 102_000
    assert sum(s["lq"] for s in (spent_a, spent_b, spent_c)) == MICRO
    # AND a message done is charged nothing more
    assert a.take() == EMPTY


def test_a_step_counts_the_message_that_follows_it_and_its_bedrock_tokens():
    log = {
        "notes": {"model_id": HAIKU, "usage": {"inputTokens": 800, "outputTokens": 100, "totalTokens": 900}}
    }
    assert step_usage(log, sends=1) == {"sq": MICRO, f"b:{HAIKU}:i": 800, f"b:{HAIKU}:o": 100}
    assert step_usage({}, sends=0) == EMPTY
    # A note that is not a model call's usage counts nothing
    assert bedrock_usage({"notes": {"usage": "lots"}}) == EMPTY
    assert bedrock_usage({"notes": {"model_id": "m", "usage": {"inputTokens": True}}}) == EMPTY


def test_the_price_of_a_usage_line_by_line():
    # GIVEN one invocation (3 ms at 512 MB), 3 SQS requests, 1 read and 4 write units,
    # and a Claude 3 Haiku call through a US inference profile
    usage = Usage(
        {
            "lq": MICRO,
            "lm": 512 * 3000,
            "sq": 3 * MICRO,
            "dr": 1,
            "dw": 4,
            f"b:us.{HAIKU}:i": 1000,
            f"b:us.{HAIKU}:o": 1000,
        }
    )

    # WHEN it is priced with the list prices
    cost = price(usage)

    # THEN each line is what it counted times the table's price, and the total their sum
    lines = cost["breakdown"]
    assert lines["lambda"] == {"requests": 1.0, "gb_seconds": 0.0015, "usd": pytest.approx(2.2e-07)}
    assert lines["sqs"] == {"requests": 3.0, "usd": pytest.approx(1.2e-06)}
    assert lines["dynamodb"] == {"read_units": 1, "write_units": 4, "usd": pytest.approx(2.625e-06)}
    assert lines["s3"]["usd"] == 0
    assert lines["bedrock"]["models"][f"us.{HAIKU}"]["usd"] == pytest.approx(0.0015)
    assert cost["usd"] == pytest.approx(0.0015 + 2.2e-07 + 1.2e-06 + 2.625e-06)
    assert cost["estimate"] is True
    assert total_usd(usage) == pytest.approx(sum(dollars(usage).values()))


def test_a_model_without_a_price_is_counted_and_marked():
    cost = price(Usage({"b:acme.model-v1:i": 10}))
    assert cost["breakdown"]["bedrock"]["models"]["acme.model-v1"] == {
        "input_tokens": 10,
        "output_tokens": 0,
        "usd": 0.0,
        "priced": False,
    }


def test_overrides_replace_prices_and_add_models():
    # GIVEN overrides of the Lambda GB-second and a model of one's own
    prices = parse_overrides(
        '{"lambda_gb_second": 0.0000166667, "bedrock": {"acme.model-v1": {"input_per_1k": 1, "output_per_1k": 2}}}'
    )
    # THEN those change, and the rest are the list prices
    assert prices.lambda_gb_second == 0.0000166667
    assert prices.sqs_request == LIST_PRICES.sqs_request
    assert prices.model(HAIKU) == LIST_PRICES.model(HAIKU)
    assert price(Usage({"b:acme.model-v1:o": 1000}), prices)["usd"] == 2.0
    assert parse_overrides("") is LIST_PRICES and parse_overrides(None) is LIST_PRICES


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{lambda", "not JSON"),
        ("[1]", "must be a JSON object"),
        ('{"lambda_gb_secnd": 1}', "'lambda_gb_secnd' is not a price"),
        ('{"sqs_request": -1}', "sqs_request: -1 is not a non-negative number"),
        ('{"sqs_request": true}', "sqs_request: True is not a non-negative number"),
        ('{"bedrock": {"m": {"input_per_1k": 1}}}', "bedrock.m:"),
        ('{"bedrock": []}', "bedrock must be an object"),
    ],
)
def test_bad_overrides_are_refused_with_what_is_wrong(text, says):
    with pytest.raises(InvalidPriceOverrides) as caught:
        parse_overrides(text)
    assert says in caught.value.message


def test_a_bad_override_fails_the_functions_start_not_a_request():
    # GIVEN the PriceOverrides parameter as the functions get it
    env = {"FLOWFORGE_TABLE": "t", "FLOWFORGE_PRICE_OVERRIDES": '{"dynamodb_write_unit": "cheap"}'}
    # WHEN the settings are read (a cold start), THEN it fails naming the variable and the price
    with pytest.raises(SettingsError, match=r"FLOWFORGE_PRICE_OVERRIDES: .*dynamodb_write_unit"):
        Settings.from_env(env)
    # AND a good one is read into the settings
    good = Settings.from_env({**env, "FLOWFORGE_PRICE_OVERRIDES": '{"dynamodb_write_unit": 1.25e-6}'})
    assert good.prices.dynamodb_write_unit == 1.25e-6
