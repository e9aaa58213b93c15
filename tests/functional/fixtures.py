"""AWS fixtures shared by the functional and contract suites: moto, a virtual clock, the stack.

Imported by name into both conftest.py files.
"""

from __future__ import annotations

import copy
import functools

import boto3
import pytest
from moto import mock_aws

import flowforge.local.stack
from engine.service import RunService
from flowforge.local.stack import create_resources
from functions.runtime import App, AwsClients, build_app
from functions.settings import Settings
from tests.functional.pump import VirtualClock, patch_moto

REGION = "us-east-1"
CALLBACK_KEY = "functional-tests-callback-key"
CALLBACK_BASE_URL = "https://api.example.test/v1"


@functools.cache
def session() -> boto3.session.Session:
    """One boto3 session per test process: its clients share loaded service models.

    (A client from a fresh session costs ~0.15 s; moto intercepts clients of any session.)
    """
    return boto3.session.Session(region_name=REGION)


_load_template = flowforge.local.stack.load_template


@functools.cache
def _parsed_template(path) -> dict:
    return _load_template(path)


def cached_template(path=flowforge.local.stack.DEFAULT_TEMPLATE) -> dict:
    """template.yaml parsed once per test process (parsing it costs ~0.2 s a test)."""
    return copy.deepcopy(_parsed_template(path))


@pytest.fixture
def clock() -> VirtualClock:
    """Time for the service and moto's SQS; it moves only when the test moves it."""
    return VirtualClock()


@pytest.fixture
def aws(monkeypatch, clock):
    """moto for every AWS call, with fake credentials; yields a boto3 session.

    The functions' clients (:func:`moto_app`) come from the same session.
    """
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    patch_moto(monkeypatch, clock)
    with mock_aws():
        yield session()


def moto_app() -> App:
    """The functions' App as deployed: settings from the environment, clients on moto."""
    return build_app(Settings.from_env(), AwsClients(session()))


def service_app(service: RunService) -> App:
    """An App whose service is ``service`` (in memory, or wrapped by a test)."""
    return build_app(Settings("unused"), _no_clients, service=service)


def _no_clients(name: str):
    raise AssertionError(f"an in-memory service asked for a {name} client")


@pytest.fixture
def stack(aws, monkeypatch) -> dict:
    """The table and queues of template.yaml, created in moto."""
    monkeypatch.setattr(flowforge.local.stack, "load_template", cached_template)
    resources = create_resources(aws)
    # The local stack's own additions (flowforge/local/dev.py): a callback key and base URL.
    resources["env"]["FLOWFORGE_CALLBACK_KEY"] = CALLBACK_KEY
    resources["env"]["FLOWFORGE_CALLBACK_BASE_URL"] = CALLBACK_BASE_URL
    return resources
