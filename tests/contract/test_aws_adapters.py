"""What only the AWS adapters do: lazy clients, error codes, SQS delays, the message model."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from engine.errors import ConflictError, StateTooLargeError, StoreUnavailableError
from engine.ports import RunRecord, StepCommit
from engine.step import Cursor
from engine.stepmessage import MalformedStepMessage, StepMessage
from functions.aws import dynamodb_codec as codec
from functions.aws.dynamodb import DynamoRunStore
from functions.aws.sqs import SqsStepQueue, batches, delay_seconds
from functions.runtime import build_app
from functions.settings import Settings, SettingsError


def client_error(code: str, operation: str = "PutItem"):
    return ClientError({"Error": {"Code": code, "Message": "the message text is never read"}}, operation)


class RaisingClient:
    """A low-level client whose every call raises ``error`` (and records the call)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, operation):
        def call(**params):
            self.calls.append((operation, params))
            raise self.error

        return call


COMMIT = StepCommit("run1", 0, {}, None, "completed", {"seq": 0}, "t", 0.0)


def test_clients_are_built_on_first_use_only():
    built = []
    store = DynamoRunStore("table", lambda: built.append("dynamodb") or RaisingClient(client_error("X")))
    queue = SqsStepQueue("https://queue", lambda: built.append("sqs") or RaisingClient(client_error("X")))
    assert built == []
    with pytest.raises(ClientError):
        store.get_run("r")
    with pytest.raises(ClientError):
        queue.send_step("r", 0)
    with pytest.raises(ClientError):
        store.get_run("r")
    assert built == ["dynamodb", "sqs"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("ProvisionedThroughputExceededException"), StoreUnavailableError),
        (client_error("ThrottlingException"), StoreUnavailableError),
        (client_error("RequestLimitExceeded"), StoreUnavailableError),
        (client_error("InternalServerError"), StoreUnavailableError),
        (client_error("ServiceUnavailable"), StoreUnavailableError),
        (EndpointConnectionError(endpoint_url="https://dynamodb"), StoreUnavailableError),
        (ReadTimeoutError(endpoint_url="https://dynamodb"), StoreUnavailableError),
    ],
)
def test_store_errors_are_mapped_by_code(error, expected):
    store = DynamoRunStore("table", lambda: RaisingClient(error))
    with pytest.raises(expected) as raised:
        store.commit_step(COMMIT)  # its first call reads the run
    assert raised.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [
        client_error("ResourceNotFoundException"),
        # A message that merely mentions a condition is still not a conflict.
        ClientError({"Error": {"Code": "AccessDeniedException", "Message": "ConditionalCheckFailed"}}, "X"),
    ],
)
def test_other_errors_propagate_unchanged(error):
    store = DynamoRunStore("table", lambda: RaisingClient(error))
    with pytest.raises(ClientError) as raised:
        store.commit_step(COMMIT)
    assert raised.value is error


def test_a_slot_dynamodb_refuses_as_invalid_is_too_large_never_unavailable():
    # regression: a ValidationException (an item over 400 KB) propagated as an
    # infrastructure failure, so the step was retried until the dead-letter queue
    client = SlotTakenClient(client_error("ValidationException", "PutItem"))
    store = DynamoRunStore("table", lambda: client)
    with pytest.raises(StateTooLargeError, match="ValidationException"):
        store.commit_step(StepCommit("run1", 0, {"n": "2"}, Cursor("b", 1), "running", {"seq": 0}, "t", 0.0))


def test_a_lost_condition_on_a_single_write_is_a_conflict():
    store = DynamoRunStore("table", lambda: RaisingClient(client_error("ConditionalCheckFailedException")))
    with pytest.raises(ConflictError):
        store.finish_run("r", status="cancelled", error=None, now="t")


