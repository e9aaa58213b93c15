"""The handlers as local Lambda functions: imported once, invoked in a thread pool each.

Each function gets its own pool (its reserved concurrency, in Lambda terms), so a
foreground ``POST /graph/run`` waiting ~25 s in the API function never starves the step
function it waits for, and the event loop serving the gateway never blocks on a handler.
Events and results go through JSON as they do on Lambda, so a handler that returns
something Lambda could not serialize, or more than Lambda returns, fails here too.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flowforge.local.events import LambdaContext

log = logging.getLogger("flowforge.local")

#: Lambda's limit on a synchronous invocation's response (the figure its error names).
MAX_RESPONSE_BYTES = 6_291_556


class InvocationError(RuntimeError):
    """The handler raised: Lambda reports it as a function error."""


def import_handler(reference: str) -> Any:
    """``functions.api.app.handler`` → the callable (the template's ``Handler``)."""
    module_name, _, attribute = reference.rpartition(".")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ImportError(f"{module_name} has no {attribute!r} (template Handler {reference})") from None


class LocalFunction:
    """One Lambda function: a handler, its timeout, and a pool as its concurrency limit."""

    def __init__(
        self,
        name: str,
        handler: str | Callable[[Any, Any], Any],
        *,
        timeout_s: float,
        concurrency: int,
        region: str = "us-east-1",
        container: Callable[[], Any] | None = None,
    ) -> None:
        """``container`` runs once in each worker thread before its first invocation: a
        worker is one Lambda container (the local stack builds its App there)."""
        self.name = name
        self.handler_ref = handler if isinstance(handler, str) else None
        self.timeout_s = timeout_s
        self.region = region
        self._handler: Any = None if isinstance(handler, str) else handler
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=name, initializer=container
        )
        self._in_flight = 0
        self._lock = threading.Lock()

    def load(self) -> None:
        """Import the handler now, so a broken function fails at start (its cold start)."""
        if self._handler is None and self.handler_ref is not None:
            self._handler = import_handler(self.handler_ref)

    def invoke_sync(self, event: dict[str, Any]) -> Any:
        """Run the handler in the calling thread, as one Lambda invocation."""
        self.load()
        context = LambdaContext(self.name, self.timeout_s, self.region)
        payload = json.loads(json.dumps(event))
        started = time.monotonic()
        with self._lock:
            self._in_flight += 1
        try:
            result = self._handler(payload, context)
        except Exception as exc:
            log.exception("%s failed (request %s)", self.name, context.aws_request_id)
            raise InvocationError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        finally:
            with self._lock:
                self._in_flight -= 1
        elapsed = time.monotonic() - started
        if elapsed > self.timeout_s:
            # Lambda would have killed it; a thread cannot be killed, so say so loudly.
            log.warning("%s ran %.1f s, past its %.0f s timeout", self.name, elapsed, self.timeout_s)
        try:
            data = json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise InvocationError(f"{self.name} returned a value Lambda cannot serialize: {exc}") from exc
        if len(data.encode()) > MAX_RESPONSE_BYTES:
            log.error("%s returned %d bytes, over Lambda's response limit", self.name, len(data.encode()))
            raise InvocationError(
                f"{self.name}: response payload size exceeded maximum allowed payload size "
                f"({MAX_RESPONSE_BYTES} bytes)"
            )
        return json.loads(data)

    async def invoke(self, event: dict[str, Any]) -> Any:
        """Invoke in this function's pool without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.invoke_sync, event)

    def busy(self) -> bool:
        """Whether an invocation is running."""
        return self._in_flight > 0

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
