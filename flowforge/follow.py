"""Showing a run's log as it happens: a compact progress display on a terminal, JSON
lines otherwise (``--json``), one line per node either way.

On a terminal the last line is a live status (``running refine… 3.2 s``) rewritten in
place; it is erased before each entry is printed, so what stays on screen is the log.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, TextIO

from flowforge.client import ClientError
from flowforge.outcome import compact, outcome_line

_MARKS = {"ok": "✓", "retry": "↻", "caught": "↪", "failed": "✗", "redriven": "⟳"}
_ASCII_MARKS = {"ok": "+", "retry": "~", "caught": ">", "failed": "x", "redriven": "@"}
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_TICK_S = 0.1


def entry_line(entry: dict[str, Any], unicode: bool = True) -> str:
    """``  ✓ #3  refine      12 ms  → refine  {"summary":"…"}``"""
    marks = _MARKS if unicode else _ASCII_MARKS
    status = entry.get("status") or "ok"
    mark = marks.get(status, "?")
    duration = entry.get("duration_ms")
    took = " " * 10
    if isinstance(duration, int | float):
        took = f"{duration:7.1f} ms" if duration < 10 else f"{duration:7.0f} ms"
    attempt = f" (attempt {entry['attempt']})" if (entry.get("attempt") or 1) > 1 else ""
    following = entry.get("next")
    arrow = f"  → {following}" if following else ""
    line = f"  {mark} #{entry.get('seq', '?'):<3} {entry.get('node') or '?':<16}{took}{arrow}{attempt}"
    if entry.get("error"):
        error = entry["error"]
        line += f"  {error.get('type')}: {error.get('message')}"
    elif entry.get("result") is not None:
        line += "  " + compact(entry["result"], 60)
    return line


class Display:
    """Where follow output goes; ``live`` adds the in-place status line."""

    def __init__(self, out: TextIO | None = None, *, as_json: bool = False, live: bool | None = None) -> None:
        self.out = sys.stdout if out is None else out  # the current stdout, not the one at import
        self.as_json = as_json
        self.live = (not as_json and self.out.isatty()) if live is None else live
        encoding = (getattr(self.out, "encoding", None) or "").lower()
        self.unicode = encoding.startswith("utf")
        self._status = ""

    def _clear(self) -> None:
        if self._status:
            self.out.write("\r\x1b[2K")
            self._status = ""

    def status(self, text: str) -> None:
        if self.live:
            self._clear()
            self.out.write(text)
            self._status = text
            self.out.flush()

    def message(self, message: dict[str, Any]) -> None:
        """One message of the run's stream: a log entry or the final ``done``."""
        self._clear()
        if self.as_json:
            self.out.write(json.dumps(message, ensure_ascii=False) + "\n")
        elif not message.get("done"):
            self.out.write(entry_line(message, self.unicode) + "\n")
        self.out.flush()

    def line(self, text: str) -> None:
        self._clear()
        self.out.write(text + "\n")
        self.out.flush()


async def show(messages: AsyncIterator[dict[str, Any]], display: Display) -> dict[str, Any]:
    """Print ``messages`` until ``done``; returns the done message (with ``steps`` counted)."""
    started = time.monotonic()
    steps = 0
    current = "starting"
    frame = 0
    pending: asyncio.Task[Any] | None = None
    iterator = aiter(messages)
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            finished, _ = await asyncio.wait({pending}, timeout=_TICK_S if display.live else None)
            if not finished:
                frame += 1
                spinner = _SPINNER[frame % len(_SPINNER)] if display.unicode else "-\\|/"[frame % 4]
                display.status(f"  {spinner} {current}… {time.monotonic() - started:.1f} s")
                continue
            try:
                message = pending.result()
            except StopAsyncIteration:
                raise ClientError("the log stream ended before the run finished") from None
            pending = None
            display.message(message)
            if message.get("done"):
                if not display.as_json:
                    display.line(outcome_line(message, steps, time.monotonic() - started))
                return {**message, "steps": steps}
            steps += 1
            current = (
                f"after {message.get('node')}" if not message.get("next") else f"running {message['next']}"
            )
    finally:
        if pending is not None:
            pending.cancel()
