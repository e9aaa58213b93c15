"""Headless Chromium for the console's browser tests and screenshots: the system's
Chromium (Debian's package; ``make test`` installs it when missing), driven by
Playwright, never a browser download. The machine's network is closed, so everything
Chromium would fetch by itself is off."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("FLOWFORGE_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1360, "height": 900}


def launch(playwright: Any) -> Any:
    """The system Chromium, headless."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)


class PageErrors:
    """What went wrong in a page: console errors and uncaught exceptions."""

    def __init__(self, page: Any) -> None:
        self.messages: list[str] = []
        page.on("console", lambda msg: self.messages.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.messages.append(f"uncaught: {exc}"))
