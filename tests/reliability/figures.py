"""The figures the reliability tests report: cases run, faults injected, runs under load.

Tests add to ``.flowforge/reliability.json`` (per mode, fast or long, one section per
test, merged under a file lock so pytest-xdist workers can write at once; a new test run
replaces the last one's figures); ``make reliability`` prints them at the end with
``python -m tests.reliability.figures``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections import Counter
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PATH = ROOT / ".flowforge" / "reliability.json"
#: FLOWFORGE_RELIABILITY=long selects the long versions (make reliability).
LONG = os.environ.get("FLOWFORGE_RELIABILITY", "").lower() == "long"
MODE = "long" if LONG else "fast"
#: One test run's figures replace the last run's: make reliability names its run (it runs
#: pytest twice); xdist gives its workers one id; a plain pytest is one process.
RUN = (
    os.environ.get("FLOWFORGE_RELIABILITY_RUN")
    or os.environ.get("PYTEST_XDIST_TESTRUNUID")
    or str(os.getpid())
)


def scaled(fast: int, long: int) -> int:
    """``fast`` in ``make test``, ``long`` in ``make reliability``."""
    return long if LONG else fast


@contextmanager
def _locked():
    PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(PATH.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record(section: str, figures: Mapping[str, Any], *, quiet: bool = False) -> None:
    """Add ``figures`` to ``section``: numbers and counters are summed, the rest replaced.

    Printed too (seen with ``pytest -s``) unless ``quiet``.
    """
    with _locked():
        data = _load()
        if data.get(MODE, {}).get("run") != RUN:
            data[MODE] = {"run": RUN}
        current = data[MODE].setdefault(section, {})
        for key, value in figures.items():
            old = current.get(key)
            if isinstance(value, Mapping) and isinstance(old, Mapping):
                current[key] = dict(Counter(old) + Counter(value))
            elif isinstance(value, int | float) and isinstance(old, int | float):
                current[key] = round(old + value, 3)
            else:
                current[key] = dict(value) if isinstance(value, Mapping) else value
        PATH.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if not quiet:
        print(f"\n[reliability:{section}] {json.dumps(dict(figures), sort_keys=True)}")


def _load() -> dict[str, Any]:
    data = json.loads(PATH.read_text()) if PATH.exists() else {}
    return {mode: data[mode] for mode in ("fast", "long") if isinstance(data.get(mode), dict)}


def report(data: dict[str, Any]) -> str:
    lines = []
    for mode, sections in sorted(data.items()):
        lines.append(f"Reliability figures, {mode} versions ({PATH.relative_to(ROOT)}):")
        for section, figures in sorted(sections.items()):
            if section == "run":
                continue
            lines.append(f"  {section}:")
            for key, value in sorted(figures.items()):
                lines.append(f"    {key}: {json.dumps(value, sort_keys=True)}")
    return "\n".join(lines)


def main() -> int:
    if not PATH.exists():
        print("no reliability figures recorded", file=sys.stderr)
        return 1
    print(report(_load()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
