"""AWS list prices (us-east-1, USD, on-demand, first pricing tier, free tiers ignored):
the one table that a run's cost estimate (:mod:`engine.cost`) and the benchmarks price with.

Prices change: each field names the page it comes from; update it and
:data:`PRICES_AS_OF` together. A deployment overrides any of them with the
``PriceOverrides`` parameter (JSON, see :func:`parse_overrides`), e.g. for another
region or a negotiated rate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from engine.errors import FlowForgeError

PRICES_AS_OF = "2025-06"
REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """A Bedrock model's on-demand price per 1,000 tokens."""

    input_per_1k: float
    output_per_1k: float


#: https://aws.amazon.com/bedrock/pricing/ — on-demand, per 1,000 tokens, us-east-1.
#: Keys are foundation-model ids; a cross-region inference profile (``us.…``, ``eu.…``)
#: is priced as the model it names.
BEDROCK_MODELS: dict[str, ModelPrice] = {
    "anthropic.claude-3-haiku-20240307-v1:0": ModelPrice(0.00025, 0.00125),
    "anthropic.claude-3-5-haiku-20241022-v1:0": ModelPrice(0.0008, 0.004),
    "anthropic.claude-3-5-sonnet-20240620-v1:0": ModelPrice(0.003, 0.015),
    "anthropic.claude-3-5-sonnet-20241022-v2:0": ModelPrice(0.003, 0.015),
    "anthropic.claude-3-7-sonnet-20250219-v1:0": ModelPrice(0.003, 0.015),
    "amazon.nova-micro-v1:0": ModelPrice(0.000035, 0.00014),
    "amazon.nova-lite-v1:0": ModelPrice(0.00006, 0.00024),
    "amazon.nova-pro-v1:0": ModelPrice(0.0008, 0.0032),
    "meta.llama3-8b-instruct-v1:0": ModelPrice(0.0003, 0.0006),
}
#: Inference profile prefixes (``us.anthropic.…``): priced as the model after them.
PROFILE_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "global.")


@dataclass(frozen=True, slots=True)
class PriceTable:
    """What each billed unit costs, in USD."""

    # https://aws.amazon.com/lambda/pricing/ — requests, any architecture: $0.20 per million.
    lambda_request: float = 0.20 / 1_000_000
    # https://aws.amazon.com/lambda/pricing/ — Arm (Graviton2), first 7.5 billion GB-s/month.
    lambda_gb_second: float = 0.0000133334
    # https://aws.amazon.com/sqs/pricing/ — standard queues, $0.40 per million requests (after
    # the first billion a month it is cheaper). Each 64 KB chunk of a payload is one request.
    sqs_request: float = 0.40 / 1_000_000
    # https://aws.amazon.com/dynamodb/pricing/on-demand/ — standard table class, after the
    # November 2024 price cut: $0.625 per million write request units, $0.125 per million
    # read request units. A write unit covers 1 KB of item; a strongly consistent read
    # unit 4 KB (an eventually consistent read costs half a unit).
    dynamodb_write_unit: float = 0.625 / 1_000_000
    dynamodb_read_unit: float = 0.125 / 1_000_000
    # https://aws.amazon.com/dynamodb/pricing/on-demand/ — standard table class storage:
    # $0.25 per GB-month after the first 25 GB. An item is billed its size plus 100 bytes
    # of overhead, a global secondary index entry its keys plus 100 bytes.
    dynamodb_gb_month: float = 0.25
    # https://aws.amazon.com/s3/pricing/ — S3 Standard: PUT, COPY, POST, LIST $0.005 per
    # 1,000; GET and the others $0.0004 per 1,000; storage $0.023 per GB-month (first 50 TB).
    s3_put_request: float = 0.005 / 1000
    s3_get_request: float = 0.0004 / 1000
    s3_gb_month: float = 0.023
    # https://aws.amazon.com/api-gateway/pricing/ — WebSocket APIs: $1.00 per million
    # messages (first billion a month), metered in 32 KB increments; $0.25 per million
    # connection minutes. Live logs are per subscriber: not in a run's estimate.
    websocket_message: float = 1.00 / 1_000_000
    websocket_connection_minute: float = 0.25 / 1_000_000
    # https://aws.amazon.com/step-functions/pricing/ — Standard workflows: $0.025 per 1,000
    # state transitions ($25 per million). The yardstick for cost per node.
    step_functions_transition: float = 25.0 / 1_000_000
    # https://aws.amazon.com/eventbridge/pricing/ (Scheduler) — $1.00 per million scheduled
    # invocations (each delivery to a target, retries included) after a free tier of 14
    # million invocations a month (the AWS Price List's AWSEvents offer: "$0 for the first
    # 14 million scheduled invocations", usage type ScheduledInvocation). Creating, updating
    # and deleting schedules is not billed: the API calls are free, and so is storing them.
    # The timers benchmark (bench/timers.py) prices a one-time-schedule design with these.
    scheduler_invocation: float = 1.00 / 1_000_000
    scheduler_api_request: float = 0.0
    #: Bedrock models by id (see :data:`BEDROCK_MODELS`).
    bedrock: MappingProxyType[str, ModelPrice] = field(
        default_factory=lambda: MappingProxyType(dict(BEDROCK_MODELS))
    )

    def model(self, model_id: str) -> ModelPrice | None:
        """The price of ``model_id`` (an inference profile as its model), or None if unknown."""
        found = self.bedrock.get(model_id)
        if found is None:
            for prefix in PROFILE_PREFIXES:
                if model_id.startswith(prefix):
                    return self.bedrock.get(model_id[len(prefix) :])
        return found


