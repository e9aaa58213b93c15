"""Fan-out nodes on the step loop: one message per item (or branch), joined exactly once.

A step message for a run at a ``map`` or ``parallel`` node opens the fan-out — the store
starts counting its executions — and sends the first ``max_concurrency`` item messages
together (:meth:`~engine.ports.StepQueue.send_items`: on SQS, ten to a request).
An item message runs one attempt of one item, then commits it in two writes:

1. :meth:`~engine.ports.RunStore.claim_execution` takes the next log step for that
   attempt, once: a duplicate or racing delivery gets the step taken before (``again``)
   and takes nothing. The same conditional write counts the item done when the attempt
   was final, so the claim that completes the set is exactly one.
2. :meth:`~engine.ports.RunStore.put_execution` writes the log entry and the value at
   that step (a second write of it does nothing).

Then it sends what follows: the item's next attempt (after its retry delay) or the item
``max_concurrency`` places further on. The worker whose claim completed the set joins:
it reads every execution and commits the join as the run's next transition, the same
conditional slot commit as any step; a redelivery of its message after a crash finds its
claim again, sees the set complete and joins. A crash between the two writes leaves a
claimed step without its entry; the join waits for it: it checks again a second later,
then after 2, 4, 8 … seconds (a worker that was only slow has written it by then,
however loaded the machine), and the redelivery of a worker that died finds its claim
again, writes the entry, sees the set complete and joins. A fan-out that makes no
progress for ``stall_after_s`` is found by the sweeper like any stalled run; its step
message re-sends every item that is due and not finished (together, as the opening
does), or joins a complete set.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

from engine.cost import EMPTY, MICRO, SQS_REQUESTS, MessageMeter, Usage, UsageTally, step_usage
from engine.errors import StoreUnavailableError
from engine.fanout import (
    MAX_RESULT_BYTES,
    Execution,
    InvalidMapItems,
    fanout_of,
    item_list,
    join,
    max_steps_failure,
    node_failure,
    offload_execution,
    run_execution,
)
from engine.item_reads import ItemReads
from engine.ports import SEND_BATCH_MAX, Claim, ExecutionRecord, FanOutRecord, RunRecord
from engine.service import Disposition

if TYPE_CHECKING:
    from engine.graph import CompiledGraph, CompiledNode
    from engine.service import RunService


#: Seconds before a join that found an execution claimed but not written checks again
#: the first time; each later check waits as long as the join has waited so far.
PENDING_CHECK_S = 1.0


def pending_check_delay(waited_s: float, stall_after_s: float) -> float | None:
    """When a join that has waited ``waited_s`` for a claimed execution's entry checks
    again: after as long again (1, 2, 4 … s from the claim that completed the set), so a
    slow write is joined within twice its lateness, for a handful of messages. None once
    the next check would come after the fan-out counts as stalled: the sweeper's turn."""
    delay = max(PENDING_CHECK_S, waited_s)
    return delay if waited_s + delay < stall_after_s else None


class ExecutionChanged(StoreUnavailableError):
    """A redelivered attempt ended otherwise (final or not) than the one committed for it:
    its tool gave another outcome. The message is retried until they agree."""


