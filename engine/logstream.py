"""Live run logs for WebSocket clients: delivery in order, without gaps or duplicates.

The messages themselves are in :mod:`engine.logmessages`; a log entry's message is its
stored text (:mod:`engine.logentry`, built once at commit), sent as it is.

Two functions deliver a run's log entries to a connection: ``ws`` replays them when the
client subscribes, ``broadcast`` pushes new ones from the table stream. Both go through
:meth:`LogStream.deliver`, which serializes delivery per subscription with a short lease:

* the sender that takes the lease sends every entry after the subscription's
  ``last_seq``, in seq order, then the done message once the run has ended;
* a sender that finds the lease taken bumps the subscription's ``ver`` and leaves; the
  holder releases only while ``ver`` is unchanged, else it looks again — no wake-up is lost;
* ``last_seq`` is saved as entries go out, so a crash re-sends at most one entry
  (clients can drop a ``seq`` they already have);
* a replay that runs out of time releases the lease with the ``replay`` marker set; the
  marker's stream record makes the broadcaster carry on. ``$connect?run_id=`` sets the
  marker too, because the socket opens only after ``connect`` has returned.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol

from engine.cost import EMPTY, Usage, price
from engine.errors import FlowForgeError, NotFoundError
from engine.graph import MAX_STEPS_CAP
from engine.logentry import StoredEntry, upto_open_gap
from engine.logmessages import MAX_MESSAGE_BYTES, done_message, encode_message
from engine.logpages import RunLog
from engine.ports import RunRecord
from engine.prices import LIST_PRICES, PriceTable
from engine.step import TERMINAL


class InvalidAfterError(FlowForgeError):
    """``after`` is not a seq a log can hold (-1 … :data:`MAX_STEPS_CAP`)."""

    code = "invalid_request"


def _check_after(after: int) -> None:
    # Checked before anything is stored: the subscription item keeps ``after``, and
    # DynamoDB numbers hold 38 digits at most.
    if isinstance(after, bool) or not isinstance(after, int) or not -1 <= after <= MAX_STEPS_CAP:
        raise InvalidAfterError(f"after must be an integer from -1 to {MAX_STEPS_CAP}")


class PushError(FlowForgeError):
    """A message could not be posted to a connection."""

    code = "push_failed"


class ConnectionGoneError(PushError):
    """The connection is closed: nothing more can be posted to it."""

    code = "connection_gone"


class PushUnavailableError(PushError):
    """Posting is throttled or unreachable; the delivery may be retried."""

    code = "push_unavailable"


class TooManySubscriptionsError(FlowForgeError):
    """A connection follows as many runs as it may."""

    code = "too_many_subscriptions"


# -- subscriptions and ports -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ended, the seq of its last log entry (-1 when it has none), and what
    its committed steps used (its cost estimate, priced in the done message)."""

    status: str
    last_seq: int
    error: dict[str, Any] | None = None
    cost: Usage = EMPTY

    @classmethod
    def of(cls, run: RunRecord | None) -> RunEnd | None:
        if run is None or run.status not in TERMINAL:
            return None
        # Log entries are 0..step-1: one per committed step.
        return cls(run.status, run.step - 1, run.error, run.cost)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A connection following a run; ``last_seq`` is the last entry it was sent."""

    run_id: str
    connection_id: str
    last_seq: int = -1
    ver: int = 0
    end: RunEnd | None = None
    lease: str | None = None
    lease_until: float = 0.0
    replay: str | None = None
    """Set while the broadcaster owes this subscription a replay (see the module doc)."""
    created_at: float = 0.0
    expires_at: int = 0

    def leased(self, now: float) -> bool:
        return self.lease is not None and self.lease_until >= now


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :meth:`SubscriptionStore.acquire`: the item, and whether we hold it."""

    sub: Subscription
    held: bool


