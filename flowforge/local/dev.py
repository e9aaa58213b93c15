"""``flowforge dev`` (``make run``): start the local stack and serve until Ctrl-C.

Start order matters: moto first — in a child process of its own, so the stack uses two
cores (flowforge/local/moto_process.py; ``--moto-in-process`` keeps it in this one) —
(the handlers' boto3 clients read ``AWS_ENDPOINT_URL`` at their first call), then the table, queues and state bucket from template.yaml, the
journal's restore and the state bucket's (flowforge/local/objects.py), journaling of
every write (and keeping every object on disk) from then on, the handlers' environment and cold
start, and only then traffic: the stream poller (past the restore's own writes), the
queue pollers, the resumed runs (and the timers of waiting runs, armed again), the
gateway, the schedule and the timers' loop (flowforge/local/timers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from aiohttp import web

from flowforge.local.aws import (
    MotoServer,
    apply_environment,
    attribute_values_parsed_directly,
    local_aws_environment,
)
from flowforge.local.banner import Endpoints, banner
from flowforge.local.bedrock import BedrockStandIn
from flowforge.local.gateway import PARSER_LINE_LIMIT, Gateway, InProcessConnections
from flowforge.local.journal import Journal, restore
from flowforge.local.lambdas import LocalFunction
from flowforge.local.moto_process import MotoProcess
from flowforge.local.objects import ObjectFiles, restore_objects
from flowforge.local.patterns import compile_filters
from flowforge.local.pollers import QueuePoller, Schedule, StreamPoller
from flowforge.local.sigv4 import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, KeyRing, load_key_ring
from flowforge.local.stack import DEFAULT_TEMPLATE, TemplateError, create_resources
from flowforge.local.template import LocalTemplate, read_template
from flowforge.local.timers import ScheduleFirer, TimerLoop
from functions.runtime import AwsClients, build_app, use_app
from functions.settings import Settings, SettingsError

log = logging.getLogger("flowforge.local")

EXAMPLE_GRAPH = Path(__file__).resolve().parents[2] / "workflows" / "graphs" / "summarization.json"
EXAMPLE_STATE = EXAMPLE_GRAPH.with_name("summarization.state.json")
#: The abstractive variant: LLM nodes, answered by the Bedrock stand-in (same state).
EXAMPLE_LLM_GRAPH = EXAMPLE_GRAPH.with_name("summarization_llm.json")
#: Set by the local stack itself; a user's value for these would point handlers elsewhere.
_OWNED_VARIABLES = frozenset(
    {
        "FLOWFORGE_TABLE",
        "FLOWFORGE_STEP_QUEUE_URL",
        "FLOWFORGE_WS_ENDPOINT",
        "FLOWFORGE_CALLBACK_KEY",
        "FLOWFORGE_CALLBACK_BASE_URL",
    }
)
SHUTDOWN_GRACE_S = 5.0


class PortInUse(RuntimeError):
    """A port the local stack needs is taken; ``option`` is the flag that moves it."""

    def __init__(self, address: str, option: str) -> None:
        super().__init__(address)
        self.address = address
        self.option = option


class StartupError(RuntimeError):
    """Options that cannot work together, or a credentials file that cannot be read."""


@dataclass(frozen=True, slots=True)
class DevOptions:
    host: str = "127.0.0.1"
    port: int = 3000
    moto_port: int = 5000
    bedrock_port: int = 0  # the Bedrock Runtime stand-in (0: a free port)
    data_dir: Path = Path(".flowforge")
    template: Path = DEFAULT_TEMPLATE
    region: str = "us-east-1"
    sweep_interval_s: float | None = None  # None: the template's schedule
    step_pollers: int = 5
    log_level: str = "WARNING"
    example: bool = True
    auth: str = "none"  # "iam": the gateway verifies SigV4 like API Gateway's IAM authorizer
    credentials: Path | None = None  # the key pairs --auth iam accepts (None: testing/testing)
    isolation: str | None = None  # the template's Isolation parameter (None: its default)
    max_running_runs: int | None = None  # MaxRunningRunsPerPrincipal (None: its default)
    moto_process: bool = True  # moto in a child process (moto_process.py); False: in this one


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``dev`` subcommand's options."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the gateway and moto (127.0.0.1; auth is off locally: keep it local)",
    )
    parser.add_argument(
        "--port", type=int, default=3000, help="gateway port: HTTP, WebSocket, @connections (3000)"
    )
    parser.add_argument("--moto-port", type=int, default=5000, help="moto (local AWS) port (5000)")
    parser.add_argument(
        "--bedrock-port",
        type=int,
        default=0,
        help="the Bedrock Runtime stand-in's port (default: a free one)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".flowforge"), help="where data survives restarts (.flowforge)"
    )
    parser.add_argument(
        "--template", type=Path, default=DEFAULT_TEMPLATE, help="SAM template (template.yaml)"
    )
    parser.add_argument("--sweep-interval", type=float, default=None, help="sweeper period, s (template: 60)")
    parser.add_argument("--step-pollers", type=int, default=5, help="concurrent step batches (5)")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the handlers' Powertools log level (WARNING keeps the terminal readable)",
    )
    parser.add_argument(
        "--no-example",
        action="store_true",
        help="do not register the example graphs (summarization, its LLM variant)",
    )
    parser.add_argument(
        "--auth",
        choices=["none", "iam"],
        default=os.environ.get("FLOWFORGE_AUTH", "none").lower() or "none",
        help="iam: verify SigV4 on every request and WebSocket handshake, as API Gateway does"
        " (FLOWFORGE_AUTH; default none)",
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        metavar="FILE",
        help="with --auth iam: a JSON list of {AccessKeyId, SecretAccessKey, Arn, SessionToken?}"
        " (default: one pair testing/testing as arn:aws:iam::123456789012:user/local)",
    )
    parser.add_argument(
        "--isolation",
        choices=["account", "principal"],
        help="the template's Isolation parameter: principal gives each IAM principal its own graphs"
        " and runs (needs --auth iam; default: the template's, account)",
    )
    parser.add_argument(
        "--max-running-runs",
        type=int,
        metavar="N",
        help="the template's MaxRunningRunsPerPrincipal parameter: with --isolation principal,"
        " how many runs each principal may have running or waiting (default: 0, no cap)",
    )
    parser.add_argument(
        "--moto-in-process",
        action="store_true",
        help="run moto in the stack's own process (one core) instead of a child process of its own",
    )


def options_from_args(args: argparse.Namespace) -> DevOptions:
    return DevOptions(
        host=args.host,
        port=args.port,
        moto_port=args.moto_port,
        bedrock_port=args.bedrock_port,
        data_dir=args.data_dir,
        template=args.template,
        sweep_interval_s=args.sweep_interval,
        step_pollers=args.step_pollers,
        log_level=args.log_level,
        example=not args.no_example,
        auth=args.auth,
        credentials=args.credentials,
        isolation=args.isolation,
        max_running_runs=args.max_running_runs,
        moto_process=not args.moto_in_process,
    )


def _bind(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"{host}:{port}", "--port") from None
        raise


def handler_environment(resources: dict[str, Any], options: DevOptions, gateway_url: str) -> dict[str, str]:
    """The functions' variables: the template's, resolved, with local adjustments."""
    env = dict(resources["env"])
    env["FLOWFORGE_WS_ENDPOINT"] = gateway_url  # the gateway's @connections stand-in
    # Callback tokens: a key of this stack's own (kept with its data, so tokens made before
    # a restart still answer), and URLs on the gateway. AWS keeps the key in a secret.
    env["FLOWFORGE_CALLBACK_KEY"] = callback_key(options.data_dir)
    env["FLOWFORGE_CALLBACK_BASE_URL"] = gateway_url
    env["POWERTOOLS_LOG_LEVEL"] = env["LOG_LEVEL"] = options.log_level
    env["POWERTOOLS_TRACE_DISABLED"] = "true"
    if options.log_level not in ("DEBUG", "INFO"):
        env["POWERTOOLS_METRICS_DISABLED"] = "true"  # EMF lines are CloudWatch's, not a terminal's
    # The user's FLOWFORGE_* settings (tools modules, stall threshold, ...) win over the
    # template's, except the ones that name this stack's own resources.
    for name, value in os.environ.items():
        if name.startswith("FLOWFORGE_") and name not in _OWNED_VARIABLES and name != "FLOWFORGE_ENDPOINT":
            env[name] = value
    return env


def callback_key(data_dir: Path) -> str:
    """The local stack's callback key, made once and kept in ``data_dir``."""
    path = data_dir / "callback.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


