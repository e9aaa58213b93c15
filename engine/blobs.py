"""State of any size: large values kept in a blob store, the state holding a reference.

A state value (or a map item's or branch's result) whose JSON is over the offload
threshold is written to the :class:`~engine.ports.BlobStore` under its run,
content-addressed (``runs/{run_id}/{sha256}``), when its step commits; the stored state
holds a :class:`BlobRef` in its place. Writing the same content again writes the same
key with the same bytes, so a duplicate delivery's offload changes nothing.

Tools never see references. A step's state is a :class:`StateView`: a read-only mapping
whose offloaded values are read from the store the first time a tool (or a condition)
reads them, so a tool that never reads ``text`` never downloads it. A value offloaded
or read by a container is kept in its cache (content-addressed: never stale).

A reference is stored as text that is never JSON (``@blob:<sha256>:<bytes>``), so no
value a tool returns can be taken for one; log entries and the API show it as the JSON
object ``{"$blob": {"sha256", "bytes"}}`` (:meth:`BlobRef.to_json`).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.cost import S3_BYTES, S3_GET_REQUESTS, S3_PUT_REQUESTS
from engine.errors import NotFoundError

if TYPE_CHECKING:
    from engine.ports import BlobStore

#: A value whose JSON (UTF-8) is over this many bytes is offloaded (OffloadThresholdBytes).
DEFAULT_OFFLOAD_BYTES = 32 * 1024
#: A run's whole state, offloaded values included (MaxTotalStateBytes).
DEFAULT_MAX_TOTAL_STATE_BYTES = 100 * 1024 * 1024
#: What a container keeps of the blobs it wrote or read (content-addressed: never stale).
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
#: The stored text of an offloaded value starts with this; JSON text never does.
REF_PREFIX = "@blob:"
#: The key of the JSON object that shows a reference in log entries and the API.
REF_FIELD = "$blob"
#: How many refreshed keys a container remembers (then it forgets them all).
_REFRESHED_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class BlobRef:
    """An offloaded value: the SHA-256 of its JSON text (UTF-8) and that text's size."""

    sha256: str
    size: int

    def text(self) -> str:
        """The reference as a stored state holds it in place of the value's JSON."""
        return f"{REF_PREFIX}{self.sha256}:{self.size}"

    def to_json(self) -> dict[str, Any]:
        """The reference as log entries and ``GET /graph/state`` show it."""
        return {REF_FIELD: {"sha256": self.sha256, "bytes": self.size}}

    def key(self, run_id: str) -> str:
        """The object key of the value in the blob store."""
        return blob_key(run_id, self.sha256)


def blob_key(run_id: str, sha256: str) -> str:
    return f"runs/{run_id}/{sha256}"


def ref_of(data: bytes) -> BlobRef:
    return BlobRef(hashlib.sha256(data).hexdigest(), len(data))


def parse_ref(text: str) -> BlobRef | None:
    """The reference a stored text holds, or None when it is a value's JSON."""
    if not text.startswith(REF_PREFIX):
        return None
    sha256, _, size = text[len(REF_PREFIX) :].partition(":")
    return BlobRef(sha256, int(size))


def shown(text: str) -> Any:
    """A stored value as it is shown: its JSON decoded, or a reference's JSON object."""
    ref = parse_ref(text)
    return ref.to_json() if ref is not None else json.loads(text)


class _Pending:
    """An offloaded value not read yet, in a :class:`StateView`."""

    __slots__ = ("ref",)

    def __init__(self, ref: BlobRef) -> None:
        self.ref = ref


Loader = Callable[[BlobRef], Any]


class StateView(Mapping[str, Any]):
    """A step's state when some values are offloaded: read-only, each offloaded value
    read (``load``) the first time it is looked up, then kept for this view."""

    __slots__ = ("_load", "_values")

    def __init__(self, values: dict[str, Any], load: Loader) -> None:
        self._values = values
        self._load = load

    def __getitem__(self, key: str) -> Any:
        value = self._values[key]
        if type(value) is _Pending:
            value = self._values[key] = self._load(value.ref)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def merged(self, update: Mapping[str, Any]) -> StateView:
        """This state with ``update`` applied, values not read yet still unread."""
        return StateView({**self._values, **update}, self._load)

    def pending(self) -> frozenset[str]:
        """The keys whose offloaded value has not been read."""
        return frozenset(k for k, v in self._values.items() if type(v) is _Pending)

    def resolved(self) -> dict[str, Any]:
        """A plain dict of every value (reads what was not read yet)."""
        return {key: self[key] for key in self._values}


