"""Headless Firefox for the console's browser tests: the system's Firefox ESR (Debian's
``firefox-esr``; ``make test`` installs it when missing), driven over WebDriver BiDi, the
W3C protocol Firefox serves itself — no geckodriver, no browser download.

Playwright drives Chromium here; its Firefox support needs either its own patched build
(a download) or, over BiDi, commands that Firefox ESR does not implement yet
(``emulation.setMediaFeaturesOverride``, sent for every new page). What the console tests
need — open a page, run a script in it, read what it logged — is a handful of BiDi
commands, so this module speaks them directly over aiohttp's WebSocket client.

Synchronous on purpose, like the Playwright tests beside it: the connection lives on an
event loop of its own thread, each call waits for its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

FIREFOX = Path(os.environ.get("FLOWFORGE_FIREFOX", "/usr/bin/firefox-esr"))
#: Everything Firefox would fetch or check by itself is off: the machine's network is closed.
PREFS = {
    "app.normandy.enabled": False,
    "app.update.auto": False,
    "app.update.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.page": 0,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "extensions.update.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.server": "",
}
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 60.0


class BidiError(RuntimeError):
    """A command Firefox answered with an error, or a script that threw."""


class Firefox:
    """One headless Firefox with one tab; ``errors`` collects what its pages logged as
    errors (console errors and uncaught exceptions) since the last :meth:`goto`."""

    def __init__(self, executable: Path = FIREFOX) -> None:
        if not executable.exists():
            raise RuntimeError(f"{executable} is missing: apt-get install -y firefox-esr (make test does)")
        self.errors: list[str] = []
        self._profile = Path(tempfile.mkdtemp(prefix="flowforge-firefox-"))
        (self._profile / "user.js").write_text(
            "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items())
        )
        self._process = subprocess.Popen(
            [
                str(executable),
                "--headless",
                "--no-remote",
                *("--profile", str(self._profile)),
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="firefox-bidi", daemon=True)
        self._thread.start()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        try:
            self._call(self._connect(self._port()))
            self._send("session.new", {"capabilities": {}})
            self._send("session.subscribe", {"events": ["log.entryAdded"]})
            self.context = self._send("browsingContext.getTree", {})["contexts"][0]["context"]
        except BaseException:
            self.close()
            raise

    # -- the page ---------------------------------------------------------------------------

    def goto(self, url: str) -> None:
        """Open ``url`` and wait for its load event; forget the previous page's errors."""
        self.errors.clear()
        self._send("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    @property
    def url(self) -> str:
        return str(self.evaluate("location.href"))

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (a promise is awaited)."""
        answer = self._send(
            "script.evaluate",
            {
                "expression": f"Promise.resolve({expression}).then(v => JSON.stringify(v === undefined ? null : v))",
                "target": {"context": self.context},
                "awaitPromise": True,
                "resultOwnership": "none",
            },
        )
        if answer.get("type") == "exception":
            details = answer.get("exceptionDetails", {})
            raise BidiError(f"{expression!r} threw: {details.get('text')}")
        return json.loads(answer["result"]["value"])

    def wait_for(self, expression: str, timeout_s: float = COMMAND_TIMEOUT_S) -> Any:
        """Wait until ``expression`` is truthy in the page; its value. (A wait for the page's
        behaviour, generous because the machine may be busy — not a speed check.)"""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still false after {timeout_s} s (last: {value!r})")
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def fill(self, selector: str, text: str) -> None:
        """Set a text field's value as typing would: an ``input`` event follows."""
        self.evaluate(
            f"(el => {{ el.value = {json.dumps(text)};"
            " el.dispatchEvent(new Event('input', {bubbles: true})); })"
            f"(document.querySelector({json.dumps(selector)}))"
        )

    def text(self, selector: str) -> str:
        return str(self.evaluate(f"document.querySelector({json.dumps(selector)}).textContent"))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._disconnect())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    # -- the protocol -----------------------------------------------------------------------

    def _port(self) -> int:
        """The port Firefox chose, which it writes to the profile once it listens."""
        deadline = time.monotonic() + START_TIMEOUT_S
        server = self._profile / "WebDriverBiDiServer.json"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{FIREFOX} exited with {self._process.returncode} at start")
            with contextlib.suppress(Exception):
                return int(json.loads(server.read_text())["ws_port"])
            time.sleep(0.1)
        raise TimeoutError(f"Firefox did not start WebDriver BiDi in {START_TIMEOUT_S} s")

    async def _connect(self, port: int) -> None:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(f"ws://127.0.0.1:{port}/session", max_msg_size=0)
        self._reader = asyncio.ensure_future(self._read())

    async def _disconnect(self) -> None:
        self._reader.cancel()
        await self._ws.close()
        await self._http.close()

    async def _read(self) -> None:
        async for frame in self._ws:
            message = json.loads(frame.data)
            if message.get("type") == "event":
                self._on_event(message["method"], message["params"])
                continue
            future = self._pending.pop(message.get("id"), None)
            if future is None or future.done():
                continue
            if message.get("type") == "error":
                future.set_exception(BidiError(f"{message.get('error')}: {message.get('message')}"))
            else:
                future.set_result(message.get("result", {}))
        for future in self._pending.values():
            future.set_exception(BidiError("Firefox closed the connection"))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "log.entryAdded" and params.get("level") == "error":
            self.errors.append(str(params.get("text")))

    async def _command(self, method: str, params: dict[str, Any]) -> Any:
        command_id = next(self._ids)
        future = self._loop.create_future()
        self._pending[command_id] = future
        await self._ws.send_str(json.dumps({"id": command_id, "method": method, "params": params}))
        return await asyncio.wait_for(future, COMMAND_TIMEOUT_S)

    def _send(self, method: str, params: dict[str, Any]) -> Any:
        return self._call(self._command(method, params))

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(COMMAND_TIMEOUT_S + 5)
