"""``?fields=``: answer only some of a run's fields, and only some of its state keys.

``?fields=status,error,state.summary`` answers ``{"status", "error", "state":
{"summary"}}``: names of the run's fields (see :class:`RunView`), and ``state.<key>``
for one top-level key of the state (a key the state does not hold is left out).
``state`` alone is the whole state. The log is read only when ``logs`` or
``logs_next`` is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Query

from functions.api.errors import ApiError
from functions.api.models import RunView

#: What ?fields= may name besides ``state.<key>``.
RUN_FIELDS = tuple(RunView.model_fields)
_STATE_PREFIX = "state."
_LOG_FIELDS = frozenset({"logs", "logs_next"})

Fields = Annotated[
    str | None,
    Query(
        max_length=4096,
        description="Comma-separated fields to answer, e.g. status,error,state.summary: any of "
        f"{', '.join(RUN_FIELDS)}, and state.<key> for one key of the state. Default: all.",
    ),
]


@dataclass(frozen=True, slots=True)
class FieldSelection:
    """The run fields and state keys a request asked for."""

    fields: frozenset[str]
    state_keys: frozenset[str] | None  # None: the whole state, if "state" is asked for

    @property
    def wants_logs(self) -> bool:
        return bool(self.fields & _LOG_FIELDS)

    def apply(self, view: dict[str, Any]) -> dict[str, Any]:
        chosen = {name: value for name, value in view.items() if name in self.fields}
        if self.state_keys is not None and "state" in chosen:
            chosen["state"] = {k: v for k, v in chosen["state"].items() if k in self.state_keys}
        return chosen


def parse_fields(text: str | None) -> FieldSelection | None:
    """The selection ``?fields=`` asks for; None for every field. 400 for unknown names."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    keys = {name[len(_STATE_PREFIX) :] for name in names if name.startswith(_STATE_PREFIX)}
    fields = {name for name in names if not name.startswith(_STATE_PREFIX)}
    unknown = sorted(fields - set(RUN_FIELDS)) + ([_STATE_PREFIX] if "" in keys else [])
    if unknown or not names:
        message = (
            f"unknown field {unknown[0]!r}" if unknown else "name at least one field"
        ) + f"; use {', '.join(RUN_FIELDS)} or state.<key>"
        raise ApiError(
            f"invalid request: query.fields: {message}",
            details=[{"path": "query.fields", "message": message}],
        )
    whole_state = "state" in fields
    return FieldSelection(
        fields=frozenset(fields | ({"state"} if keys else set())),
        state_keys=None if whole_state or not keys else frozenset(keys),
    )
