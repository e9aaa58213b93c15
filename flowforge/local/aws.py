"""Embedded moto as AWS: its server in a thread of this process, and the environment that
points boto3 (the handlers' and ours) at it.

Why not ``moto.server.ThreadedMotoServer`` as is: it binds inside its thread, so a taken
port hangs ``start()`` instead of raising; here the socket is bound in the caller. And
moto serves each request in its own thread with no lock around DynamoDB, while the
journal below needs each request's stream records on their own, so DynamoDB (and
stream) requests are serialized. SQS is left concurrent: its long polls must not hold
a lock. What this reads of moto's memory is in moto_internals.py.

The same middleware makes DynamoDB durable (see journal.py): after each request, still
under the lock, the stream records it added to the table's shard are appended to the
journal, and the response leaves only once an fsync covers them (and everything the
request could have read: for a request that wrote nothing and names the one partition
it sees — a GetItem, a Query of a partition, a failed conditional write — the last
write to that partition; for any other, every write before it).

The handlers' requests to moto skip the socket (:meth:`MotoServer.serve_in_process`;
the local stack runs this server in a child process, moto_process.py, and hands it
the requests over a Unix socket). Each is still serialized by botocore and parsed back —
only the TCP connection, the HTTP text and the thread werkzeug starts per request are
left out, which were half of a request's CPU; DynamoDB, DynamoDB Streams and SQS
requests (JSON) also skip werkzeug's routing and Flask, going to moto's service
dispatcher as ``mock_aws`` sends them, DynamoDB's under the same lock and journal
(the request is read before the lock is taken), and go unsigned
(:class:`UnsignedRequests`). Everything outside the stack (the CLI, the benchmarks'
clients, yours) uses the server.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any, TypeVar
from urllib.parse import urlsplit

from botocore import UNSIGNED
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HeadersDict
from botocore.handlers import BUILTIN_HANDLERS
from moto.moto_server.werkzeug_app import create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.test import EnvironBuilder

from flowforge.local import moto_internals
from flowforge.local.journal import Journal, JournalError, to_wire
from flowforge.local.objects import ObjectFiles

log = logging.getLogger("flowforge.local")

#: Credentials moto accepts; never real ones, so nothing can reach an AWS account.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_DYNAMODB_TARGETS = ("DynamoDB_", "DynamoDBStreams_")
_T = TypeVar("_T")


class _JournaledTable:
    """A table whose writes are journaled: the stream records moto added since the last look."""

    def __init__(self, journal: Journal, table: str, region: str) -> None:
        self.journal = journal
        self.table = table
        self.region = region
        self.shard = moto_internals.stream_shard(table, region)
        if self.shard is None:
            raise ValueError(f"table {table} has no stream: the local stack journals its stream records")
        self.hash_key: str = self.shard.table.hash_key_attr
        # What the stream holds already (a restore's own writes) is journaled already.
        self.through = moto_internals.last_sequence(self.shard)
        #: Partition (its string key) -> the position of the last append that wrote to it,
        #: while that append may not be on disk yet.
        self._last_writes: dict[str, int] = {}

    def append_new(self) -> int:
        """Append the records added since the last call (none: a read); the position to sync."""
        new = moto_internals.records_after(self.shard, self.through)
        # The journal keeps each record's keys and new image: only those are converted.
        position = self.journal.append([{"dynamodb": _journaled_part(record["dynamodb"])} for record in new])
        self.through = moto_internals.last_sequence(self.shard)
        if new:
            if len(self._last_writes) >= _LAST_WRITES_KEPT:
                synced = self.journal.synced
                self._last_writes = {k: v for k, v in self._last_writes.items() if v > synced}
            for record in new:
                partition = _string_key(record["dynamodb"]["Keys"].get(self.hash_key))
                if partition is not None:
                    self._last_writes[partition] = position
        return position

    def last_write(self, partition: str) -> int:
        """The position to sync before showing what ``partition`` holds: its last write's
        (0 when every write to it is on disk)."""
        return self._last_writes.get(partition, 0)

    def partition_seen(self, action: str, params: Any) -> str | None:
        """The one partition of this table a request that writes nothing can see (None
        when that is not known: it may see the whole table)."""
        if not isinstance(params, dict) or params.get("TableName") != self.table:
            return None
        value: Any = None
        if action in _ONE_ITEM_ACTIONS:
            value = (params.get("Key") or params.get("Item") or {}).get(self.hash_key)
        elif action == "Query" and not params.get("IndexName"):
            value = _queried_partition(params, self.hash_key)
        return _string_key(value)


#: Partitions remembered with their last write before those on disk are forgotten.
_LAST_WRITES_KEPT = 4096
#: Requests on one item, named by its key (or the item itself, for PutItem).
_ONE_ITEM_ACTIONS = frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem"})
#: A key condition's leading ``name = :value``, and what may follow it.
_KEY_EQUALS = re.compile(r"\s*([#\w.-]+)\s*=\s*(:[\w-]+)\s*(?:$|AND\s)", re.IGNORECASE)


def _string_key(value: Any) -> str | None:
    """A string partition key's value (None for any other: numbers have many spellings)."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("S"), str):
        return value["S"]
    return None


