"""Wiring: the one place that builds the service from settings and AWS clients.

Clients are built lazily on first use, never at import time, so tests and the local
stack decide the endpoint (``AWS_ENDPOINT_URL``) before anything connects. Tests may
swap the whole service with :func:`set_service`.
"""

from __future__ import annotations

import importlib
import threading
from functools import cache

from engine import default_registry
from engine.service import RunService
from functions.settings import Settings, get_settings

_lock = threading.Lock()
_service: RunService | None = None
_session_lock = threading.Lock()  # a boto3 session is not thread-safe; its clients are


@cache
def boto3_client(name: str):
    """One boto3 client per service per process, all from one session: the clients then
    share the endpoint and model data it loads (a session per client costs ~35 ms more
    per client at cold start)."""
    with _session_lock:
        return _boto3_session().client(name)


@cache
def _boto3_session():
    import boto3  # deferred: keeps cold start off the import path of pure code

    return boto3.session.Session()


def load_tools(settings: Settings) -> None:
    """Import the modules that register tools (``workflows`` by default)."""
    for module in settings.tools_modules:
        importlib.import_module(module)


def build_service(settings: Settings) -> RunService:
    from functions.aws.dynamodb import DynamoRunStore
    from functions.aws.sqs import SqsStepQueue

    load_tools(settings)
    return RunService(
        DynamoRunStore(settings.table, lambda: boto3_client("dynamodb")),
        SqsStepQueue(settings.step_queue_url, lambda: boto3_client("sqs")),
        default_registry,
        max_state_bytes=settings.max_state_bytes,
        stall_after_s=settings.stall_after_s,
        retention_s=settings.retention_days * 86400 if settings.retention_days else None,
        isolated=settings.isolation == "principal",
    )


def get_service() -> RunService:
    """The process-wide service, built on first use."""
    global _service
    if _service is None:
        with _lock:
            if _service is None:
                _service = build_service(get_settings())
    return _service


def set_service(service: RunService | None) -> None:
    """Replace (or with None, reset) the process-wide service — for tests."""
    global _service
    with _lock:
        _service = service
    boto3_client.cache_clear()
    _boto3_session.cache_clear()
    get_settings.cache_clear()
