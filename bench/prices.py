"""The benchmarks' prices: the one table in :mod:`engine.prices` (the runs' cost estimate
prices with it too), under the names the cost benchmarks use, and their billing rules.

To change a price, change ``engine/prices.py``.
"""

from __future__ import annotations

import math

from engine.prices import LIST_PRICES, PRICES_AS_OF, REGION

__all__ = ["PRICES_AS_OF", "REGION"]

LAMBDA_ARM64_PER_GB_SECOND = LIST_PRICES.lambda_gb_second
LAMBDA_PER_REQUEST = LIST_PRICES.lambda_request
SQS_STANDARD_PER_REQUEST = LIST_PRICES.sqs_request
#: Each 64 KB chunk of a payload is one SQS request.
SQS_CHUNK_BYTES = 64 * 1024
DYNAMODB_PER_WRITE_UNIT = LIST_PRICES.dynamodb_write_unit
DYNAMODB_PER_READ_UNIT = LIST_PRICES.dynamodb_read_unit
#: A write unit covers 1 KB of item; a strongly consistent read unit 4 KB.
DYNAMODB_WRITE_UNIT_BYTES = 1024
DYNAMODB_READ_UNIT_BYTES = 4 * 1024
WEBSOCKET_PER_MESSAGE = LIST_PRICES.websocket_message
#: WebSocket messages are metered in 32 KB increments.
WEBSOCKET_FRAME_BYTES = 32 * 1024
WEBSOCKET_PER_CONNECTION_MINUTE = LIST_PRICES.websocket_connection_minute
STEP_FUNCTIONS_STANDARD_PER_TRANSITION = LIST_PRICES.step_functions_transition


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
