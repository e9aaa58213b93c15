"""The journal: what a restart puts back, and that a commit returns only once its lines
are on disk, sharing fsyncs."""

from __future__ import annotations

import errno
import json
import os
import threading
import time

import pytest

from flowforge.local.journal import Journal, JournalError, from_wire, restorable, to_wire


def S(value):
    return {"S": value}


def N(value):
    return {"N": str(value)}


def run(run_id, step, status="running"):
    keys = {"pk": S(f"RUN#{run_id}"), "sk": S("RUN")}
    return {**keys, "kind": S("run"), "run_id": S(run_id), "step": N(step), "status": S(status)}


def log(run_id, seq):
    return {"pk": S(f"RUN#{run_id}"), "sk": S(f"LOG#{seq:010d}"), "kind": S("log"), "seq": N(seq)}


def record(item, *, removed=False):
    keys = {"pk": item["pk"], "sk": item["sk"]}
    return {"dynamodb": {"Keys": keys, **({} if removed else {"NewImage": item})}}


def test_slots_after_the_run_item_are_kept_and_the_run_resumes():
    # GIVEN a journal whose run item is a snapshot at step 2, with the slots of steps
    # 2 and 3 after it (their snapshot write never came)
    items = [run("r", 2), log("r", 0), log("r", 1), log("r", 2), log("r", 3)]
    # WHEN it is restored
    restored = restorable(items, now=0)
    # THEN every slot is kept (each is a commit) and the run is resumed
    seqs = sorted(int(i["seq"]["N"]) for i in restored.items if i["kind"]["S"] == "log")
    assert seqs == [0, 1, 2, 3]
    assert restored.running == ["r"]


def test_a_finish_slot_is_kept():
    finish = {**log("r", 1), "kind": S("finish")}
    restored = restorable([run("r", 1), log("r", 0), finish], now=0)
    assert finish in restored.items


def test_finished_runs_are_kept_and_not_resumed():
    restored = restorable([run("done", 3, "completed"), log("done", 0), log("done", 2)], now=0)
    assert len(restored.items) == 3
    assert restored.running == []


def test_connections_expired_items_and_orphan_logs_are_not_restored():
    items = [
        {"pk": S("CONN#c"), "sk": S("CONN"), "kind": S("conn")},
        {"pk": S("SUB#r"), "sk": S("CONN#c"), "kind": S("sub")},
        {**run("old", 1, "completed"), "expires_at": N(100)},
        log("ghost", 0),
        {"pk": S("GRAPH#g"), "sk": S("GRAPH"), "kind": S("graph")},
    ]
    restored = restorable(items, now=200)
    assert [i["kind"]["S"] for i in restored.items] == ["graph"]
    assert restored.dropped == 4


def test_everything_but_session_state_is_kept_with_its_run():
    # GIVEN a run at a map (its fan-out and an execution slot), a waiting run's wait, the
    # items that list the runs, and a principal's running runs
    pk = S("RUN#r")
    items = [
        run("r", 3),
        {"pk": pk, "sk": S("LISTED"), "kind": S("listed"), "gsi1pk": S("RUNS"), "gsi1sk": S("t#r")},
        {"pk": pk, "sk": S("FAN#0000000001"), "kind": S("fanout"), "n": N(1)},
        {"pk": pk, "sk": S("LOG#0000000001"), "kind": S("exec"), "seq": N(1)},
        run("w", 1, "waiting"),
        {"pk": S("RUN#w"), "sk": S("WAIT#0000000000"), "kind": S("wait"), "status": S("pending")},
        {"pk": S("OWNER#arn:aws:iam::1:user/a"), "sk": S("RUNNING"), "kind": S("running")},
    ]
    # WHEN it is restored
    restored = restorable(items, now=0)
    # THEN every item is put back, and only the running run is resumed (the waiting
    # one's timer, if it waits on one, is armed again)
    assert restored.items == items and restored.dropped == 0
    assert restored.running == ["r"]
    assert restored.waiting == ["w"]


def test_a_runs_items_without_the_run_are_dropped():
    ghost = S("RUN#ghost")
    items = [
        {"pk": ghost, "sk": S("LISTED"), "kind": S("listed")},
        {"pk": ghost, "sk": S("FAN#0000000001"), "kind": S("fanout")},
        {"pk": ghost, "sk": S("WAIT#0000000000"), "kind": S("wait")},
    ]
    restored = restorable(items, now=0)
    assert restored.items == [] and restored.dropped == 3


def test_the_journal_folds_removals_skips_a_torn_line_and_compacts(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append([record(run("r", 0)), record(log("r", 0)), record(run("r", 1))])
    journal.append([record(log("r", 0), removed=True)])
    journal.close()
    with open(path, "a") as stream:
        stream.write('{"k": {"pk"')  # a crash in the middle of a write
    items = Journal(path).load()
    assert [i["step"]["N"] for i in items.values()] == ["1"]

    journal.compact(items.values(), ["pk", "sk"])
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["i"]["step"] == {"N": "1"}


def test_binary_attributes_survive_the_round_trip_through_json():
    item = {"pk": {"S": "x"}, "blob": {"B": b"\x00\xff"}, "m": {"M": {"bs": {"BS": [b"\x01"]}}}}
    wire = json.loads(json.dumps(to_wire(item)))
    assert from_wire(wire) == item


def test_concurrent_commits_share_fsyncs_and_each_returns_once_its_lines_are_on_disk(tmp_path, monkeypatch):
    # GIVEN a slow disk: each fsync takes 50 ms
    synced: list[int] = []  # the file's size at each fsync: what it made durable
    real_fsync = os.fsync

    def slow_fsync(fd):
        size = os.fstat(fd).st_size
        time.sleep(0.05)
        real_fsync(fd)
        synced.append(size)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    start = threading.Barrier(10)
    covered: list[bool] = []

    def writer(n):
        start.wait()
        journal.commit([record(run(f"r{n}", 0))])
        # THEN when commit returns, an fsync has covered this writer's line
        covered.append(f'"RUN#r{n}"'.encode() in path.read_bytes()[: synced[-1]])

    # WHEN 10 writers commit at once
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert covered == [True] * 10
    # ... and they shared fsyncs (group commit): not one 50 ms flush each
    assert len(synced) <= 5
    assert len(Journal(path).load()) == 10


def test_a_failed_fsync_fails_every_later_call_and_close_flushes_what_is_pending(tmp_path, monkeypatch):
    journal = Journal(tmp_path / "journal.jsonl")
    position = journal.append([record(run("pending", 0))])
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    journal.close()  # the pending line is flushed on close
    assert len(fsyncs) == 1
    journal.sync(position)  # already durable: nothing to do, no error

    # WHEN an fsync fails
    def failing_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(JournalError, match=r"journal\.jsonl: .*Input/output error"):
        journal.commit([record(run("r", 0))])
    # THEN nothing is acknowledged any more, even when the disk answers again
    monkeypatch.setattr(os, "fsync", real_fsync)
    with pytest.raises(JournalError):
        journal.append([])
    with pytest.raises(JournalError):
        journal.commit([record(run("r", 1))])
