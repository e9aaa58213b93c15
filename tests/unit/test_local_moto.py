"""The local stack's embedded moto server."""

from __future__ import annotations

from moto import backends
from moto.moto_server.werkzeug_app import create_backend_app

from flowforge.local.aws import _Dispatcher


def test_the_moto_dispatcher_looks_a_host_up_once(monkeypatch):
    listed = []
    real = backends.list_of_moto_modules
    monkeypatch.setattr(backends, "list_of_moto_modules", lambda: listed.append(1) or real())
    dispatcher = _Dispatcher(create_backend_app)
    found = {dispatcher.get_backend_for_host("dynamodb.us-east-1.amazonaws.com") for _ in range(5)}
    assert found == {"dynamodb"} and len(listed) == 1
