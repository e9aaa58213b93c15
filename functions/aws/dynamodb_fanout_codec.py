"""The fan-out items of the single-table layout (see dynamodb_codec.py): a fan-out's
counting item ``FAN#<step>`` and its execution slots."""

from __future__ import annotations

from collections.abc import Collection

from engine.cost import EMPTY, Usage
from engine.logentry import stored_entry
from engine.ports import ExecutionRecord, FanOutRecord
from functions.aws.dynamodb_codec import (
    COST,
    SLOT_DIGITS,
    Item,
    N,
    S,
    _json,
    _num,
    _str,
    entry_attributes,
    json_or_null,
    log_from_item,
    run_pk,
    slot_key,
    step_of,
)

#: A claim's value is ``offset + CLAIM_UNIT * (4 * attempt + 2 * final + failed)``: the
#: claim's step (``base + offset - 1``) and what it was, in one number written by the
#: same update that takes the step. Steps are below max_steps (at most 25,000).
CLAIM_UNIT = 100_000


def fanout_key(run_id: str, base: int) -> Item:
    return {"pk": S(run_pk(run_id)), "sk": S(f"FAN#{base:0{SLOT_DIGITS}d}")}


def fanout_item(
    run_id: str,
    base: int,
    total: int,
    now: float,
    expires_at: int | None,
    prior: int | None = None,
    carried: Collection[int] = (),
    cost: Usage = EMPTY,
) -> Item:
    """A new fan-out's counting item; a redriven one's ``carried`` items are done from the
    start, claimed as attempt 0 at no step, and ``p`` names the fan-out they come from."""
    carried_claim = N(CLAIM_UNIT * claim_code(0, True, False))
    item = {
        **fanout_key(run_id, base),
        "kind": S("fanout"),
        "t": N(total),
        "n": N(0),
        "d": N(len(carried)),
        "f": N(0),
        "at": N(now),
        "c": {"M": {str(index): carried_claim for index in carried}},
    }
    if prior is not None:
        item["p"] = N(prior)
    if expires_at is not None:
        item["expires_at"] = N(expires_at)
    if cost:
        item[COST] = S(cost.encode())
    return item


#: A claim's ``c`` entry is billed about this much besides its index's digits: the
#: element's byte and a number of 6-7 digits (see :func:`claim_item_bytes`).
CLAIM_ENTRY_BYTES = 5


def claim_item_bytes(opened_bytes: int, claimed: int) -> int:
    """About what the counting item is billed on once ``claimed`` items hold a claim,
    from its size when it was opened (``opened_bytes``): each claim adds an element to
    ``c`` (an item's retries rewrite its element; a redriven fan-out's carried items
    are in ``opened_bytes``) and ``n``, ``d`` and ``f`` grow by a byte per two digits."""
    digits = sum(len(str(index)) for index in range(claimed))
    counters = 3 * (len(str(claimed)) // 2)
    return opened_bytes + claimed * CLAIM_ENTRY_BYTES + digits + counters


def fanout_base(item: Item) -> int:
    """The step a counting item's fan-out started at (its sort key ``FAN#<step>``)."""
    return int(item["sk"]["S"].removeprefix("FAN#"))


def claim_code(attempt: int, final: bool, failed: bool) -> int:
    """What a claim records besides its step (see :data:`CLAIM_UNIT`)."""
    return 4 * attempt + 2 * final + failed


def claim_floor(attempt: int) -> int:
    """Every claim of an attempt before ``attempt`` is below this value."""
    return CLAIM_UNIT * 4 * attempt


def decode_claim(value: int) -> tuple[int, int, bool]:
    """(offset, attempt, final) of a claim's value."""
    code, offset = divmod(value, CLAIM_UNIT)
    return offset, code // 4, bool(code & 2)


def fanout_from_item(run_id: str, base: int, item: Item) -> FanOutRecord:
    claims = {}
    for index, value in item.get("c", {}).get("M", {}).items():
        _, attempt, final = decode_claim(int(value["N"]))
        claims[int(index)] = (attempt, final)
    fin = _num(item, "fin")
    prior = _num(item, "p")
    return FanOutRecord(
        run_id=run_id,
        base=base,
        total=int(_num(item, "t") or 0),
        executed=int(_num(item, "n") or 0),
        done=int(_num(item, "d") or 0),
        failed=int(_num(item, "f") or 0),
        updated_at=float(_num(item, "at") or 0),
        claims=claims,
        closed_at=None if fin is None else base + int(fin),
        prior=None if prior is None else int(prior),
        cost=Usage.decode(_str(item, COST)),
    )


def execution_item(
    run_id: str, base: int, record: ExecutionRecord, now: float, expires_at: int | None
) -> Item:
    """Exec slot ``record.step``: one execution's log entry and value."""
    item = {
        **slot_key(run_id, record.step),
        "kind": S("exec"),
        "run_id": S(run_id),
        "seq": N(record.step),
        "fan": N(base),
        "index": N(record.index),
        "attempt": N(record.attempt),
        "xstatus": S(record.status),
        **entry_attributes(stored_entry(run_id, record.entry, record.step)),
        "value": json_or_null(record.value),
        "error": json_or_null(record.error),
        "updated_at": S(record.entry.get("started_at", "")),
        "next_at": N(now),
    }
    if record.blob is not None:  # the value is offloaded: the item holds its reference
        item["blob"] = S(record.blob)
    if record.cost:
        item[COST] = S(record.cost.encode())
    if expires_at is not None:
        item["expires_at"] = N(expires_at)
    return item


def execution_from_item(item: Item) -> ExecutionRecord:
    return ExecutionRecord(
        step=step_of(item),
        index=int(item["index"]["N"]),
        attempt=int(item["attempt"]["N"]),
        status=_str(item, "xstatus") or "",
        value=_json(item, "value"),
        error=_json(item, "error"),
        entry=log_from_item(item),
        blob=_str(item, "blob"),
        cost=Usage.decode(_str(item, COST)),
    )


def is_execution(item: Item, base: int | None = None) -> bool:
    """An exec slot (of the fan-out at ``base``, when given)."""
    return _str(item, "kind") == "exec" and (base is None or _num(item, "fan") == str(base))
