"""The machine a run happened on, the printed table and ``results.json``."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.figure import Figure, format_number

#: Versions worth knowing when comparing runs.
PACKAGES = ("pydantic", "boto3", "botocore", "aws-lambda-powertools", "langgraph")


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, Python and the versions of the packages being compared."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": {name: _version(name) for name in PACKAGES},
        # Other work on the machine shows up in the spread of the samples.
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def describe_machine(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"{info['python']} on {info['platform']}"
    )


def table(figures: Sequence[Figure]) -> str:
    """A Markdown table: it reads in a terminal and pastes into the README."""
    header = ("benchmark", "figure", "median", "min", "max", "unit", "runs", "target", "met", "note")
    rows = []
    for f in figures:
        verdict = {True: "✓", False: "✗ MISS", None: ""}[f.met]
        rows.append((
            f.benchmark, f.name, format_number(f.median) if f.measured else "n/a", format_number(f.min),
            format_number(f.max), f.unit, str(len(f.samples)), str(f.target) if f.target else "",
            verdict, f.note,
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    numeric = {2, 3, 4, 6}

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|".join("-" * (w + 1) + ":" if i in numeric else "-" * (w + 2) for i, w in enumerate(widths))
    return "\n".join([line(header), f"|{rule}|", *(line(r) for r in rows)])


def write_results(
    path: Path,
    figures: Sequence[Figure],
    *,
    machine: dict[str, Any],
    selected: Sequence[str],
    quick: bool,
    duration_s: float,
    errors: dict[str, str],
) -> None:
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
        "quick": quick,
        "benchmarks": list(selected),
        "duration_s": round(duration_s, 1),
        "machine": machine,
        "errors": errors,
        "figures": [f.to_dict() for f in figures],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
