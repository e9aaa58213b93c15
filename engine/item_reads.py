"""A batch's reads of runs, shared by the item messages of one fan-out.

Kept apart from :mod:`engine.fanout_service` so that the step handler can make one per
invocation without importing the fan-out machinery at cold start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.ports import RunRecord

#: How long a batch's read of a run serves its other item messages (seconds): they start
#: together, so their reads would be made within moments of each other anyway.
SHARED_READ_MAX_AGE_S = 0.5


class ItemReads:
    """The runs a batch's item messages read, shared by the items of one fan-out.

    The items of a map arrive together (the opening sends them ten to a request) and a
    batch starts its item messages at once: each would read the run within moments of
    the others, for the same fan-out step. The first one's read serves the others that
    start within :data:`SHARED_READ_MAX_AGE_S` of it — one query for up to ten items —
    each getting its own copy; an item that starts later reads again, so a cancel is
    seen as soon as before. The read is counted once, in the cost of the item that made
    it. One per invocation (a batch): never across invocations.
    """

    def __init__(self, clock: Callable[[], float], max_age_s: float = SHARED_READ_MAX_AGE_S) -> None:
        self._clock = clock
        self._max_age_s = max_age_s
        self._runs: dict[tuple[str, int], tuple[float, RunRecord | None]] = {}

    def run(self, run_id: str, base: int, read: Callable[[], RunRecord | None]) -> RunRecord | None:
        """The run for an item of the fan-out at step ``base``: shared, or ``read()``."""
        now = self._clock()
        known = self._runs.get((run_id, base))
        if known is None or now - known[0] > self._max_age_s:
            known = self._runs[(run_id, base)] = (now, read())
        run = known[1]
        return None if run is None else replace(run, state=dict(run.state))
