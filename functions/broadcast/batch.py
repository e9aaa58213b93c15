"""One stream batch of the broadcaster: the changes worth acting on, each run's served
concurrently.

A batch holds many records of few runs (every step's commit is one). Delivery sends a
subscription everything it lacks, so of a run's log entries in one batch only the newest
needs a wake-up, and none does when the run's end follows (the end sends the remaining
entries, then done). Run ends and owed replays are kept as they are. Runs are served
side by side, each in stream order: a slow run or connection does not hold up the others,
and a backlog costs one delivery per run rather than one per step — which keeps live logs
within a second of the steps under load (on the local stack, where one moto serializes
every request, too).

A run whose changes fail reports its first record: the stream retries from there, and
delivery is idempotent, so what was already sent after it is not sent again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.step import TERMINAL

#: Runs served at once within one batch (each mostly waits on DynamoDB and @connections).
RUN_WORKERS = 16

Record = dict[str, Any]


def _image(record: Record) -> dict[str, Any]:
    return record.get("dynamodb", {}).get("NewImage", {})


def _run_id(record: Record) -> str | None:
    return _image(record).get("run_id", {}).get("S")


def _is_log(record: Record) -> bool:
    return _image(record).get("kind", {}).get("S") == "log"


def _is_run_end(record: Record) -> bool:
    """The slot that ends its run: a step's last log item, or a cancel's or dead letter's
    finish item (every run ends in a slot)."""
    image = _image(record)
    return (
        image.get("kind", {}).get("S") in ("log", "finish") and image.get("status", {}).get("S") in TERMINAL
    )


def plan(records: Sequence[Record]) -> list[list[Record]]:
    """The records to act on, grouped by run, each group in stream order."""
    groups: dict[str | None, list[Record]] = {}
    for record in records:
        groups.setdefault(_run_id(record), []).append(record)
    planned = []
    for run_id, group in groups.items():
        if run_id is None:
            planned += [[record] for record in group]  # not one of ours: acted on (ignored) alone
            continue
        kept = [
            record
            for i, record in enumerate(group)
            # A later log entry or the run's end delivers everything this one would.
            if not (_is_log(record) and any(_is_log(r) or _is_run_end(r) for r in group[i + 1 :]))
        ]
        planned.append(kept)
    # Ended runs first: their followers wait for done, the others for one more entry.
    return sorted(planned, key=lambda group: not any(_is_run_end(record) for record in group))


def process(records: Sequence[Record], act: Callable[[Record], Any]) -> dict[str, list[dict[str, str]]]:
    """Act on the planned records, runs concurrently: the runs that ended first, on their
    own, then the others; the partial batch response (each failed run's first record,
    the stream retries from the earliest)."""
    groups = plan(records)
    ended = sum(1 for group in groups if any(_is_run_end(record) for record in group))

    def serve(group: list[Record]) -> str | None:
        for record in group:
            try:
                act(record)
            except Exception:  # reported to the stream, which retries from this record
                return group[0]["dynamodb"]["SequenceNumber"]
        return None

    # A follower waits for done; the others for one more entry, which can wait until the
    # ended runs' deliveries are out rather than share the CPU and the table with them.
    failed = _serve_all(groups[:ended], serve) + _serve_all(groups[ended:], serve)
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failed if seq is not None]}


def _serve_all(groups: list[list[Record]], serve: Callable[[list[Record]], str | None]) -> list[str | None]:
    if len(groups) <= 1:
        return [serve(group) for group in groups]
    with ThreadPoolExecutor(max_workers=min(RUN_WORKERS, len(groups))) as pool:
        return list(pool.map(serve, groups))
