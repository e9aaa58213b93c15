"""What a :class:`~bench.aws_harness.Trace` costs per node, priced with :mod:`bench.prices`.

Requests and request units are counted (see :mod:`bench.metering`). Lambda's billed
duration is modelled, because on moto the AWS calls run in-process: an invocation bills
the CPU time FlowForge's code spent outside AWS calls (measured here, scaled to the CPU
share Lambda gives the function's memory size) plus one assumed round trip per AWS call
(:data:`ASSUMED_LATENCY_S`), rounded up to the millisecond.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from bench import prices
from bench.aws_harness import Invocation, Trace
from bench.metering import Call

#: Lambda gives a function one full vCPU at 1,769 MB and a proportional share below
#: (https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html).
FULL_VCPU_MB = 1769
#: Assumed p50 round trips inside one region, seconds. Not measured here (moto answers
#: in-process): DynamoDB quotes single-digit milliseconds, a transaction takes two
#: phases. Replace them with your own X-Ray figures; they only move the Lambda line.
ASSUMED_LATENCY_S = {
    "dynamodb:GetItem": 0.004,
    "dynamodb:Query": 0.005,
    "dynamodb:PutItem": 0.005,
    "dynamodb:TransactWriteItems": 0.012,
    "sqs:SendMessage": 0.008,
    "sqs:SendMessageBatch": 0.008,  # a fan-out's item messages: ten bodies of a few dozen bytes
}
DEFAULT_LATENCY_S = 0.006
PER_MILLION = 1_000_000


def billed_requests(call: Call) -> int:
    """Requests AWS bills for one call: SQS counts each started 64 KB of payload."""
    if call.service == "sqs":
        return max(1, math.ceil(call.payload_bytes / prices.SQS_CHUNK_BYTES))
    return 1


def billed_ms(invocation: Invocation, memory_mb: int) -> int:
    """The modelled billed duration of one invocation (see the module docstring)."""
    cpu = max(invocation.cpu_s, 0.0) * max(1.0, FULL_VCPU_MB / memory_mb)
    waiting = sum(
        ASSUMED_LATENCY_S.get(f"{c.service}:{c.operation}", DEFAULT_LATENCY_S) for c in invocation.calls
    )
    return max(1, math.ceil((cpu + waiting) * 1000))


@dataclass
class Bill:
    """Per node: requests, request units, modelled Lambda time and $ per million nodes."""

    nodes: int
    operations: dict[str, float]  # "who service:Operation" -> calls per node
    flowforge_requests: float  # billed requests made by the step handler
    esm_requests: float  # billed SQS requests of the event source mapping (receive, delete)
    lambda_invocations: float
    read_units: float
    write_units: float  # transactional writes count twice
    index_write_units: float
    lambda_ms: float  # modelled billed milliseconds
    cpu_us: list[float]  # FlowForge CPU µs per node, one sample per invocation
    moto_reported_units: float  # ConsumedCapacity as moto reports it (placeholders), for contrast
    dollars: dict[str, float] = field(default_factory=dict)  # $ per million nodes

    @property
    def requests(self) -> float:
        """Billed AWS requests per node: the handler's, the event source mapping's, Lambda's."""
        return self.flowforge_requests + self.esm_requests + self.lambda_invocations

    @property
    def total(self) -> float:
        return sum(self.dollars.values())

    def breakdown(self) -> list[dict[str, object]]:
        rows = [{"per node": name, "calls": round(n, 4)} for name, n in sorted(self.operations.items())]
        rows.append({"per node": "lambda invocations", "calls": round(self.lambda_invocations, 4)})
        return rows

    def cost_rows(self) -> list[dict[str, object]]:
        return [{"line": name, "$ per million nodes": round(v, 4)} for name, v in self.dollars.items()]


def bill(trace: Trace, memory_mb: int) -> Bill:
    nodes = trace.nodes
    handler_calls = [c for i in trace.invocations for c in i.calls]
    esm_calls = [c for i in trace.invocations for c in i.esm_calls]
    operations = Counter(f"{c.actor} {c.service}:{c.operation}" for c in handler_calls + esm_calls)
    capacity = [c.capacity for c in handler_calls if c.capacity is not None]
    read = sum(c.read for c in capacity)
    write = sum(c.write for c in capacity)
    index = sum(c.index_write for c in capacity)
    sqs = sum(billed_requests(c) for c in handler_calls + esm_calls if c.service == "sqs")
    invocations = len(trace.invocations)
    ms = [billed_ms(i, memory_mb) for i in trace.invocations]
    lambda_seconds = sum(ms) / 1000
    per_node = PER_MILLION / nodes
    result = Bill(
        nodes=nodes,
        operations={k: v / nodes for k, v in operations.items()},
        flowforge_requests=sum(billed_requests(c) for c in handler_calls) / nodes,
        esm_requests=sum(billed_requests(c) for c in esm_calls) / nodes,
        lambda_invocations=invocations / nodes,
        read_units=read / nodes,
        write_units=write / nodes,
        index_write_units=index / nodes,
        lambda_ms=sum(ms) / nodes,
        cpu_us=[i.cpu_s / i.nodes * 1e6 for i in trace.invocations],
        moto_reported_units=sum(c.reported_units or 0.0 for c in handler_calls) / nodes,
    )
    result.dollars = {
        "Lambda requests": invocations * prices.LAMBDA_PER_REQUEST * per_node,
        "Lambda duration (arm64)": lambda_seconds
        * memory_mb
        / 1024
        * prices.LAMBDA_ARM64_PER_GB_SECOND
        * per_node,
        "SQS requests": sqs * prices.SQS_STANDARD_PER_REQUEST * per_node,
        "DynamoDB reads": read * prices.DYNAMODB_PER_READ_UNIT * per_node,
        "DynamoDB writes (table)": write * prices.DYNAMODB_PER_WRITE_UNIT * per_node,
        "DynamoDB writes (index)": index * prices.DYNAMODB_PER_WRITE_UNIT * per_node,
    }
    return result


def step_functions_per_million(memory_mb: int, billed_ms_per_node: float = 1.0) -> float:
    """Step Functions Standard for the same nodes: one transition each (the fewest a node
    can take) plus a Lambda task invocation of ``billed_ms_per_node`` for the tool."""
    lambda_work = prices.lambda_cost(1, billed_ms_per_node / 1000, memory_mb)
    return (prices.step_functions_cost(1) + lambda_work) * PER_MILLION
