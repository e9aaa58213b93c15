"""What a benchmark reports: a :class:`Figure` per measured quantity, with its samples."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Target:
    """A bound the figure's median should respect, e.g. ``Target("<=", 20)``."""

    op: Literal["<=", ">="]
    value: float

    def met_by(self, x: float) -> bool:
        return x <= self.value if self.op == "<=" else x >= self.value

    def __str__(self) -> str:
        return f"{'≤' if self.op == '<=' else '≥'} {self.value:g}"


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured quantity over repeated runs (``samples``, in ``unit``).

    A figure with no samples stands for something that could not be measured here;
    ``note`` says why (e.g. an optional package is missing).
    """

    benchmark: str
    name: str
    unit: str
    samples: Sequence[float]
    target: Target | None = None
    note: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return bool(self.samples)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def min(self) -> float | None:
        return min(self.samples) if self.samples else None

    @property
    def max(self) -> float | None:
        return max(self.samples) if self.samples else None

    @property
    def met(self) -> bool | None:
        """Whether the median meets the target; None without a target or samples."""
        if self.target is None or not self.samples:
            return None
        return self.target.met_by(self.median)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "runs": len(self.samples),
            "samples": list(self.samples),
            "target": str(self.target) if self.target else None,
            "met": self.met,
            "note": self.note,
            **({"details": dict(self.details)} if self.details else {}),
        }


def format_number(x: float | None) -> str:
    """Three or so significant digits, no exponent: 0.349, 9.80, 11.0, 1,234."""
    if x is None:
        return ""
    magnitude = abs(x)
    if magnitude >= 100:
        return f"{x:,.0f}"
    if magnitude >= 10:
        return f"{x:.1f}"
    if magnitude >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Paired ratios, sample by sample: both lists come from the same repetitions."""
    if len(numerators) != len(denominators):
        raise ValueError(f"cannot pair {len(numerators)} samples with {len(denominators)}")
    return [n / d for n, d in zip(numerators, denominators, strict=True)]