def merge_state(state: Mapping[str, Any], update: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` with ``update`` applied, without reading offloaded values."""
    if type(state) is StateView:
        return state.merged(update)
    return {**state, **update}


def pending(ref: BlobRef) -> Any:
    """A placeholder for an offloaded value in the values of a :class:`StateView`."""
    return _Pending(ref)


class _Cache:
    """Blob texts by key, least recently used dropped first, within ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            text = self._texts.get(key)
            if text is not None:
                self._texts.move_to_end(key)
            return text

    def put(self, key: str, text: str, size: int) -> None:
        if size > self.limit:
            return
        with self._lock:
            if key in self._texts:
                return
            self._texts[key] = text
            self._bytes += size
            while self._bytes > self.limit:
                _, dropped = self._texts.popitem(last=False)
                self._bytes -= len(dropped.encode())


class Blobs:
    """Offloads a run's large values to a :class:`~engine.ports.BlobStore` and reads them
    back, through a cache of what this container wrote or read.

    It counts the store's requests and the bytes it wrote, by run, until the run's next
    commit takes them (:meth:`take_usage`): a run's cost counts the S3 requests its
    steps made (engine/cost.py).
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        offload_bytes: int = DEFAULT_OFFLOAD_BYTES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.store = store
        self.offload_bytes = offload_bytes
        self._cache = _Cache(cache_bytes)
        self._usage: dict[str, list[int]] = {}  # run id -> [puts, gets, bytes put]
        self._refreshed: dict[str, float] = {}  # key -> when this container last refreshed it
        self._usage_lock = threading.Lock()

    def _count(self, run_id: str, puts: int = 0, gets: int = 0, size: int = 0) -> None:
        with self._usage_lock:
            counts = self._usage.setdefault(run_id, [0, 0, 0])
            counts[0] += puts
            counts[1] += gets
            counts[2] += size

    def take_usage(self, run_id: str) -> dict[str, int]:
        """The store's requests (and bytes written) for ``run_id`` since the last call, as
        cost counters (engine/cost.py); counted once, by whichever commit takes them."""
        with self._usage_lock:
            puts, gets, size = self._usage.pop(run_id, (0, 0, 0))
        return {S3_PUT_REQUESTS: puts, S3_GET_REQUESTS: gets, S3_BYTES: size}

    def offload_text(self, run_id: str, text: str, *, write: bool = True) -> str:
        """The stored text for a value's JSON ``text``: itself, or (over the threshold) a
        reference to it, written to the store first (``write=False``: the reference
        only, nothing written). Idempotent: the same content is the same key with the
        same bytes."""
        if len(text) * 4 <= self.offload_bytes:  # at most 4 UTF-8 bytes per character
            return text
        data = text.encode()
        if len(data) <= self.offload_bytes:
            return text
        ref = ref_of(data)
        key = ref.key(run_id)
        if write and self._cache.get(key) is None:  # written by this container before: nothing to do
            self.store.put_blob(key, data)
            self._count(run_id, puts=1, size=len(data))
            self._cache.put(key, text, len(data))
        return ref.text()

    def offload(self, run_id: str, encoded: dict[str, str], *, write: bool = True) -> dict[str, str]:
        """``encoded`` (per-key JSON) with each value over the threshold offloaded
        (``write=False``: what would be stored, nothing written)."""
        out, small = encoded, self.offload_bytes // 4
        for key, text in encoded.items():
            if len(text) <= small:  # offload_text's first test, without the call
                continue
            stored = self.offload_text(run_id, text, write=write)
            if stored is not text:
                if out is encoded:
                    out = dict(encoded)
                out[key] = stored
        return out

    def refresh(self, run_id: str, texts: Iterable[str], now: float, since: float) -> int:
        """Write again in place each value that ``texts`` (a stored state's) refer to,
        unless this container wrote it again at ``since`` or later; how many it wrote.

        The store's expiry counts from an object's last write, a run's from its last
        step: a run that lives longer than the retention keeps its values this way (see
        :meth:`engine.service.RunService.keep_values`). A value no longer in the store is
        left to the step that reads it (NotFoundError there)."""
        refreshed = self._refreshed
        written = 0
        for text in texts:
            ref = parse_ref(text)
            if ref is None:
                continue
            key = ref.key(run_id)
            if refreshed.get(key, -math.inf) >= since:
                continue
            if self.store.refresh_blob(key):
                written += 1
            self._count(run_id, puts=1)  # a copy is billed as a PUT
            if len(refreshed) >= _REFRESHED_KEPT:
                refreshed.clear()  # a memory that only saves requests: forgetting is safe
            refreshed[key] = now
        return written

    def text(self, run_id: str, ref: BlobRef) -> str:
        """The JSON text of an offloaded value (NotFoundError if the store has none)."""
        key = ref.key(run_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        data = self.store.get_blob(key)
        self._count(run_id, gets=1)
        if data is None:
            raise NotFoundError(f"value {ref.sha256} of run {run_id!r} is not in the blob store")
        text = data.decode()
        self._cache.put(key, text, len(data))
        return text

    def loader(self, run_id: str) -> Loader:
        """Reads the offloaded values of run ``run_id``, decoded."""
        return lambda ref: json.loads(self.text(run_id, ref))

    def resolve(self, run_id: str, text: str) -> Any:
        """A stored text's value, read from the store when it is a reference."""
        ref = parse_ref(text)
        return json.loads(text if ref is None else self.text(run_id, ref))


class MemoryBlobStore:
    """A :class:`~engine.ports.BlobStore` in a dict, counting its calls (tests and the
    in-process runner)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []
        self.gets: list[str] = []
        self.refreshes: list[str] = []
        self._lock = threading.Lock()

    def put_blob(self, key: str, data: bytes) -> None:
        with self._lock:
            self.puts.append(key)
            self.objects[key] = bytes(data)

    def get_blob(self, key: str) -> bytes | None:
        with self._lock:
            self.gets.append(key)
            return self.objects.get(key)

    def refresh_blob(self, key: str) -> bool:
        with self._lock:
            self.refreshes.append(key)
            return key in self.objects
