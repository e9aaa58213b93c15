"""Log entry → WebSocket frame: CPU per entry on the broadcaster, and at commit.

A log entry is stored as the text of its WebSocket message, built once at commit
(engine/logentry.py); the broadcaster and the replay post that text as the frame. Before,
the slot held the tick's dict as JSON, which the broadcaster parsed, reshaped into the
message (``started_at`` → ``ts``, ``run_id`` first) and encoded again for every entry.

Three entries as a step stores them (a small result, 4 KB, 30 KB — a log result is cut at
32 KiB), each read from a stream record's image as the broadcaster reads it:

- *now*: ``entry_from_item(image).frame()`` — the stored text, made bytes;
- *previous pipeline*: what the broadcaster did with the same entry stored the old way
  (json.loads, ``log_message``, ``encode_message``), reproduced here as the reference;
- *previous shape, read now*: an old item read by today's reader (a run started before a
  deploy): its message is built on read, as before;
- *commit*: building the stored text from the tick's dict, now (``stored_entry``) and
  before (one ``json`` encoding of the dict).

Each sample is the CPU time of a batch of entries divided by their number, in µs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from bench.figure import Figure, format_number
from engine.logentry import stored_entry
from engine.logmessages import encode_message, log_message
from functions.aws import dynamodb_codec as codec

NAME = "frames"
BATCH, QUICK_BATCH = 2000, 500
REPEATS, QUICK_REPEATS = 15, 5
RUN_ID = "3f1c0e0c8c4d4b8e9a7a6f5e4d3c2b1a"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _entry(result_bytes: int) -> dict[str, Any]:
    words = ("résumé of the chunk " * (result_bytes // 20 + 1))[:result_bytes]
    return {
        "seq": 41,
        "node": "summarize",
        "attempt": 1,
        "status": "ok",
        "started_at": "2026-06-15T12:00:03.120Z",
        "duration_ms": 12.5,
        "result": {"summary": words, "n": 41},
        "next": "merge",
        "error": None,
        "notes": {"input_tokens": 812, "output_tokens": 96},
    }


def _image(entry_text: str, extra: str | None = None) -> codec.Item:
    image = {
        "kind": codec.S("log"),
        "run_id": codec.S(RUN_ID),
        "seq": codec.N(41),
        "entry": codec.S(entry_text),
    }
    if extra is not None:
        image[codec.ENTRY_EXTRA] = codec.S(extra)
    return image


def _previous_pipeline(image: codec.Item) -> bytes:
    entry = json.loads(image["entry"]["S"])
    return encode_message(log_message(image["run_id"]["S"], entry))


def _us_per_call(fn: Callable[[], Any], batch: int) -> float:
    started = time.process_time()
    for _ in range(batch):
        fn()
    return (time.process_time() - started) / batch * 1e6


def run(quick: bool) -> list[Figure]:
    batch, repeats = (QUICK_BATCH, QUICK_REPEATS) if quick else (BATCH, REPEATS)
    figures: list[Figure] = []
    for size in (100, 4_000, 30_000):
        entry = _entry(size)
        stored = stored_entry(RUN_ID, entry)
        now = _image(stored.text, stored.extra)
        old = _image(_dumps({**entry, "run_id": RUN_ID}))
        assert codec.entry_from_item(now).frame() == _previous_pipeline(old)  # same bytes out
        label = f"{len(stored.text.encode()) / 1024:.1f} KB entry"
        paths: dict[str, Callable[[], Any]] = {
            "broadcaster now": lambda now=now: codec.entry_from_item(now).frame(),
            "broadcaster, previous pipeline": lambda old=old: _previous_pipeline(old),
            "broadcaster, previous shape read now": lambda old=old: codec.entry_from_item(old).frame(),
            "commit now": lambda entry=entry: stored_entry(RUN_ID, entry),
            "commit, previous": lambda entry=entry: _dumps({**entry, "run_id": RUN_ID}),
        }
        samples: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(repeats):  # the paths take turns: a noisy neighbour hits them alike
            for name, fn in paths.items():
                samples[name].append(_us_per_call(fn, batch))
        medians = {name: sorted(s)[len(s) // 2] for name, s in samples.items()}
        print(
            f"   {label}: " + ", ".join(f"{name} {format_number(m)} µs" for name, m in medians.items()),
            flush=True,
        )
        for name, values in samples.items():
            figures.append(Figure(NAME, f"{name}: {label}", "µs CPU/entry", values))
        figures.append(
            Figure(
                NAME,
                f"broadcaster previous ÷ now: {label}",
                "x",
                [
                    p / n
                    for p, n in zip(
                        samples["broadcaster, previous pipeline"], samples["broadcaster now"], strict=True
                    )
                ],
                note="CPU per entry of the previous pipeline over today's, paired by repetition",
            )
        )
    return figures
