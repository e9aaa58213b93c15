"""The BlobStore contract (engine/ports.py): the in-memory store and S3 (the template's
state bucket on moto) keep the same objects the same way, and the engine's offload on
top of either is idempotent: the same content is the same key with the same bytes."""

from __future__ import annotations

import json

import pytest
from botocore.config import Config

from engine.blobs import Blobs, MemoryBlobStore, blob_key, parse_ref
from engine.cost import S3_BYTES, S3_GET_REQUESTS, S3_PUT_REQUESTS
from functions.aws.s3 import S3BlobStore
from functions.runtime import CLIENT_CONFIG


@pytest.fixture(params=["memory", "s3"])
def blob_store(request):
    if request.param == "memory":
        return MemoryBlobStore()
    stack = request.getfixturevalue("stack")
    session = request.getfixturevalue("aws")
    return S3BlobStore(stack["bucket"], lambda: session.client("s3"))


def test_a_put_object_is_read_back_byte_for_byte(blob_store):
    data = json.dumps("é" * 40_000).encode() + b"\x00\xff"

    blob_store.put_blob("runs/r1/abc", data)

    assert blob_store.get_blob("runs/r1/abc") == data


def test_an_unknown_key_is_none(blob_store):
    blob_store.put_blob("runs/r1/abc", b"1")

    assert blob_store.get_blob("runs/r1/abd") is None
    assert blob_store.get_blob("runs/r2/abc") is None


def test_putting_the_same_key_again_keeps_the_same_bytes(blob_store):
    blob_store.put_blob("runs/r1/k", b'"x"')
    blob_store.put_blob("runs/r1/k", b'"x"')

    assert blob_store.get_blob("runs/r1/k") == b'"x"'


def test_an_empty_object_is_not_a_missing_one(blob_store):
    blob_store.put_blob("runs/r1/empty", b"")

    assert blob_store.get_blob("runs/r1/empty") == b""


def test_a_refreshed_object_keeps_its_bytes_and_a_missing_one_is_false(blob_store):
    # GIVEN an object (S3: a copy onto itself, which S3 refuses unless something changes)
    data = json.dumps("r" * 40_000).encode()
    blob_store.put_blob("runs/r1/kept", data)

    # THEN writing it again in place keeps it byte for byte, and finds no missing one
    assert blob_store.refresh_blob("runs/r1/kept") is True
    assert blob_store.get_blob("runs/r1/kept") == data
    assert blob_store.refresh_blob("runs/r1/gone") is False
    assert blob_store.get_blob("runs/r1/gone") is None


def test_offloading_the_same_value_twice_from_two_containers_writes_one_key(blob_store):
    # GIVEN two containers (each its own cache) offloading the same value of one run,
    # as a duplicate delivery of the same step does
    text = json.dumps("v" * 50_000)
    first, second = Blobs(blob_store), Blobs(blob_store)

    # WHEN both offload it
    stored = first.offload_text("r1", text)
    again = second.offload_text("r1", text)

    # THEN both hold the same reference, to one object with the value's bytes, and the
    # value reads back through a third container
    ref = parse_ref(stored)
    assert ref is not None and again == stored
    assert blob_store.get_blob(blob_key("r1", ref.sha256)) == text.encode()
    assert Blobs(blob_store).resolve("r1", stored) == "v" * 50_000


def test_offloads_are_counted_by_run_until_taken(blob_store):
    blobs = Blobs(blob_store)
    text = json.dumps("w" * 40_000)

    stored = blobs.offload_text("r1", text)
    blobs.offload_text("r1", text)  # this container wrote it already: no request
    Blobs(blob_store).resolve("r1", stored)  # another container's read counts there, not here

    assert blobs.take_usage("r1") == {S3_PUT_REQUESTS: 1, S3_GET_REQUESTS: 0, S3_BYTES: len(text)}
    assert blobs.take_usage("r1") == {S3_PUT_REQUESTS: 0, S3_GET_REQUESTS: 0, S3_BYTES: 0}
    assert blobs.take_usage("r2") == {S3_PUT_REQUESTS: 0, S3_GET_REQUESTS: 0, S3_BYTES: 0}


def test_s3_objects_are_encrypted_json(stack, aws):
    store = S3BlobStore(stack["bucket"], lambda: aws.client("s3"))

    store.put_blob("runs/r1/k", b'"x"')

    head = aws.client("s3").head_object(Bucket=stack["bucket"], Key="runs/r1/k")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "application/json"


def test_a_presigned_url_names_the_object_and_none_for_a_missing_one(stack, aws):
    # the client as the functions build it (functions/runtime.py CLIENT_CONFIG)
    client = aws.client("s3", config=Config(**CLIENT_CONFIG["s3"]))
    store = S3BlobStore(stack["bucket"], lambda: client)
    store.put_blob("runs/r1/k", b'"x"')

    url = store.presigned_url("runs/r1/k")

    assert url is not None and "/runs/r1/k?" in url and stack["bucket"] in url
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    assert store.presigned_url("runs/r1/missing") is None
