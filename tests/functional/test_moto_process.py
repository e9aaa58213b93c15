"""moto in a process of its own (flowforge/local/moto_process.py): the handlers' requests
reach it over a Unix socket and get the answers they would get over HTTP; the stream's
records and news, the journal and failures cross over too; it ends with its parent."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import urllib3.connection
from botocore.config import Config

from flowforge.local.journal import Journal
from flowforge.local.moto_process import SOURCE_ROOT, MotoProcess
from tests.functional.test_local_in_process import clients, exercise

REGION = "us-east-1"


def create_table(dynamodb, name: str, **options) -> None:
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        **options,
    )


@pytest.fixture
def moto():
    server = MotoProcess("127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def test_requests_over_the_unix_socket_answer_as_over_http(moto, monkeypatch):
    over_http = exercise(*clients(moto, "dynamodb", "sqs", "s3"), "over-http")

    moto.serve_in_process()
    made = clients(moto, "dynamodb", "sqs", "s3")

    def no_socket(self, *args, **kwargs):
        raise AssertionError("a request to the moto process went over HTTP")

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", no_socket)
    assert exercise(*made, "in-process") == over_http
    assert over_http[1] == "ConditionalCheckFailedException" and over_http[2] == {"N": "2.5"}


def test_threads_each_get_their_own_answers(moto):
    moto.serve_in_process()
    (dynamodb,) = clients(moto, "dynamodb")
    create_table(dynamodb, "t")
    wrong: list[str] = []

    def worker(n: int) -> None:
        for i in range(20):
            key = {"pk": {"S": f"{n}-{i}"}}
            dynamodb.put_item(TableName="t", Item={**key, "n": {"N": str(n * 100 + i)}})
            got = dynamodb.get_item(TableName="t", Key=key, ConsistentRead=True)["Item"]["n"]["N"]
            if got != str(n * 100 + i):
                wrong.append(f"{n}-{i}: {got}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert dynamodb.scan(TableName="t", Select="COUNT")["Count"] == 160


def test_dynamodb_and_sqs_requests_to_it_go_unsigned_and_the_others_signed(moto):
    moto.serve_in_process()
    signed: dict[str, bool] = {}
    dynamodb, streams, sqs, s3 = clients(moto, "dynamodb", "dynamodbstreams", "sqs", "s3")

    def seen(name: str):
        def record(request, **_) -> None:  # answers nothing: the request goes on
            signed[name] = "Authorization" in request.headers

        return record

    for name, client in (("dynamodb", dynamodb), ("dynamodbstreams", streams), ("sqs", sqs), ("s3", s3)):
        client.meta.events.register_first("before-send", seen(name))
    session = boto3.session.Session(aws_access_key_id="t", aws_secret_access_key="t", region_name=REGION)
    elsewhere = session.client(
        "dynamodb", endpoint_url="http://127.0.0.1:9", config=Config(retries={"max_attempts": 1})
    )
    elsewhere.meta.events.register_first("before-send", seen("elsewhere"))
    dynamodb.list_tables()
    streams.list_streams()
    sqs.list_queues()
    s3.list_buckets()
    with pytest.raises(Exception):  # noqa: B017 - nothing listens there
        elsewhere.list_tables()
    assert signed == {
        "dynamodb": False,
        "dynamodbstreams": False,
        "sqs": False,
        "s3": True,
        "elsewhere": True,  # another endpoint: over HTTP, signed
    }


def test_stream_records_their_news_the_journal_and_the_trim_cross_over(moto, tmp_path):
    moto.serve_in_process()
    (dynamodb,) = clients(moto, "dynamodb")
    create_table(dynamodb, "t", StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
    journal = Journal(tmp_path / "journal.jsonl")
    moto.journal_writes(journal, "t", REGION)
    news = threading.Event()
    moto.on_stream_records(news.set)

    dynamodb.put_item(TableName="t", Item={"pk": {"S": "a"}, "v": {"B": b"\x00\xff"}})
    assert news.wait(5), "no news of the journaled write"
    (record,) = moto.stream_records_after("t", REGION, None, 10)
    assert record["dynamodb"]["NewImage"]["v"] == {"B": "AP8="}  # JSON-safe, as journaled
    assert record["dynamodb"]["ApproximateCreationDateTime"].tzinfo is not None
    assert '"pk":{"S":"a"}' in journal.path.read_text()  # on disk before the answer

    dynamodb.put_item(TableName="t", Item={"pk": {"S": "b"}})
    moto.trim("t", REGION, record["dynamodb"]["SequenceNumber"])
    assert [r["dynamodb"]["Keys"] for r in moto.stream_records_after("t", REGION, None, 10)] == [
        {"pk": {"S": "b"}}
    ]


def test_a_failure_in_the_moto_process_is_raised_where_it_was_called(moto, tmp_path):
    moto.serve_in_process()
    (dynamodb,) = clients(moto, "dynamodb")
    create_table(dynamodb, "plain")
    with pytest.raises(ValueError, match="has no stream"):
        moto.journal_writes(Journal(tmp_path / "journal.jsonl"), "plain", REGION)


def test_a_taken_port_is_an_oserror_at_once():
    with socket.create_server(("127.0.0.1", 0)) as taken, pytest.raises(OSError) as refused:
        MotoProcess("127.0.0.1", taken.getsockname()[1])
    assert refused.value.errno == errno.EADDRINUSE


def test_a_stopped_moto_process_is_gone_and_answers_no_more(moto):
    moto.serve_in_process()
    (dynamodb,) = clients(moto, "dynamodb")
    dynamodb.list_tables()
    child = moto._process
    moto.stop()
    assert child.poll() is not None
    session = boto3.session.Session(aws_access_key_id="t", aws_secret_access_key="t", region_name=REGION)
    fresh = session.client("dynamodb", endpoint_url=moto.endpoint, config=Config(retries={"max_attempts": 1}))
    with pytest.raises(Exception):  # noqa: B017 - nothing listens: a connection error
        fresh.list_tables()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_the_moto_process_ends_with_its_parent_killed_with_sigkill():
    script = (
        "import sys, time\n"
        "from flowforge.local.moto_process import MotoProcess\n"
        "m = MotoProcess('127.0.0.1', 0); m.start()\n"
        "print(m._process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        cwd=SOURCE_ROOT,
        env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)},
    )
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the moto process outlived its parent"
    finally:
        parent.kill()


def test_ctrl_c_leaves_the_moto_process_to_its_parent(moto):
    """A terminal's Ctrl-C reaches the whole process group; moto must outlive it until the
    stack, draining its handlers, stops it."""
    moto.serve_in_process()
    (dynamodb,) = clients(moto, "dynamodb")
    moto._process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert moto._process.poll() is None
    assert dynamodb.list_tables()["TableNames"] == []
