"""The local stack in a subprocess, as a user runs it (``python -m flowforge.local``):
on free ports, with a data directory of its own, reached over HTTP — for end-to-end
tests and benchmarks of workflows.

    stack = LocalStackProcess(tmp / "data", tmp / "stack.log", tools_modules="workflows,my_tools")
    stack.start()                      # returns once the API answers
    status, graph = stack.request("POST", "/graph/create", definition)
    stack.stop()                       # Ctrl-C (stack.kill() is kill -9)

With ``options=["--auth", "iam"]`` the stack verifies SigV4; give ``signing_key`` (access
key id, secret) and :meth:`LocalStackProcess.request` signs its calls with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The directory ``flowforge`` is imported from: the child imports the same code.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0


class LocalStackError(RuntimeError):
    """The local stack exited, or did not answer in time (the message ends with its log)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalStackProcess:
    """One ``flowforge dev`` process; ``start`` again after ``stop``/``kill`` keeps its ports
    and data directory (a restart)."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        *,
        tools_modules: str | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        options: Sequence[str] = (),
        signing_key: tuple[str, str] | None = None,
        region: str = "us-east-1",
    ) -> None:
        """``options``: more ``flowforge dev`` options (``--auth iam``, ``--isolation principal``);
        ``signing_key``: what :meth:`request` signs with."""
        self.data_dir = data_dir
        self.log_path = log_path
        self.tools_modules = tools_modules
        self.options = list(options)
        self.signing_key = signing_key
        self.region = region
        self.ready_timeout_s = ready_timeout_s
        self.port, self.moto_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def moto_url(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "flowforge.local",
            "--port", str(self.port), "--moto-port", str(self.moto_port),
            "--data-dir", str(self.data_dir), "--no-example", *self.options,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        """This process's environment without its AWS and FlowForge settings: the stack
        sets its own, and the caller's must not leak in."""
        env = {
            name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "FLOWFORGE_"))
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
        if self.tools_modules is not None:
            env["FLOWFORGE_TOOLS_MODULES"] = self.tools_modules
        return env

    def start(self) -> None:
        """Start the process and return once the API answers (LocalStackError if not)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=SOURCE_ROOT, env=self.environment(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalStackError(f"the local stack exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.request("GET", "/graphs", timeout_s=2)[0] == 200:
                    return
            except (OSError, ValueError):  # not listening yet, or not answering JSON yet
                pass
            time.sleep(0.1)
        raise LocalStackError(
            f"the local stack was not ready within {self.ready_timeout_s:g} s:\n{self.log()}"
        )

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        """Ctrl-C, then kill if it does not exit in time; its exit code (None if killed)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self, tail: int = 4000) -> str:
        """The end of what the stack printed."""
        return self.log_path.read_text(errors="replace")[-tail:]

    def cpu_s(self) -> float | None:
        """CPU seconds the process and its child processes (the moto process) have used
        (user + system); None off Linux."""
        assert self.process is not None
        try:
            return sum(_cpu_s(pid) for pid in (self.process.pid, *_children(self.process.pid)))
        except OSError:
            return None

    def signed_headers(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> dict[str, str]:
        """``headers`` plus a SigV4 signature with :attr:`signing_key`, as API Gateway wants."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        assert self.signing_key is not None
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
        SigV4Auth(Credentials(*self.signing_key), "execute-api", self.region).add_auth(request)
        return dict(request.headers.items())

    def request(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, timeout_s: float = 30
    ) -> tuple[int, Any]:
        """One HTTP call to the API: (status, decoded JSON body)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        if self.signing_key is not None:
            headers = self.signed_headers(method, f"{self.url}{path}", data or b"", headers)
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid``, from every one of its threads."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            children += [int(child) for child in (task / "children").read_text().split()]
    return children
