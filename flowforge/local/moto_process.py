"""moto in a process of its own: the local stack's second core.

The local stack is CPU-bound, and one Python process runs on one core at a time. About
half of a step's CPU is moto answering requests (DynamoDB, SQS) and journaling them; the
other half is the handlers, botocore, the gateway and the pollers. :class:`MotoProcess`
runs :class:`~flowforge.local.aws.MotoServer` — the same server, lock and journal — in a
child process, so the two halves run side by side.

It stands in for ``MotoServer`` in the local stack (same methods). The handlers'
requests still skip HTTP: botocore's ``before-send`` hands each request, already
serialized, over a Unix socket (a pool of connections, one per request in flight) to
the child, which answers it as ``MotoServer`` answers in-process requests. Everything
outside the stack (the CLI, your boto3) reaches the child's HTTP port as before. The
stream poller reads the table's stream records and the journal's trim through the same
connections; the child tells the parent when journaled writes added stream records.

The child lives only as long as its parent: it exits when its stdin, a pipe the parent
holds, reaches end of file — also when the parent is killed with ``kill -9`` — and
ignores Ctrl-C (its parent stops it once the handlers that need it have drained). Every
DynamoDB write it acknowledged is journaled first, whichever process dies.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HeadersDict
from botocore.handlers import BUILTIN_HANDLERS

from flowforge.local.aws import ResponseBody, UnsignedRequests, request_bytes
from flowforge.local.journal import Journal
from flowforge.local.objects import ObjectFiles

log = logging.getLogger("flowforge.local")

#: The directory ``flowforge`` is imported from: the child imports the same code.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0


class MotoProcessError(RuntimeError):
    """The moto process did not start, or died."""


# -- the child ------------------------------------------------------------------------------
def _child(fd: int, address: str) -> None:
    from flowforge.local.aws import MotoServer

    server = MotoServer(bound=socket.socket(fileno=fd))
    server.start()
    listener = Listener(address, family="AF_UNIX")
    threading.Thread(target=_exit_with_parent, name="lifeline", daemon=True).start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        connection = listener.accept()
        threading.Thread(target=_serve, args=(server, connection), name="moto-ipc", daemon=True).start()


def _exit_with_parent() -> None:
    """The parent holds our stdin: its end (exit, crash, kill -9) is ours."""
    while sys.stdin.buffer.read(1 << 16):
        pass
    os._exit(0)


def _serve(server: Any, connection: Connection) -> None:
    """One parent thread's requests, one after another."""
    with connection:
        while True:
            try:
                message = pickle.loads(connection.recv_bytes())
            except (EOFError, OSError):
                return
            kind, *args = message
            if kind == "watch":
                _watch(server, connection)
                return
            try:
                reply: tuple[Any, ...] = ("ok", _handle(server, kind, args))
            except Exception as exc:  # the parent raises it where it called
                log.exception("moto process: %s failed", kind)
                reply = ("raise", exc)
            try:
                connection.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
            except (EOFError, OSError):
                return


def _handle(server: Any, kind: str, args: list[Any]) -> Any:
    if kind == "request":
        method, url, headers, body = args
        request = AWSPreparedRequest(method, url, HeadersDict(headers), body, stream_output=False)
        response = server.answer(request)
        return response.status_code, list(response.headers.items()), response.content
    if kind == "stream_records_after":
        return server.stream_records_after(*args)
    if kind == "trim":
        return server.trim(*args)
    if kind == "journal_writes":
        path, table, region = args
        return server.journal_writes(Journal(Path(path)), table, region)
    if kind == "persist_objects":
        root, buckets = args
        return server.persist_objects(ObjectFiles(Path(root), buckets))
    raise ValueError(f"unknown request {kind!r}")


def _watch(server: Any, connection: Connection) -> None:
    """Tell the parent, on ``connection``, each time journaled writes added stream
    records (a burst of them is one message)."""
    news = threading.Event()
    server.on_stream_records(news.set)
    while True:
        news.wait()
        news.clear()
        try:
            connection.send_bytes(b"")
        except (EOFError, OSError):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowforge.local.moto_process")
    parser.add_argument("--fd", type=int, required=True, help="the bound, listening socket of moto's port")
    parser.add_argument("--address", required=True, help="the Unix socket the parent connects to")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the stack stops on it, and
    # stops this process once its handlers have drained (they still need moto).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _child(args.fd, args.address)
    return 0


