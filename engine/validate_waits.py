"""Validation of the nodes that wait: a callback node (``callback``, an optional ``fn``)
and a timer (``wait``). Bounds (1 s to 1 year) are the model's; this checks what the
fields mean together, every problem at its path."""

from __future__ import annotations

from engine.errors import Problem
from engine.model import Node

#: Fields a node that waits cannot have, and why.
_NOT_WITH_WAITING = {
    "map": "a node that waits runs no map",
    "parallel": "a node that waits runs no parallel branches",
    "loop_condition": "a node that waits cannot loop; loop on the node after it instead",
}


def check_waits(base: str, node: Node) -> list[Problem]:
    """Problems of a node with ``callback`` or ``wait`` (``node`` matched the model)."""
    problems = [
        Problem(f"{base}.{name}", why) for name, why in _NOT_WITH_WAITING.items() if getattr(node, name)
    ]
    if node.callback is not None and node.wait is not None:
        problems.append(
            Problem(f"{base}.wait", "a node has either callback or wait; wait in a node of its own")
        )
    if node.callback is not None:
        spec = node.callback
        if spec.heartbeat_s is not None and spec.heartbeat_s > spec.timeout_s:
            problems.append(
                Problem(
                    f"{base}.callback.heartbeat_s",
                    f"{spec.heartbeat_s:g}s is longer than timeout_s ({spec.timeout_s:g}s); "
                    "a heartbeat is expected within the timeout",
                )
            )
        if spec.result is not None and "." in spec.result:
            problems.append(
                Problem(
                    f"{base}.callback.result",
                    f"{spec.result!r}: the output goes to a top-level state key (no '.')",
                )
            )
        if node.fn is None and (node.retry is not None or node.timeout_s is not None or node.params):
            name = (
                "retry" if node.retry is not None else "timeout_s" if node.timeout_s is not None else "params"
            )
            problems.append(
                Problem(
                    f"{base}.{name}",
                    "applies to the node's fn, and this callback node has none; "
                    "retries never apply to CallbackRejected or CallbackTimeout (catch them)",
                )
            )
    if node.wait is not None:
        spec_w = node.wait
        if (spec_w.seconds is None) == (spec_w.until is None):
            problems.append(
                Problem(f"{base}.wait", "give exactly one of seconds (1 s to 1 year) or until (a state path)")
            )
        if spec_w.until is not None and any(not part for part in spec_w.until.split(".")):
            problems.append(
                Problem(
                    f"{base}.wait.until",
                    f"{spec_w.until!r} is not a state path like 'release_at' or 'schedule.at'",
                )
            )
        for name in ("fn", "retry", "timeout_s"):
            if getattr(node, name) is not None:
                problems.append(
                    Problem(
                        f"{base}.{name}", f"a wait node runs no tool, so it has no {name}; wait, then run one"
                    )
                )
        if node.params:
            problems.append(Problem(f"{base}.params", "a wait node runs no tool to pass params to"))
    return problems