class SubscriptionStore(Protocol):
    """Connections and their subscriptions, with the lease that serializes delivery."""

    def open_connection(
        self, connection_id: str, now: float, expires_at: int, owner: str | None = None
    ) -> None:
        """Record a connection (with the principal that opened it, when runs are isolated)."""

    def connection_owner(self, connection_id: str) -> str | None:
        """The principal recorded when the connection opened (None: none was)."""

    def add(self, sub: Subscription, max_per_connection: int) -> None:
        """Store ``sub`` (replacing one for the same run and connection, lease and all).

        TooManySubscriptionsError if the connection already follows ``max_per_connection``
        other runs.
        """

    def remove(self, run_id: str, connection_id: str) -> None: ...

    def close_connection(self, connection_id: str) -> list[str]:
        """Delete the connection and all its subscriptions; the run ids it followed."""

    def subscriptions(self, run_id: str) -> list[Subscription]:
        """Every subscription to ``run_id`` (strongly consistent)."""

    def get(self, run_id: str, connection_id: str) -> Subscription | None: ...

    def acquire(
        self, run_id: str, connection_id: str, token: str, now: float, until: float, end: RunEnd | None
    ) -> Claim | None:
        """Take the lease if free (or expired) until ``until``; else bump ``ver``.

        Records ``end`` on the subscription either way. None if it does not exist.
        """

    def advance(self, run_id: str, connection_id: str, token: str, last_seq: int, until: float) -> bool:
        """Save progress and extend the lease; False if the lease is no longer ours."""

    def release(
        self,
        run_id: str,
        connection_id: str,
        token: str,
        last_seq: int,
        *,
        expect_ver: int | None,
        replay: str | None,
    ) -> bool:
        """Save progress, drop the lease and set (or with None, clear) ``replay``.

        False — and nothing changed — if the lease is not ours or ``ver`` moved on.
        """

    def done(self, run_id: str, connection_id: str, token: str) -> None:
        """Delete a subscription whose done message was sent (if the lease is still ours)."""


class Pusher(Protocol):
    """Posts to one WebSocket connection."""

    def post(self, connection_id: str, data: bytes) -> None:
        """ConnectionGoneError if it is closed, PushUnavailableError to retry later."""


#: Log messages a LogStream keeps as frames (at most 128 KB each): an entry going out to
#: many subscribers, or replayed to several, is turned into bytes once.
ENCODED_MESSAGES = 32