class SlotTakenClient:
    """Answers the run read with run1 running at step 0; the slot put loses its condition
    (or raises ``error``)."""

    def __init__(self, error: ClientError | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.error = error or client_error("ConditionalCheckFailedException", "PutItem")

    def query(self, **params):
        self.calls.append(("query", params))
        run = RunRecord("run1", "g", "running", Cursor("a"), 0, {"n": "1"}, "t", "t", 0.0)
        return {"Items": [codec.run_item(run, slots=0)]}

    def put_item(self, **params):
        self.calls.append(("put_item", params))
        raise self.error


def test_a_commit_is_one_conditional_put_of_its_slot():
    client = SlotTakenClient()
    store = DynamoRunStore("table", lambda: client)
    commit = StepCommit("run1", 0, {"n": "2"}, Cursor("b", 1), "running", {"seq": 0}, "t", 0.0)
    with pytest.raises(ConflictError):
        store.commit_step(commit)
    (_, read), (operation, put), (_, check) = client.calls
    assert read["ConsistentRead"] is True and read["ScanIndexForward"] is False
    assert operation == "put_item"
    assert put["ConditionExpression"] == "attribute_not_exists(pk)"
    assert put["Item"]["sk"] == {"S": "LOG#0000000000"}
    assert put["Item"]["update"] == {"M": {"n": {"S": "2"}}}
    # the lost condition is checked against the slot's writer: not this write, a conflict
    assert check["ExpressionAttributeValues"] == {":pk": put["Item"]["pk"], ":sk": put["Item"]["sk"]}


# -- SQS ------------------------------------------------------------------------------------
class RecordingSqs:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_message(self, **params):
        self.sent.append(params)
        return {"MessageId": "m"}


@pytest.mark.parametrize(
    ("delay", "expected"), [(0, 0), (0.001, 1), (1.0, 1), (2.5, 3), (900, 900), (4000, 900), (-3, 0)]
)
def test_delay_seconds_are_whole_and_within_sqs_limits(delay, expected):
    assert delay_seconds(delay) == expected


def test_send_step_sends_a_step_message():
    sqs = RecordingSqs()
    SqsStepQueue("https://queue", lambda: sqs).send_step("run_1", 4, 2.2)
    [params] = sqs.sent
    assert params["QueueUrl"] == "https://queue" and params["DelaySeconds"] == 3
    assert json.loads(params["MessageBody"]) == {"run_id": "run_1", "step": 4}
    assert StepMessage.from_json(params["MessageBody"]) == StepMessage(run_id="run_1", step=4)


class BatchingSqs:
    """Records each SendMessageBatch; the entries whose body names an item in ``failing``
    are answered ``Failed``, as many times as that item's count."""

    def __init__(self, failing: dict[int, int] | None = None) -> None:
        self.batches: list[dict] = []
        self.failing = dict(failing or {})

    def send_message_batch(self, **params):
        self.batches.append(params)
        failed = []
        for entry in params["Entries"]:
            item = json.loads(entry["MessageBody"])["item"]
            if self.failing.get(item, 0) > 0:
                self.failing[item] -= 1
                failed.append({"Id": entry["Id"], "SenderFault": False, "Code": "InternalError"})
        ok = [
            {"Id": e["Id"], "MessageId": "m"}
            for e in params["Entries"]
            if e["Id"] not in {f["Id"] for f in failed}
        ]
        return {"Successful": ok, "Failed": failed} if failed else {"Successful": ok}


def test_send_items_sends_ten_item_messages_to_a_request_in_order():
    sqs = BatchingSqs()
    SqsStepQueue("https://queue", lambda: sqs).send_items("run_1", 4, [(i, 1 + i % 2) for i in range(23)])
    assert [len(batch["Entries"]) for batch in sqs.batches] == [10, 10, 3]
    assert {batch["QueueUrl"] for batch in sqs.batches} == {"https://queue"}
    entries = [entry for batch in sqs.batches for entry in batch["Entries"]]
    bodies = [json.loads(entry["MessageBody"]) for entry in entries]
    assert bodies == [{"run_id": "run_1", "step": 4, "item": i, "attempt": 1 + i % 2} for i in range(23)]
    assert {entry["DelaySeconds"] for entry in entries} == {0}
    for batch in sqs.batches:  # Ids unique within each call
        assert len({entry["Id"] for entry in batch["Entries"]}) == len(batch["Entries"])


def test_send_items_of_nothing_makes_no_request():
    sqs = BatchingSqs()
    SqsStepQueue("https://queue", lambda: sqs).send_items("run_1", 4, [])
    assert sqs.batches == []


def test_batches_keep_their_bodies_within_the_byte_limit_too():
    entries = [{"Id": str(i), "MessageBody": "x" * 40} for i in range(7)]
    assert [len(b) for b in batches(entries, max_entries=10, max_bytes=100)] == [2, 2, 2, 1]
    assert [len(b) for b in batches(entries, max_entries=3, max_bytes=10_000)] == [3, 3, 1]
    assert [b[0]["Id"] for b in batches(entries, max_entries=3)] == ["0", "3", "6"]


def test_a_failed_batch_entry_is_sent_once_more():
    # GIVEN SQS failing the entries of items 3 and 12 once each
    sqs = BatchingSqs(failing={3: 1, 12: 1})

    # WHEN 15 items are sent
    SqsStepQueue("https://queue", lambda: sqs).send_items("run_1", 4, [(i, 1) for i in range(15)])

    # THEN each failed entry went again, alone in its batch's retry, right after it
    items = [[json.loads(e["MessageBody"])["item"] for e in batch["Entries"]] for batch in sqs.batches]
    assert items == [list(range(10)), [3], list(range(10, 15)), [12]]


def test_a_batch_entry_failing_twice_raises_naming_the_run_step_and_items():
    sqs = BatchingSqs(failing={3: 2, 5: 2, 7: 1})
    queue = SqsStepQueue("https://queue", lambda: sqs)
    with pytest.raises(
        StoreUnavailableError, match=r"run 'run_1' step 4.*item 3 attempt 1.*item 5 attempt 1"
    ) as raised:
        queue.send_items("run_1", 4, [(i, 1) for i in range(15)])
    assert "item 7" not in str(raised.value)  # sent on its second try
    assert len(sqs.batches) == 2  # the first ten and their retry: the rest is left unsent


def test_a_missing_queue_url_fails_at_first_send_naming_the_variable():
    app = build_app(Settings("table"), lambda name: pytest.fail("no client without a queue"))
    with pytest.raises(SettingsError, match="FLOWFORGE_STEP_QUEUE_URL"):
        app.service.queue.send_step("run1", 0)
    with pytest.raises(SettingsError, match="FLOWFORGE_STEP_QUEUE_URL"):
        app.service.queue.send_items("run1", 0, [(0, 1)])


@pytest.mark.parametrize(
    "code", ["RequestThrottled", "ThrottlingException", "ServiceUnavailable", "InternalError"]
)
def test_sqs_throttling_is_unavailable(code):
    queue = SqsStepQueue("https://queue", lambda: RaisingClient(client_error(code, "SendMessage")))
    with pytest.raises(StoreUnavailableError):
        queue.send_step("run1", 0)


def test_sqs_errors_that_are_not_transient_propagate():
    error = client_error("AWS.SimpleQueueService.NonExistentQueue", "SendMessage")
    queue = SqsStepQueue("https://queue", lambda: RaisingClient(error))
    with pytest.raises(ClientError):
        queue.send_step("run1", 0)


@pytest.mark.parametrize(
    "body",
    ['{"run_id": "r", "step": -1}', '{"run_id": "r", "step": "1"}', '{"run_id": "r", "step": 1.5}',
     '{"run_id": "r", "step": true}', '{"run_id": "", "step": 1}', '{"run_id": "a/b", "step": 1}',
     '{"run_id": "r", "step": 1, "x": 1}', '{"run_id": "r"}', '{"run_id": "r\\n", "step": 1}',
     '{"run_id": 7, "step": 1}', '{"run_id": "r", "step": 1.0}', '{"run_id": "r", "step": null}',
     "[]", "nope", "", pytest.param("[" * 100_000, id="nested-too-deep")],
)  # fmt: skip
def test_step_message_rejects_anything_but_its_two_fields(body):
    with pytest.raises(MalformedStepMessage):
        StepMessage.from_json(body)


def test_a_malformed_step_message_says_what_is_wrong_with_each_field():
    with pytest.raises(MalformedStepMessage) as caught:
        StepMessage.from_json('{"run_id": "a/b", "step": -1, "extra": 0}')
    assert caught.value.problems == ["extra: unknown field"]
    with pytest.raises(MalformedStepMessage) as caught:
        StepMessage.from_json('{"run_id": "a/b", "step": true}')
    assert caught.value.problems == ["run_id: 1 to 64 letters, digits, '_' or '-'", "step: an integer >= 0"]


def test_a_step_message_round_trips_as_compact_json():
    message = StepMessage("r_1-" + "x" * 60, 0)
    assert message.to_json() == '{"run_id":"r_1-' + "x" * 60 + '","step":0}'
    assert StepMessage.from_json(message.to_json()) == message
    with pytest.raises(MalformedStepMessage):
        StepMessage("r" * 65, 0)
