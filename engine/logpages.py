"""A run's log read a page at a time, bounded by entry count and by size.

A run keeps up to ``max_steps`` (at most 25,000) log entries, each with a result of up
to 32 KiB, so "all the logs" do not fit one HTTP response (Lambda answers at most 6 MB).
A page stops at ``limit`` entries or when the next entry would take its JSON past
``max_bytes``, whichever comes first, and says where to continue. The store is read by
count, in chunks sized from the entries seen so far, so a page of large entries does
not read many entries it then leaves out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.logentry import StoredEntry
    from engine.ports import RunRecord

#: Bytes of log-entry JSON one page holds (the run's state comes on top, at most its cap):
#: far under Lambda's 6 MB response limit, and quick to send and parse.
MAX_LOG_PAGE_BYTES = 1024 * 1024
#: Entries one page holds at most (and the default page size).
MAX_LOG_PAGE_ENTRIES = 1000
#: Entries asked of the store first; later reads are sized from the entries seen.
FIRST_CHUNK = 25

# As the HTTP API serializes (compact, non-ASCII escaped): an entry never takes more room
# in a response than measured here.
_dumps = json.JSONEncoder(separators=(",", ":")).encode


class RunLog(Protocol):
    """What reading a run's log needs: the run and its entries (a
    :class:`~engine.ports.RunStore` provides both). Paging reads the entries' fields
    (``list_logs``), the WebSocket replay their stored text (``list_entries``).

    Both must be strongly consistent: a live-log sender woken by an entry must see it.
    """

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def list_logs(self, run_id: str, after: int = -1, limit: int = 1000) -> list[dict[str, Any]]: ...

    def list_entries(self, run_id: str, after: int = -1, limit: int = 1000) -> list[StoredEntry]: ...


@dataclass(frozen=True, slots=True)
class LogPage:
    """Entries in seq order, and the seq to continue after when more remain."""

    entries: list[dict[str, Any]]
    next_after: int | None
    """The last seq of ``entries`` when the log holds more after it; None at its end."""


def entry_size(entry: dict[str, Any]) -> int:
    """Bytes ``entry`` takes in a JSON array (its JSON and a separator)."""
    return len(_dumps(entry)) + 1


def read_log_page(
    logs: RunLog,
    run_id: str,
    after: int = -1,
    *,
    limit: int = MAX_LOG_PAGE_ENTRIES,
    max_bytes: int = MAX_LOG_PAGE_BYTES,
) -> LogPage:
    """The entries with ``seq > after``: at most ``limit`` of them and ``max_bytes`` of JSON.

    An entry larger than ``max_bytes`` on its own still makes a page alone, so paging
    always moves on. ``next_after`` is set only when an entry past the page exists.
    """
    if limit < 1 or max_bytes < 1:
        raise ValueError("a log page holds at least one entry and one byte")
    entries: list[dict[str, Any]] = []
    used = 0
    cursor = after
    ask = min(FIRST_CHUNK, limit + 1)  # one more than the page holds: is there a next page?
    while True:
        chunk = logs.list_logs(run_id, after=cursor, limit=ask)
        for entry in chunk:
            size = entry_size(entry)
            if len(entries) == limit or (entries and used + size > max_bytes):
                return LogPage(entries, entries[-1]["seq"])
            entries.append(entry)
            used += size
        if len(chunk) < ask:
            return LogPage(entries, None)
        cursor = chunk[-1]["seq"]
        fit = max(1, (max_bytes - used) * len(entries) // used) if used < max_bytes else 0
        ask = min(fit + 1, limit + 1 - len(entries))
