"""How the broadcaster plans a stream batch: per run, only what still needs a delivery."""

from __future__ import annotations

import pytest

from functions.broadcast.batch import plan, process


def record(seq: int, run_id: str, kind: str, **image: str) -> dict:
    new_image = {"run_id": {"S": run_id}, "kind": {"S": kind}, **{k: {"S": v} for k, v in image.items()}}
    return {"eventName": "INSERT", "dynamodb": {"SequenceNumber": str(seq), "NewImage": new_image}}


def sequence_numbers(groups: list[list[dict]]) -> list[list[int]]:
    return [[int(r["dynamodb"]["SequenceNumber"]) for r in group] for group in groups]


def test_a_runs_newest_entry_stands_for_the_entries_before_it():
    batch = [record(1, "a", "log"), record(2, "b", "log"), record(3, "a", "log"), record(4, "a", "log")]
    assert sequence_numbers(plan(batch)) == [[4], [2]]


def test_a_runs_end_stands_for_its_entries_and_comes_first():
    batch = [
        record(1, "a", "log"),
        record(2, "b", "log"),
        record(3, "b", "log"),
        record(4, "b", "log", status="completed"),  # the slot that ends run b
    ]
    assert sequence_numbers(plan(batch)) == [[4], [1]]


def test_a_cancel_ends_its_run_from_its_finish_slot():
    batch = [
        record(1, "a", "log", status="running"),
        record(2, "a", "finish", status="cancelled"),
        record(3, "b", "log"),
    ]
    assert sequence_numbers(plan(batch)) == [[2], [3]]


def test_replays_and_entries_after_them_are_kept_in_order():
    batch = [record(1, "a", "sub", replay="t1"), record(2, "a", "log"), record(3, "a", "sub", replay="t2")]
    assert sequence_numbers(plan(batch)) == [[1, 2, 3]]


def test_a_failing_run_reports_its_first_record_and_the_others_are_served():
    served = []

    def act(change: dict) -> None:
        if change["dynamodb"]["NewImage"]["run_id"]["S"] == "b":
            raise RuntimeError("throttled")
        served.append(change["dynamodb"]["SequenceNumber"])

    batch = [
        record(1, "a", "log"),
        record(2, "b", "sub", replay="t"),
        record(3, "b", "log"),
        record(4, "c", "log"),
    ]
    assert process(batch, act) == {"batchItemFailures": [{"itemIdentifier": "2"}]}
    assert sorted(served) == ["1", "4"]


@pytest.mark.parametrize("size", [0, 1])
def test_small_batches_are_served_in_the_calling_thread(size):
    served = []
    assert process([record(1, "a", "log")][:size], lambda r: served.append(r)) == {"batchItemFailures": []}
    assert len(served) == size


def test_the_runs_that_ended_are_served_before_the_others_begin():
    import threading
    import time

    ended = {"b", "d"}
    finished: set[str] = set()
    seen_before_ends: list[str] = []
    lock = threading.Lock()

    def act(change: dict) -> None:
        run_id = change["dynamodb"]["NewImage"]["run_id"]["S"]
        if run_id in ended:
            time.sleep(0.05)  # a delivery takes its time
        with lock:
            if run_id not in ended and finished != ended:
                seen_before_ends.append(run_id)
            if run_id in ended:
                finished.add(run_id)

    batch = [
        record(1, "a", "log"),
        record(2, "b", "log", status="completed"),
        record(3, "c", "log"),
        record(4, "d", "finish", status="cancelled"),
        record(5, "e", "log"),
    ]
    assert process(batch, act) == {"batchItemFailures": []}
    assert finished == ended and seen_before_ends == []
