"""An in-memory :class:`~engine.logstream.SubscriptionStore`, for tests and the CLI.

Same contract as the DynamoDB adapter (one contract suite runs against both), with every
conditional write atomic under one lock — so threaded tests exercise the lease protocol,
not the fake.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from engine.logstream import Claim, RunEnd, Subscription, TooManySubscriptionsError


class InMemorySubscriptionStore:
    """Connections (id → followed run ids) and subscriptions ((run, connection) → item)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections: dict[str, set[str]] = {}
        self.subs: dict[tuple[str, str], Subscription] = {}
        self.owners: dict[str, str] = {}

    def open_connection(
        self, connection_id: str, now: float, expires_at: int, owner: str | None = None
    ) -> None:
        with self._lock:
            self.connections.setdefault(connection_id, set())
            if owner is not None:
                self.owners[connection_id] = owner

    def connection_owner(self, connection_id: str) -> str | None:
        with self._lock:
            return self.owners.get(connection_id)

    def add(self, sub: Subscription, max_per_connection: int) -> None:
        with self._lock:
            runs = self.connections.setdefault(sub.connection_id, set())
            if sub.run_id not in runs and len(runs) >= max_per_connection:
                raise TooManySubscriptionsError(f"a connection may follow at most {max_per_connection} runs")
            runs.add(sub.run_id)
            self.subs[(sub.run_id, sub.connection_id)] = sub

    def remove(self, run_id: str, connection_id: str) -> None:
        with self._lock:
            self.subs.pop((run_id, connection_id), None)
            self.connections.get(connection_id, set()).discard(run_id)

    def close_connection(self, connection_id: str) -> list[str]:
        with self._lock:
            self.owners.pop(connection_id, None)
            runs = sorted(self.connections.pop(connection_id, set()))
            for run_id in runs:
                self.subs.pop((run_id, connection_id), None)
            return runs

    def subscriptions(self, run_id: str) -> list[Subscription]:
        with self._lock:
            return [s for (r, _), s in sorted(self.subs.items()) if r == run_id]

    def get(self, run_id: str, connection_id: str) -> Subscription | None:
        with self._lock:
            return self.subs.get((run_id, connection_id))

    def acquire(
        self, run_id: str, connection_id: str, token: str, now: float, until: float, end: RunEnd | None
    ) -> Claim | None:
        with self._lock:
            sub = self.subs.get((run_id, connection_id))
            if sub is None:
                return None
            if end is not None:
                sub = replace(sub, end=end)
            held = not sub.leased(now)
            sub = replace(sub, lease=token, lease_until=until) if held else replace(sub, ver=sub.ver + 1)
            self.subs[(run_id, connection_id)] = sub
            return Claim(sub, held)

    def advance(self, run_id: str, connection_id: str, token: str, last_seq: int, until: float) -> bool:
        with self._lock:
            sub = self.subs.get((run_id, connection_id))
            if sub is None or sub.lease != token:
                return False
            self.subs[(run_id, connection_id)] = replace(sub, last_seq=last_seq, lease_until=until)
            return True

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
        with self._lock:
            sub = self.subs.get((run_id, connection_id))
            if sub is None or sub.lease != token or (expect_ver is not None and sub.ver != expect_ver):
                return False
            self.subs[(run_id, connection_id)] = replace(
                sub, last_seq=last_seq, lease=None, lease_until=0.0, replay=replay
            )
            return True

    def done(self, run_id: str, connection_id: str, token: str) -> None:
        with self._lock:
            sub = self.subs.get((run_id, connection_id))
            if sub is not None and sub.lease == token:
                del self.subs[(run_id, connection_id)]
                self.connections.get(connection_id, set()).discard(run_id)
