"""The step message: what the step queue carries, "execute step k of run r".

Two fields that this service writes and reads itself, so a dataclass checked by hand
rather than a pydantic model: pydantic's import and model building would be most of the
step Lambda's cold start, for the one model it needs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FIELDS = ("run_id", "step")
#: An item message also names the item (or branch) and the attempt.
_ITEM_FIELDS = ("item", "attempt")


class MalformedStepMessage(ValueError):
    """A body that is not ``{"run_id": <id>, "step": <integer >= 0>}``; ``problems`` says why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class StepMessage:
    """Execute step ``step`` of run ``run_id``, once ``delay_s`` seconds have passed — or,
    with ``item``, attempt ``attempt`` of that item (or branch) of the map or parallel
    node the run reached at ``step``.

    The body (:meth:`to_json`) holds ``run_id`` and ``step`` (and ``item`` and
    ``attempt``); the delay is the queue's.
    """

    run_id: str
    step: int
    delay_s: float = 0.0
    item: int | None = None
    attempt: int = 1

    def __post_init__(self) -> None:
        problems = _field_problems(self.run_id, self.step)
        if self.item is not None:
            problems += _item_problems(self.item, self.attempt)
        if problems:
            raise MalformedStepMessage(problems)

    @classmethod
    def from_json(cls, body: str) -> StepMessage:
        """Parse a message body; :class:`MalformedStepMessage` lists what is wrong with it."""
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise MalformedStepMessage(["body: not JSON"]) from None
        if not isinstance(data, dict):
            raise MalformedStepMessage(["body: a step message is a JSON object"])
        fields = _FIELDS + _ITEM_FIELDS if "item" in data or "attempt" in data else _FIELDS
        problems = [f"{key}: unknown field" for key in data if key not in fields]
        problems += [f"{key}: missing" for key in fields if key not in data]
        if problems:
            raise MalformedStepMessage(problems)
        if fields is _FIELDS:
            return cls(data["run_id"], data["step"])
        return cls(data["run_id"], data["step"], item=data["item"], attempt=data["attempt"])

    def to_json(self) -> str:
        body: dict[str, Any] = {"run_id": self.run_id, "step": self.step}
        if self.item is not None:
            body.update(item=self.item, attempt=self.attempt)
        return json.dumps(body, separators=(",", ":"))


def _field_problems(run_id: Any, step: Any) -> list[str]:
    problems = []
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        problems.append("run_id: 1 to 64 letters, digits, '_' or '-'")
    # bool is an int in Python, not in a step message
    if type(step) is not int or step < 0:
        problems.append("step: an integer >= 0")
    return problems


def _item_problems(item: Any, attempt: Any) -> list[str]:
    problems = []
    if type(item) is not int or item < 0:
        problems.append("item: an integer >= 0")
    if type(attempt) is not int or attempt < 1:
        problems.append("attempt: an integer >= 1")
    return problems
