"""Event source mappings: what feeds the step, DLQ, broadcast and sweeper functions.

- :class:`QueuePoller` behaves like Lambda's SQS event source mapping: long-polls batches
  (the template's BatchSize, the queue's visibility timeout), deletes what succeeded,
  leaves ``batchItemFailures`` (or the whole batch, if the function failed) to come back
  after the visibility timeout; moto moves a message to the DLQ after maxReceiveCount.
- :class:`StreamPoller` reads the table's stream in order and invokes the function with
  the records that pass the template's FilterCriteria, retrying a failed batch per
  MaximumRetryAttempts. With a ParallelizationFactor of N it serves up to N batches at
  once, each item's records in order (by partition key, as Lambda does); it reads on
  while batches are served. (Persistence is not its job: the moto server journals every
  write before answering it, so whatever the poller reads is on disk already.)
- :class:`Schedule` invokes a function every N seconds with an EventBridge event.

boto3 calls block, and the gateway must not: each poller makes them in threads of its
own. (In the loop's shared default executor, a few queue long polls — 2 s each while the
queues are idle — would hold every thread, and the stream's reads, hence live logs,
would wait for them.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flowforge.local import events
from flowforge.local.journal import to_wire
from flowforge.local.lambdas import InvocationError, LocalFunction

log = logging.getLogger("flowforge.local")

#: Seconds a receive waits for a message; short so shutdown is quick, and a message
#: arriving during the wait is returned at once anyway.
LONG_POLL_S = 2
STREAM_IDLE_POLL_S = 0.2
STREAM_BUSY_POLL_S = 0.02
STREAM_PAGE = 1000
ERROR_BACKOFF_S = 1.0


async def _blocking(threads: ThreadPoolExecutor, call: Callable[..., Any], /, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(threads, lambda: call(**kwargs))


class QueuePoller:
    """An SQS event source mapping: ``pollers`` concurrent receive → invoke → delete loops."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        function: LocalFunction,
        *,
        batch_size: int,
        report_failures: bool,
        pollers: int = 1,
        region: str = "us-east-1",
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.function = function
        self.batch_size = batch_size
        self.report_failures = report_failures
        self.pollers = pollers
        self.region = region
        self._threads = ThreadPoolExecutor(max_workers=pollers, thread_name_prefix=f"{function.name}-poller")

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._loop() for _ in range(self.pollers)))
        finally:
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        while True:
            try:
                response = await _blocking(
                    self._threads,
                    self.sqs.receive_message,
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=LONG_POLL_S,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:  # an event source mapping outlives any failed poll
                log.warning("%s: receive from %s failed: %s", self.function.name, self.queue_arn, exc)
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            messages = response.get("Messages") or []
            if messages:
                try:
                    await self.deliver(messages)
                except Exception:  # they come back after the visibility timeout
                    log.exception("%s: a batch from %s was not delivered", self.function.name, self.queue_arn)

    async def deliver(self, messages: list[dict[str, Any]]) -> None:
        """Invoke the function with one batch; delete the messages it did not fail."""
        event = events.sqs_event(messages, self.queue_arn, self.region)
        try:
            result = await self.function.invoke(event)
        except InvocationError:
            return  # the whole batch comes back after the visibility timeout
        failed = self._failed_ids(result, {m["MessageId"] for m in messages})
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(done[start : start + 10])
            ]
            try:
                await _blocking(
                    self._threads, self.sqs.delete_message_batch, QueueUrl=self.queue_url, Entries=entries
                )
            except Exception as exc:  # they will be redelivered: at least once
                log.warning("%s: delete failed, messages will be redelivered: %s", self.function.name, exc)

    def _failed_ids(self, result: Any, ids: set[str]) -> set[str]:
        if not self.report_failures or not isinstance(result, dict):
            return set()
        failures = result.get("batchItemFailures") or []
        named = {f.get("itemIdentifier") if isinstance(f, dict) else None for f in failures}
        failed = {i for i in named if isinstance(i, str)}
        if len(failed) < len(named) or not failed <= ids:
            # Lambda's rule: an unknown or empty identifier fails the whole batch.
            log.warning(
                "%s: batchItemFailures names unknown messages: whole batch retried", self.function.name
            )
            return ids
        return failed


class StreamPoller:
    """A DynamoDB stream event source mapping.

    Every poll takes a fresh iterator after the last sequence number read: the local
    stack forgets the shard iterators moto would keep forever (MotoServer.trim). The
    local stack's poller reads moto's memory instead (``records_after``).
    """

    def __init__(
        self,
        streams: Any,
        stream_arn: str,
        function: LocalFunction,
        *,
        batch_size: int,
        report_failures: bool,
        max_retries: int,
        accepts: Callable[[dict[str, Any]], bool],
        consumed: Callable[[str | None], None] | None = None,
        region: str = "us-east-1",
        parallelization: int = 1,
        records_after: Callable[[str | None, int], list[dict[str, Any]]] | None = None,
    ) -> None:
        """``parallelization``: the mapping's ParallelizationFactor. ``records_after``
        (the local stack's: :meth:`MotoServer.stream_records_after`) reads the shard's
        records after a sequence number, at most so many, as GetRecords returns them,
        without the two requests a read otherwise takes."""
        self.streams = streams
        self.stream_arn = stream_arn
        self.function = function
        self.batch_size = batch_size
        self.report_failures = report_failures
        # Locally "until the record expires" (-1) would block the shard for a day.
        self.max_retries = max_retries if max_retries >= 0 else 3
        self.accepts = accepts
        self.consumed = consumed
        self.region = region
        self.parallelization = max(1, parallelization)
        self.records_after = records_after
        self.shard_id: str | None = None
        self.last_sequence: str | None = None
        self._threads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-poller")
        self._news = asyncio.Event()
        self._loop_of_run: asyncio.AbstractEventLoop | None = None

    def skip_existing(self) -> int:
        """Start after the records already in the stream (the restore's own writes)."""
        skipped = 0
        while True:
            records = self._read_page()
            if not records:
                if self.consumed is not None:
                    self.consumed(self.last_sequence)
                return skipped
            skipped += len(records)

    def _read_page(self) -> list[dict[str, Any]]:
        if self.records_after is not None:
            records = self.records_after(self.last_sequence, STREAM_PAGE)
            if records:
                self.last_sequence = records[-1]["dynamodb"]["SequenceNumber"]
            return records
        if self.shard_id is None:
            stream = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
            self.shard_id = stream["Shards"][0]["ShardId"]
        position: dict[str, Any] = {"ShardIteratorType": "TRIM_HORIZON"}
        if self.last_sequence is not None:
            position = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self.last_sequence}
        iterator = self.streams.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=self.shard_id, **position
        )
        records = self.streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=STREAM_PAGE)[
            "Records"
        ]
        if records:
            self.last_sequence = records[-1]["dynamodb"]["SequenceNumber"]
        return [to_wire(r) for r in records]

    def read(self) -> list[dict[str, Any]]:
        """Everything new (stream reads are serialized with writes by the moto server's
        DynamoDB lock, so a transaction is never half in the stream)."""
        records: list[dict[str, Any]] = []
        while True:
            page = self._read_page()
            records += page
            if len(page) < STREAM_PAGE:
                break
        if self.consumed is not None:
            self.consumed(self.last_sequence)  # held here (and journaled): the stream may forget them
        return records

    def nudge(self) -> None:
        """New records are in the stream (callable from any thread): read now, not at the
        next idle poll."""
        if self._loop_of_run is not None:
            self._loop_of_run.call_soon_threadsafe(self._news.set)

    async def run(self) -> None:
        self._news = asyncio.Event()
        self._loop_of_run = asyncio.get_running_loop()
        try:
            await self._loop()
        finally:
            self._loop_of_run = None
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        lanes = [_Lane() for _ in range(self.parallelization)]
        servers = [asyncio.ensure_future(self._serve(lane)) for lane in lanes]
        try:
            while True:
                try:
                    records = await _blocking(self._threads, self.read)
                except Exception as exc:  # the mapping outlives any failed read
                    log.warning("stream read failed: %s", exc)
                    await asyncio.sleep(ERROR_BACKOFF_S)
                    continue
                for record in records:
                    if self.accepts(record):
                        lanes[self._lane_of(record, len(lanes))].add(record)
                if records:
                    await asyncio.sleep(STREAM_BUSY_POLL_S)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._news.wait(), STREAM_IDLE_POLL_S)
                self._news.clear()
        finally:
            for server in servers:
                server.cancel()
            await asyncio.gather(*servers, return_exceptions=True)

    @staticmethod
    def _lane_of(record: dict[str, Any], lanes: int) -> int:
        """The lane of a record's item: one partition key's records stay in order."""
        if lanes == 1:
            return 0
        keys = record["dynamodb"].get("Keys") or {}
        (first, *_) = keys.values() if keys else ({},)
        key = next(iter(first.values()), "") if isinstance(first, dict) and first else ""
        return zlib.crc32(str(key).encode()) % lanes

    async def _serve(self, lane: _Lane) -> None:
        """Serve one lane's records, a batch at a time, in stream order."""
        while True:
            await lane.ready.wait()
            batch = lane.take(self.batch_size)
            await self.deliver(batch)

    async def deliver(self, records: list[dict[str, Any]]) -> None:
        """Invoke with ``records``; on failure retry from the first failed record."""
        for attempt in range(self.max_retries + 1):
            try:
                result = await self.function.invoke(
                    events.stream_event(records, self.stream_arn, self.region)
                )
            except InvocationError:
                remaining = records
            else:
                remaining = self._from_first_failure(result, records)
            if not remaining:
                return
            records = remaining
            if attempt < self.max_retries:
                await asyncio.sleep(min(ERROR_BACKOFF_S * 2**attempt, 10))
        log.warning(
            "%s: gave up on %d stream records after %d retries",
            self.function.name,
            len(records),
            self.max_retries,
        )

    def _from_first_failure(self, result: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.report_failures or not isinstance(result, dict):
            return []
        failed = {
            f.get("itemIdentifier") for f in result.get("batchItemFailures") or [] if isinstance(f, dict)
        }
        for index, record in enumerate(records):
            if record["dynamodb"]["SequenceNumber"] in failed:
                return records[index:]
        return records if failed else []


class _Lane:
    """Records waiting for one of a stream mapping's concurrent batches."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.ready = asyncio.Event()

    def add(self, record: dict[str, Any]) -> None:
        self.pending.append(record)
        self.ready.set()

    def take(self, most: int) -> list[dict[str, Any]]:
        batch, self.pending = self.pending[:most], self.pending[most:]
        if not self.pending:
            self.ready.clear()
        return batch


class Schedule:
    """``rate(...)``: invoke ``function`` with a scheduled event every ``every_s`` seconds."""

    def __init__(self, function: LocalFunction, every_s: float, region: str = "us-east-1") -> None:
        self.function = function
        self.every_s = every_s
        self.rule_arn = f"arn:aws:events:{region}:{events.ACCOUNT_ID}:rule/{function.name}-schedule"
        self.region = region

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            # A failure is already logged with its traceback; the next tick tries again.
            with contextlib.suppress(InvocationError):
                await self.function.invoke(events.schedule_event(self.rule_arn, self.region))
