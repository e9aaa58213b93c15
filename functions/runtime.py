"""The composition root: one :class:`App` per Lambda container, built by :func:`build_app`.

An App holds what a container keeps between invocations: the settings, the AWS clients,
the :class:`~engine.service.RunService` and the :class:`~engine.logstream.LogStream`.
Handlers reach it through :func:`current_app` and nothing else; the adapters
(``functions.aws``) receive table names, URLs and clients from here and import nothing
from this module.

Nothing is built at import time. In Lambda the container's App is built from the
environment on first use. The local stack runs several "containers" (worker threads) in
one process, so it builds one App per worker and installs it with :func:`use_app`; tests
and the benchmarks install theirs with :func:`set_app`, passing moto or metered clients.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from functions.settings import Settings, SettingsError

if TYPE_CHECKING:
    from engine.blobs import Blobs
    from engine.logstream import LogStream
    from engine.ports import Timers
    from engine.service import RunService
    from engine.waits import CallbackSigner

#: A boto3 client by service name ("dynamodb", "sqs", ...).
Clients = Callable[[str], Any]
#: Client settings that differ from boto3's defaults, by service. Bedrock: one attempt per
#: call, so a throttled model call fails into the node's own retry (its backoff, its log
#: entries) rather than being retried out of sight; the node's timeout bounds a call, so
#: the socket may wait as long as a function can run.
CLIENT_CONFIG: dict[str, dict[str, Any]] = {
    # Presigned URLs of state values signed with SigV4 (boto3 presigns with SigV2 in
    # us-east-1 otherwise).
    "s3": {"signature_version": "s3v4"},
    "bedrock-runtime": {
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 900,
    },
}


class AwsClients:
    """boto3 clients built on first use, one per service, all from one session: they share
    the endpoint and the model data it loads (a session per client costs ~35 ms more per
    client at cold start). Thread-safe: a boto3 session is not, its clients are."""

    def __init__(self, session: Any = None) -> None:
        self._session = session
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> Any:
        client = self._clients.get(name)
        if client is None:
            with self._lock:
                client = self._clients.get(name)
                if client is None:
                    if self._session is None:
                        import boto3  # deferred: keeps cold start off the import path of pure code

                        self._session = boto3.session.Session()
                    settings = CLIENT_CONFIG.get(name)
                    if settings is None:
                        client = self._session.client(name)
                    else:
                        from botocore.config import Config  # loaded with boto3 by now

                        client = self._session.client(name, config=Config(**settings))
                    self._clients[name] = client
        return client


class _NoQueue:
    """The step queue of a function deployed without FLOWFORGE_STEP_QUEUE_URL."""

    def send_step(self, run_id: str, step: int, delay_s: float = 0.0) -> None:
        raise SettingsError("missing environment variable FLOWFORGE_STEP_QUEUE_URL")

    def send_item(self, run_id: str, step: int, item: int, attempt: int, delay_s: float = 0.0) -> None:
        raise SettingsError("missing environment variable FLOWFORGE_STEP_QUEUE_URL")

    def send_items(self, run_id: str, step: int, items: Sequence[tuple[int, int]]) -> None:
        raise SettingsError("missing environment variable FLOWFORGE_STEP_QUEUE_URL")


class _NoTimers:
    """The timers of a function deployed without the scheduler's settings."""

    def schedule(self, run_id: str, step: int, due_at: float) -> None:
        raise SettingsError(
            "missing environment variables FLOWFORGE_SCHEDULE_GROUP, FLOWFORGE_SCHEDULER_ROLE_ARN "
            "or FLOWFORGE_STEP_QUEUE_ARN (timers beyond 15 minutes)"
        )

    def cancel(self, run_id: str, step: int) -> None:
        return None


