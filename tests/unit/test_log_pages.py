"""Paging a run's log by count and size, above any store: what a page holds, where the
next one starts, and how much of the store it reads to find out."""

from __future__ import annotations

from typing import Any

import pytest

from engine.logpages import FIRST_CHUNK, entry_size, read_log_page


class CountingLog:
    """A run's log in a list, counting what is read from it (what paging reads of a RunLog)."""

    def __init__(self, sizes: list[int]) -> None:
        self.entries = [{"seq": seq, "result": "x" * size} for seq, size in enumerate(sizes)]
        self.calls: list[int] = []
        self.read = 0

    def list_logs(self, run_id: str, after: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        self.calls.append(limit)
        chunk = self.entries[after + 1 : after + 1 + limit]
        self.read += len(chunk)
        return chunk


def seqs(page) -> list[int]:
    return [entry["seq"] for entry in page.entries]


def test_a_page_of_large_entries_reads_little_more_than_it_holds():
    # GIVEN 1,000 entries of 32 KiB and a 1 MiB budget
    log = CountingLog([32 * 1024] * 1000)

    page = read_log_page(log, "r1", max_bytes=1024 * 1024)

    # THEN the page holds what fits, having read one entry more (to know a next page exists)
    assert len(page.entries) == (1024 * 1024) // entry_size(log.entries[0]) == 31
    assert page.next_after == 30
    assert log.read == 32 and len(log.calls) == 2


def test_a_page_of_small_entries_stops_at_the_count_in_two_reads():
    log = CountingLog([50] * 5000)

    page = read_log_page(log, "r1", limit=1000)

    assert seqs(page) == list(range(1000)) and page.next_after == 999
    assert log.calls == [FIRST_CHUNK, 1001 - FIRST_CHUNK] and log.read == 1001


@pytest.mark.parametrize("limit", [4, 5, 100])
def test_a_page_reaching_the_last_entry_has_no_next(limit):
    log = CountingLog([10] * 5)

    page = read_log_page(log, "r1", after=0, limit=limit)

    assert seqs(page) == [1, 2, 3, 4][:limit] and page.next_after is None


def test_an_entry_over_the_budget_makes_a_page_alone():
    log = CountingLog([10, 5000, 10])

    pages = [read_log_page(log, "r1", after=after, max_bytes=1000) for after in (-1, 0, 1)]

    assert [(seqs(p), p.next_after) for p in pages] == [([0], 0), ([1], 1), ([2], None)]


def test_the_budget_holds_entries_exactly_up_to_it():
    log = CountingLog([100] * 10)
    size = entry_size(log.entries[0])

    assert seqs(read_log_page(log, "r1", max_bytes=3 * size)) == [0, 1, 2]
    assert seqs(read_log_page(log, "r1", max_bytes=3 * size - 1)) == [0, 1]


def test_an_empty_log_is_one_empty_last_page():
    assert read_log_page(CountingLog([]), "r1") == read_log_page(CountingLog([1]), "r1", after=0)
    assert read_log_page(CountingLog([]), "r1").entries == []


@pytest.mark.parametrize(("limit", "max_bytes"), [(0, 100), (1, 0)])
def test_a_page_must_be_able_to_hold_something(limit, max_bytes):
    with pytest.raises(ValueError, match="at least one entry"):
        read_log_page(CountingLog([1]), "r1", limit=limit, max_bytes=max_bytes)
