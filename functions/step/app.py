"""Step Lambda: each SQS step message executes a node of a run, and the nodes after it
while they are due at once and the invocation has budget left (chained steps: engine/chain.py).
A batch's item messages (a map's items, a parallel node's branches) run alongside each
other and alongside the step messages, which run one after another."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from engine.chain import ChainBudget
from engine.cost import InvocationMeter
from engine.item_reads import ItemReads
from engine.ports import StepCommit
from engine.step import TERMINAL
from engine.stepmessage import MalformedStepMessage, StepMessage
from functions.aws.batch import SqsRecord, parse_step_message, process_sqs_batch_async
from functions.runtime import current_app

logger = Logger(service="flowforge-step")
#: The event loop a thread reuses across invocations: per thread, not per App, because
#: tests run several invocations at once on one App (the local stack's workers have one
#: each anyway), and one loop cannot run two of them.
_local = threading.local()


#: Threads for the tools a batch runs off the event loop (sync tools, model calls through
#: ``asyncio.to_thread``): a batch's item messages run alongside, up to 10 (BatchSize),
#: each maybe waiting in a thread. asyncio's default, ``os.cpu_count() + 4``, is 6 on a
#: function that sees 2 CPUs, so the 7th item's call would wait for the first to finish.
TOOL_THREADS = 32


def run_async(coro):
    """Run ``coro`` on this thread's event loop, created once and reused across invocations
    (with :data:`TOOL_THREADS` threads for what runs off the loop)."""
    runner = getattr(_local, "runner", None)
    if runner is None:
        runner = _local.runner = asyncio.Runner()
        runner.get_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=TOOL_THREADS, thread_name_prefix="flowforge-tool")
        )
    return runner.run(coro)


def record_outcome(metrics: EphemeralMetrics, commit: StepCommit) -> None:
    metrics.add_metric("NodeDuration", MetricUnit.Milliseconds, commit.log.get("duration_ms", 0))
    if commit.log.get("error"):
        metrics.add_metric("NodeErrors", MetricUnit.Count, 1)
    if commit.status in TERMINAL:
        metrics.add_metric(f"Runs{commit.status.title()}", MetricUnit.Count, 1)


#: Kept after a tool's time is up, for the step's commit and the send of the next one.
COMMIT_RESERVE_S = 5.0
#: A message starts only with at least this long before the tools' deadline.
MIN_STEP_S = 1.0
#: SQS bills each started 64 KB of a request's payload as one request.
SQS_CHUNK_BYTES = 64 * 1024


class Invocation:
    """The time and the chain budget one invocation has for its batch, on the service's
    clock, and what it spends (for the cost of the runs it moves). ``in_turn``: how many
    of its records are step messages, run one after another (a chain's share of the
    budget counts them; item messages run alongside and never chain)."""

    def __init__(
        self, context, clock, settings, records: int, body_bytes: int = 0, in_turn: int | None = None
    ) -> None:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        self.clock = clock
        now = clock()
        #: When tools must be done: the function's end, less what a commit and send need.
        self.deadline = now + remaining() / 1000 - COMMIT_RESERVE_S if remaining else None
        self.meter = InvocationMeter(
            records,
            _memory_mb(context),
            # The event source mapping's receive: one request per started 64 KB of bodies.
            receive_requests=max(1, -(-body_bytes // SQS_CHUNK_BYTES)),
        )
        #: The runs this batch's item messages read, shared by the items of one fan-out.
        self.item_reads = ItemReads(clock)
        self.budget = ChainBudget(
            max_steps=settings.chain_max_steps,
            max_seconds=settings.chain_max_seconds,
            deadline=self.deadline,
            min_step_s=MIN_STEP_S,
            started_at=now,
            pending=records if in_turn is None else in_turn,
        )

    def has_time(self) -> bool:
        """Whether another message may start (else it is left for redelivery)."""
        return self.deadline is None or self.deadline - self.clock() >= MIN_STEP_S


def _memory_mb(context) -> int | None:
    memory = getattr(context, "memory_limit_in_mb", None)
    try:
        return int(memory) if memory else None
    except (TypeError, ValueError):
        return None


def item_message(record: SqsRecord) -> bool:
    """Whether ``record`` is an item message (a map's item, a parallel branch): those of a
    batch run alongside each other, their tools waiting together."""
    try:
        return StepMessage.from_json(record.body).item is not None
    except MalformedStepMessage:
        return False


async def process_record(record: SqsRecord, metrics: EphemeralMetrics, invocation: Invocation) -> str | None:
    """Handle one step or item message; its log lines carry its run and step."""
    message = parse_step_message(record, logger, metrics)
    if message is None:
        return None
    meter = invocation.meter.begin_message()
    logger.thread_safe_append_keys(run_id=message.run_id, step=message.step)
    chained = 0
    try:
        service = current_app().service
        if message.item is None:
            budget = invocation.budget
            budget.begin_message(invocation.clock())
            budget.meter, budget.stop, before = meter, None, budget.chained
            disposition = await service.process_step(
                message.run_id, message.step, partial(record_outcome, metrics), budget=budget
            )
            chained = budget.chained - before
            logger.info("step handled", disposition=disposition, chained=chained, chain_stop=budget.stop)
        else:
            disposition = await service.process_item(
                message.run_id,
                message.step,
                message.item,
                message.attempt,
                meter,
                deadline=invocation.deadline,
                reads=invocation.item_reads,
            )
            logger.info("step handled", disposition=disposition, item=message.item, attempt=message.attempt)
    except Exception:  # infrastructure: the record is reported failed and redelivered
        logger.exception("step failed; the message will be redelivered")
        metrics.add_metric("StepErrors", MetricUnit.Count, 1)
        raise
    finally:
        meter.end()
        logger.thread_safe_remove_keys(["run_id", "step"])
    metrics.add_metric("Steps" + disposition.title().replace("_", ""), MetricUnit.Count, 1)
    if chained:
        metrics.add_metric("StepsChained", MetricUnit.Count, chained)
    return disposition


@logger.inject_lambda_context
def handler(event, context):
    """A batch of step messages: item messages all at once, the others one after another
    (each chaining while its share of the budget allows), alongside them."""
    app = current_app()
    records = event.get("Records", ())
    body_bytes = sum(len(r.get("body", "").encode()) for r in records)
    in_turn = sum(1 for r in records if not item_message(SqsRecord.of(r)))
    invocation = Invocation(context, app.service.clock, app.settings, len(records), body_bytes, in_turn)
    return run_async(
        process_sqs_batch_async(
            event,
            partial(process_record, invocation=invocation),
            service="step",
            has_time=invocation.has_time,
            alongside=item_message,
        )
    )