# -- the parent -----------------------------------------------------------------------------
class MotoProcess:
    """``MotoServer``'s interface, the server in a child process (see the module docstring).
    The port is bound here, so a taken one is an ``OSError`` (EADDRINUSE) at once."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5000) -> None:
        self._socket: socket.socket | None = socket.create_server((host, port))
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.endpoint = f"http://{bound_host}:{bound_port}"
        self._directory = tempfile.mkdtemp(prefix="flowforge-moto-")  # 0700: ours alone
        self._address = os.path.join(self._directory, "moto.sock")
        self._process: subprocess.Popen[bytes] | None = None
        self._connections: list[Connection] = []  # every one opened, to close at stop
        self._idle: list[Connection] = []
        self._connections_lock = threading.Lock()
        self._netloc = urlsplit(self.endpoint).netloc
        self._unsigned = UnsignedRequests(self._netloc)
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Start the child; return once it serves (MotoProcessError if it does not)."""
        assert self._socket is not None, "started once"
        fd = self._socket.fileno()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowforge.local.moto_process",
                "--fd",
                str(fd),
                "--address",
                self._address,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(fd,),
            env=env,
        )
        self._socket.close()  # the child's now
        self._socket = None
        ready = _read_line(self._process, READY_TIMEOUT_S)
        if ready != b"ready\n":
            self.stop()
            raise MotoProcessError(f"the moto process did not start (it said {ready!r})")

    def serve_in_process(self) -> None:
        """From now on, boto3 clients made in this process send their requests to this
        server's endpoint to the child over its Unix socket (see aws.MotoServer)."""
        if ("before-send", self._dispatch) not in BUILTIN_HANDLERS:
            BUILTIN_HANDLERS.append(("before-send", self._dispatch))
        self._unsigned.register()

    def _dispatch(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        if urlsplit(request.url).netloc != self._netloc:
            return None
        body = request_bytes(request)
        headers = [
            (name, value.decode() if isinstance(value, bytes) else value)
            for name, value in request.headers.items()
        ]
        status, answer_headers, content = self._call("request", request.method, request.url, headers, body)
        return AWSResponse(request.url, status, HeadersDict(answer_headers), ResponseBody(content))

    def journal_writes(self, journal: Journal, table: str, region: str) -> None:
        """As ``MotoServer.journal_writes``: the child appends to ``journal``'s file (this
        process must not write it any more)."""
        journal.close()
        self._call("journal_writes", str(journal.path), table, region)

    def persist_objects(self, objects: ObjectFiles) -> None:
        self._call("persist_objects", str(objects.root), sorted(objects.buckets))

    def on_stream_records(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from a thread of this process) whenever journaled writes
        added stream records."""
        connection = self._connect()
        connection.send_bytes(pickle.dumps(("watch",)))

        def watch() -> None:
            with contextlib.suppress(EOFError, OSError):
                while True:
                    connection.recv_bytes()
                    callback()

        self._watcher = threading.Thread(target=watch, name="moto-stream-news", daemon=True)
        self._watcher.start()

    def trim(self, table: str, region: str, through_sequence: str | None) -> None:
        self._call("trim", table, region, through_sequence)

    def stream_records_after(
        self, table: str, region: str, sequence: str | None, most: int
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("stream_records_after", table, region, sequence, most)
        return result

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            BUILTIN_HANDLERS.remove(("before-send", self._dispatch))
        self._unsigned.unregister()
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.close()
            self._connections.clear()
            self._idle.clear()
        process = self._process
        if process is not None and process.poll() is None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # its lifeline: it exits
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        shutil.rmtree(self._directory, ignore_errors=True)

    # -- the connections ---------------------------------------------------------------------
    def _connect(self) -> Connection:
        if self._process is None or self._process.poll() is not None:
            raise MotoProcessError("the moto process is not running")
        connection = Client(self._address, family="AF_UNIX")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _call(self, kind: str, *args: Any) -> Any:
        """One request on an idle connection (a new one when none is idle): threads come
        and go (pools made per batch), connections stay, as many as calls ever overlapped."""
        with self._connections_lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect()
        try:
            connection.send_bytes(pickle.dumps((kind, *args), protocol=pickle.HIGHEST_PROTOCOL))
            outcome, value = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError) as exc:
            connection.close()
            raise MotoProcessError(f"the moto process is gone ({exc})") from exc
        with self._connections_lock:
            self._idle.append(connection)
        if outcome == "raise":
            raise value
        return value


def _read_line(process: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """The first line the child prints (b"" if it exits or says nothing in time)."""
    assert process.stdout is not None
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout_s)
    return line[0] if line else b""


if __name__ == "__main__":
    raise SystemExit(main())
