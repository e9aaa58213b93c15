"""Fixtures of the reliability tests: moto, template.yaml's stack and the process-wide
service, exactly as the functional tests build them (tests/functional)."""

from __future__ import annotations

import tests.reliability.tools  # noqa: F401  (registers the rel_ tools once)
from tests.functional import fixtures
from tests.functional.conftest import env, service
from tests.functional.test_websocket import ws

# moto, a virtual clock, template.yaml's table and queues; the functions' environment and
# the service the handlers use, on that clock; the WebSocket handlers' harness (``ws``).
aws, clock, stack = fixtures.aws, fixtures.clock, fixtures.stack
__all__ = ["aws", "clock", "env", "service", "stack", "ws"]
