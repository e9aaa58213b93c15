"""What the CLI prints about a run: the outcome first, then the state keys the run changed.

A run's state also holds its input (the whole document to summarize) and every
intermediate value, so printing it all buries the result. By default ``flowforge run``,
``state`` and ``--follow`` print::

    completed: run 4d5c… (10 steps)
      summary = "Each light was given its own signature…"
      summary_length = 226
      (3 unchanged input keys; --full prints the whole run)
      cost ≈ $0.0000112, an estimate (Lambda $0.0000013, SQS $0.0000020, DynamoDB $0.0000079)

The keys shown are those some step wrote, read from the run's log (a log entry's
``result`` is the step's update; an oversized one keeps its ``keys``), last written
first. ``--full`` prints the whole run as indented JSON, ``--json`` as one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine import RunResult

#: Keys shown before "… N more keys"; values are cut to one terminal line.
SHOWN_KEYS = 5
VALUE_CHARS = 100


def compact(value: Any, width: int) -> str:
    """``value`` as one line of JSON, cut with an ellipsis past ``width`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def outcome_line(view: dict[str, Any], steps: int | None = None, elapsed_s: float | None = None) -> str:
    """``completed (5 steps, 1.2 s)``, ``failed at node 'x': Type: message (…)`` or
    ``cancelled: run cancelled by request (…)`` — for a run view or a ``done`` message."""
    parts = [f"{steps} step{'s' if steps != 1 else ''}"] if steps is not None else []
    if elapsed_s is not None:
        parts.append(f"{elapsed_s:.1f} s")
    summary = f" ({', '.join(parts)})" if parts else ""
    status, error = view.get("status"), view.get("error")
    if status == "running":
        return f"running at node {view.get('current_node')!r}{summary}"
    waiting = view.get("waiting")
    if status == "waiting" and isinstance(waiting, dict):
        if waiting.get("callback_url"):
            return (
                f"waiting at node {waiting.get('node')!r} for its callback until {waiting.get('expires_at')}"
                f"{summary}\n  answer: flowforge approve {waiting['callback_url']}  (or reject)"
            )
        return f"waiting at node {waiting.get('node')!r} until {waiting.get('until')}{summary}"
    if not error:
        return f"{status}{summary}"
    where = f" at node {error['node']!r}" if error.get("node") else ""
    kind = f"{error.get('type')}: " if error.get("type") and error.get("type") != "Cancelled" else ""
    return f"{status}{where}: {kind}{error.get('message')}{summary}"


def changed_keys(logs: list[dict[str, Any]]) -> list[str]:
    """State keys some step wrote, the most recently written first."""
    order: dict[str, None] = {}
    for entry in reversed(logs):
        result = entry.get("result")
        if not isinstance(result, dict):
            continue
        keys = result.get("keys", []) if result.get("_truncated") is True else list(result)
        for key in keys:
            order.setdefault(key, None)
    return list(order)


def run_summary(view: dict[str, Any], *, outcome: bool = True) -> str:
    """The outcome line (unless already shown) and the values of the keys the run
    changed (``view`` with its logs)."""
    logs = view.get("logs") or []
    lines = [f"{outcome_line(view, view.get('step'))}  [run {view.get('run_id')}]"] if outcome else []
    state = view.get("state") or {}
    keys = [key for key in changed_keys(logs) if key in state]
    for key in keys[:SHOWN_KEYS]:
        lines.append(f"  {key} = {compact(state[key], VALUE_CHARS)}")
    hidden, unchanged = len(keys) - SHOWN_KEYS, len(state) - len(keys)
    rest = [f"{hidden} more changed key{'s' if hidden != 1 else ''}"] if hidden > 0 else []
    rest += [f"{unchanged} unchanged input key{'s' if unchanged != 1 else ''}"] if unchanged else []
    if rest:
        lines.append(f"  ({', '.join(rest)}; --full prints the whole run)")
    if isinstance(view.get("cost"), dict):
        lines.append(f"  {cost_line(view['cost'])}")
    return "\n".join(lines)


#: The services of a cost breakdown, as the cost line names them.
SERVICES = {"lambda": "Lambda", "sqs": "SQS", "dynamodb": "DynamoDB", "s3": "S3", "bedrock": "Bedrock"}


def cost_line(cost: dict[str, Any]) -> str:
    """``cost ≈ $0.0000112, an estimate (Lambda $…, SQS $…, DynamoDB $…)``: a run's cost
    (``GET /graph/state``'s ``cost``, or a done message's), its non-zero services."""
    lines = cost.get("breakdown") or {}
    parts = [
        f"{name} {dollars(lines[key]['usd'])}"
        for key, name in SERVICES.items()
        if lines.get(key, {}).get("usd")
    ]
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"cost ≈ {dollars(cost.get('usd') or 0)}, an estimate{detail}"


def dollars(usd: float) -> str:
    """USD with three significant digits however small: ``$0.0000112``, ``$1.25``."""
    if usd <= 0:
        return "$0"
    decimals = max(2, 2 - math.floor(math.log10(usd)))
    text = f"{usd:.{decimals}f}"
    return "$" + (text.rstrip("0") if decimals > 2 else text)


# -- run-local -----------------------------------------------------------------------------


def render_json(result: RunResult) -> str:
    data = result.to_dict()
    return json.dumps({k: data[k] for k in ("status", "state", "logs", "error", "run_id")}, indent=2)


_COLUMNS = ("seq", "node", "attempt", "status", "duration_ms", "next")
_RIGHT_ALIGNED = {"seq", "attempt", "duration_ms"}


def render_pretty(result: RunResult) -> str:
    """The log as a table, the final state as indented JSON, then a status line."""
    rows = [
        [
            str(log["seq"]),
            log["node"],
            str(log["attempt"]),
            log["status"],
            f"{log['duration_ms']:.1f}",
            log["next"] or "-",
        ]
        for log in result.logs
    ]
    widths = [max(len(cell) for cell in column) for column in zip(_COLUMNS, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if name in _RIGHT_ALIGNED else cell.ljust(width)
            for name, cell, width in zip(_COLUMNS, cells, widths, strict=True)
        )
        return "  ".join(padded).rstrip()

    steps = f"{len(result.logs)} step{'s' if len(result.logs) != 1 else ''}"
    outcome = outcome_line({"status": result.status, "error": result.error})
    return "\n".join(
        [
            line(_COLUMNS),
            *(line(row) for row in rows),
            "",
            "state:",
            json.dumps(result.state, indent=2, ensure_ascii=False),
            "",
            f"{outcome} ({steps}, run {result.run_id})",
        ]
    )
