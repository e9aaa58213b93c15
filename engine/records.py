"""Records made on every step, immutable to the type checker, cheap to build.

A frozen dataclass sets each field through ``object.__setattr__``: building one costs
about nine times what a plain slotted dataclass does, and a step builds several (its
cursor, its result, its commit). :func:`record` gives a slotted dataclass that the type
checker holds frozen (PEP 681 ``dataclass_transform``), built at the plain one's cost.
Code treats them as values: ``dataclasses.replace`` makes a changed copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def record(cls: type[T]) -> type[T]:
    """A slotted dataclass, equal and hashed by value, read-only to the type checker."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
