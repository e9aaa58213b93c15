"""A log entry is built once, at commit, as the text of its WebSocket message: what the
store keeps is what the socket sends, and entries stored in the previous shape read the
same (engine/logentry.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import default_registry, logentry
from engine.logentry import MESSAGE_PREFIX, StoredEntry, stored_entry
from engine.logmessages import MAX_MESSAGE_BYTES, encode_message
from engine.logstream import LogStream
from engine.logstream_memory import InMemorySubscriptionStore
from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.service import RunService
from engine.step import TERMINAL, iso_time

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

#: Entries as the tick builds them, of every kind a run writes.
STEP = {
    "seq": 3,
    "node": "refine",
    "attempt": 2,
    "status": "ok",
    "started_at": "2025-06-15T12:00:03.120Z",
    "duration_ms": 12.5,
    "result": {"summary": "héllo ✓"},
    "next": "refine",
    "error": None,
}
NOTED = {**STEP, "notes": {"input_tokens": 12, "output_tokens": 3}}
WAITING = {**STEP, "status": "waiting", "waiting": {"until": "2025-06-15T13:00:00.000Z"}}
RESUMED = {**STEP, "resumed": "approved"}
REDRIVEN = {**STEP, "attempt": None, "status": "redriven", "redrive": 2}
MAP_ITEM = {
    "seq": 4,
    "node": "each",
    "index": 7,
    "attempt": 1,
    "status": "ok",
    "started_at": "2025-06-15T12:00:04.000Z",
    "duration_ms": 0.5,
    "result": {"$blob": {"sha256": "ab" * 32, "bytes": 40000}},
    "next": None,
    "error": None,
}
BRANCH = {**{k: v for k, v in MAP_ITEM.items() if k != "index"}, "branch": "left"}
KINDS = [STEP, NOTED, WAITING, RESUMED, REDRIVEN, MAP_ITEM, BRANCH]


@default_registry.tool("log_entry_count")
async def log_entry_count(state, ctx):
    """Add one to ``n``."""
    return {"n": state.get("n", 0) + 1}


LOOP = {
    "name": "count",
    "start": "count",
    "nodes": {"count": {"fn": "log_entry_count", "loop_condition": {"var": "n", "gte": 3}}},
}


class RecordingPusher:
    def __init__(self) -> None:
        self.posted: list[tuple[str, bytes]] = []

    def post(self, connection_id: str, data: bytes) -> None:
        self.posted.append((connection_id, data))


def old_broadcaster_frame(run_id: str, entry: dict) -> bytes:
    """What the broadcaster sent for an entry before entries were stored as messages:
    written out field by field, so the order and names clients see are pinned here."""
    message = {
        "run_id": run_id,
        "seq": entry["seq"],
        "node": entry["node"],
        "result": entry["result"],
        "status": entry["status"],
        "attempt": entry["attempt"],
        "duration_ms": entry["duration_ms"],
        "ts": entry["started_at"],
        "next": entry["next"],
        "error": entry["error"],
    }
    for name in ("index", "branch", "notes"):
        if name in entry:
            message[name] = entry[name]
    return _dumps(message).encode()


@pytest.mark.parametrize("entry", KINDS, ids=lambda e: e["status"] + str(sorted(e)))
def test_the_stored_text_is_the_message_clients_received_before(entry):
    stored = stored_entry("r1", entry)
    # The stored text is the frame, byte for byte as the broadcaster used to encode it
    assert stored.text.startswith(MESSAGE_PREFIX)
    assert stored.frame() == stored.text.encode() == old_broadcaster_frame("r1", entry)
    # and nothing of the entry is lost: GET /graph/state reads every field back
    assert stored.fields() == {**entry, "run_id": "r1"}
    assert (stored.extra is None) == all(k not in entry for k in ("waiting", "resumed", "redrive"))


@pytest.mark.parametrize("entry", KINDS, ids=lambda e: e["status"] + str(sorted(e)))
def test_an_entry_stored_in_the_previous_shape_reads_as_one_stored_now(entry):
    # GIVEN an entry a previous version stored: the tick's dict with run_id, as JSON
    old = _dumps({**entry, "run_id": "r1"})
    # WHEN it is read (a run started before a deploy, a local stack's journal)
    read = StoredEntry.read("r1", entry["seq"], old)
    # THEN it is sent and served exactly as before, and as a new one is
    assert read == stored_entry("r1", entry)
    assert read.frame() == old_broadcaster_frame("r1", entry)
    assert read.fields() == {**entry, "run_id": "r1"}


def test_an_entry_stored_now_is_read_as_it_is():
    stored = stored_entry("r1", WAITING)
    read = StoredEntry.read("r1", 3, stored.text, stored.extra)
    assert read == stored and read.text is stored.text  # kept, not rebuilt


def test_an_entry_over_the_frame_bound_is_cut_as_any_message_is():
    # GIVEN a stored entry whose message is larger than API Gateway's 128 KB frame
    entry = {**STEP, "result": {"blob": "x" * 200_000}}
    stored = stored_entry("r1", entry)
    # WHEN it is sent
    frame = stored.frame()
    # THEN its result is replaced by a marker, every other field kept (as before)
    assert len(frame) <= MAX_MESSAGE_BYTES
    assert frame == encode_message(json.loads(stored.text))
    assert json.loads(frame)["result"] == {"_truncated": True, "bytes": len(_dumps(entry["result"]).encode())}


def test_entries_are_encoded_once_at_commit_and_sent_without_parsing(monkeypatch):
    # GIVEN a run followed by two clients, and a third that replays it once it ended,
    # with every encoding of an entry counted and any parse of one refused
    store, queue = InMemoryRunStore(), InMemoryStepQueue()
    service = RunService(store, queue, default_registry)
    pusher = RecordingPusher()
    stream = LogStream(store, InMemorySubscriptionStore(), pusher, connection_ttl_s=7200)
    encoded: list[str] = []
    real_dumps = logentry._dumps

    def counting_dumps(value):
        text = real_dumps(value)
        encoded.append(text)
        return text

    class NoParsing:
        @staticmethod
        def loads(text):
            raise AssertionError(f"a stored entry was parsed to be sent: {text[:60]}")

    monkeypatch.setattr(logentry, "_dumps", counting_dumps)
    monkeypatch.setattr(logentry, "json", NoParsing)
    run_id = service.start_run(service.create_graph(LOOP).graph_id, {}).run_id
    for connection_id in ("c1", "c2", "late"):
        stream.connect(connection_id)
    stream.subscribe("c1", run_id)
    stream.subscribe("c2", run_id)

    # WHEN it runs, the broadcaster handed each stored entry as the table stream carries
    # it, and the late client replays it
    while (message := queue.pop()) is not None:
        commits = []
        asyncio.run(service.process_step(message.run_id, message.step, commits.append))
        for commit in commits:
            (entry,) = store.list_entries(run_id, after=commit.step - 1, limit=1)
            stream.on_log(run_id, entry)
            if commit.status in TERMINAL:
                stream.on_run_end(run_id)
    stream.subscribe("late", run_id)

    # THEN each entry was encoded once, when committed, and each client got those texts
    stored = store.list_entries(run_id)
    assert [entry.seq for entry in stored] == [0, 1, 2]
    assert encoded == [entry.text for entry in stored]
    frames = [entry.text.encode() for entry in stored]
    for connection_id in ("c1", "c2", "late"):
        sent = [data for c, data in pusher.posted if c == connection_id]
        assert sent[:-1] == frames
        assert json.loads(sent[-1])["done"] is True


def test_a_live_log_stops_before_a_gap_only_a_fan_outs_late_entry_can_fill():
    from engine.logentry import upto_open_gap

    def cut(entries, after=-1):
        kept = upto_open_gap(entries, after, lambda e: e[0], lambda e: e[1] == "item")
        return [seq for seq, _ in kept]

    # items 3 and 4 written, item 2's entry not yet: stop before the gap
    assert cut([(0, "step"), (1, "step"), (3, "item"), (4, "item")]) == [0, 1]
    assert cut([(3, "item")], after=1) == []
    # a gap followed by the join (or any step) never fills: go on past it
    assert cut([(0, "step"), (2, "item"), (3, "join")]) == [0, 2, 3]
    # ... up to a later gap that may still fill
    assert cut([(0, "step"), (2, "step"), (4, "item")]) == [0, 2]
    assert cut([(0, "step"), (1, "item"), (2, "step")]) == [0, 1, 2]
    assert cut([]) == []


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
        # the edges: half a microsecond either side of a millisecond and of a second
        st.builds(
            lambda s, ms, d: s + ms / 1000 + d,
            st.integers(1_600_000_000, 1_900_000_000),
            st.integers(0, 1000),
            st.sampled_from([0.0, 5e-7, -5e-7, 4.9e-7, -4.9e-7, 1e-9, -1e-9]),
        ),
    )
)
def test_a_log_timestamp_is_datetimes_own_text(ts):
    # GIVEN any epoch time / WHEN a step stamps it / THEN the text is datetime's, to the
    # millisecond, in UTC with a Z (iso_time keeps the last millisecond it formatted)
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    assert iso_time(ts) == expected.replace("+00:00", "Z")
    assert iso_time(ts) == iso_time(ts)  # the remembered millisecond gives the same text


#: Places in a millisecond (seconds from its start): its edges, half a microsecond either
#: side (where datetime rounds into the next one), and its middle.
_IN_A_MILLI = [-5e-7, -3e-7, 0.0, 3e-7, 5e-7, 3.9e-6, 4.1e-6, 5e-4, 9.959e-4, 9.961e-4, 9.995e-4, 9.997e-4]


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(1_600_000_000, 4_294_967_295),
    st.integers(0, 999),
    st.sampled_from(_IN_A_MILLI),
    st.sampled_from(_IN_A_MILLI),
)
def test_a_timestamp_next_to_the_last_one_stamped_is_datetimes_own_text(second, ms, first, then):
    # GIVEN a millisecond just stamped (iso_time remembers its text while timestamps stay
    # well inside it) / WHEN a timestamp in it or next to its edges is stamped / THEN the
    # text is still datetime's
    start = second + ms / 1000
    iso_time(start + first)
    ts = start + then
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    assert iso_time(ts) == expected.replace("+00:00", "Z")
