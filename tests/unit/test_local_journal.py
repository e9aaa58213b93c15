"""The journal: what a restart puts back."""

from __future__ import annotations

import json

from flowforge.local.journal import Journal, from_wire, restorable, to_wire


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
