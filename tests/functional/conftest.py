"""Fixtures for the moto-backed functional tests of the step loop.

``service`` is the process-wide service the handlers use (built from the stack's
environment exactly as in Lambda) running on the test's virtual clock; ``pump`` and
``dlq_pump`` deliver the step queue and the dead-letter queue through the real handlers.
"""

from __future__ import annotations

import dataclasses

import pytest

import tests.functional.tools  # noqa: F401  (registers the test tools once)
from engine.service import RunService
from functions.dlq import app as dlq_app
from functions.runtime import current_app, set_app
from functions.step import app as step_app
from tests.functional import fixtures
from tests.functional.crashes import CountingQueue, FaultyStore
from tests.functional.pump import QueuePump

# The shared AWS fixtures (moto, virtual clock, template.yaml's stack).
aws, clock, stack = fixtures.aws, fixtures.clock, fixtures.stack


@pytest.fixture
def env(stack, monkeypatch):
    """The functions' environment from template.yaml; the service is rebuilt per test."""
    for name, value in stack["env"].items():
        monkeypatch.setenv(name, value)
    set_app(fixtures.moto_app())
    yield stack["env"]
    set_app(None)


@pytest.fixture
def service(env, clock) -> RunService:
    service = current_app().service
    service.clock = clock
    return service


@pytest.fixture
def one_step_per_message(service):
    """ChainMaxSteps=1: each step message runs one step, for tests that name steps by
    their message (chains under the same faults: test_chained_steps.py, test_differential.py)."""
    app = current_app()
    app.settings = dataclasses.replace(app.settings, chain_max_steps=1)


@pytest.fixture
def faults(service) -> tuple[FaultyStore, CountingQueue]:
    """Wrap the service's store and queue to inject faults and count commits and sends."""
    service.store = FaultyStore(service.store)
    service.queue = CountingQueue(service.queue)
    return service.store, service.queue


@pytest.fixture
def pump(service, stack, aws, clock) -> QueuePump:
    return QueuePump(aws.client("sqs"), stack["queue_url"], clock, step_app.handler)


@pytest.fixture
def dlq_pump(service, stack, aws, clock) -> QueuePump:
    return QueuePump(aws.client("sqs"), stack["dlq_url"], clock, dlq_app.handler)
