"""Logs made comparable across runners.

A fan-out's executions are numbered in the order they finished, which differs from one
runner (or one delivery order) to another: each run of them is compared as a sorted list,
with the seqs it took (the same contiguous range). When a run reached max_steps inside a
fan-out, which executions made it there differs too: then only their number counts.
"""

from __future__ import annotations

from typing import Any

#: What a log entry must agree on; started_at and duration_ms are timing, run_id differs.
LOG_FIELDS = ("seq", "node", "attempt", "status", "result", "next", "error")


def canonical_logs(logs: list[dict[str, Any]]) -> list[Any]:
    canonical: list[Any] = []
    group: list[dict[str, Any]] = []
    for entry in [*logs, None]:
        if entry is not None and ("index" in entry or "branch" in entry):
            group.append(entry)
            continue
        if group:
            rows = sorted(
                (str(e.get("index", e.get("branch"))), e["attempt"], repr([e.get(k) for k in LOG_FIELDS[1:]]))
                for e in group
            )
            cut = entry is not None and (entry.get("error") or {}).get("type") == "MaxStepsExceeded"
            canonical.append({"seqs": [e["seq"] for e in group], "executions": len(rows) if cut else rows})
            group = []
        if entry is not None:
            canonical.append({k: entry.get(k) for k in LOG_FIELDS})
    return canonical


def log_length(canonical: list[Any]) -> int:
    """Entries in a canonical log (a run of executions counts each of its seqs)."""
    return sum(len(e["seqs"]) if "seqs" in e else 1 for e in canonical)
