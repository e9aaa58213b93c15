"""Persistence of the local state bucket: every object written is on disk before the write
is acknowledged, and put back at start.

moto keeps objects in memory. The moto server (see aws.py) writes each object a PUT
stored to ``<data dir>/objects/<bucket>/<key>`` (write, fsync, rename: a file is whole or
absent) and answers the request only then, as the table's journal does for DynamoDB: an
offloaded value the local stack acknowledged survives a ``kill -9``. A DELETE removes
the file. Objects are content-addressed and never rewritten with other bytes, so the
files need no journal of their own.

At start the files are put back into the bucket, except those of runs the table's
restore did not bring back (expired by their TTL, or dropped): a run's values go with
it, as the bucket's lifecycle rule would remove them on AWS.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from flowforge.local.journal import fsync_directory

log = logging.getLogger("flowforge.local")


class ObjectFiles:
    """``<root>/<bucket>/<key>``: one file per object of the persisted buckets."""

    def __init__(self, root: Path, buckets: Iterable[str]) -> None:
        self.root = root
        self.buckets = frozenset(buckets)

    def path(self, bucket: str, key: str) -> Path | None:
        """The file of ``bucket``/``key``; None for a bucket not persisted or a key that
        would leave its directory."""
        if bucket not in self.buckets or not key or key.startswith("/"):
            return None
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return None
        return self.root.joinpath(bucket, *parts)

    def write(self, bucket: str, key: str, data: bytes) -> None:
        """Put the object on disk, whole, before returning (OSError if it cannot be)."""
        path = self.path(bucket, key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)

    def delete(self, bucket: str, key: str) -> None:
        path = self.path(bucket, key)
        if path is not None and path.exists():
            path.unlink()
            fsync_directory(path.parent)

    def stored(self, bucket: str) -> Iterator[tuple[str, Path]]:
        """Every object of ``bucket`` on disk: its key and its file."""
        top = self.root / bucket
        for path in sorted(top.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                yield path.relative_to(top).as_posix(), path


def restore_objects(files: ObjectFiles, s3: Any, bucket: str, runs: Iterable[str]) -> tuple[int, int]:
    """Put ``bucket``'s files back into it, dropping those under ``runs/<id>/`` of a run not
    in ``runs`` (and their files). Returns (restored, dropped)."""
    kept = frozenset(runs)
    restored = dropped = 0
    for key, path in files.stored(bucket):
        parts = key.split("/")
        if len(parts) >= 3 and parts[0] == "runs" and parts[1] not in kept:
            path.unlink()
            dropped += 1
            continue
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        restored += 1
    if dropped:
        log.info("dropped the stored values of %d objects whose runs expired", dropped)
    return restored, dropped