class FanOutSteps:
    """The step loop's side of fan-out nodes, over the service's store and queue."""

    def __init__(self, service: RunService) -> None:
        self.service = service

    async def step(
        self, run: RunRecord, graph: CompiledGraph, node: CompiledNode, meter: MessageMeter | None = None
    ) -> Disposition:
        """A step message for a run at fan-out ``node``: open the fan-out, or resume it.
        ``meter``: the message's part of what the invocation spends (for the run's cost)."""
        service, store = self.service, self.service.store
        assert run.cursor is not None
        base = run.cursor.step
        with store.tally() as tally:
            fanout = store.get_fanout(run.run_id, base)
            read = tally.take()
        if fanout is not None:
            return self._resume(run, graph, node, fanout, meter)
        state = service.live_state(run).view()
        if base >= graph.max_steps:
            outcome = max_steps_failure(graph, node, base, state)
            return service.commit_outcome(run, base, outcome, state, meter=meter, spent=read)
        try:
            total = len(item_list(node, state))
        except InvalidMapItems as exc:
            outcome = node_failure(node, run.cursor, state, {}, exc, service.clock())
            return service.commit_outcome(run, base, outcome, state, meter=meter, spent=read)
        if total == 0:
            outcome = join(graph, node, base, state, {}, 0, now=service.clock)
            return service.commit_outcome(run, base, outcome, state, meter=meter, spent=read)
        width = min(fanout_of(node).max_concurrency, total)
        # What opening costs is kept with the fan-out, for the join to count: its item
        # messages go SEND_BATCH_MAX to a request.
        sends = -(-width // SEND_BATCH_MAX)
        cost = read + _taken(meter) + {SQS_REQUESTS: sends * MICRO}
        store.open_fanout(run.run_id, base, total, service.clock(), cost=cost)
        service.queue.send_items(run.run_id, base, [(index, 1) for index in range(width)])
        return Disposition.FANNED_OUT

    def _resume(
        self,
        run: RunRecord,
        graph: CompiledGraph,
        node: CompiledNode,
        fanout: FanOutRecord,
        meter: MessageMeter | None,
    ) -> Disposition:
        service = self.service
        # Only a step message at the run's current step gets here: a join's check (or the
        # sweeper's), which checks again while an entry is missing.
        if fanout.closed_at is not None:
            return self._end_closed(run, graph, node, fanout, recheck=True, meter=meter)
        if fanout.complete:
            joined = self._join(run, graph, node, fanout, recheck=True, meter=meter)
            if joined is not Disposition.IN_PROGRESS:
                return joined
        if service.clock() - fanout.updated_at < service.stall_after_s:
            return Disposition.IN_PROGRESS
        # Stalled: some item message was lost, or a claimed attempt was never written.
        due = list(self._due(node, fanout, self._written(fanout)))
        service.queue.send_items(run.run_id, fanout.base, due)
        return Disposition.RESENT

    def reopen(
        self, run: RunRecord, graph: CompiledGraph, node: CompiledNode, prior: int, carried: frozenset[int]
    ) -> None:
        """Open the fan-out of a redriven run at its fan-out node, taking over the items
        ``carried`` from the failed fan-out at ``prior``, and send the items now due."""
        assert run.cursor is not None
        total = len(item_list(node, self.service.live_state(run).view()))
        store, clock = self.service.store, self.service.clock
        fanout = store.open_fanout(run.run_id, run.cursor.step, total, clock(), prior=prior, carried=carried)
        self.service.queue.send_items(run.run_id, fanout.base, list(self._due(node, fanout, frozenset())))

    def resend_due(self, run: RunRecord, graph: CompiledGraph) -> int:
        """Re-send the item messages of ``run``'s open fan-out that should be running now
        (their messages were lost with the queue); how many were sent."""
        node = graph.nodes.get(run.cursor.node) if run.cursor is not None else None
        if node is None or node.fanout is None or run.cursor is None:
            return 0
        fanout = self.service.store.get_fanout(run.run_id, run.cursor.step)
        if fanout is None or fanout.complete or fanout.closed_at is not None:
            return 0
        due = list(self._due(node, fanout, self._written(fanout)))
        self.service.queue.send_items(run.run_id, fanout.base, due)
        return len(due)

    def _written(self, fanout: FanOutRecord) -> frozenset[tuple[int, int]]:
        """(index, attempt) of each execution of ``fanout`` written so far."""
        records = self.service.store.list_executions(fanout.run_id, fanout.base, fanout.executed)
        return frozenset((record.index, record.attempt) for record in records)

    @staticmethod
    def _due(
        node: CompiledNode, fanout: FanOutRecord, written: frozenset[tuple[int, int]]
    ) -> Iterator[tuple[int, int]]:
        """(index, attempt) of each item that should be running now: an attempt claimed
        but never written (its worker died in between) is run again — a later attempt
        would supersede it and leave its slot empty for good, and the join waits for
        every slot; else an unfinished item's next attempt, item i starting when item
        i - max_concurrency has finished. (A carried item, claimed as attempt 0, has its
        execution in the fan-out it was carried from.)"""
        width = fanout_of(node).max_concurrency
        for index in range(fanout.total):
            attempt, final = fanout.claims.get(index, (0, False))
            if attempt > 0 and (index, attempt) not in written:
                yield index, attempt
            elif final or (index >= width and not fanout.claims.get(index - width, (0, False))[1]):
                continue
            else:
                yield index, attempt + 1

    async def process_item(
        self,
        run_id: str,
        base: int,
        index: int,
        attempt: int,
        meter: MessageMeter | None = None,
        deadline: float | None = None,
        reads: ItemReads | None = None,
    ) -> Disposition:
        """Run attempt ``attempt`` of item ``index`` of the fan-out at step ``base``, commit
        it once, send what follows, and join if this completed the set. ``meter``: the
        message's part of what the invocation spends (the attempt's record keeps it, the
        join counts it); ``deadline``: when the tool must be done (the step function's);
        ``reads``: the batch's reads of runs, shared by its items (:class:`ItemReads`)."""
        with self.service.store.tally() as tally:
            return await self._process_item(run_id, base, index, attempt, meter, tally, deadline, reads)

    async def _process_item(
        self,
        run_id: str,
        base: int,
        index: int,
        attempt: int,
        meter: MessageMeter | None,
        tally: UsageTally,
        deadline: float | None = None,
        reads: ItemReads | None = None,
    ) -> Disposition:
        service, store = self.service, self.service.store
        run = (
            store.get_run(run_id)
            if reads is None
            else reads.run(run_id, base, partial(store.get_run, run_id))
        )
        if run is None:
            return Disposition.UNKNOWN_RUN
        if run.status != "running":
            return Disposition.FINISHED  # cancelled: running items finish and are ignored
        if run.cursor is None or run.cursor.step != base:
            return Disposition.STALE
        graph = service.compiled(run.graph_id)
        node = graph.nodes[run.cursor.node]
        fanout = node.fanout
        assert fanout is not None, "an item message names a step at a map or parallel node"
        state = service.live_state(run).view()
        execution = await run_execution(
            graph,
            node,
            index,
            attempt,
            state,
            base=base,
            run_id=run_id,
            now=service.clock,
            clients=service.clients,
            max_result_bytes=MAX_RESULT_BYTES if service.blobs is None else service.max_total_state_bytes,
            deadline=deadline,
        )
        blob = None
        if service.blobs is not None:  # a large result is written to the blob store, once per content
            execution, blob = offload_execution(execution, partial(service.blobs.offload_text, run_id))
        # When the fan-out is next due: now, or after this item's retry delay (so the
        # sweeper does not take a pending retry for a stall).
        now = service.clock() + execution.delay_s
        claim = store.claim_execution(
            run_id,
            base,
            index,
            attempt,
            final=execution.final,
            failed=execution.failed,
            now=now,
            limit=graph.max_steps - base,
            total=len(item_list(node, state)),
        )
        if claim.outcome in ("closed", "superseded"):
            return Disposition.STALE
        if claim.outcome == "full":
            store.close_fanout(run_id, base, now)
            return self._end_closed(run, graph, node, self._fanout(run_id, base), recheck=True)
        if claim.outcome == "again" and claim.final != execution.final:
            raise ExecutionChanged(
                f"run {run_id!r} item {index} attempt {attempt} was committed "
                f"{'final' if claim.final else 'to be retried'}; this execution ended otherwise"
            )
        assert claim.step is not None and claim.fanout is not None
        entry = {"seq": claim.step, **execution.entry, "run_id": run_id}
        following = self._following(run, base, node, claim, execution)
        sends = EMPTY if following is None else {SQS_REQUESTS: MICRO}
        record = ExecutionRecord(
            claim.step,
            index,
            attempt,
            execution.status,
            None if blob is not None else execution.value,
            execution.error,
            entry,
            blob,
            # The store adds its reads (the tally's) and the claim's and this write's units;
            # the blob store its requests (the result's offload, the reads of large values).
            cost=tally.take()
            + _taken(meter)
            + step_usage(entry, sends=0)
            + sends
            + (service.blobs.take_usage(run_id) if service.blobs is not None else EMPTY),
        )
        store.put_execution(run_id, base, record, now)
        if following is not None:
            service.queue.send_item(run_id, base, *following)
        if claim.fanout.complete:
            return self._join(run, graph, node, claim.fanout, recheck=claim.outcome == "new", meter=meter)
        return Disposition.COMMITTED

    def _following(
        self, run: RunRecord, base: int, node: CompiledNode, claim: Claim, execution: Execution
    ) -> tuple[int, int, float] | None:
        """The item message that follows ``execution`` (index, attempt, delay), if any:
        its next attempt, or the item ``max_concurrency`` places further on."""
        run_id = run.run_id
        if not execution.final:
            return execution.index, execution.attempt + 1, execution.delay_s
        width = fanout_of(node).max_concurrency
        following = execution.index + width
        assert claim.fanout is not None
        if run.redrive_count and following < claim.fanout.total:
            # A redriven fan-out may have taken items over: the lane passes them by.
            carried = self._fanout(run_id, base).carried
            while following in carried:
                following += width
        return (following, 1, 0.0) if following < claim.fanout.total else None

    def _fanout(self, run_id: str, base: int) -> FanOutRecord:
        fanout = self.service.store.get_fanout(run_id, base)
        assert fanout is not None, "a claimed fan-out exists"
        return fanout

    def _executions(
        self, run: RunRecord, fanout: FanOutRecord, count: int, recheck: bool
    ) -> list[ExecutionRecord] | None:
        """The fan-out's first ``count`` executions, or None while one of them is claimed
        but not written yet. With ``recheck`` (the claim that completed the set, or a
        check) the next check is sent, waiting longer each time (:func:`pending_check_delay`):
        a worker that was only slow has written it by then; one that died finds its claim
        again when redelivered, sees the set complete and joins itself; failing both, the
        sweeper finds the run stalled. A redelivered claim sends none, so duplicates of
        item messages do not multiply the checks."""
        service = self.service
        records = service.store.list_executions(run.run_id, fanout.base, count)
        if len(records) < count:
            delay = pending_check_delay(service.clock() - fanout.updated_at, service.stall_after_s)
            if recheck and delay is not None:
                service.queue.send_step(run.run_id, fanout.base + count, delay)
            return None
        return records

    def _join(
        self,
        run: RunRecord,
        graph: CompiledGraph,
        node: CompiledNode,
        fanout: FanOutRecord,
        recheck: bool = False,
        meter: MessageMeter | None = None,
    ) -> Disposition:
        """Commit the join of a complete set, as the transition after its last execution.
        Its commit counts in the run's cost what the fan-out cost: its opening, each
        execution (retried attempts included) and the join's own reads."""
        with self.service.store.tally() as tally:
            records = self._executions(run, fanout, fanout.executed, recheck)
            if records is None:
                return Disposition.IN_PROGRESS
            finals = self._finals(run.run_id, records)
            if fanout.cost is None or (run.redrive_count and fanout.prior is None):
                fanout = self._fanout(run.run_id, fanout.base)  # a claim's answer leaves them out
            if fanout.prior is not None:
                finals = {**self._carried_finals(run.run_id, fanout), **finals}
            spent = _spent(fanout, records, tally)
        state = self.service.live_state(run).view()
        step = fanout.base + fanout.executed
        outcome = join(graph, node, step, state, finals, fanout.total, now=self.service.clock)
        return self.service.commit_outcome(run, step, outcome, state, meter=meter, spent=spent)

    def _carried_finals(self, run_id: str, fanout: FanOutRecord) -> dict[int, Execution]:
        """The final executions of the items a redriven fan-out took over, from the failed
        fan-out each ran in (each redrive's fan-out names the one before it)."""
        store, wanted = self.service.store, set(fanout.carried)
        finals: dict[int, Execution] = {}
        prior = store.get_fanout(run_id, fanout.prior) if fanout.prior is not None else None
        while wanted and prior is not None:
            ran = self._finals(run_id, store.list_executions(run_id, prior.base, prior.executed))
            finals |= {index: ran[index] for index in wanted & ran.keys()}
            wanted -= ran.keys()
            prior = store.get_fanout(run_id, prior.prior) if prior.prior is not None else None
        if wanted:
            raise StoreUnavailableError(f"run {run_id!r}: carried items {sorted(wanted)[:5]} not found")
        return finals

    def _end_closed(
        self,
        run: RunRecord,
        graph: CompiledGraph,
        node: CompiledNode,
        fanout: FanOutRecord,
        recheck: bool = False,
        meter: MessageMeter | None = None,
    ) -> Disposition:
        """A fan-out closed because the run reached max_steps: fail the run at its step."""
        closed_at = fanout.closed_at
        assert closed_at is not None
        with self.service.store.tally() as tally:
            records = self._executions(run, fanout, closed_at - fanout.base, recheck)
            if records is None:
                return Disposition.IN_PROGRESS
            if fanout.cost is None:
                fanout = self._fanout(run.run_id, fanout.base)
            spent = _spent(fanout, records, tally)
        state = self.service.live_state(run).view()
        outcome = max_steps_failure(graph, node, closed_at, state, now=self.service.clock)
        return self.service.commit_outcome(run, closed_at, outcome, state, meter=meter, spent=spent)

    def _finals(self, run_id: str, records: list[ExecutionRecord]) -> dict[int, Execution]:
        """Each item's final execution among ``records``, offloaded values read back."""
        blobs = self.service.blobs
        finals = {}
        for r in records:
            if r.status == "retry":
                continue
            value = r.value
            if r.blob is not None:
                if blobs is None:
                    raise StoreUnavailableError(
                        f"run {run_id!r}: item {r.index}'s value is offloaded; no blob store"
                    )
                value = blobs.resolve(run_id, r.blob)
            finals[r.index] = Execution(r.index, r.attempt, r.status, value, r.error, r.entry)
        return finals


def _taken(meter: MessageMeter | None) -> Usage:
    return EMPTY if meter is None else meter.take()


def _spent(fanout: FanOutRecord, records: list[ExecutionRecord], tally: UsageTally) -> Usage:
    """What a fan-out cost, for the commit that ends it: its opening, its executions (a
    redriven one's carried items were counted by the commit that failed before) and
    the reads in ``tally``."""
    spent = (fanout.cost or EMPTY) + tally.take()
    for record in records:
        spent = spent + record.cost
    return spent
