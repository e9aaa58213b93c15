"""The shared state as stored: a JSON object kept per top-level key, with a size cap.

Stores persist each top-level key as its own JSON text so a step writes only the keys
its node changed; the cap is enforced on the sum, without re-serializing what did not
change.
"""

from __future__ import annotations

import json
from typing import Any

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
    shown = key if len(key) <= 40 else f"{key[:40]}..."
    if reason := lone_surrogate(key):
        raise InvalidStateError(f"state key {shown!r} is not valid UTF-8 text ({reason})")
    if not key or (len(key) * 4 > MAX_STATE_KEY_BYTES and len(key.encode()) > MAX_STATE_KEY_BYTES):
        raise InvalidStateError(f"state key {shown!r} must be 1 to {MAX_STATE_KEY_BYTES} bytes long (UTF-8)")
    try:
        # What the encoder answers for an integer or a string, without its setup (most
        # updates are one of these; a bool is not an int here). Digits need no check.
        kind = type(value)
        if kind is int:
            return int.__repr__(value)
        text = _encode_string(value) if kind is str else _dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidStateError(f"state key {shown!r} is not JSON-serializable: {exc}") from None
    except RecursionError:
        raise InvalidStateError(f"state key {shown!r} nests arrays or objects too deeply") from None
    if reason := lone_surrogate(text):
        raise InvalidStateError(
            f"state key {shown!r} holds text that is not valid UTF-8 ({reason} of its JSON)"
        )
    return text


def encode_state(state: Any) -> dict[str, str]:
    """Encode a whole state object key by key."""
    if not isinstance(state, dict):
        raise InvalidStateError(f"state must be a JSON object, not {type(state).__name__}")
    return {key: encode_value(key, value) for key, value in state.items()}


def decode_state(encoded: dict[str, str]) -> dict[str, Any]:
    return {key: json.loads(text) for key, text in encoded.items()}


#: JSON values that read back as the same Python value, and those a tool could change in place.
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({dict, list})


class LiveState:
    """A running run's state, decoded once and kept decoded from step to step.

    Each step gets a fresh view (:meth:`view`): the lists and objects in it — what a tool
    could change in place without returning it, which is not an update — are decoded
    again from their stored text, the rest is shared. The in-process runner and a chain
    of steps in the step function keep the state this way.
    """

    __slots__ = ("_containers", "values")

    def __init__(self, encoded: dict[str, str]) -> None:
        self.values = decode_state(encoded)
        #: key -> stored text of each list or object.
        self._containers = {key: encoded[key] for key, v in self.values.items() if type(v) in _CONTAINERS}

    def view(self) -> dict[str, Any]:
        """The state for one step (the tool sees it read-only, its containers its own)."""
        containers = self._containers
        if not containers:
            return self.values
        return {**self.values, **{key: json.loads(text) for key, text in containers.items()}}

    def apply(self, update: dict[str, Any], encoded: dict[str, str]) -> None:
        """Apply a committed update (``encoded``: its per-key JSON, as stored)."""
        values, containers = self.values, self._containers
        for key, value in update.items():
            if type(value) in _SCALARS:
                values[key] = value
                containers.pop(key, None)
            else:  # as stored: a tuple comes back a list, a container a copy of its own
                text = encoded[key]
                values[key] = json.loads(text)
                containers[key] = text


def entry_bytes(key: str, text: str) -> int:
    """Bytes ``"key":value,`` adds to the state serialized as one UTF-8 JSON object."""
    return len(key.encode()) + len(text.encode()) + 4


class StateSize:
    """Running size of a state from its per-key encodings, checked against ``limit``."""

    __slots__ = ("_sizes", "limit", "total")

    def __init__(self, encoded: dict[str, str], limit: int = DEFAULT_MAX_STATE_BYTES) -> None:
        self.limit = limit
        self._sizes = {key: entry_bytes(key, text) for key, text in encoded.items()}
        self.total = 2 + sum(self._sizes.values())
        self.check()

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
        self.check()
        return added

    def check(self) -> None:
        if self.total > self.limit:
            raise StateTooLargeError(
                f"state is {self.total} bytes serialized; the limit is {self.limit}",
                details={"size": self.total, "limit": self.limit},
            )
