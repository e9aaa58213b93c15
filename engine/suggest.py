""" "Did you mean …?" for misspelt node, tool and condition names, at a bounded cost.

``difflib`` compares a name with each candidate in time that grows with both lengths;
one full search per unknown name against every node id let a 210 KB graph (200 nodes x
10 unknown targets) cost half a minute of CPU. A :class:`Suggester` serves one
validation: it remembers each name's answer, skips candidates whose lengths alone rule
them out, and stops comparing after :data:`MAX_COMPARISONS` — later names then get no
hint, never a slower answer.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

#: Name comparisons one validation may make (each at most 64 x 64 characters).
MAX_COMPARISONS = 2_000
#: Names longer than this get no hint (valid ids, tools and conditions are ≤ 64 chars).
MAX_NAME_CHARS = 64
#: How similar a candidate must be (difflib's ratio), as ``difflib.get_close_matches``.
CUTOFF = 0.6


class Suggester:
    """Closest known names for one validation, within a budget of comparisons."""

    def __init__(self, budget: int = MAX_COMPARISONS) -> None:
        self.budget = budget
        self.comparisons = 0
        self._answers: dict[tuple[str, str], str | None] = {}

    def closest(self, kind: str, name: str, known: Sequence[str]) -> str | None:
        """The known ``kind`` name most like ``name`` (ties: the first), or None."""
        key = (kind, name)
        if key not in self._answers:
            self._answers[key] = self._search(name, known)
        return self._answers[key]

    def hint(self, kind: str, name: str, known: Sequence[str]) -> str:
        """`` (did you mean 'x'?)`` when a close name exists, else the empty string."""
        match = self.closest(kind, name, known)
        return f" (did you mean {match!r}?)" if match is not None else ""

    def _search(self, name: str, known: Sequence[str]) -> str | None:
        if not name or len(name) > MAX_NAME_CHARS:
            return None
        matcher = difflib.SequenceMatcher()
        matcher.set_seq2(name)  # difflib caches its analysis of the second sequence
        best, best_ratio = None, CUTOFF
        for candidate in known:
            size = len(candidate) + len(name)
            # The ratio is at most 2 x the shorter length / the sum of lengths.
            if size > 2 * MAX_NAME_CHARS or 2 * min(len(candidate), len(name)) < CUTOFF * size:
                continue
            if self.comparisons >= self.budget:
                break
            self.comparisons += 1
            matcher.set_seq1(candidate)
            if (
                matcher.quick_ratio() >= best_ratio
                and (ratio := matcher.ratio()) >= best_ratio
                and (ratio > best_ratio or best is None)
            ):
                best, best_ratio = candidate, ratio
        return best
