"""Settings, read once from the environment into a frozen object.

A missing required variable fails at cold start with its name — never a silent default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from engine.blobs import DEFAULT_MAX_TOTAL_STATE_BYTES, DEFAULT_OFFLOAD_BYTES
from engine.chain import DEFAULT_CHAIN_MAX_SECONDS, DEFAULT_CHAIN_MAX_STEPS
from engine.prices import LIST_PRICES, InvalidPriceOverrides, PriceTable, parse_overrides
from engine.state import DEFAULT_MAX_STATE_BYTES


class SettingsError(RuntimeError):
    """The function's environment is incomplete or malformed."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration shared by every FlowForge function."""

    table: str
    """DynamoDB table holding graphs, runs, log entries and connections (FLOWFORGE_TABLE)."""
    step_queue_url: str | None = None
    """SQS queue of step messages (FLOWFORGE_STEP_QUEUE_URL); needed by api, step, sweeper."""
    step_queue_arn: str | None = None
    """The step queue's ARN (FLOWFORGE_STEP_QUEUE_ARN): the target of timers' schedules."""
    schedule_group: str | None = None
    """EventBridge Scheduler group of the timers' one-time schedules (FLOWFORGE_SCHEDULE_GROUP);
    needed by step (creates them) and api (deletes a cancelled run's)."""
    scheduler_role_arn: str | None = None
    """The role Scheduler assumes to send a timer's step message (FLOWFORGE_SCHEDULER_ROLE_ARN)."""
    ws_endpoint: str | None = None
    """API Gateway @connections endpoint, https://… (FLOWFORGE_WS_ENDPOINT); ws, broadcast."""
    console_ws_url: str | None = None
    """The WebSocket API's URL, wss://…/stage, which the web console connects to
    (FLOWFORGE_CONSOLE_WS_URL; without it the console uses /ws on its own origin)."""
    max_state_bytes: int = DEFAULT_MAX_STATE_BYTES
    """Cap on a run's serialized state as stored, offloaded values counted by their
    references (FLOWFORGE_MAX_STATE_BYTES)."""
    state_bucket: str | None = None
    """S3 bucket of the state values over the offload threshold (FLOWFORGE_STATE_BUCKET;
    without it every value stays in the run, under ``max_state_bytes``)."""
    offload_bytes: int = DEFAULT_OFFLOAD_BYTES
    """A state value whose JSON is over this many bytes is offloaded to the state bucket
    (FLOWFORGE_OFFLOAD_THRESHOLD_BYTES)."""
    max_total_state_bytes: int = DEFAULT_MAX_TOTAL_STATE_BYTES
    """Cap on a run's whole state, offloaded values included (FLOWFORGE_MAX_TOTAL_STATE_BYTES)."""
    stall_after_s: float = 360.0
    """A run with no progress this long past its due time is re-enqueued (FLOWFORGE_STALL_AFTER_S)."""
    retention_days: int | None = None
    """Runs and their logs expire (DynamoDB TTL) after this many days (FLOWFORGE_RETENTION_DAYS)."""
    tools_modules: tuple[str, ...] = ("workflows",)
    """Modules imported at cold start to register tools (FLOWFORGE_TOOLS_MODULES, comma-separated)."""
    chain_max_steps: int = DEFAULT_CHAIN_MAX_STEPS
    """Steps one step-function invocation may run, chained ones included
    (FLOWFORGE_CHAIN_MAX_STEPS; 1 turns chaining off)."""
    chain_max_seconds: float = DEFAULT_CHAIN_MAX_SECONDS
    """Seconds one step-function invocation may spend chaining steps (FLOWFORGE_CHAIN_MAX_SECONDS)."""
    callback_key: str | None = None
    """The key callback tokens are made with (FLOWFORGE_CALLBACK_KEY, at least 16
    characters): the local stack and tests. On AWS the key is a secret instead."""
    callback_key_secret: str | None = None
    """The Secrets Manager secret (ARN) holding that key (FLOWFORGE_CALLBACK_KEY_SECRET),
    read when a callback is first made or shown."""
    callback_base_url: str | None = None
    """The HTTP API's URL that callback URLs start with (FLOWFORGE_CALLBACK_BASE_URL);
    the API function takes it from the request when unset."""
    isolation: str = "account"
    """Who sees a graph or run (FLOWFORGE_ISOLATION): ``account``, every caller the API lets in;
    ``principal``, only the IAM principal that created it."""
    max_running_runs: int = 0
    """How many runs each principal may have running or waiting, with isolation by
    principal (FLOWFORGE_MAX_RUNNING_RUNS, the MaxRunningRunsPerPrincipal parameter;
    0: no cap). See engine/running.py."""
    prices: PriceTable = LIST_PRICES
    """What a run's cost estimate is priced with: us-east-1 list prices, with the
    FLOWFORGE_PRICE_OVERRIDES JSON (the PriceOverrides parameter) applied."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        try:
            table = env["FLOWFORGE_TABLE"]
        except KeyError:
            raise SettingsError("missing environment variable FLOWFORGE_TABLE") from None
        return cls(
            table=table,
            step_queue_url=env.get("FLOWFORGE_STEP_QUEUE_URL") or None,
            step_queue_arn=env.get("FLOWFORGE_STEP_QUEUE_ARN") or None,
            schedule_group=env.get("FLOWFORGE_SCHEDULE_GROUP") or None,
            scheduler_role_arn=env.get("FLOWFORGE_SCHEDULER_ROLE_ARN") or None,
            ws_endpoint=env.get("FLOWFORGE_WS_ENDPOINT") or None,
            console_ws_url=env.get("FLOWFORGE_CONSOLE_WS_URL") or None,
            max_state_bytes=_number(env, "FLOWFORGE_MAX_STATE_BYTES", int, DEFAULT_MAX_STATE_BYTES),
            state_bucket=env.get("FLOWFORGE_STATE_BUCKET") or None,
            offload_bytes=_number(env, "FLOWFORGE_OFFLOAD_THRESHOLD_BYTES", int, DEFAULT_OFFLOAD_BYTES),
            max_total_state_bytes=_number(
                env, "FLOWFORGE_MAX_TOTAL_STATE_BYTES", int, DEFAULT_MAX_TOTAL_STATE_BYTES
            ),
            # A run is only "stalled" once a step could no longer be executing.
            stall_after_s=max(
                _number(env, "FLOWFORGE_STALL_AFTER_S", float, 360.0),
                _number(env, "FLOWFORGE_STEP_TIMEOUT_S", float, 0.0) + 60.0,
            ),
            retention_days=_number(env, "FLOWFORGE_RETENTION_DAYS", int, None),
            tools_modules=tuple(
                m.strip() for m in env.get("FLOWFORGE_TOOLS_MODULES", "workflows").split(",") if m.strip()
            ),
            chain_max_steps=_number(env, "FLOWFORGE_CHAIN_MAX_STEPS", int, DEFAULT_CHAIN_MAX_STEPS),
            chain_max_seconds=_number(env, "FLOWFORGE_CHAIN_MAX_SECONDS", float, DEFAULT_CHAIN_MAX_SECONDS),
            callback_key=env.get("FLOWFORGE_CALLBACK_KEY") or None,
            callback_key_secret=env.get("FLOWFORGE_CALLBACK_KEY_SECRET") or None,
            callback_base_url=env.get("FLOWFORGE_CALLBACK_BASE_URL") or None,
            isolation=_choice(env, "FLOWFORGE_ISOLATION", ISOLATION_MODES),
            prices=_prices(env.get("FLOWFORGE_PRICE_OVERRIDES")),
            max_running_runs=(
                0
                if env.get("FLOWFORGE_MAX_RUNNING_RUNS", "0") in ("0", "")
                else _number(env, "FLOWFORGE_MAX_RUNNING_RUNS", int, 0)
            ),
        )

    def require_ws_endpoint(self) -> str:
        if not self.ws_endpoint:
            raise SettingsError("missing environment variable FLOWFORGE_WS_ENDPOINT")
        return self.ws_endpoint


ISOLATION_MODES = ("account", "principal")


def _prices(overrides: str | None) -> PriceTable:
    """The price table with ``overrides`` applied: a bad one fails the cold start, named."""
    try:
        return parse_overrides(overrides)
    except InvalidPriceOverrides as exc:
        raise SettingsError(f"FLOWFORGE_PRICE_OVERRIDES: {exc.message}") from None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first when unset)."""
    value = env.get(name) or choices[0]
    if value not in choices:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def _number(env, name, kind, default):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive")
    return value
