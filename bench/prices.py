"""AWS list prices (us-east-1, USD, on-demand, first pricing tier, free tiers ignored)
that the cost benchmarks multiply their measured request counts by.

Prices change: each constant names the page it comes from; update the constant and the
``PRICES_AS_OF`` date together.
"""

from __future__ import annotations

import math

PRICES_AS_OF = "2025-06"
REGION = "us-east-1"

# https://aws.amazon.com/lambda/pricing/ — Arm (Graviton2), first 7.5 billion GB-s/month.
LAMBDA_ARM64_PER_GB_SECOND = 0.0000133334
# https://aws.amazon.com/lambda/pricing/ — requests, any architecture: $0.20 per million.
LAMBDA_PER_REQUEST = 0.20 / 1_000_000

# https://aws.amazon.com/sqs/pricing/ — standard queues, $0.40 per million requests (after
# the first billion a month it is cheaper). Each 64 KB chunk of a payload is one request.
SQS_STANDARD_PER_REQUEST = 0.40 / 1_000_000
SQS_CHUNK_BYTES = 64 * 1024

# https://aws.amazon.com/dynamodb/pricing/on-demand/ — standard table class, after the
# November 2024 price cut: $0.625 per million write request units, $0.125 per million
# read request units. A write unit covers 1 KB of item; a strongly consistent read
# unit 4 KB (an eventually consistent read costs half a unit).
DYNAMODB_PER_WRITE_UNIT = 0.625 / 1_000_000
DYNAMODB_PER_READ_UNIT = 0.125 / 1_000_000
DYNAMODB_WRITE_UNIT_BYTES = 1024
DYNAMODB_READ_UNIT_BYTES = 4 * 1024

# https://aws.amazon.com/api-gateway/pricing/ — WebSocket APIs: $1.00 per million
# messages (first billion a month), metered in 32 KB increments; $0.25 per million
# connection minutes.
WEBSOCKET_PER_MESSAGE = 1.00 / 1_000_000
WEBSOCKET_FRAME_BYTES = 32 * 1024
WEBSOCKET_PER_CONNECTION_MINUTE = 0.25 / 1_000_000

# https://aws.amazon.com/step-functions/pricing/ — Standard workflows: $0.025 per 1,000
# state transitions ($25 per million). The yardstick for cost per node.
STEP_FUNCTIONS_STANDARD_PER_TRANSITION = 25.0 / 1_000_000


def _units(size_bytes: int, unit_bytes: int) -> int:
    """Billing units for a payload: at least one, then one per started ``unit_bytes``."""
    return max(1, math.ceil(size_bytes / unit_bytes))


def lambda_cost(invocations: int, seconds: float, memory_mb: int) -> float:
    """Lambda (arm64) requests plus duration: ``seconds`` is the total billed duration."""
    return invocations * LAMBDA_PER_REQUEST + seconds * memory_mb / 1024 * LAMBDA_ARM64_PER_GB_SECOND


def sqs_cost(payload_bytes: int, requests: int = 1) -> float:
    """``requests`` SQS API calls, each carrying ``payload_bytes``."""
    return requests * _units(payload_bytes, SQS_CHUNK_BYTES) * SQS_STANDARD_PER_REQUEST


def dynamodb_write_cost(item_bytes: int, writes: int = 1) -> float:
    return writes * _units(item_bytes, DYNAMODB_WRITE_UNIT_BYTES) * DYNAMODB_PER_WRITE_UNIT


def dynamodb_read_cost(item_bytes: int, reads: int = 1, *, consistent: bool = True) -> float:
    units = _units(item_bytes, DYNAMODB_READ_UNIT_BYTES) * (1.0 if consistent else 0.5)
    return reads * units * DYNAMODB_PER_READ_UNIT


def websocket_cost(message_bytes: int, messages: int = 1) -> float:
    return messages * _units(message_bytes, WEBSOCKET_FRAME_BYTES) * WEBSOCKET_PER_MESSAGE


def step_functions_cost(transitions: int) -> float:
    return transitions * STEP_FUNCTIONS_STANDARD_PER_TRANSITION
