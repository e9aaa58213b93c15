"""The base of FlowForge's AWS adapters: a lazily built client and translated errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from engine.errors import FlowForgeError
from functions.aws.errors import CONNECTION_ERRORS, translate, unreachable


class AwsAdapter:
    """Holds a boto3 client built on first use (never at import) and calls it.

    :meth:`_call` turns AWS error codes into FlowForge errors through :meth:`_translate`
    (None lets the ClientError propagate) and network failures through
    :meth:`_unreachable`; subclasses override those two for their own error family.
    """

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _call(self, operation: str, **params: Any) -> Any:
        try:
            return getattr(self.client, operation)(**params)
        except ClientError as exc:
            error = self._translate(exc, operation, params)
            if error is None:
                raise
            raise error from exc
        except CONNECTION_ERRORS as exc:
            raise self._unreachable(exc, operation) from exc

    def _translate(self, exc: ClientError, operation: str, params: dict[str, Any]) -> FlowForgeError | None:
        return translate(exc, operation)

    def _unreachable(self, exc: Exception, operation: str) -> FlowForgeError:
        return unreachable(exc, operation)
