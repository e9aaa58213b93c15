"""The run service's side of runs that wait: callbacks stored, answered, timed out;
timers woken. The pure rules are in engine/waits.py.

Every way a wait ends — an answer, a timeout, a timer that is due — commits the run's
next slot through :meth:`engine.service.RunService.commit`, like a step: exactly one of
them moves the run, and a cancel (which takes the same slot) beats all of them or none.
An answer first settles the callback's record (a conditional write: of two answers, or
an answer and a timeout, exactly one settles it), then commits; if it dies in between,
the record is due at once in the due-time index and the sweeper wakes the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.errors import ConflictError, FlowForgeError, NotFoundError
from engine.state import decode_state, encode_value
from engine.step import LIVE, StepResult, iso_time
from engine.waits import (
    ANSWERS,
    MAX_QUEUE_DELAY_S,
    PENDING,
    TIMED_OUT,
    WITHDRAWN,
    CallbackSigner,
    CallbackTicket,
    WaitRecord,
    parse_token,
    resume_outcome,
    token_hash,
    token_matches,
    waiting_outcome,
)

if TYPE_CHECKING:
    from engine.graph import CompiledGraph, CompiledNode
    from engine.ports import RunRecord
    from engine.service import RunService


class CallbackKeyMissing(FlowForgeError):
    """A callback node ran where no callback key is configured."""

    code = "callback_key_missing"


@dataclass(frozen=True, slots=True)
class AnswerResult:
    """What answering a callback did: the wait as settled and the run after it."""

    wait: WaitRecord
    run: RunRecord
    applied: bool
    """Whether the run moved on (False: its node's tool is still running; the answer is
    applied when it returns, or fails: see :meth:`WaitSteps.after_failure`)."""


class WaitSteps:
    """Waits of the runs of one :class:`~engine.service.RunService`."""

    def __init__(self, service: RunService, signer: CallbackSigner | None) -> None:
        self.service = service
        self.signer = signer

    # -- starting a wait ------------------------------------------------------------------
    def open_callback(self, run: RunRecord, node: CompiledNode) -> CallbackTicket:
        """Store the callback of the node the run is at (before its tool runs); a
        redelivered step finds it stored and gets the same token and deadline."""
        assert node.callback is not None and run.cursor is not None
        signer = self._signer()
        step = run.step
        token = signer.token(run.run_id, step)
        now = self.service.clock()
        spec = node.callback
        deadline = now + spec.timeout_s
        due = min(deadline, now + spec.heartbeat_s) if spec.heartbeat_s is not None else deadline
        wait = WaitRecord(
            run.run_id,
            step,
            node.id,
            "callback",
            deadline,
            due,
            heartbeat_s=spec.heartbeat_s,
            token_hash=token_hash(token),
        )
        stored = self.service.store.put_wait(wait, expires_at=self._expiry(deadline))
        return CallbackTicket(token, signer.url(token), stored.deadline)

    def after_failure(
        self, run: RunRecord, ticket: CallbackTicket, failed: StepResult, state: Mapping[str, Any]
    ) -> tuple[StepResult, WaitRecord | None]:
        """A callback node's tool failed (``failed``: a retry, a catch route or the run's
        failure) after its callback was stored. Exactly one of the failure and an answer
        wins the callback, by one conditional write: the failure withdraws it (returned:
        later answers are refused with 409, a retried node stores a new callback), unless
        an answer was accepted first — then the node takes it: the notification's job is
        done once someone answered. The node then starts waiting, with the tool's error in
        its log entry, and its wait ends at once with the answer."""
        store, now = self.service.store, self.service.clock()
        try:
            return failed, store.settle_wait(run.run_id, run.step, status=WITHDRAWN, now=now)
        except ConflictError:
            wait = store.get_wait(run.run_id, run.step)
            if wait is None or not wait.resolved:
                return failed, None  # it timed out meanwhile, or never was: the failure stands
        assert run.cursor is not None
        info = {"expires_at": iso_time(ticket.expires_at), "answered": wait.status}
        started = failed.log.get("started_at")
        outcome = waiting_outcome(
            run.cursor, state, {}, ticket.expires_at, now, failed.log.get("duration_ms", 0.0), info
        )
        if started is not None:
            outcome.log["started_at"] = started
        outcome.log["error"] = failed.log.get("error")
        return outcome, None

    def restore(self, withdrawn: WaitRecord) -> None:
        """The step that withdrew a callback did not commit (another delivery or a cancel
        took its slot): the callback is pending again, expiring as it did."""
        wait = replace(withdrawn, status=PENDING)
        self.service.store.put_wait(wait, expires_at=self._expiry(wait.deadline))

    def open_timer(self, run: RunRecord, node: CompiledNode, due: float) -> None:
        """Store the timer of the node the run is at, before the run starts waiting."""
        wait = WaitRecord(run.run_id, run.step, node.id, "timer", due, due)
        self.service.store.put_wait(wait, expires_at=self._expiry(due))

    def park(self, run: RunRecord) -> bool:
        """The run has just started waiting: True if its wait can end at once (an answer
        came while the tool ran); else a wait due within SQS's longest delay gets a
        delayed step message (later ones are woken by the sweeper)."""
        wait = self._wait_of(run)
        if wait is not None and wait.resolved:
            return True
        delay = run.next_at - self.service.clock() if wait is None else wait.due - self.service.clock()
        if delay <= MAX_QUEUE_DELAY_S:
            self.service.queue.send_step(run.run_id, run.step, max(delay, 0.0))
        return False

    # -- ending a wait ----------------------------------------------------------------------
    def resume(
        self, run: RunRecord, graph: CompiledGraph, state: Mapping[str, Any]
    ) -> tuple[StepResult, WaitRecord] | None:
        """How the waiting run's wait ends now, or None if it goes on waiting. A pending
        callback past its due time is settled as timed out first (conditionally: an
        answer that got there first wins)."""
        assert run.cursor is not None
        now = self.service.clock()
        wait = self._wait_of(run)
        if wait is None:
            return None
        if not wait.resolved:
            if now < wait.due:
                return None
            if wait.kind == "callback":
                try:
                    wait = self.service.store.settle_wait(run.run_id, wait.step, status=TIMED_OUT, now=now)
                except ConflictError:
                    wait = self._wait_of(run)
                    if wait is None or not wait.resolved:
                        return None  # a heartbeat pushed it back
        return resume_outcome(graph, run.cursor, state, wait, now), wait

    def close(self, wait: WaitRecord) -> None:
        """The run moved past the wait: it leaves the due-time index (best effort: the
        sweeper closes what is left)."""
        try:
            self.service.store.close_wait(wait.run_id, wait.step)
        except FlowForgeError:
            return

    # -- answers ------------------------------------------------------------------------------
    def answer(
        self,
        token: str,
        status: str,
        *,
        output: Any = None,
        reason: str | None = None,
        owner: str | None = None,
    ) -> AnswerResult:
        """Answer a callback: ``approved`` (``output`` to ``state[result]``) or
        ``rejected`` (``reason``). NotFoundError for an unknown token; ConflictError
        (``details.status``) when it was answered or timed out before, or the run is no
        longer waiting for it (cancelled): the run is then untouched."""
        assert status in ANSWERS
        if output is not None:
            encode_value("output", output)  # JSON only, no lone surrogates (InvalidStateError)
        wait = self._callback(token, owner)
        now = self.service.clock()
        try:
            wait = self.service.store.settle_wait(
                wait.run_id, wait.step, status=status, now=now, output=output, reason=reason
            )
        except ConflictError:
            raise self._answered(self._callback(token, owner)) from None
        return self._apply(wait)

    def heartbeat(self, token: str, owner: str | None = None) -> WaitRecord:
        """Push the callback's heartbeat deadline (ConflictError once it is answered or timed out)."""
        wait = self._callback(token, owner)
        try:
            return self.service.store.heartbeat_wait(wait.run_id, wait.step, now=self.service.clock())
        except ConflictError:
            raise self._answered(self._callback(token, owner)) from None

    def _apply(self, wait: WaitRecord) -> AnswerResult:
        """Commit the settled ``wait`` as the run's next transition, if the run waits for it."""
        service = self.service
        run = service.store.get_run(wait.run_id)
        if run is None:
            raise NotFoundError("unknown callback")
        if run.status == "running" and run.step == wait.step:
            return AnswerResult(wait, run, applied=False)  # its tool runs: applied when it returns
        if run.status != "waiting" or run.step != wait.step + 1:
            raise _gone(run)
        graph = service.compiled(run.graph_id)
        state = decode_state(run.state)
        resumed = self.resume(run, graph, state)
        assert resumed is not None  # the wait is settled
        outcome, wait = resumed
        committed = service.commit(run, run.step, outcome, state, None)
        if committed is None:
            # A cancel took the slot (the run is untouched by this answer), or the step
            # function applied this very answer first.
            after = service.get_run(run.run_id)
            if after.status == "cancelled":
                raise _gone(after)
            return AnswerResult(wait, after, applied=True)
        outcome = committed[0]
        self.close(wait)
        if outcome.next is not None:
            service.queue.send_step(run.run_id, outcome.next.step, outcome.delay_s)
        return AnswerResult(wait, service.get_run(run.run_id), applied=True)

    def _callback(self, token: str, owner: str | None) -> WaitRecord:
        named = parse_token(token)
        wait = self.service.store.get_wait(*named) if named is not None else None
        if wait is None or wait.kind != "callback" or not token_matches(wait, token):
            raise NotFoundError("unknown callback")
        if owner is not None:
            self.service.get_run(wait.run_id, owner)  # 404 for another principal's run
        return wait

    @staticmethod
    def _answered(wait: WaitRecord) -> ConflictError:
        if wait.status == WITHDRAWN:
            return ConflictError(
                "the callback was withdrawn: its node's tool failed before an answer came "
                "(a retried node sends a new callback)",
                details={"status": WITHDRAWN},
            )
        if wait.status == PENDING:
            return ConflictError(
                "the callback timed out; its run is being resumed with CallbackTimeout",
                details={"status": TIMED_OUT},
            )
        return ConflictError(
            f"the callback was already {wait.status.replace('_', ' ')}", details={"status": wait.status}
        )

    # -- the sweeper ---------------------------------------------------------------------------
    def wake_due(self, limit: int = 100) -> list[tuple[str, int]]:
        """Send the step message of each run whose wait is due (answered, timed out, a
        timer); close the waits whose run moved on. Returns (run_id, step) woken."""
        store, now = self.service.store, self.service.clock()
        woken = []
        for wait in store.due_waits(now, limit):
            run = store.get_run(wait.run_id)
            if run is not None and run.status == "waiting" and run.step == wait.step + 1:
                self.service.queue.send_step(run.run_id, run.step)
                woken.append((run.run_id, run.step))
            elif run is None or run.status not in LIVE or run.step > wait.step + 1:
                self.close(wait)
            # else: the run is still at the step that stored it (its tool runs): leave it
        return woken

    # -- reading -------------------------------------------------------------------------------
    def view(self, run: RunRecord, base_url: str | None = None) -> dict[str, Any] | None:
        """``GET /graph/state``'s ``waiting``: ``{node, callback_url, expires_at}`` for a
        callback (``{node, until}`` for a timer); None unless the run waits."""
        if run.status != "waiting" or run.cursor is None:
            return None
        node = self.service.compiled(run.graph_id).nodes.get(run.cursor.node)
        if node is None:
            return None
        if node.callback is None:
            return {"node": node.id, "until": iso_time(run.next_at)}
        url = (
            self.signer.url(self.signer.token(run.run_id, run.step - 1)) if self.signer is not None else None
        )
        return {"node": node.id, "callback_url": url, "expires_at": iso_time(run.next_at)}

    def _wait_of(self, run: RunRecord) -> WaitRecord | None:
        """The wait the waiting run is in (stored at the step before its current one)."""
        return self.service.store.get_wait(run.run_id, run.step - 1)

    def _signer(self) -> CallbackSigner:
        if self.signer is None:
            raise CallbackKeyMissing("no callback key is configured: callback nodes cannot run")
        return self.signer

    def _expiry(self, deadline: float) -> int | None:
        retention = self.service.retention_s
        return int(deadline + retention) if retention else None


def _gone(run: RunRecord) -> ConflictError:
    return ConflictError(
        f"run {run.run_id!r} is {run.status} and no longer waits for this callback",
        details={"status": run.status},
    )