class App:
    """What one Lambda container keeps: settings, clients, the service and the log stream.

    The service and the log stream are built on first use: the ws and broadcast functions
    never build a service, the others never build a log stream.
    """

    def __init__(
        self,
        settings: Settings,
        clients: Clients,
        *,
        service: RunService | None = None,
        log_stream: LogStream | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self._service = service
        self._log_stream = log_stream
        self._lock = threading.Lock()

    @property
    def service(self) -> RunService:
        if self._service is None:
            with self._lock:
                if self._service is None:
                    self._service = self._build_service()
        return self._service

    @property
    def log_stream(self) -> LogStream:
        if self._log_stream is None:
            with self._lock:
                if self._log_stream is None:
                    self._log_stream = self._build_log_stream()
        return self._log_stream

    def _build_service(self) -> RunService:
        from engine import default_registry
        from engine.registry import load_tools
        from engine.service import RunService
        from functions.aws.dynamodb import DynamoRunStore
        from functions.aws.sqs import SqsStepQueue

        settings = self.settings
        load_tools(settings.tools_modules)
        queue_url = settings.step_queue_url
        return RunService(
            DynamoRunStore(settings.table, lambda: self.clients("dynamodb")),
            SqsStepQueue(queue_url, lambda: self.clients("sqs")) if queue_url else _NoQueue(),
            default_registry,
            max_state_bytes=settings.max_state_bytes,
            stall_after_s=settings.stall_after_s,
            retention_s=settings.retention_days * 86400 if settings.retention_days else None,
            isolated=settings.isolation == "principal",
            clients=self.clients,
            callbacks=self._callback_signer(),
            blobs=self._blobs(),
            max_total_state_bytes=settings.max_total_state_bytes,
            max_running_runs=settings.max_running_runs,
            timers=self._timers(),
        )

    def _timers(self) -> Timers:
        """Timers beyond SQS's longest delay: EventBridge Scheduler one-time schedules."""
        from functions.aws.scheduler import SchedulerTimers

        settings = self.settings
        if not (settings.schedule_group and settings.scheduler_role_arn and settings.step_queue_arn):
            return _NoTimers()
        return SchedulerTimers(
            settings.schedule_group,
            settings.step_queue_arn,
            settings.scheduler_role_arn,
            lambda: self.clients("scheduler"),
        )

    def _blobs(self) -> Blobs | None:
        """Where values over the offload threshold go: the state bucket (None: no bucket
        configured, every value stays in the run)."""
        from engine.blobs import Blobs
        from functions.aws.s3 import S3BlobStore

        settings = self.settings
        if not settings.state_bucket:
            return None
        store = S3BlobStore(settings.state_bucket, lambda: self.clients("s3"))
        return Blobs(store, offload_bytes=settings.offload_bytes)

    def _callback_signer(self) -> CallbackSigner | None:
        """Callback tokens' signer: the key from the environment, or from the secret on
        first use (None: neither is configured, callback nodes cannot run)."""
        from engine.waits import CallbackSigner

        settings = self.settings
        base = settings.callback_base_url or ""
        if settings.callback_key:
            return CallbackSigner(settings.callback_key.encode(), base)
        secret = settings.callback_key_secret
        if secret:

            def read_key() -> bytes:
                value = self.clients("secretsmanager").get_secret_value(SecretId=secret)
                return str(value["SecretString"]).encode()

            return CallbackSigner(read_key, base)
        return None

    def _build_log_stream(self) -> LogStream:
        from engine.logstream import LogStream
        from functions.aws.connections import CONNECTION_TTL_S, DynamoSubscriptionStore
        from functions.aws.dynamodb import DynamoRunStore
        from functions.aws.push import ApiGatewayPusher, management_client_factory

        settings = self.settings
        endpoint = settings.require_ws_endpoint()
        return LogStream(
            DynamoRunStore(settings.table, lambda: self.clients("dynamodb")),
            DynamoSubscriptionStore(settings.table, lambda: self.clients("dynamodb")),
            ApiGatewayPusher(management_client_factory(endpoint)),
            connection_ttl_s=CONNECTION_TTL_S,
            isolated=settings.isolation == "principal",
            prices=settings.prices,
        )


def build_app(settings: Settings, clients: Clients | None = None, **parts: Any) -> App:
    """A container's App: ``clients`` (default: boto3's, built on first use) for its
    adapters; ``parts`` (``service``, ``log_stream``) replace what it would build."""
    return App(settings, clients if clients is not None else AwsClients(), **parts)


_lock = threading.Lock()
_process_app: App | None = None
#: The App a local stack worker installed for its thread (see :func:`use_app`).
_worker = threading.local()


def current_app() -> App:
    """The App of the container running this code: the local stack worker's, else the
    process's (built from the environment on first use, as at a Lambda cold start)."""
    app = getattr(_worker, "app", None)
    if app is not None:
        return app
    global _process_app
    if _process_app is None:
        with _lock:
            if _process_app is None:
                _process_app = build_app(Settings.from_env())
    return _process_app


def set_app(app: App | None) -> None:
    """Install ``app`` as the process's App (None: build it from the environment on next use)."""
    global _process_app
    with _lock:
        _process_app = app


def use_app(app: App | None) -> None:
    """Install ``app`` for the calling thread only: a local stack worker is one container."""
    _worker.app = app
