"""Isolation by principal: whose graphs and runs a request sees, and the setting behind it."""

from __future__ import annotations

import pytest

from engine.errors import NotFoundError
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.service import RunService
from functions.api.principal import NoPrincipalError, request_owner
from functions.settings import Settings, SettingsError

ALICE = "arn:aws:iam::123456789012:user/alice"
BOB = "arn:aws:iam::123456789012:user/bob"
GRAPH = {"start": "a", "nodes": {"a": {"fn": "split_text"}}}


def event(user_arn: str | None) -> dict:
    context = {"authorizer": {"iam": {"userArn": user_arn}}} if user_arn else {}
    return {"requestContext": context}


def test_the_owner_is_the_callers_arn_only_when_isolated():
    assert request_owner(event(ALICE), isolated=True) == ALICE
    assert request_owner(event(ALICE), isolated=False) is None
    assert request_owner(event(None), isolated=False) is None


def test_isolated_without_an_iam_caller_is_refused():
    with pytest.raises(NoPrincipalError) as refused:
        request_owner(event(None), isolated=True)
    assert refused.value.code == "forbidden"


def test_the_setting_accepts_account_and_principal_only():
    assert Settings.from_env({"FLOWFORGE_TABLE": "t"}).isolation == "account"
    assert (
        Settings.from_env({"FLOWFORGE_TABLE": "t", "FLOWFORGE_ISOLATION": "principal"}).isolation
        == "principal"
    )
    with pytest.raises(SettingsError, match="FLOWFORGE_ISOLATION='user' must be one of account, principal"):
        Settings.from_env({"FLOWFORGE_TABLE": "t", "FLOWFORGE_ISOLATION": "user"})


def test_another_principals_graph_and_run_are_not_found_by_the_service():
    import workflows  # noqa: F401 - registers split_text

    service = RunService(InMemoryRunStore(), InMemoryStepQueue(), isolated=True)
    graph = service.create_graph(GRAPH, ALICE)
    run = service.start_run(graph.graph_id, {"text": "One."}, ALICE)
    for attempt in (
        lambda: service.get_graph(graph.graph_id, BOB),
        lambda: service.start_run(graph.graph_id, {}, BOB),
        lambda: service.get_run(run.run_id, BOB),
        lambda: service.cancel(run.run_id, BOB),
    ):
        with pytest.raises(NotFoundError):
            attempt()
    assert service.get_run(run.run_id, ALICE).owner == ALICE
    assert service.store.list_graphs(owner=BOB) == ([], None)
