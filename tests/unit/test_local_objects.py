"""The local state bucket's files (flowforge/local/objects.py): whole files under the data
directory, nothing outside it, and a restore that keeps only the values of restored runs."""

from __future__ import annotations

from typing import Any

from flowforge.local.objects import ObjectFiles, restore_objects


class RecordingS3:
    def __init__(self) -> None:
        self.put: dict[tuple[str, str], bytes] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> None:
        self.put[(Bucket, Key)] = Body


def test_an_object_is_a_whole_file_and_a_delete_removes_it(tmp_path):
    files = ObjectFiles(tmp_path, ["state"])

    files.write("state", "runs/r1/abc", b'"x"')
    files.write("state", "runs/r1/abc", b'"x"')  # again: same bytes

    assert (tmp_path / "state" / "runs" / "r1" / "abc").read_bytes() == b'"x"'
    assert [key for key, _ in files.stored("state")] == ["runs/r1/abc"]
    assert not list((tmp_path / "state" / "runs" / "r1").glob(".*"))  # no temporary left
    files.delete("state", "runs/r1/abc")
    assert list(files.stored("state")) == []


def test_keys_that_would_leave_the_bucket_directory_and_other_buckets_are_not_kept(tmp_path):
    files = ObjectFiles(tmp_path / "objects", ["state"])

    for key in ("../escape", "runs/../../escape", "/abs", "runs//x", "", "runs/./x"):
        assert files.path("state", key) is None
        files.write("state", key, b"1")
    files.write("other", "runs/r1/a", b"1")

    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "objects").exists()


def test_a_restore_puts_back_the_values_of_restored_runs_and_drops_the_others(tmp_path):
    files = ObjectFiles(tmp_path, ["state"])
    files.write("state", "runs/kept/a", b"1")
    files.write("state", "runs/expired/b", b"2")
    files.write("state", "other/c", b"3")
    s3 = RecordingS3()

    restored, dropped = restore_objects(files, s3, "state", ["kept"])

    assert (restored, dropped) == (2, 1)
    assert s3.put == {("state", "runs/kept/a"): b"1", ("state", "other/c"): b"3"}
    assert not (tmp_path / "state" / "runs" / "expired" / "b").exists()
