"""One contract, every backend: the in-memory fakes and the AWS adapters on moto."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from engine.memory import InMemoryRunStore, InMemoryStepQueue
from engine.stepmessage import StepMessage
from functions.aws.dynamodb import DynamoRunStore
from functions.aws.sqs import SqsStepQueue
from tests.functional import fixtures

# The shared AWS fixtures (moto, virtual clock, template.yaml's stack).
aws, clock, stack = fixtures.aws, fixtures.clock, fixtures.stack


@pytest.fixture(params=["memory", "dynamodb"])
def store(request):
    """A RunStore: in memory, or DynamoDB (the template's table on moto)."""
    if request.param == "memory":
        return InMemoryRunStore()
    stack = request.getfixturevalue("stack")
    session = request.getfixturevalue("aws")
    return DynamoRunStore(stack["table"], lambda: session.client("dynamodb"))


@dataclass
class QueueUnderTest:
    """A StepQueue and a way to take what it delivers: (run_id, step, delay_s) in order,
    or each message whole with :meth:`take_messages`.

    The delay is what the backend honours: SQS in whole seconds (found by moving the
    clock until the message is visible), the in-memory queue as given.
    """

    queue: object
    take_delivered: Callable[[], list[tuple[StepMessage, float]]]

    def take(self) -> list[tuple[str, int, float]]:
        return [(message.run_id, message.step, delay) for message, delay in self.take_delivered()]

    def take_messages(self) -> list[StepMessage]:
        return [message for message, _ in self.take_delivered()]


@pytest.fixture(params=["memory", "sqs"])
def queue(request) -> QueueUnderTest:
    if request.param == "memory":
        memory = InMemoryStepQueue()

        def take_memory():
            taken = []
            while (message := memory.pop()) is not None:
                taken.append((message, message.delay_s))
            return taken

        return QueueUnderTest(memory, take_memory)

    stack = request.getfixturevalue("stack")
    session = request.getfixturevalue("aws")
    clock = request.getfixturevalue("clock")
    sqs = session.client("sqs")
    start = clock()

    def take_sqs():
        taken = []
        for _ in range(902):  # up to the 900 s maximum delay
            response = sqs.receive_message(QueueUrl=stack["queue_url"], MaxNumberOfMessages=10)
            for message in response.get("Messages", []):
                taken.append((StepMessage.from_json(message["Body"]), clock() - start))
                sqs.delete_message(QueueUrl=stack["queue_url"], ReceiptHandle=message["ReceiptHandle"])
            if response.get("Messages"):
                continue  # there may be more than one receive's ten
            attributes = sqs.get_queue_attributes(
                QueueUrl=stack["queue_url"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
            )["Attributes"]
            if not int(attributes["ApproximateNumberOfMessagesDelayed"]):
                return taken
            clock.advance(1)
        raise AssertionError("messages still delayed after 900 s")

    return QueueUnderTest(SqsStepQueue(stack["queue_url"], lambda: sqs), take_sqs)