def _queried_partition(params: dict[str, Any], hash_key: str) -> Any:
    """The partition key value a Query's key condition names, if it leads with it."""
    expression = params.get("KeyConditionExpression")
    if not isinstance(expression, str) or "(" in expression or re.search(r"\bOR\b", expression, re.I):
        return None
    match = _KEY_EQUALS.match(expression)
    if match is None:
        return None
    name, placeholder = match.groups()
    if name.startswith("#"):
        name = (params.get("ExpressionAttributeNames") or {}).get(name)
    if name != hash_key:
        return None
    return (params.get("ExpressionAttributeValues") or {}).get(placeholder)


def _journaled_part(change: dict[str, Any]) -> dict[str, Any]:
    part = {"Keys": to_wire(change["Keys"])}
    if "NewImage" in change:
        part["NewImage"] = to_wire(change["NewImage"])
    return part


class _SerializeDynamoDB:
    """WSGI middleware: one DynamoDB request at a time, each answered once it is journaled
    (see the module docstring)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.journaled: _JournaledTable | None = None
        self.on_stream_records: Callable[[], None] | None = None
        self.objects: ObjectFiles | None = None
        self._failed = False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith(_DYNAMODB_TARGETS):
            if (
                self.objects is not None
                and environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE")
                and "HTTP_X_AMZ_TARGET" not in environ  # S3 has none; SQS (JSON) does
            ):
                return self._persisting_objects(environ, start_response)
            return self.app(environ, start_response)
        try:
            # Drain the body under the lock: moto builds the response lazily.
            body = self.journaled_answer(lambda: b"".join(self.app(environ, start_response)))
        except JournalError as exc:
            return self._not_journaled(exc, start_response)
        return [body]

    def journaled_answer(self, answer: Callable[[], _T], action: str | None = None, params: Any = None) -> _T:
        """A DynamoDB request's ``answer()``, made under the lock and returned once the
        writes it made are journaled (:class:`JournalError` if they cannot be), and the
        writes it could see: all those made before it, or with the request's ``action``
        and ``params`` (as moto parsed them), when it writes nothing and they say which
        partition it sees, the last one made to it (a run's read then waits for no other
        run's writes)."""
        with self.lock:
            result = answer()
            journaled = self.journaled
            through = journaled.through if journaled is not None else 0
            position = journaled.append_new() if journaled is not None else 0
            if journaled is not None and journaled.through == through and action is not None:
                partition = journaled.partition_seen(action, params)
                if partition is not None:
                    position = journaled.last_write(partition)
        if journaled is not None:
            journaled.journal.sync(position)  # outside the lock: requests go on meanwhile
            if journaled.through != through and self.on_stream_records is not None:
                self.on_stream_records()  # acknowledged writes: the stream has news
        return result

    def direct(
        self, target: str, dispatcher: Callable[..., Any], request: AWSPreparedRequest, body: bytes
    ) -> AWSResponse:
        """A JSON-protocol request (DynamoDB, its stream, SQS) from this process, answered
        by moto's service dispatcher as the server would answer it — DynamoDB's under the
        lock and journaled — without werkzeug's routing and Flask's request and response."""

        # The request is read outside the lock (it touches no backend): the lock, which
        # every DynamoDB request waits for, covers only the answer.
        answer = moto_internals.prepare_directly(
            dispatcher, request.method, request.url, request.headers, body
        )

        try:
            if not target.startswith(_DYNAMODB_TARGETS):
                status, headers, data = answer()
            else:
                action = target.partition(".")[2]
                status, headers, data = self.journaled_answer(answer, action, getattr(answer, "params", None))
        except JournalError as exc:
            status, headers, data = self._not_journaled_answer(exc)
        except Exception as exc:  # moto crashed: a 500, as its server answers over HTTP
            log.exception("moto failed to answer %s", target)
            status, headers, data = _internal_error(target, exc)
        return AWSResponse(request.url, status, HeadersDict(headers), ResponseBody(data))

    def _persisting_objects(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """An S3 write, answered once the object it stored (or removed) is on disk too
        (path-style requests, ``/<bucket>/<key>``: the local endpoint is an IP address)."""
        answer: dict[str, str] = {}

        def remember(status: str, headers: Any, exc_info: Any = None) -> Any:
            answer["status"] = status
            return start_response(status, headers, exc_info)

        body = b"".join(self.app(environ, remember))
        if not answer.get("status", "").startswith("2"):
            return [body]
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        bucket, _, key = path.lstrip("/").partition("/")
        objects = self.objects
        if objects is None or objects.path(bucket, key) is None:
            return [body]
        if environ["REQUEST_METHOD"] == "DELETE":
            objects.delete(bucket, key)
        else:
            data = moto_internals.s3_object(bucket, key)
            if data is not None:
                objects.write(bucket, key, data)  # an OSError fails the request: not acknowledged
        return [body]

    def _not_journaled_answer(self, exc: JournalError) -> tuple[int, dict[str, str], bytes]:
        """A 500 as DynamoDB sends it: the write may be in moto, but it is not acknowledged."""
        if not self._failed:
            self._failed = True
            log.error("DynamoDB requests fail from now on: %s", exc)
        return _json_500("com.amazonaws.dynamodb.v20120810#InternalServerError", str(exc))

    def _not_journaled(self, exc: JournalError, start_response: Callable[..., Any]) -> Iterable[bytes]:
        _, headers, body = self._not_journaled_answer(exc)
        start_response("500 Internal Server Error", list(headers.items()), sys.exc_info())
        return [body]


def _internal_error(target: str, exc: Exception) -> tuple[int, dict[str, str], bytes]:
    """The 500 a JSON-protocol service answers when it fails: botocore retries it, and a
    caller sees a ClientError — never moto's own exception (say, SQS's "Set changed size
    during iteration" when two receives race), which no AWS caller is written to expect."""
    service = (
        "com.amazonaws.dynamodb.v20120810" if target.startswith(_DYNAMODB_TARGETS) else "com.amazonaws.sqs"
    )
    return _json_500(f"{service}#InternalFailure", f"{type(exc).__name__}: {exc}")


def _json_500(error_type: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = {"__type": error_type, "message": message}
    return 500, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(body).encode()


class MotoServer:
    """moto's server on ``host:port`` (0 picks a free port). Binding happens here."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 5000, *, bound: socket.socket | None = None
    ) -> None:
        """``bound``: a socket bound already (its host and port are then ignored)."""
        # The process's moto, for as long as it lives: same answers, less of its CPU.
        moto_internals.partition_queries(setattr)
        moto_internals.plain_json_responses(setattr)
        moto_internals.no_request_id_scans(setattr)
        moto_internals.parsed_update_expressions(setattr)
        moto_internals.sqs_without_scans(setattr)
        moto_internals.sqs_prompt_long_polls(setattr)
        moto_internals.parsed_condition_expressions(setattr)
        moto_internals.update_expressions_checked_once(setattr)
        moto_internals.validated_copies_made_directly(setattr)
        moto_internals.uncopied_query_results(setattr)
        moto_internals.query_items_sized_once(setattr)
        moto_internals.sized_items_once(setattr)
        moto_internals.listed_methods_once(setattr)
        moto_internals.matched_actions_once(setattr)
        moto_internals.stream_records_without_unused_images(setattr)
        self._dispatchers = moto_internals.direct_dispatchers()
        self._app = _SerializeDynamoDB(moto_internals.Dispatcher(create_backend_app))
        # Bound here, so a taken port is an OSError (EADDRINUSE) for the caller to report;
        # werkzeug would print its own lines and exit.
        with bound or socket.create_server((host, port)) as listening:
            host, port = listening.getsockname()[:2]
            self._server: BaseWSGIServer = make_server(
                host,
                port,
                self._app,
                threaded=True,
                request_handler=moto_internals.QuietRequestHandler,
                fd=listening.fileno(),
            )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._netloc = ""  # set by serve_in_process: the host:port requests are answered for
        self._unsigned: UnsignedRequests | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._thread.start()

    def journal_writes(self, journal: Journal, table: str, region: str) -> None:
        """From now on, answer a DynamoDB request only once ``table``'s writes are in ``journal``."""
        with self._app.lock:
            self._app.journaled = _JournaledTable(journal, table, region)

    def persist_objects(self, objects: ObjectFiles) -> None:
        """From now on, answer an S3 write to one of ``objects``' buckets only once its
        object is on disk (see objects.py)."""
        self._app.objects = objects

    def on_stream_records(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from a request thread) whenever journaled writes added stream records."""
        self._app.on_stream_records = callback

    def trim(self, table: str, region: str, through_sequence: str | None) -> None:
        """Forget the stream records up to ``through_sequence`` and what else moto would
        keep forever (:func:`moto_internals.forget_through`), under the DynamoDB lock."""
        with self._app.lock:
            moto_internals.forget_through(table, region, through_sequence)

    def stream_records_after(
        self, table: str, region: str, sequence: str | None, most: int
    ) -> list[dict[str, Any]]:
        """Up to ``most`` of ``table``'s stream records after ``sequence`` (None: from the
        oldest kept), as GetRecords answers them (JSON-safe, see journal.to_wire), read
        from moto's memory under the DynamoDB lock: the local stack's stream poller reads
        here rather than with a GetShardIterator and a GetRecords per poll."""
        with self._app.lock:
            shard = moto_internals.stream_shard(table, region)
            if shard is None:
                return []
            through = int(sequence) if sequence is not None else shard.starting_sequence_number - 1
            records = moto_internals.records_after(shard, through)[:most]
            return [_as_read(to_wire(record)) for record in records]

    def serve_in_process(self) -> None:
        """From now on, boto3 clients made in this process send their requests to this
        server's endpoint straight to its application, on the caller's thread.

        botocore lets a ``before-send`` handler answer a request instead of the network
        (moto's own ``mock_aws`` works this way); every session made from now on gets
        this one. Requests to any other endpoint go out as before.
        """
        self._netloc = urlsplit(self.endpoint).netloc
        if ("before-send", self._dispatch) not in BUILTIN_HANDLERS:
            BUILTIN_HANDLERS.append(("before-send", self._dispatch))
        self._unsigned = UnsignedRequests(self._netloc)
        self._unsigned.register()

    def _dispatch(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        if urlsplit(request.url).netloc != self._netloc:
            return None
        return self.answer(request)

    def answer(self, request: AWSPreparedRequest) -> AWSResponse:
        """What this server answers ``request``, on the caller's thread."""
        url = urlsplit(request.url)
        body = request_bytes(request)
        target = request.headers.get("X-Amz-Target")
        if isinstance(target, bytes):
            target = target.decode()
        dispatcher = self._dispatchers.get(target.partition(".")[0]) if target else None
        if dispatcher is not None:
            return self._app.direct(target, dispatcher, request, body)
        environ = EnvironBuilder(
            method=request.method,
            base_url=f"{url.scheme}://{url.netloc}",
            path=url.path or "/",
            query_string=url.query,
            headers={k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()},
            data=body,
        ).get_environ()
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            answer["status"], answer["headers"] = int(status.split(" ", 1)[0]), headers

        data = b"".join(self._app(environ, start_response))
        return AWSResponse(request.url, answer["status"], HeadersDict(answer["headers"]), ResponseBody(data))

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            BUILTIN_HANDLERS.remove(("before-send", self._dispatch))
        if self._unsigned is not None:
            self._unsigned.unregister()
        if self._thread.is_alive():  # shutdown() waits for serve_forever: only if it runs
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


#: The services whose requests to an in-process moto go unsigned (see UnsignedRequests),
#: by the names of botocore's events.
UNSIGNED_SERVICES = ("dynamodb", "dynamodb-streams", "sqs")
_UNSIGNED_MARK = "flowforge_unsigned"


def _unsigned(context: dict[str, Any] | None = None, **_: Any) -> Any:
    return UNSIGNED if context and context.get(_UNSIGNED_MARK) else None


# -- botocore: DynamoDB's attribute values parsed without the generic walk ----------------------
#: The members of DynamoDB's (and its stream's) AttributeValue, a tagged union.
_ATTRIBUTE_VALUE_MEMBERS = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})


class _Generic(Exception):
    """A value the direct parse leaves to botocore's own (it raises what botocore raises)."""


def attribute_values_parsed_directly(setattr: moto_internals.SetAttr) -> None:
    """Parse DynamoDB's AttributeValues in a JSON answer in one pass over the value.

    botocore parses each attribute value of each item as a structure of ten members,
    looking every one of them up in turn, and each nested value again: with 20 runs in
    flight, the parse of the handlers' answers was a tenth of the local stack's own
    process. A value with one known member that is set (what DynamoDB sends) parses to
    what botocore makes of it — blobs through the parser's own blob parser — and anything
    else takes botocore's way (tests/unit/test_local_botocore.py compares the two).
    """
    from botocore.parsers import BaseJSONParser

    handle = BaseJSONParser._handle_structure
    if getattr(handle, "attribute_values_directly", False):
        return
    shapes: dict[int, bool] = {}

    def structure(self: Any, shape: Any, value: Any) -> Any:
        direct = shapes.get(id(shape))
        if direct is None:
            direct = shapes[id(shape)] = (
                shape.name == "AttributeValue" and frozenset(shape.members) == _ATTRIBUTE_VALUE_MEMBERS
            )
        if direct and type(value) is dict:
            try:
                return _attribute_value(self._blob_parser, value)
            except _Generic:
                pass
        return handle(self, shape, value)

    structure.attribute_values_directly = True  # type: ignore[attr-defined]
    structure.__wrapped__ = handle  # type: ignore[attr-defined]
    setattr(BaseJSONParser, "_handle_structure", structure)


def _attribute_value(blob: Callable[[Any], bytes], value: dict[str, Any]) -> dict[str, Any]:
    if len(value) != 1:
        raise _Generic
    ((tag, inner),) = value.items()
    if inner is None:
        raise _Generic
    if tag in ("S", "N", "BOOL", "NULL"):
        return {tag: inner}
    if tag == "M" and type(inner) is dict:
        return {"M": {key: _attribute_value(blob, _member(v)) for key, v in inner.items()}}
    if tag == "L" and type(inner) is list:
        return {"L": [_attribute_value(blob, _member(v)) for v in inner]}
    if tag == "B":
        return {"B": blob(inner)}
    if type(inner) is not list or None in inner:
        raise _Generic
    if tag in ("SS", "NS"):
        return {tag: list(inner)}
    if tag == "BS":
        return {"BS": [blob(v) for v in inner]}
    raise _Generic


def _member(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Generic
    return value


class UnsignedRequests:
    """DynamoDB (its stream too) and SQS requests to ``netloc`` (host:port), answered in
    this process, go unsigned; requests anywhere else are signed.

    They never leave the process, and moto checks no signature: it takes the account
    from the access key, and without one it answers for the default account, the one the
    fake key stands for too (over HTTP it needs the signature to route by: a session
    marks a request only if it also has the ``before-send`` handler that answers it,
    both registered and removed together). SigV4 was a seventh of the handlers' CPU.
    """

    def __init__(self, netloc: str) -> None:
        self.netloc = netloc

    def mark(self, request: Any = None, **_: Any) -> None:
        if request is not None and urlsplit(request.url).netloc == self.netloc:
            request.context[_UNSIGNED_MARK] = True

    def handlers(self) -> list[tuple[str, Any]]:
        # Each runs before the client's own signer: handlers of one event run in the
        # order they were registered, and these come with the session, before the client's.
        return [(f"request-created.{name}", self.mark) for name in UNSIGNED_SERVICES] + [
            ("choose-signer", _unsigned)
        ]

    def register(self) -> None:
        """For sessions made from now on."""
        for handler in self.handlers():
            if handler not in BUILTIN_HANDLERS:
                BUILTIN_HANDLERS.append(handler)

    def unregister(self) -> None:
        """For sessions made from now on (``choose-signer`` stays: it acts on marks only)."""
        for handler in self.handlers()[:-1]:
            with contextlib.suppress(ValueError):
                BUILTIN_HANDLERS.remove(handler)


def _as_read(record: dict[str, Any]) -> dict[str, Any]:
    """A stream record from moto's memory as boto3 reads it from GetRecords: its creation
    time a datetime in UTC (moto keeps a naive one)."""
    created = record["dynamodb"].get("ApproximateCreationDateTime")
    if isinstance(created, datetime.datetime) and created.tzinfo is None:
        record["dynamodb"]["ApproximateCreationDateTime"] = created.replace(tzinfo=datetime.UTC)
    return record


def request_bytes(request: AWSPreparedRequest) -> bytes:
    """A prepared request's body as bytes (botocore hands bytes, text, a file or None)."""
    body = request.body
    if body is None:
        return b""
    if hasattr(body, "read"):
        data: bytes = body.read()
        return data
    return body.encode() if isinstance(body, str) else bytes(body)


class ResponseBody(BytesIO):
    """A response body as botocore reads it from urllib3: ``read`` and ``stream``."""

    def stream(self, amt: int = 1024 * 1024, decode_content: bool | None = None) -> Iterable[bytes]:
        while chunk := self.read(amt):
            yield chunk


def local_aws_environment(endpoint: str, region: str, bedrock_endpoint: str | None = None) -> dict[str, str]:
    """Variables that make every boto3 client in this process talk to moto only (and
    Bedrock Runtime clients to ``bedrock_endpoint``, the stand-in, when given).

    The user's AWS config and credential files are masked too: a profile with SSO, a
    role or its own endpoint must not leak into the local stack.
    """
    bedrock = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock_endpoint} if bedrock_endpoint else {}
    return {
        **bedrock,
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
