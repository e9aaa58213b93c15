"""The local stack as a user runs it: ``python -m flowforge.local`` in a subprocess, on
free ports, with a temporary data directory, reached only over HTTP and WebSocket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalStack:
    """One ``flowforge dev`` process; ``restart`` keeps its ports and data directory."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.moto_port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "flowforge.local",
            "--port", str(self.port), "--moto-port", str(self.moto_port),
            "--data-dir", str(self.data_dir), "--no-example",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = {
            name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "FLOWFORGE_"))
        }
        env["PYTHONPATH"] = str(ROOT)
        env["FLOWFORGE_TOOLS_MODULES"] = "workflows,tests.e2e.slow_tools"
        return env

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=ROOT, env=self.environment(), stdout=log, stderr=subprocess.STDOUT
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"the local stack exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/graphs", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        pytest.fail(f"the local stack was not ready within {READY_TIMEOUT_S} s:\n{self.log()}")

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        """Ctrl-C, then kill if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def request(
        self, method: str, path: str, body: object = None, raw: bytes | None = None
    ) -> tuple[int, object]:
        """A plain HTTP call (for fixtures and the CLI tests); the tests use aiohttp."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """One local stack shared by the tests that do not restart it."""
    directory = tmp_path_factory.mktemp("stack")
    local = LocalStack(directory / "data", directory / "stack.log")
    local.start()
    yield local
    local.stop()


@pytest.fixture
def own_stack(tmp_path):
    """A stack of the test's own, to kill and restart."""
    local = LocalStack(tmp_path / "data", tmp_path / "stack.log")
    yield local
    local.kill()
