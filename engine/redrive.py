"""Redrive: a failed run resumed at the node that failed, on the graph it started with.

A redrive is a transition like a step's: its commit takes the failed run's next slot —
only if the run is still failed and the slot free, so of two racing redrives exactly one
wins — and writes a log entry (status ``redriven``, its ``result`` the state patch) that
sends the run back to the failed node with a fresh attempt count and loop iteration. The
log goes on with the next ``seq``, the run's ``redrive_count`` grows by one, and the step
message of the node follows. Everything that runs after it runs at new steps, so
``ctx.idempotency_key`` (``<run_id>:<step>``) is new too, while a redelivered message of
the same step keeps its key.

A failed map or parallel node resumes only what did not succeed: the items (branches)
whose execution ended ``ok`` or ``caught`` in the failed fan-out are carried over into the
new one, done from the start, and the join reads their values from the fan-out they ran
in. Everything runs again when the patch changes the map's items, or when nothing (or
everything) succeeded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from engine import running
from engine.blobs import merge_state
from engine.errors import ConflictError, GraphValidationError, NotFoundError
from engine.fanout import InvalidMapItems, item_list
from engine.ports import FanOutRecord, RunRecord, RunStore, StepCommit
from engine.state import encode_state
from engine.step import Cursor, StepResult, enforce_limits, iso_time

if TYPE_CHECKING:
    from engine.graph import CompiledGraph, CompiledNode
    from engine.service import RunService

#: A redrive's log entry status.
REDRIVEN = "redriven"


class RedriveRefused(ConflictError):
    """The failed run cannot be resumed (its graph no longer loads, no step is left)."""


@dataclass(frozen=True, slots=True)
class CarriedItems:
    """The items of the failed fan-out at ``prior`` that the redriven one takes over."""

    prior: int
    items: frozenset[int]


def redrive(
    service: RunService, run_id: str, state_patch: dict[str, Any] | None = None, owner: str | None = None
) -> RunRecord:
    """Resume failed run ``run_id`` at the node that failed, its state patched first.

    NotFoundError for an unknown run; ConflictError when it is not failed (or a racing
    redrive won); InvalidStateError or StateTooLargeError for a patch that a run's input
    state could not be either.
    """
    run = service.get_run(run_id, owner)
    if run.status != "failed":
        raise _not_failed(run_id, run.status)
    encoded = encode_state(state_patch or {})
    values = {key: json.loads(text) for key, text in encoded.items()}  # as stored and read back
    patch = service.offload(run_id, encoded)
    graph, node = _failed_node(service, run)
    carried = _carried_items(service, run, graph, node, values) if node.fanout is not None else None
    now = service.clock()
    stamp = iso_time(now)

    def build(current: RunRecord, step: int) -> StepCommit:
        # The cursor after the redrive must be able to run: max_steps bounds the whole run.
        if step + 1 >= graph.max_steps:
            raise RedriveRefused(
                f"run {run_id!r} cannot be redriven: it has used its max_steps={graph.max_steps}",
                details={"step": step, "max_steps": graph.max_steps},
            )
        service.state_size(current.state).apply(patch)  # StateTooLargeError
        count = current.redrive_count + 1
        cursor = Cursor(node.id, step + 1)
        log: dict[str, Any] = {
            "seq": step,
            "node": node.id,
            "attempt": None,
            "status": REDRIVEN,
            "started_at": stamp,
            "duration_ms": 0.0,
            "result": values,
            "next": node.id,
            "error": None,
            "redrive": count,
            "run_id": run_id,
        }
        # The patch is already within the cap: this only marks a large one in the entry.
        outcome, update = enforce_limits(
            StepResult("ok", "running", values, {}, cursor, log),
            service.state_size(current.state),
            {},
            None if service.blobs is None else partial(service.blobs.offload, run_id),
        )
        return StepCommit(
            run_id=run_id,
            step=step,
            update=update,
            cursor=cursor,
            status="running",
            log=outcome.log,
            updated_at=stamp,
            next_at=now,
            expires_at=service._expiry(now) or current.expires_at,
            redrive_count=count,
        )

    running.hold(service, run.owner, run_id)  # a failed run's place was given back
    try:
        redriven = service.store.redrive_run(run_id, build)
    except RedriveRefused:
        running.release(service, run.owner, run_id)
        raise
    except ConflictError:
        status = service.get_run(run_id).status
        if status == "failed":
            running.release(service, run.owner, run_id)
        raise _not_failed(run_id, status) from None
    except BaseException:
        running.release(service, run.owner, run_id)
        raise
    if service.blobs is not None:  # a redrive's requests are not in the run's cost: forget them
        service.blobs.take_usage(run_id)
    if carried is not None:
        service.fanouts.reopen(redriven, graph, node, carried.prior, carried.items)
    else:
        service.queue.send_step(run_id, redriven.step)
    return redriven


def _not_failed(run_id: str, status: str) -> ConflictError:
    return ConflictError(
        f"run {run_id!r} is {status}; only a failed run can be redriven", details={"status": status}
    )


def _failed_node(service: RunService, run: RunRecord) -> tuple[CompiledGraph, CompiledNode]:
    """The run's graph (as stored when it started: graphs never change) and the node it failed at."""
    try:
        graph = service.compiled(run.graph_id)
    except (NotFoundError, GraphValidationError) as exc:
        raise RedriveRefused(
            f"run {run.run_id!r} cannot be redriven: its graph {run.graph_id!r} does not load: {exc.message}",
            details=exc.details,
        ) from None
    node_id = (run.error or {}).get("node")
    node = graph.nodes.get(node_id) if isinstance(node_id, str) else None
    if node is None:
        raise RedriveRefused(f"run {run.run_id!r} cannot be redriven: it failed at no node of its graph")
    return graph, node


def _carried_items(
    service: RunService, run: RunRecord, graph: CompiledGraph, node: CompiledNode, patch: dict[str, Any]
) -> CarriedItems | None:
    """What a redriven fan-out node takes over from the fan-out it failed in (None: it
    runs every item again)."""
    store = service.store
    prior = store.latest_fanout(run.run_id)
    if prior is None or prior.executed == 0 or not _failed_in(store, run, node, prior):
        return None
    before = service.live_state(run).view()
    try:
        items = item_list(node, before)
        if item_list(node, merge_state(before, patch)) != items:
            return None  # the patch changed what the map runs: item i is another item now
    except InvalidMapItems:
        return None
    records = store.list_executions(run.run_id, prior.base, prior.executed)
    succeeded = {r.index for r in records if r.status not in ("retry", "failed")} | prior.carried
    if not succeeded or len(succeeded) >= len(items):
        return None
    return CarriedItems(prior.base, frozenset(succeeded))


def _failed_in(store: RunStore, run: RunRecord, node: CompiledNode, fanout: FanOutRecord) -> bool:
    """Whether the run failed in ``fanout`` (its latest): finished from outside while its
    items ran (the dead-letter handler), or at its join."""
    if fanout.base <= run.step <= fanout.base + fanout.executed:
        return True
    join = fanout.base + fanout.executed
    if run.step != join + 1:
        return False
    entries = store.list_logs(run.run_id, after=join - 1, limit=1)
    return (
        bool(entries)
        and entries[0]["seq"] == join
        and entries[0]["node"] == node.id
        and entries[0]["status"] == "failed"
    )
