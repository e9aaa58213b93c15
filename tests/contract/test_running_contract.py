"""The runs each principal holds (engine/running.py): the RunStore contract, on
InMemoryRunStore and DynamoRunStore (moto)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

ALICE = "arn:aws:iam::123456789012:user/alice"
BOB = "arn:aws:iam::123456789012:role/bob/session-1"


def test_runs_are_counted_up_to_the_cap_and_a_held_run_again_is_no_new_place(store):
    assert store.held_runs(ALICE) == {}
    assert store.hold_run(ALICE, "r1", 2, 100.0)
    assert store.hold_run(ALICE, "r2", 2, 101.0)
    # AT the cap: a new run is refused, a run already held is still held (a retried start)
    assert not store.hold_run(ALICE, "r3", 2, 102.0)
    assert store.hold_run(ALICE, "r1", 2, 103.0)
    assert store.held_runs(ALICE) == {"r1": 100.0, "r2": 101.0}
    # AND each principal has places of its own
    assert store.hold_run(BOB, "r9", 2, 104.0)
    assert store.held_runs(BOB) == {"r9": 104.0}


def test_released_places_are_taken_again_and_unknown_ones_are_ignored(store):
    for run_id in ("r1", "r2"):
        assert store.hold_run(ALICE, run_id, 2, 100.0)
    store.release_runs(ALICE, ["r1", "never-held"])
    store.release_runs(BOB, ["r1"])  # a principal that holds nothing
    assert store.held_runs(ALICE) == {"r2": 100.0}
    assert store.hold_run(ALICE, "r3", 2, 105.0)
    assert not store.hold_run(ALICE, "r4", 2, 106.0)


def test_many_releases_at_once(store):
    for index in range(150):
        assert store.hold_run(ALICE, f"r{index}", 1000, 100.0)
    store.release_runs(ALICE, [f"r{index}" for index in range(140)])
    assert sorted(store.held_runs(ALICE)) == sorted(f"r{index}" for index in range(140, 150))


def test_of_starts_racing_for_the_last_places_only_the_cap_get_one(store):
    # GIVEN a principal with one place left of 3
    assert store.hold_run(ALICE, "r0", 3, 100.0)
    assert store.hold_run(ALICE, "r1", 3, 100.0)
    # WHEN six starts race for it (its first run's item made by a racing start too)
    with ThreadPoolExecutor(6) as pool:
        won = list(pool.map(lambda i: store.hold_run(ALICE, f"new{i}", 3, 100.0), range(6)))
        first = list(pool.map(lambda i: store.hold_run(BOB, f"b{i}", 2, 100.0), range(6)))
    # THEN exactly one got it; and of a principal's racing first runs, exactly the cap
    assert won.count(True) == 1 and len(store.held_runs(ALICE)) == 3
    assert first.count(True) == 2 and len(store.held_runs(BOB)) == 2