#: The list prices above.
LIST_PRICES = PriceTable()
#: The unit prices an override may set (every field but ``bedrock``, which takes models).
UNIT_PRICES = tuple(f.name for f in fields(PriceTable) if f.name != "bedrock")


class InvalidPriceOverrides(FlowForgeError):
    """``PriceOverrides`` is not a JSON object of known prices."""

    code = "invalid_price_overrides"


def parse_overrides(text: str | None, base: PriceTable = LIST_PRICES) -> PriceTable:
    """``base`` with the prices of a ``PriceOverrides`` JSON object replaced.

    ``{"lambda_gb_second": 0.0000166667, "bedrock": {"my-model-id": {"input_per_1k":
    0.001, "output_per_1k": 0.002}}}``: each unit price by its field name (USD per unit),
    a model's price per 1,000 tokens. Empty or None: ``base`` unchanged. Anything else is
    refused with every problem named (raised at start-up, never per request).
    """
    if text is None or not text.strip():
        return base
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPriceOverrides(f"PriceOverrides is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidPriceOverrides(
            'PriceOverrides must be a JSON object, e.g. {"lambda_gb_second": 0.0000166667}'
        )
    problems: list[str] = []
    units: dict[str, float] = {}
    models = dict(base.bedrock)
    for name, value in data.items():
        if name == "bedrock":
            models.update(_models(value, problems))
        elif name not in UNIT_PRICES:
            problems.append(f"{name!r} is not a price (known: {', '.join(UNIT_PRICES)}, bedrock)")
        elif _price(value):
            units[name] = float(value)
        else:
            problems.append(f"{name}: {value!r} is not a non-negative number")
    if problems:
        raise InvalidPriceOverrides("PriceOverrides: " + "; ".join(problems), details={"problems": problems})
    return replace(base, **units, bedrock=MappingProxyType(models))


def _models(value: Any, problems: list[str]) -> dict[str, ModelPrice]:
    if not isinstance(value, dict):
        problems.append('bedrock must be an object: {"<model id>": {"input_per_1k": …, "output_per_1k": …}}')
        return {}
    models = {}
    for model_id, price in value.items():
        if (
            isinstance(price, dict)
            and set(price) == {"input_per_1k", "output_per_1k"}
            and all(_price(v) for v in price.values())
        ):
            models[model_id] = ModelPrice(float(price["input_per_1k"]), float(price["output_per_1k"]))
        else:
            problems.append(
                f'bedrock.{model_id}: {price!r} is not {{"input_per_1k": n, "output_per_1k": n}} '
                "with non-negative numbers"
            )
    return models


def _price(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )
