"""Runs through the real step handler on moto, with every AWS call metered.

:class:`MotoStack` creates template.yaml's table and queues under ``mock_aws`` (exactly
as the functional tests and the local stack do), points the functions' clients at them
and attaches a :class:`~bench.metering.CallMeter` to every client. :meth:`MotoStack.pump`
stands in for the Lambda event source mapping: it receives up to 10 step messages,
calls ``functions.step.app.handler`` with the SQS event, and deletes what the handler
acknowledged with one DeleteMessageBatch. moto never runs an event source mapping.

A :class:`Trace` keeps, for each handler invocation, the records it got, the calls the
handler made, the event source mapping's receive and delete for that batch, and the CPU
time the handler spent outside AWS calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from bench.capacity import Index, Item
from bench.metering import Call, CallMeter
from engine import default_registry
from engine.blobs import Blobs
from flowforge.local import moto_internals
from flowforge.local.events import LambdaContext, sqs_event
from flowforge.local.stack import create_resources, load_template
from functions import runtime
from functions.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "workflows" / "graphs"
REGION = "us-east-1"
BATCH_SIZE = 10  # the template's BatchSize for the step queue
_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
_UNSET = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN")


@default_registry.tool("bench_count")
async def bench_count(state, ctx) -> dict[str, Any]:
    """Adds one to ``i``: the loop graph's trivial tool."""
    return {"i": state["i"] + 1}


@default_registry.tool("bench_read")
async def bench_read(state, ctx) -> dict[str, Any]:
    """Adds one to ``i`` and reads ``payload`` (offloaded when large: read from S3)."""
    return {"i": state["i"] + 1, "n": len(state["payload"])}


def loop_graph(steps: int, fn: str = "bench_count") -> dict[str, Any]:
    """One node that runs ``steps`` times: ``i`` counts up until it reaches ``steps``."""
    return {
        "name": "bench_loop",
        "start": "count",
        "max_steps": steps + 10,
        "nodes": {
            "count": {
                "fn": fn,
                "loop_condition": {"var": "i", "gte": steps},
                "max_iterations": steps,
            }
        },
    }


def loop_state(state_bytes: int) -> dict[str, Any]:
    """``{"i": 0, "payload": "xx…"}`` serialized to ``state_bytes`` bytes."""
    overhead = len(json.dumps({"i": 0, "payload": ""}, separators=(",", ":")))
    return {"i": 0, "payload": "x" * max(0, state_bytes - overhead)}


def summarization() -> tuple[dict[str, Any], dict[str, Any]]:
    graph = json.loads((GRAPHS / "summarization.json").read_text())
    state = json.loads((GRAPHS / "summarization.state.json").read_text())
    return graph, state


def step_memory_mb() -> int:
    """The step function's MemorySize in template.yaml (its own, else the Globals')."""
    template = load_template()
    own = template["Resources"]["StepFunction"]["Properties"].get("MemorySize")
    return int(own or template["Globals"]["Function"]["MemorySize"])


@dataclass
class Invocation:
    """One call of the step handler with a batch of ``len(steps)`` records."""

    messages: list[tuple[str, int]]  # (run_id, step) of each record
    cpu_s: float  # the handler's CPU time outside AWS calls (and the meter)
    calls: list[Call]  # made by FlowForge's code
    esm_calls: list[Call]  # the event source mapping's receive and delete for this batch
    chained: int = 0  # steps run after a record's own (chained steps), from the StepsChained metric
    wall_s: float = 0.0  # the handler call's wall-clock time (what Lambda would bill, here)

    @property
    def records(self) -> int:
        return len(self.messages)

    @property
    def nodes(self) -> int:
        """Nodes executed: one per record, plus the chained ones."""
        return len(self.messages) + self.chained

    @property
    def steps(self) -> list[int]:
        return [step for _, step in self.messages]

    @property
    def run_ids(self) -> list[str]:
        return [run_id for run_id, _ in self.messages]


@dataclass
class Trace:
    name: str
    runs: int
    invocations: list[Invocation] = field(default_factory=list)
    start_calls: list[Call] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        return sum(i.nodes for i in self.invocations)


class MotoStack:
    """template.yaml's stack on moto, the functions wired to it, every client metered."""

    def __init__(self, *, container_per_invocation: bool = False, chain_max_steps: int | None = None) -> None:
        self._exit = contextlib.ExitStack()
        #: Each invocation in a fresh container (nothing remembered of any run), rather
        #: than every invocation in the one warm container.
        self.container_per_invocation = container_per_invocation
        #: The step function's ChainMaxSteps (None: template.yaml's default).
        self.chain_max_steps = chain_max_steps

    def __enter__(self) -> MotoStack:
        self._exit.enter_context(_environment(_ENV, _UNSET))
        self._exit.enter_context(mock_aws())
        session = boto3.session.Session(region_name=REGION)
        self.stack = create_resources(session)
        self._exit.enter_context(_environment(self.stack["env"], ()))
        table = session.client("dynamodb").describe_table(TableName=self.stack["table"])["Table"]
        table_keys = tuple(k["AttributeName"] for k in table["KeySchema"])
        indexes = tuple(
            Index(i["IndexName"], tuple(k["AttributeName"] for k in i["KeySchema"]), table_keys)
            for i in table.get("GlobalSecondaryIndexes", [])
        )
        self.meter = CallMeter(_peek, table_keys, indexes)
        self.client = clients = functools.cache(lambda name: self.meter.attach(session.client(name)))
        settings = Settings.from_env()
        if self.chain_max_steps is not None:
            settings = dataclasses.replace(settings, chain_max_steps=self.chain_max_steps)
        runtime.set_app(runtime.build_app(settings, clients))
        self._exit.callback(runtime.set_app, None)
        self.service = runtime.current_app().service
        self.sqs = clients("sqs")
        self.queue_url = self.stack["queue_url"]
        self.queue_arn = self.stack["queue_arn"]
        self.context = LambdaContext(
            memory_limit_in_mb=step_memory_mb(), aws_request_id="00000000-0000-0000-0000-000000000000"
        )
        from functions.step import app  # after the environment: its settings are read lazily

        self.handler = app.handler
        self._exit.enter_context(_quiet(app.logger))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._exit.close()

    # -- runs -------------------------------------------------------------------------------
    def start(self, graph: dict[str, Any], states: list[dict[str, Any]], trace: Trace) -> list[str]:
        """Create the graph, then start one run per state (the API's work, metered apart)."""
        graph_id = self.service.create_graph(graph).graph_id
        mark = self.meter.mark()
        with self.meter.acting("start"):
            run_ids = [self.service.start_run(graph_id, state).run_id for state in states]
        trace.start_calls += self.meter.calls[mark:]
        return run_ids

    def pump(self, trace: Trace, max_invocations: int = 100_000) -> None:
        """Deliver step messages to the handler until the queue is empty."""
        for _ in range(max_invocations):
            if not self.pump_one(trace):
                return
        raise RuntimeError(f"the queue was not drained after {max_invocations} invocations")

    def pump_one(self, trace: Trace, batch_size: int = BATCH_SIZE) -> bool:
        """Receive one batch, invoke the handler with it, delete it; False if none came."""
        mark = self.meter.mark()
        with self.meter.acting("esm"):
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=batch_size,
                AttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
        if not messages:
            return False
        invocation = self._invoke(messages)
        with self.meter.acting("esm"):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
        invocation.esm_calls = [c for c in self.meter.calls[mark:] if c.actor == "esm"]
        trace.invocations.append(invocation)
        return True

    def _invoke(self, messages: list[dict[str, Any]]) -> Invocation:
        event = sqs_event(messages, self.queue_arn, REGION)
        if self.container_per_invocation:
            self.service.store.forget()
            if self.service.blobs is not None:  # nor any value it wrote or read
                self.service.blobs = Blobs(
                    self.service.blobs.store, offload_bytes=self.service.blobs.offload_bytes
                )
        mark, overhead = self.meter.mark(), self.meter.overhead_s
        metrics = io.StringIO()  # the handler's EMF lines: StepsChained counts chained steps
        with self.meter.acting("flowforge"), contextlib.redirect_stdout(metrics):
            t0, w0 = time.process_time(), time.perf_counter()
            # Each invocation's time left counts down from its own start, as on Lambda.
            response = self.handler(event, dataclasses.replace(self.context, started=time.monotonic()))
            cpu, wall = time.process_time() - t0, time.perf_counter() - w0
        calls = self.meter.calls[mark:]
        failures = (response or {}).get("batchItemFailures", [])
        if failures or any(c.failed for c in calls):
            # Nothing races here: a failure is a broken benchmark.
            raise RuntimeError(f"the step handler failed: {failures or [c for c in calls if c.failed]}")
        in_calls = sum(c.seconds for c in calls)
        bodies = [json.loads(m["Body"]) for m in messages]
        received = [(b["run_id"], b["step"]) for b in bodies]
        chained = _chained_steps(metrics.getvalue())
        return Invocation(
            received, cpu - in_calls - (self.meter.overhead_s - overhead), calls, [], chained, wall
        )

    def item(self, key: Item) -> Item | None:
        """A stored item, read around the meter."""
        return self.meter.peek(self.stack["table"], key)

    def check_completed(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            run = self.service.store.get_run(run_id)
            if run is None or run.status != "completed":
                raise RuntimeError(f"run {run_id} did not complete: {run and (run.status, run.error)}")


def run_workload(
    name: str,
    graph: dict[str, Any],
    states: list[dict[str, Any]],
    *,
    concurrent: bool,
    chain_max_steps: int | None = None,
) -> Trace:
    """One run per state on a fresh stack, pumped until every run has finished.

    ``concurrent``: start them all, then pump (batches fill up to 10 records), each
    invocation in a container that knows none of the runs (as with many containers);
    else one after another (each step is a batch of one, as for a lone run, which one
    warm container keeps taking).
    """
    with MotoStack(container_per_invocation=concurrent, chain_max_steps=chain_max_steps) as aws:
        trace = Trace(name, len(states))
        batches = [states] if concurrent else [[state] for state in states]
        run_ids = []
        for batch in batches:
            run_ids += aws.start(graph, batch, trace)
            aws.pump(trace)
        aws.check_completed(run_ids)
        return trace


# -- plumbing -------------------------------------------------------------------------------
def _chained_steps(output: str) -> int:
    """The StepsChained metric in the handler's EMF output (one JSON object per line)."""
    total = 0
    for line in output.splitlines():
        if '"StepsChained"' in line:
            total += int(sum(json.loads(line).get("StepsChained", [])))
    return total


def _peek(table: str, key: Item) -> Item | None:
    return moto_internals.stored_item(table, key, REGION)


@functools.cache
def _devnull():
    return open(os.devnull, "w")


@contextlib.contextmanager
def _environment(values: dict[str, str], unset: tuple[str, ...]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (*values, *unset)}
    for name in unset:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _quiet(logger: Any) -> Iterator[None]:
    """Keep the handler's log lines (still formatted and written) off the terminal."""
    handlers = [h for h in logging.getLogger(logger.name).handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.setStream(_devnull()) for h in handlers]
    try:
        yield
    finally:
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)
