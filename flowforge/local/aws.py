"""Embedded moto as AWS: its server in a thread of this process, and the environment that
points boto3 (the handlers' and ours) at it.

Why not ``moto.server.ThreadedMotoServer`` as is: it binds inside its thread, so a taken
port hangs ``start()`` instead of raising; here the socket is bound in the caller. And
moto serves each request in its own thread with no lock around DynamoDB: a transaction
that fails its condition restores a deep copy of the whole table taken before it ran,
erasing any write another thread made meanwhile (and the copy itself can crash with
"dictionary changed size during iteration"). FlowForge's own writes are single items,
but the journal below needs each request's stream records on their own, so DynamoDB
(and stream) requests are serialized.
SQS is left concurrent: its long polls must not hold a lock.

The same middleware makes DynamoDB durable (see journal.py): after each request, still
under the lock, the stream records it added to the table's shard are appended to the
journal, and the response leaves only once an fsync covers them (and everything the
request could have read). The records are read from moto's memory after the request,
not caught as moto adds them: a transaction that fails adds records, then puts back the
copy of the table it took, shard included, and those records never happened.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from flowforge.local.journal import Journal, JournalError, to_wire

log = logging.getLogger("flowforge.local")

#: Credentials moto accepts; never real ones, so nothing can reach an AWS account.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_DYNAMODB_TARGETS = ("DynamoDB_", "DynamoDBStreams_")


class _QuietHandler(MotoRequestHandler):
    """moto's request handler without a terminal line per AWS call."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class _JournaledTable:
    """A table whose writes are journaled: the stream records moto added since the last look."""

    def __init__(self, journal: Journal, table: str, region: str) -> None:
        self.journal = journal
        self.table = table
        self.region = region
        shard = self._shard()
        # What the stream holds already (a restore's own writes) is journaled already.
        self.through = shard.starting_sequence_number + len(shard.items) - 1

    def _shard(self) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        # Looked up every time: a failed transaction puts its copy of the table in place.
        table = dynamodb_backends[DEFAULT_ACCOUNT_ID][self.region].get_table(self.table)
        if table.stream_shard is None:
            raise ValueError(f"table {self.table} has no stream: the local stack journals its stream records")
        return table.stream_shard

    def append_new(self) -> int:
        """Append the records added since the last call (none: a read); the position to sync."""
        shard = self._shard()
        first = shard.starting_sequence_number  # sequence numbers are the index plus the start
        new = shard.items[max(0, self.through + 1 - first) :]
        position = self.journal.append([to_wire(record.to_json()) for record in new])
        self.through = first + len(shard.items) - 1
        return position


class _SerializeDynamoDB:
    """WSGI middleware: one DynamoDB request at a time, each answered once it is journaled
    (see the module docstring)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.journaled: _JournaledTable | None = None
        self.on_stream_records: Callable[[], None] | None = None
        self._failed = False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith(_DYNAMODB_TARGETS):
            return self.app(environ, start_response)
        try:
            with self.lock:
                # Drain the body under the lock: moto builds the response lazily.
                body = b"".join(self.app(environ, start_response))
                journaled = self.journaled
                through = journaled.through if journaled is not None else 0
                position = journaled.append_new() if journaled is not None else 0
            if journaled is not None:
                journaled.journal.sync(position)  # outside the lock: requests go on meanwhile
                if journaled.through != through and self.on_stream_records is not None:
                    self.on_stream_records()  # acknowledged writes: the stream has news
        except JournalError as exc:
            return self._not_journaled(exc, start_response)
        return [body]

    def _not_journaled(self, exc: JournalError, start_response: Callable[..., Any]) -> Iterable[bytes]:
        """A 500 as DynamoDB sends it: the write may be in moto, but it is not acknowledged."""
        if not self._failed:
            self._failed = True
            log.error("DynamoDB requests fail from now on: %s", exc)
        body = {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": str(exc)}
        start_response(
            "500 Internal Server Error", [("Content-Type", "application/x-amz-json-1.0")], sys.exc_info()
        )
        return [json.dumps(body).encode()]


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves each host: moto finds out by
    listing its own package directory for every request (in a profile with 20 runs in
    flight, ~8% of the local stack's busy time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backends: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        if host not in self._backends:
            self._backends[host] = super().get_backend_for_host(host)
        return self._backends[host]


class MotoServer:
    """moto's server on ``host:port`` (0 picks a free port). Binding happens here."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5000) -> None:
        self._app = _SerializeDynamoDB(_Dispatcher(create_backend_app))
        self._server: BaseWSGIServer = make_server(
            host, port, self._app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._thread.start()

    def journal_writes(self, journal: Journal, table: str, region: str) -> None:
        """From now on, answer a DynamoDB request only once ``table``'s writes are in ``journal``."""
        with self._app.lock:
            self._app.journaled = _JournaledTable(journal, table, region)

    def on_stream_records(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from a request thread) whenever journaled writes added stream records."""
        self._app.on_stream_records = callback

    def trim(self, table: str, region: str, through_sequence: str | None) -> None:
        """Forget what moto would keep forever and the local stack no longer needs.

        - Stream records up to ``through_sequence`` (read, and journaled when written):
          DynamoDB keeps them 24 hours, moto forever (and a transaction deep-copies them
          with the table).
        - Shard iterators: every poll takes fresh ones (see pollers.StreamPoller).
        - moto's registry of every model instance ever created (for its dashboard),
          which holds every copy of the table a transaction makes: ~1 MB per commit
          with a few hundred runs stored.

        moto runs in this process, so this reaches into it, under the DynamoDB lock.
        """
        from moto.core.model_instances import reset_model_data
        from moto.dynamodb.models import dynamodb_backends
        from moto.dynamodbstreams.models import dynamodbstreams_backends

        with self._app.lock:
            reset_model_data()
            dynamodbstreams_backends[DEFAULT_ACCOUNT_ID][region].shard_iterators.clear()
            shard = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].get_table(table).stream_shard
            if shard is None or through_sequence is None:
                return
            # Sequence numbers are the index plus the start: move the start with the cut.
            consumed = int(through_sequence) + 1 - shard.starting_sequence_number
            if consumed > 0:
                del shard.items[:consumed]
                shard.starting_sequence_number += consumed

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever: only if it runs
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def local_aws_environment(endpoint: str, region: str) -> dict[str, str]:
    """Variables that make every boto3 client in this process talk to moto only.

    The user's AWS config and credential files are masked too: a profile with SSO, a
    role or its own endpoint must not leak into the local stack.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        **FAKE_CREDENTIALS,
    }


def apply_environment(
    values: dict[str, str], drop: Iterable[str] = ("AWS_PROFILE", "AWS_SESSION_TOKEN")
) -> None:
    """Set ``values`` in this process's environment (the handlers read it at cold start)."""
    for name in drop:
        os.environ.pop(name, None)
    os.environ.update(values)
