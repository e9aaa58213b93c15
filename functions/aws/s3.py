"""The :class:`~engine.ports.BlobStore` on S3: the state values too large to keep in the
run, one object per value under ``runs/{run_id}/{sha256}`` (engine/blobs.py).

Keys are content-addressed, so a put needs no condition: writing a key again (a
duplicate delivery, another container) writes the same bytes. Each object carries its
SHA-256 as S3's own checksum, so S3 refuses a body damaged on the way. Objects are
encrypted by the bucket's default encryption and expire by its lifecycle rule
(template.yaml, StateBucket), which counts from an object's last write: a long-lived
run's values are written again in place (:meth:`S3BlobStore.refresh_blob`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from engine.errors import FlowForgeError, StoreUnavailableError
from functions.aws.adapter import AwsAdapter
from functions.aws.errors import error_code, translate

#: What S3 answers when it wants requests slower, or failed on its side: try again later.
_RETRYABLE_S3 = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "503"})
#: A presigned URL for a value is good for this long (the API answers 303 to it).
PRESIGNED_URL_TTL_S = 300


class S3BlobStore(AwsAdapter):
    """Objects in ``bucket``; the client is built on first use."""

    def __init__(self, bucket: str, client_factory: Callable[[], Any]) -> None:
        super().__init__(client_factory)
        self.bucket = bucket

    def put_blob(self, key: str, data: bytes) -> None:
        self._call(
            "put_object",
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType="application/json",
            ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
        )

    def get_blob(self, key: str) -> bytes | None:
        try:
            response = self._call("get_object", Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return bytes(response["Body"].read())

    def refresh_blob(self, key: str) -> bool:
        # A copy onto itself must change something: the metadata is replaced by the same.
        # S3 copies it inside the bucket (no bytes through Lambda) and keeps its checksum.
        try:
            self._call(
                "copy_object",
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                MetadataDirective="REPLACE",
                ContentType="application/json",
            )
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return False
            raise
        return True

    def presigned_url(self, key: str, expires_s: int = PRESIGNED_URL_TTL_S) -> str | None:
        """A URL anyone holding it may GET the object with, for ``expires_s`` seconds
        (signed with the caller's credentials), or None if there is no such object (a
        HEAD request first: a URL of a missing object would answer S3's XML 404)."""
        try:
            self._call("head_object", Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key, "ResponseContentType": "application/json"},
                ExpiresIn=expires_s,
            )
        )

    def _translate(self, exc: ClientError, operation: str, params: dict[str, Any]) -> FlowForgeError | None:
        code = error_code(exc)
        if code in _RETRYABLE_S3:
            return StoreUnavailableError(f"{operation}: {code}")
        return translate(exc, operation)
