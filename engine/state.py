"""The shared state as stored: a JSON object kept per top-level key, with a size cap.

Stores persist each top-level key as its own JSON text so a step writes only the keys
its node changed; the cap is enforced on the sum, without re-serializing what did not
change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.blobs import Loader, StateView, parse_ref, pending, shown
from engine.errors import InvalidStateError, StateTooLargeError
from engine.jsontext import lone_surrogate

DEFAULT_MAX_STATE_BYTES = 256 * 1024
#: A log entry shows a node's update up to this size; larger ones are summarized.
MAX_LOG_RESULT_BYTES = 32 * 1024
#: A log entry's marker for a larger update lists key names up to this many bytes.
MAX_MARKER_KEY_BYTES = 4096
#: Top-level state keys are map keys in DynamoDB, which refuses empty names; they are
#: capped in UTF-8 bytes, as every size a store counts.
MAX_STATE_KEY_BYTES = 1024
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_encode_string = json.encoder.encode_basestring  # what _dumps does with a str (ensure_ascii=False)


def encode_value(key: str, value: Any) -> str:
    """JSON text of one state value; a clear error for what JSON cannot hold, or for text
    UTF-8 cannot encode (a lone surrogate, which no store, log or socket can carry)."""
    if not key.isascii() and (reason := lone_surrogate(key)):
        raise InvalidStateError(f"state key {_shown(key)!r} is not valid UTF-8 text ({reason})")
    if not key or (len(key) * 4 > MAX_STATE_KEY_BYTES and len(key.encode()) > MAX_STATE_KEY_BYTES):
        raise InvalidStateError(
            f"state key {_shown(key)!r} must be 1 to {MAX_STATE_KEY_BYTES} bytes long (UTF-8)"
        )
    try:
        # What the encoder answers for an integer or a string, without its setup (most
        # updates are one of these; a bool is not an int here). Digits need no check.
        kind = type(value)
        if kind is int:
            return int.__repr__(value)
        text = _encode_string(value) if kind is str else _dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidStateError(f"state key {_shown(key)!r} is not JSON-serializable: {exc}") from None
    except RecursionError:
        raise InvalidStateError(f"state key {_shown(key)!r} nests arrays or objects too deeply") from None
    if not text.isascii() and (reason := lone_surrogate(text)):
        raise InvalidStateError(
            f"state key {_shown(key)!r} holds text that is not valid UTF-8 ({reason} of its JSON)"
        )
    return text


def _shown(key: str) -> str:
    """A state key as an error message names it: cut at 40 characters."""
    return key if len(key) <= 40 else f"{key[:40]}..."


def encode_state(state: Any) -> dict[str, str]:
    """Encode a whole state object key by key."""
    if not isinstance(state, dict):
        raise InvalidStateError(f"state must be a JSON object, not {type(state).__name__}")
    return {key: encode_value(key, value) for key, value in state.items()}


def decode_state(encoded: dict[str, str]) -> dict[str, Any]:
    """The state as shown: each value decoded, an offloaded one as its reference's JSON
    (``{"$blob": {...}}``, see engine/blobs.py)."""
    return {key: shown(text) for key, text in encoded.items()}


#: JSON values that read back as the same Python value, and those a tool could change in place.
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({dict, list})


class LiveState:
    """A running run's state, decoded once and kept decoded from step to step.

    Each step gets a fresh view (:meth:`view`): the lists and objects in it — what a tool
    could change in place without returning it, which is not an update — are decoded
    again from their stored text, the rest is shared. The in-process runner and a chain
    of steps in the step function keep the state this way. Offloaded values (stored as
    references, see engine/blobs.py) are read by ``load`` only when a step reads them:
    the view is then a :class:`~engine.blobs.StateView`.
    """

    __slots__ = ("_containers", "_load", "_offloaded", "values")

    def __init__(self, encoded: dict[str, str], load: Loader | None = None) -> None:
        self._load = load
        #: key -> reference of each offloaded value.
        self._offloaded: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for key, text in encoded.items():
            ref = parse_ref(text)
            if ref is None:
                values[key] = json.loads(text)
            else:
                values[key] = self._offloaded[key] = pending(ref)
        self.values = values
        #: key -> stored text of each list or object.
        self._containers = {key: encoded[key] for key, v in values.items() if type(v) in _CONTAINERS}

    def view(self) -> Mapping[str, Any]:
        """The state for one step (the tool sees it read-only, its containers its own)."""
        containers = self._containers
        if self._offloaded:
            values = {**self.values, **{key: json.loads(text) for key, text in containers.items()}}
            return StateView(values, self._loader())
        if not containers:
            return self.values
        return {**self.values, **{key: json.loads(text) for key, text in containers.items()}}

    def _loader(self) -> Loader:
        if self._load is None:
            raise InvalidStateError("the state holds offloaded values and no blob store reads them")
        return self._load

    def resolved(self) -> dict[str, Any]:
        """Every value, offloaded ones read."""
        if not self._offloaded:
            return self.values
        load = self._loader()
        return {
            key: load(self._offloaded[key].ref) if key in self._offloaded else v
            for key, v in self.values.items()
        }

    def apply(self, update: dict[str, Any], encoded: dict[str, str]) -> None:
        """Apply a committed update (``encoded``: its per-key JSON, as stored)."""
        values, containers, offloaded = self.values, self._containers, self._offloaded
        for key, value in update.items():
            text = encoded[key]
            ref = parse_ref(text) if text[:1] == "@" else None  # JSON never starts with "@"
            if ref is not None:
                values[key] = offloaded[key] = pending(ref)
                containers.pop(key, None)
                continue
            if offloaded:
                offloaded.pop(key, None)
            if type(value) in _SCALARS:
                values[key] = value
                containers.pop(key, None)
            else:  # as stored: a tuple comes back a list, a container a copy of its own
                values[key] = json.loads(text)
                containers[key] = text


def entry_bytes(key: str, text: str) -> int:
    """Bytes ``"key":value,`` adds to the state serialized as one UTF-8 JSON object."""
    return len(key.encode()) + len(text.encode()) + 4


class StateSize:
    """Running size of a state from its per-key encodings, checked against ``limit``.

    ``limit`` bounds the state as stored (an offloaded value counts its reference);
    ``total_limit``, when given, bounds it with offloaded values counted in full.
    """

    __slots__ = ("_offloaded", "_sizes", "limit", "offloaded", "total", "total_limit")

    def __init__(
        self,
        encoded: dict[str, str],
        limit: int = DEFAULT_MAX_STATE_BYTES,
        total_limit: int | None = None,
    ) -> None:
        self.limit = limit
        self.total_limit = total_limit
        self._sizes = {key: entry_bytes(key, text) for key, text in encoded.items()}
        self.total = 2 + sum(self._sizes.values())
        #: key -> bytes an offloaded value adds beyond its reference's text.
        self._offloaded = {key: _extra(text) for key, text in encoded.items() if text[:1] == "@"}
        self.offloaded = sum(self._offloaded.values())
        self.check()

    @property
    def full(self) -> int:
        """The state's size with its offloaded values counted in full."""
        return self.total + self.offloaded

    def apply(self, encoded_update: dict[str, str]) -> int:
        """Account for ``encoded_update`` and raise if the state is now over the limit;
        the bytes of the update's own entries."""
        sizes = self._sizes
        added = 0
        for key, text in encoded_update.items():
            size = len(key.encode()) + len(text.encode()) + 4  # entry_bytes, inline
            added += size
            self.total += size - sizes.get(key, 0)
            sizes[key] = size
            if text[:1] == "@" or key in self._offloaded:  # JSON never starts with "@"
                extra = _extra(text)
                self.offloaded += extra - self._offloaded.pop(key, 0)
                if extra:
                    self._offloaded[key] = extra
        self.check()
        return added

    def check(self) -> None:
        if self.total > self.limit:
            raise StateTooLargeError(
                f"state is {self.total} bytes serialized; the limit is {self.limit}",
                details={"size": self.total, "limit": self.limit},
            )
        if self.total_limit is not None and self.offloaded and self.full > self.total_limit:
            raise StateTooLargeError(
                f"state is {self.full} bytes with its offloaded values; the limit is {self.total_limit}",
                details={"size": self.full, "limit": self.total_limit},
            )


def _extra(text: str) -> int:
    """Bytes an offloaded value adds beyond its reference's text (0 for a value's JSON)."""
    ref = parse_ref(text)
    return 0 if ref is None else ref.size - len(text)
