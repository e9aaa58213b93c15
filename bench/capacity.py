"""DynamoDB's billing rules, applied to the items a call read or wrote.

moto accepts ``ReturnConsumedCapacity`` but reports placeholders (1.0 per write call, 0.5
per GetItem, nothing for TransactWriteItems) rather than sizes, so the benchmarks compute
read and write request units from the items themselves, by the rules of
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html
and .../read-write-operations.html:

- item size: attribute names (UTF-8) plus values; a string its UTF-8 length, a number
  about one byte per two significant digits plus one, binary its length, null and
  boolean one byte, a map or list 3 bytes plus, per element, 1 byte and its size (a map
  element also its key);
- a write unit covers 1 KB of item: PutItem and DeleteItem the larger of the old and the
  new item, UpdateItem the larger of the item before and after, however little changed;
  TransactWriteItems two units per KB of each item;
- a read unit covers 4 KB: GetItem the item (at least one unit, half for an eventually
  consistent read), BatchGetItem each item on its own, Query the sum of what it returns;
- each global secondary index whose keys an item gains, loses or changes costs an index
  write (1 KB of index entry per unit; a changed key is a delete plus a put: two writes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Item = dict[str, dict[str, Any]]

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4 * 1024
#: DynamoDB's bookkeeping per index entry, counted in the entry's size.
INDEX_ENTRY_OVERHEAD = 100


def number_size(text: str) -> int:
    """Bytes a DynamoDB number takes: one per two significant digits, plus one."""
    digits = Decimal(text).normalize().as_tuple().digits
    significant = len(digits) if any(digits) else 1
    return math.ceil(significant / 2) + 1


def value_size(value: dict[str, Any]) -> int:
    (kind, raw), *_ = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        return number_size(raw)
    if kind == "B":
        return len(raw)
    if kind in ("NULL", "BOOL"):
        return 1
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in raw.items())
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in raw)
    if kind == "SS":
        return sum(len(s.encode()) for s in raw)
    if kind == "NS":
        return sum(number_size(n) for n in raw)
    if kind == "BS":
        return sum(len(b) for b in raw)
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: Item | None) -> int:
    """An item's size in bytes as DynamoDB bills it (0 for no item)."""
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def read_units(size: int, *, consistent: bool) -> float:
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return units if consistent else units / 2


@dataclass(frozen=True, slots=True)
class Index:
    """A global secondary index: its key attributes and the table's (KEYS_ONLY projection)."""

    name: str
    keys: tuple[str, ...]
    table_keys: tuple[str, ...]

    def entry(self, item: Item | None) -> Item | None:
        """The item's index entry, or None when the item lacks an index key (sparse)."""
        if not item or any(k not in item for k in self.keys):
            return None
        return {k: item[k] for k in (*self.table_keys, *self.keys)}


@dataclass(slots=True)
class Capacity:
    """Request units one call consumed, by the rules above."""

    read: float = 0.0
    write: float = 0.0
    index_write: float = 0.0
    item_bytes: list[int] = field(default_factory=list)  # the size each write was billed on
    index_changes: list[str] = field(default_factory=list)  # e.g. "gsi1 delete", "gsi1 put"

    def add(self, other: Capacity) -> None:
        self.read += other.read
        self.write += other.write
        self.index_write += other.index_write
        self.item_bytes += other.item_bytes
        self.index_changes += other.index_changes


def index_writes(
    before: Item | None, after: Item | None, indexes: tuple[Index, ...]
) -> tuple[float, list[str]]:
    """Index write units for an item going from ``before`` to ``after``."""
    units, notes = 0.0, []
    for index in indexes:
        old, new = index.entry(before), index.entry(after)
        if old == new:
            continue
        for entry, what in ((old, "delete"), (new, "put")):
            if entry is not None:
                units += write_units(item_size(entry) + INDEX_ENTRY_OVERHEAD)
                notes.append(f"{index.name} {what}")
    return units, notes


def item_write(
    before: Item | None, after: Item | None, indexes: tuple[Index, ...], *, factor: int = 1
) -> Capacity:
    """A put, update or delete of one item: units on the larger image, times ``factor``."""
    size = max(item_size(before), item_size(after))
    index_units, notes = index_writes(before, after, indexes)
    return Capacity(
        write=factor * write_units(size), index_write=index_units, item_bytes=[size], index_changes=notes
    )