# -- delivery ------------------------------------------------------------------------------
class LogStream:
    """Subscriptions of WebSocket connections to runs, and delivery of their logs."""

    def __init__(
        self,
        runs: RunLog,
        subscriptions: SubscriptionStore,
        pusher: Pusher,
        *,
        connection_ttl_s: int,
        clock: Callable[[], float] = time.time,
        new_token: Callable[[], str] = lambda: uuid.uuid4().hex,
        lease_s: float = 30.0,
        connect_grace_s: float = 10.0,
        max_subscriptions: int = 20,
        page_size: int = 100,
        workers: int = 8,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        isolated: bool = False,
        prices: PriceTable = LIST_PRICES,
    ) -> None:
        """``isolated``: runs belong to their owner (isolation by principal), and a
        connection follows only runs of the principal that opened it. ``prices``: what
        the done message's cost estimate is priced with."""
        self.runs = runs
        self.prices = prices
        self.isolated = isolated
        self.subs = subscriptions
        self.pusher = pusher
        self.connection_ttl_s = connection_ttl_s
        """How long the gateway keeps a connection open: connections and subscriptions
        expire this long after they were made."""
        self.clock = clock
        self.new_token = new_token
        self.lease_s = lease_s
        self.connect_grace_s = connect_grace_s
        self.max_subscriptions = max_subscriptions
        self.page_size = page_size
        self.workers = workers
        self.max_message_bytes = max_message_bytes
        self._encoded: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._encoded_lock = threading.Lock()

    # -- the ws function ----------------------------------------------------------------
    def connect(
        self, connection_id: str, run_id: str | None = None, after: int = -1, owner: str | None = None
    ) -> None:
        """Record a new connection (opened by ``owner``), following ``run_id`` at once when given.

        Sends nothing: the socket opens only once ``$connect`` has returned, so the
        replay is left to the broadcaster through the subscription's ``replay`` marker.
        """
        _check_after(after)
        if run_id is not None and not self._visible(self.runs.get_run(run_id), owner):
            raise NotFoundError(f"run {run_id!r} not found")
        now = self.clock()
        self.subs.open_connection(
            connection_id, now, int(now) + self.connection_ttl_s, owner if self.isolated else None
        )
        if run_id is not None:
            self.subs.add(
                self._new_sub(run_id, connection_id, after, now, self.new_token()), self.max_subscriptions
            )

    def subscribe(
        self, connection_id: str, run_id: str, after: int = -1, deadline: float | None = None
    ) -> None:
        """Follow ``run_id`` from entry ``after + 1``: replay, then live entries, then done."""
        _check_after(after)
        now = self.clock()
        self.subs.add(self._new_sub(run_id, connection_id, after, now, None), self.max_subscriptions)
        # Read the run after the subscription exists: an end committed after this read
        # reaches the subscription through the stream.
        run = self.runs.get_run(run_id)
        owner = self.subs.connection_owner(connection_id) if self.isolated else None
        if not self._visible(run, owner):
            self.subs.remove(run_id, connection_id)
            raise NotFoundError(f"run {run_id!r} not found")
        self.deliver(run_id, connection_id, end=RunEnd.of(run), deadline=deadline)

    def _visible(self, run: RunRecord | None, owner: str | None) -> bool:
        """Whether ``run`` exists for a connection opened by ``owner``."""
        return run is not None and (not self.isolated or (owner is not None and run.owner == owner))

    def unsubscribe(self, connection_id: str, run_id: str) -> None:
        self.subs.remove(run_id, connection_id)

    def disconnect(self, connection_id: str) -> None:
        self.subs.close_connection(connection_id)

    def tell(self, connection_id: str, message: dict[str, Any]) -> None:
        """Send one message outside any run's order (errors answering a request)."""
        try:
            self.pusher.post(connection_id, encode_message(message, self.max_message_bytes))
        except ConnectionGoneError:
            self.subs.close_connection(connection_id)

    # -- the broadcaster ----------------------------------------------------------------
    def on_log(self, run_id: str, entry: StoredEntry, deadline: float | None = None) -> None:
        """A log entry was committed: bring every subscriber that lacks it up to date."""
        behind = [s for s in self.subs.subscriptions(run_id) if s.last_seq < entry.seq]
        self._fan_out(behind, hint=entry, deadline=deadline)

    def on_run_end(self, run_id: str, deadline: float | None = None, end: RunEnd | None = None) -> None:
        """A run reached a terminal status (``end``, read from the store when not given):
        bring every subscriber up to date, then finish it with the done message.

        A failure may have been redriven since (the run runs again): its end is checked
        against the run, read after the subscriptions — a subscription made after a
        redrive is listed only if the redrive came before that read, which then finds the
        run running, and nobody is sent a done it should not get. (Subscriptions made
        after an end read the run themselves.)
        """
        subs = self.subs.subscriptions(run_id)
        if end is None or end.status == "failed":
            end = RunEnd.of(self.runs.get_run(run_id))
        if end is not None:
            self._fan_out(subs, end=end, deadline=deadline)

    def on_replay_due(self, sub: Subscription, deadline: float | None = None) -> None:
        """The subscription's ``replay`` marker was set (by ``$connect`` or a hand-off)."""
        current = self.subs.get(sub.run_id, sub.connection_id)
        if current is None or current.replay != sub.replay or current.leased(self.clock()):
            # Gone, already replayed, re-marked (that record comes next), or its holder
            # sends everything before it clears the marker.
            return
        run = self.runs.get_run(sub.run_id)
        if run is None:
            self.subs.remove(sub.run_id, sub.connection_id)
            return
        self.deliver(sub.run_id, sub.connection_id, end=RunEnd.of(run), deadline=deadline)

    def _fan_out(self, subs: list[Subscription], **kwargs: Any) -> None:
        """Deliver to each subscription; one failing connection never holds up the others."""
        if not subs:
            return
        errors: list[Exception] = []

        def one(sub: Subscription) -> None:
            try:
                self.deliver(sub.run_id, sub.connection_id, **kwargs)
            except Exception as exc:  # collected, re-raised once every connection was tried
                errors.append(exc)

        if len(subs) == 1 or self.workers <= 1:
            for sub in subs:
                one(sub)
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(subs))) as pool:
                list(pool.map(one, subs))
        if errors:
            raise errors[0]

    # -- one subscription ----------------------------------------------------------------
    def deliver(
        self,
        run_id: str,
        connection_id: str,
        *,
        hint: StoredEntry | None = None,
        end: RunEnd | None = None,
        deadline: float | None = None,
    ) -> None:
        """Bring one subscription up to date, if no one else is doing it right now.

        ``hint`` is an entry the caller already holds (saves a query when it is the next
        one); ``end`` is the run's end when the caller knows it has ended.
        """
        token = self.new_token()
        now = self.clock()
        claim = self.subs.acquire(run_id, connection_id, token, now, now + self.lease_s, end)
        if claim is None or not claim.held:
            return
        sub, sent = claim.sub, claim.sub.last_seq
        try:
            while True:
                entries, exhausted = self._pending(sub, sent, hint)
                hint = None
                for i, entry in enumerate(entries):
                    if deadline is not None and self.clock() >= deadline:
                        # Out of time: the marker's stream record makes the broadcaster go on.
                        self.subs.release(
                            run_id, connection_id, token, sent, expect_ver=None, replay=self.new_token()
                        )
                        return
                    self.pusher.post(connection_id, self._log_data(run_id, entry))
                    sent = entry.seq
                    last = i == len(entries) - 1
                    if not last and not self.subs.advance(
                        run_id, connection_id, token, sent, self.clock() + self.lease_s
                    ):
                        return  # re-subscribed meanwhile: the new subscription takes over
                if sub.end is not None and (sent >= sub.end.last_seq or exhausted):
                    end = sub.end
                    cost = price(end.cost, self.prices)
                    self._post(connection_id, done_message(run_id, end.status, end.error, cost))
                    self.subs.done(run_id, connection_id, token)
                    return
                if len(entries) >= self.page_size:
                    continue  # a full page: fetch the next before letting go
                if self.subs.release(run_id, connection_id, token, sent, expect_ver=sub.ver, replay=None):
                    return
                fresh = self.subs.get(run_id, connection_id)
                if fresh is None or fresh.lease != token:
                    return
                sub = fresh  # someone signalled while we held the lease: look again
        except ConnectionGoneError:
            if sub.replay is not None and self.clock() - sub.created_at < self.connect_grace_s:
                # Posted while $connect is still running: try again from the stream shortly.
                self.subs.release(
                    run_id, connection_id, token, sent, expect_ver=None, replay=self.new_token()
                )
            else:
                self.subs.close_connection(connection_id)
        except BaseException:
            # Keep the progress and let go; the caller's retry (the stream's, or the
            # client's re-subscribe) resumes from ``last_seq``.
            self.subs.release(run_id, connection_id, token, sent, expect_ver=None, replay=None)
            raise

    def _pending(
        self, sub: Subscription, sent: int, hint: StoredEntry | None
    ) -> tuple[list[StoredEntry], bool]:
        """Entries to send next, and whether they are all the log holds after ``sent``."""
        if hint is not None and sub.end is None:
            if hint.seq == sent + 1:
                return [hint], False
            if hint.seq <= sent:
                return [], False  # already sent; later entries bring their own wake-up
        if sub.end is not None and sent >= sub.end.last_seq:
            return [], True  # every entry of the ended run was sent: only done is left
        entries = self.runs.list_entries(sub.run_id, after=sent, limit=self.page_size)
        exhausted = len(entries) < self.page_size
        if sub.end is None:  # an item's entry still to be written is not skipped (its write wakes us)
            entries = upto_open_gap(entries, sent, attrgetter("seq"), attrgetter("execution"))
        return entries, exhausted

    def _log_data(self, run_id: str, entry: StoredEntry) -> bytes:
        """Log entry ``entry`` as clients receive it: its stored text, the message as it
        was built at commit (engine/logentry.py), made bytes once (a committed entry
        never changes) for every subscriber it goes to."""
        key = (run_id, entry.seq)
        with self._encoded_lock:
            data = self._encoded.get(key)
            if data is not None:
                self._encoded.move_to_end(key)
                return data
        data = entry.frame(self.max_message_bytes)
        with self._encoded_lock:
            self._encoded[key] = data
            while len(self._encoded) > ENCODED_MESSAGES:
                self._encoded.popitem(last=False)
        return data

    def _post(self, connection_id: str, message: dict[str, Any]) -> None:
        self.pusher.post(connection_id, encode_message(message, self.max_message_bytes))

    def _new_sub(
        self, run_id: str, connection_id: str, after: int, now: float, replay: str | None
    ) -> Subscription:
        return Subscription(
            run_id=run_id,
            connection_id=connection_id,
            last_seq=after,
            replay=replay,
            created_at=now,
            expires_at=int(now) + self.connection_ttl_s,
        )