class LocalStack:
    """moto + resources + handlers + gateway + pollers, started and stopped together."""

    def __init__(self, options: DevOptions) -> None:
        self.options = options
        self.template: LocalTemplate = read_template(options.template)
        self.keys = _key_ring(options)
        self.gateway_socket = _bind(options.host, options.port)
        try:
            moto = MotoProcess if options.moto_process else MotoServer
            self.moto: MotoServer | MotoProcess = moto(options.host, options.moto_port)
        except OSError as exc:
            self.gateway_socket.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"{options.host}:{options.moto_port}", "--moto-port") from None
            raise
        try:
            self.bedrock = BedrockStandIn(options.host, options.bedrock_port)
        except OSError as exc:
            self.gateway_socket.close()
            self.moto.stop()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"{options.host}:{options.bedrock_port}", "--bedrock-port") from None
            raise
        self.functions: dict[str, LocalFunction] = {}
        self.journal = Journal(options.data_dir / "journal.jsonl")
        self.stream: StreamPoller | None = None
        self.pushes: InProcessConnections | None = None
        self.runner: web.AppRunner | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.summary: dict[str, Any] = {}

    @property
    def url(self) -> str:
        host, port = self.gateway_socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def endpoints(self) -> Endpoints:
        return Endpoints(
            url=self.url,
            moto=self.moto.endpoint,
            bedrock=self.bedrock.endpoint,
            region=self.options.region,
            table=self.summary["table"],
            data_dir=self.options.data_dir,
            restored=self.summary["restored"],
            resumed=self.summary["resumed"],
            example_graph=self.summary.get("example"),
            example_llm_graph=self.summary.get("example_llm"),
            example_state=EXAMPLE_STATE,
            signing_key=self._signing_key(),
            isolation=self.summary.get("isolation", "account"),
        )

    def _signing_key(self) -> tuple[str, str] | None:
        """What the banner's examples sign with: the default pair, or a file's first key."""
        if self.keys is None:
            return None
        if self.options.credentials is None:
            return DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
        return next(iter(self.keys.pairs)), "<its secret>"

    # -- start ---------------------------------------------------------------------------
    async def start(self) -> None:
        options = self.options
        self.moto.start()
        self.moto.serve_in_process()  # before any session: the handlers' clients skip the socket
        attribute_values_parsed_directly(setattr)
        await self.bedrock.start()
        apply_environment(local_aws_environment(self.moto.endpoint, options.region, self.bedrock.endpoint))
        session = boto3.session.Session()
        dynamodb, sqs, s3 = session.client("dynamodb"), session.client("sqs"), session.client("s3")
        parameters: dict[str, str] = {}
        if options.isolation:
            parameters["Isolation"] = options.isolation
        if options.max_running_runs is not None:
            parameters["MaxRunningRunsPerPrincipal"] = str(options.max_running_runs)
        scheduler = session.client("scheduler")
        resources = create_resources(
            {"dynamodb": dynamodb, "sqs": sqs, "s3": s3, "scheduler": scheduler},
            options.template,
            parameters=parameters or None,
        )
        self.summary["table"] = resources["table"]
        environment = handler_environment(resources, options, self.url)
        self.summary["isolation"] = environment.get("FLOWFORGE_ISOLATION", "account")
        if self.summary["isolation"] == "principal" and self.keys is None:
            raise StartupError(
                "isolation by principal needs --auth iam: with auth off no request carries a principal to isolate by"
            )
        if (
            environment.get("FLOWFORGE_MAX_RUNNING_RUNS", "0") not in ("0", "")
            and self.summary["isolation"] != "principal"
        ):
            raise StartupError(
                "--max-running-runs needs --isolation principal: runs belong to a principal only then"
            )
        apply_environment(environment, drop=())
        # One App per worker, as Lambda builds one per container; all share the clients.
        settings, clients = Settings.from_env(), AwsClients(session)
        self.container = lambda: use_app(build_app(settings, clients))
        self.app = build_app(settings, clients)  # the stack's own: resumes runs, registers the example

        keys = [
            k["AttributeName"]
            for k in dynamodb.describe_table(TableName=resources["table"])["Table"]["KeySchema"]
        ]
        restored = restore(self.journal, dynamodb, resources["table"], keys)
        # The state bucket's objects, but those of runs the restore did not bring back.
        objects = ObjectFiles(options.data_dir / "objects", [resources["bucket"]])
        run_ids = [i["run_id"]["S"] for i in restored.items if i.get("kind", {}).get("S") == "run"]
        values, _ = restore_objects(objects, s3, resources["bucket"], run_ids)
        # Before any handler runs: every write is acknowledged only once it is on disk.
        self.moto.journal_writes(self.journal, resources["table"], options.region)
        self.moto.persist_objects(objects)
        self.summary.update(restored=len(restored.items), resumed=len(restored.running), values=values)

        self._create_functions()
        self._create_pollers(session, resources)
        await asyncio.get_running_loop().run_in_executor(None, self.stream.skip_existing)  # type: ignore[union-attr]
        service = self.app.service
        for run_id in restored.running + restored.waiting:
            run = service.store.get_run(run_id)  # the run item may lag: the store folds in the rest
            if run is not None and run.status in ("running", "waiting"):
                service.resume(run)  # duplicates are harmless: commits are conditional
        # moto keeps schedules but never fires them: this does, as Scheduler would.
        firer = ScheduleFirer(scheduler, sqs, resources["schedule_group"])
        self.tasks.append(asyncio.ensure_future(TimerLoop(firer, time.time).run()))
        if options.example:
            # Isolated by principal: the example belongs to the banner's signing key.
            signing_key = self._signing_key()
            owner = (
                self.keys.principal_of(signing_key[0])
                if service.isolated and self.keys and signing_key
                else None
            )
            self.summary["example"] = register_example(service, owner=owner)
            self.summary["example_llm"] = register_example(service, EXAMPLE_LLM_GRAPH, owner=owner)

        gateway = Gateway(
            self.functions,
            self.template.http_routes,
            self.template.ws_routes,
            self.template.ws_route_selection,
            self.template.cors,
            keys=self.keys,
        )
        # Before any push client is made (each is, at its first push): pushes skip HTTP.
        self.pushes = InProcessConnections(gateway, asyncio.get_running_loop(), urlsplit(self.url).netloc)
        self.pushes.register()
        self.runner = web.AppRunner(
            gateway.application(),
            access_log=None,
            handle_signals=False,
            max_line_size=PARSER_LINE_LIMIT,
            max_field_size=PARSER_LINE_LIMIT,
        )
        await self.runner.setup()
        await web.SockSite(self.runner, self.gateway_socket).start()

    def _create_functions(self) -> None:
        concurrency = {source.function: self.options.step_pollers for source in self.template.queue_sources}
        # A stream mapping invokes its function for up to ParallelizationFactor batches at once.
        concurrency.update({s.function: max(8, s.parallelization) for s in self.template.stream_sources})
        for logical_id, spec in self.template.functions.items():
            function = LocalFunction(
                logical_id,
                spec.handler,
                timeout_s=spec.timeout_s,
                # The API function waits for foreground runs: give it room.
                concurrency=concurrency.get(logical_id, 32 if logical_id in self._http_functions() else 8),
                region=self.options.region,
                container=self.container,
            )
            function.load()
            self.functions[logical_id] = function

    def _http_functions(self) -> set[str]:
        return {route.function for route in self.template.http_routes}

    def _create_pollers(self, session: Any, resources: dict[str, Any]) -> None:
        sqs = session.client("sqs")
        region = self.options.region
        for source in self.template.queue_sources:
            url = resources["names"][source.queue]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            # Lambda scales a mapping's pollers up to its MaximumConcurrency; without one
            # (the DLQ's), one poller is plenty locally.
            pollers = min(self.options.step_pollers, source.max_concurrency) if source.max_concurrency else 1
            poller = QueuePoller(
                sqs,
                url,
                arn,
                self.functions[source.function],
                batch_size=source.batch_size,
                report_failures=source.report_failures,
                pollers=pollers,
                region=region,
            )
            self.tasks.append(asyncio.ensure_future(poller.run()))
        if len(self.template.stream_sources) > 1:
            raise TemplateError("the local stack polls one table stream; the template maps several")
        for stream in self.template.stream_sources:
            self.stream = StreamPoller(
                session.client("dynamodbstreams"),
                resources["stream_arn"],
                self.functions[stream.function],
                batch_size=stream.batch_size,
                report_failures=stream.report_failures,
                max_retries=stream.max_retries,
                accepts=compile_filters(stream.filters),
                consumed=partial(self.moto.trim, resources["names"][stream.table], region),
                region=region,
                parallelization=stream.parallelization,
                records_after=partial(
                    self.moto.stream_records_after, resources["names"][stream.table], region
                ),
            )
        for schedule in self.template.schedules:
            every = self.options.sweep_interval_s or schedule.every_s
            self.tasks.append(
                asyncio.ensure_future(Schedule(self.functions[schedule.function], every, region).run())
            )

    def begin_streaming(self) -> None:
        if self.stream is not None:
            self.moto.on_stream_records(self.stream.nudge)
            self.tasks.append(asyncio.ensure_future(self.stream.run()))

    # -- stop ----------------------------------------------------------------------------
    async def stop(self) -> bool:
        """Stop everything; False if handlers were still running after the grace period."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.runner is not None:
            await self.runner.cleanup()
        loop = asyncio.get_running_loop()
        finished = await loop.run_in_executor(None, self._drain)
        await self.bedrock.stop()
        if self.pushes is not None:
            self.pushes.unregister()
        self.moto.stop()
        self.journal.close()  # every write was journaled as it was acknowledged
        return finished

    def _drain(self) -> bool:
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        for function in self.functions.values():
            function.shutdown(wait=False)
        busy = [f for f in self.functions.values() if f.busy()]
        while busy and time.monotonic() < deadline:
            time.sleep(0.1)
            busy = [f for f in busy if f.busy()]
        return not busy


def _key_ring(options: DevOptions) -> KeyRing | None:
    """The key pairs the gateway verifies signatures with; None with auth off."""
    if options.auth != "iam":
        if options.credentials is not None:
            raise StartupError("--credentials needs --auth iam")
        return None
    try:
        return load_key_ring(options.credentials, options.region)
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def register_example(service: Any, path: Path = EXAMPLE_GRAPH, owner: str | None = None) -> str:
    """An example graph's id (``owner``'s): the stored copy if unchanged, else a new one."""
    definition = json.loads(path.read_text(encoding="utf-8"))
    graphs, _ = service.store.list_graphs(limit=100, owner=owner)
    for graph in graphs:
        if graph.definition == definition:
            return graph.graph_id
    return service.create_graph(definition, owner).graph_id


async def serve(options: DevOptions) -> int:
    stack = LocalStack(options)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stack.start()
        stack.begin_streaming()
        print(banner(stack.endpoints()), flush=True)
        await stopping.wait()
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C stops at once
            loop.add_signal_handler(signum, lambda: os._exit(130))
        print("stopping…", flush=True)
    finally:
        finished = await stack.stop()
    if not finished:
        # A tool is still running in a handler thread: it cannot be interrupted, and its
        # run resumes from the last committed step at the next start.
        print("handlers still running; their runs resume at the next start", flush=True)
        sys.stdout.flush()
        os._exit(0)
    print("stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """The ``flowforge dev`` command."""
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    log.setLevel(logging.INFO)
    # On Lambda this lands in CloudWatch once per cold start; here it is noise.
    warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)
    try:
        return asyncio.run(serve(options_from_args(args)))
    except PortInUse as exc:
        what = {"--moto-port": "moto (local AWS)", "--bedrock-port": "the Bedrock stand-in"}.get(
            exc.option, "the API gateway"
        )
        print(
            f"flowforge dev: {exc.address} ({what}) is already in use (another `make run`?);"
            f" choose another with {exc.option}: bin/flowforge dev {exc.option} <port>",
            file=sys.stderr,
        )
        return 2
    except StartupError as exc:
        print(f"flowforge dev: {exc}", file=sys.stderr)
        return 2
    except (ImportError, TemplateError, SettingsError, OSError) as exc:
        # A handler that does not import, a template the local stack cannot read, an
        # unwritable data directory: one line, as for a taken port.
        print(f"flowforge dev: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowforge dev", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
