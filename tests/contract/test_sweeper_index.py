"""The sweeper's view when many runs share one index bucket (DynamoDB keys runs by the
minute they are due, so ties are the rule): still every due run, oldest first, and no
more than asked for."""

from __future__ import annotations

import random

import pytest

from engine.ports import RunRecord
from engine.step import Cursor
from functions.aws import dynamodb

T0 = 1_750_000_000.0


def run(run_id: str, next_at: float) -> RunRecord:
    return RunRecord(
        run_id=run_id, graph_id="g1", status="running", cursor=Cursor("a"), step=0, state={},
        created_at="2025-06-15T10:00:00.000Z", updated_at="2025-06-15T10:00:00.000Z", next_at=next_at,
    )  # fmt: skip


@pytest.mark.parametrize("limit", [1, 5, 40, 200])
def test_stalled_runs_are_the_oldest_due_even_when_they_share_a_bucket(store, monkeypatch, limit):
    # GIVEN 240 runs due within 90 s (some 10 per index shard and bucket), read in pages of 3
    monkeypatch.setattr(dynamodb, "BATCH_GET_KEYS", 3)
    rng = random.Random(7)
    due_at = {f"r{i}": T0 + rng.uniform(0, 90) for i in range(240)}
    for run_id, next_at in due_at.items():
        store.create_run(run(run_id, next_at))

    # WHEN the sweeper asks for the runs due before T0+150
    stalled = store.stalled_runs(due_before=T0 + 60, limit=limit)

    # THEN it gets exactly the `limit` oldest of them, in order
    expected = sorted((t, r) for r, t in due_at.items() if t < T0 + 60)[:limit]
    assert stalled == [(run_id, 0) for _, run_id in expected]
