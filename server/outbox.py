"""The transactional outbox: every notification is written in the transaction of the
audit event it reports, and a worker delivers it at least once.

* :class:`~server.audit.AuditWriter` calls :meth:`Outbox.enqueue` for every event it
  records, in the same session and transaction: one ``outbox`` row per sink whose
  :meth:`Sink.wants` says yes, keyed ``"<event id>.<sink name>"`` (the idempotency key).
* The worker claims due rows with a lease, calls :meth:`Sink.deliver`, and marks them
  delivered, or schedules a retry with backoff, or (after the last attempt, or on a
  permanent failure) marks them dead: kept and shown by ``jit-ssh admin outbox``.
"""

from __future__ import annotations

import json
import logging
import os
import random as _random
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ca import audit as chain
from server.db import is_sqlite, transaction
from server.models import OutboxMessage, OutboxState

__all__ = [
    "Delivery",
    "DeliveryFailed",
    "Sink",
    "Outbox",
    "OutboxWorker",
    "Backoff",
    "NOTIFYING",
    "deliver_due",
    "tick",
    "event_dict",
]

log = logging.getLogger("jit_ssh.outbox")


@dataclass(frozen=True)
class Delivery:
    """One outbox message as a sink receives it."""

    #: The idempotency key: ``"<audit event id>.<sink name>"``; the same on every retry.
    key: str
    sink: str
    #: The audit event as recorded: ``{"id", "type", "at", "actor", "request_id", "data"}``.
    event: dict[str, object]
    #: 1 on the first try.
    attempt: int


class DeliveryFailed(Exception):
    """A sink could not deliver. ``permanent``: retrying cannot help (the message is
    marked dead at once); ``retry_after``: the receiver asked for this many seconds
    (HTTP 429 ``Retry-After``), else the worker's backoff decides."""

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Sink(Protocol):
    """Where notifications go: one webhook URL, Slack's channel messages, Slack's DMs."""

    #: Unique and stable: part of every idempotency key. "webhook:<name>", "slack.channel",
    #: "slack.dm".
    name: str

    def wants(self, event_type: str) -> bool:
        """Whether an event of this type is queued for this sink (decided at enqueue)."""
        ...

    def deliver(self, delivery: Delivery) -> None:
        """Deliver once; return on success, raise :class:`DeliveryFailed` otherwise. Called
        outside any database transaction; a sink that needs the database opens its own."""
        ...


#: The audit event types that notify anyone (``request.refused`` only with a request).
NOTIFYING = frozenset(
    {
        "request.created",
        "request.approval",
        "request.approved",
        "request.denied",
        "request.cancelled",
        "request.expired",
        "request.ended",
        "request.refused",
        "certificate.issued",
        "certificate.revoked",
        "certificate.expiring",
    }
)

_OUTBOX = cast(Table, OutboxMessage.__table__)
# Built once: enqueue is on the hot path of every state change.
_INSERT = insert(_OUTBOX)
_FREE = or_(_OUTBOX.c.lease_until.is_(None), _OUTBOX.c.lease_until < bindparam("now"))


def notifies(event_type: str, request_id: str | None) -> bool:
    """Whether an event of this type (and request) is a notification at all."""
    if event_type == "request.refused":
        return request_id is not None
    return event_type in NOTIFYING


@dataclass(frozen=True)
class Backoff:
    """When the next attempt is due: ``base * 2**(attempt-1)``, at most ``cap``, each
    delay drawn at random from its upper half (jitter: receivers coming back after an
    outage are not hit by every message at the same second)."""

    base: float = 10.0
    cap: float = 3600.0
    random: Callable[[], float] = field(default=_random.random, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        full = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        delay: float = full / 2 + full / 2 * float(self.random())
        if retry_after is not None:
            # The receiver said when; never sooner, but no later than the cap either.
            delay = max(delay, min(float(retry_after), self.cap))
        return delay


@dataclass(frozen=True)
class Claimed:
    """A message a worker holds the lease of."""

    id: int
    token: str
    #: When the lease lapses: a message not yet tried by then is left to whoever takes it.
    until: datetime
    delivery: Delivery


class Outbox:
    """The outbox over one database: enqueue (in the caller's transaction), claim with a
    lease, deliver, and record the outcome."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        sinks: Sequence[Sink],
        clock: Callable[[], datetime],
        *,
        max_attempts: int = 12,
        backoff: Backoff | None = None,
        lease: timedelta = timedelta(minutes=2),
        keep_delivered: timedelta = timedelta(days=7),
    ) -> None:
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"two sinks share a name: {names}")
        self.sessions = sessions
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self.clock = clock
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.lease = lease
        self.keep_delivered = keep_delivered
        self._by_name = {s.name: s for s in self.sinks}
        self._pg = not is_sqlite(str(sessions.kw.get("bind") and sessions.kw["bind"].url))
        #: Part of every lease token: which process holds a message.
        self.owner = f"{socket.gethostname()[:32]}:{os.getpid()}"

    def prune(self, *, batch: int = 10_000) -> int:
        """Delete delivered messages older than ``keep_delivered`` (at most ``batch`` per
        call, oldest first), so the table does not grow with history. Pending and dead
        messages are never deleted. Returns how many went."""
        cutoff = self.clock() - self.keep_delivered
        with transaction(self.sessions) as s:
            ids = list(
                s.execute(
                    select(_OUTBOX.c.id)
                    .where(
                        _OUTBOX.c.state == OutboxState.DELIVERED.value,
                        _OUTBOX.c.delivered_at < cutoff,
                    )
                    .order_by(_OUTBOX.c.id)
                    .limit(batch)
                ).scalars()
            )
            if ids:
                s.execute(delete(_OUTBOX).where(_OUTBOX.c.id.in_(ids)))
        return len(ids)

    # ---- writing, in the caller's transaction ------------------------------------------

    def enqueue(self, session: Session, ev: chain.AuditEvent) -> int:
        """One row per sink that wants ``ev`` (one INSERT), in ``session``'s transaction:
        the notification commits with the state change it reports, or not at all."""
        if not self.sinks or not notifies(ev.type, ev.request_id):
            return 0
        wanting = [s.name for s in self.sinks if s.wants(ev.type)]
        if not wanting:
            return 0
        now = self.clock()
        payload = json.dumps(event_dict(ev), sort_keys=True, separators=(",", ":"))
        rows = [
            {
                "key": f"{ev.id}.{name}",
                "sink": name,
                "event_id": ev.id,
                "event_type": ev.type,
                "request_id": ev.request_id,
                "payload": payload,
                "state": OutboxState.PENDING.value,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for name in wanting
        ]
        # One statement, one row per sink (INSERT ... VALUES (...), (...)).
        session.connection().execute(_INSERT.values(rows))
        return len(wanting)

    # ---- the worker's side --------------------------------------------------------------

    def claim(self, limit: int = 100) -> list[Claimed]:
        """Take the lease of up to ``limit`` due messages. The UPDATE's condition (still
        pending, lease free) is what keeps two workers off the same message: on
        PostgreSQL a second UPDATE waits for the first and re-checks it; on SQLite every
        transaction holds the write lock from BEGIN. PostgreSQL also skips rows another
        worker is claiming (FOR UPDATE SKIP LOCKED) instead of queueing behind it."""
        now = self.clock()
        token = f"{self.owner}:{secrets.token_hex(6)}"
        until = now + self.lease
        if not self._by_name:
            return []
        with transaction(self.sessions) as s:
            due = (
                select(_OUTBOX.c.id)
                .where(
                    _OUTBOX.c.state == OutboxState.PENDING.value,
                    _OUTBOX.c.next_attempt_at <= now,
                    # Only this worker's sinks: a worker started with another configuration
                    # (a rolling change, `admin outbox work` with an older file) leaves the
                    # messages of a sink it lacks to one that has it, never kills them.
                    _OUTBOX.c.sink.in_(list(self._by_name)),
                    _FREE,
                )
                .order_by(_OUTBOX.c.next_attempt_at, _OUTBOX.c.id)
                .limit(limit)
            )
            if self._pg:
                due = due.with_for_update(skip_locked=True)
            ids = list(s.execute(due, {"now": now}).scalars())
            if not ids:
                return []
            s.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id.in_(ids), _OUTBOX.c.state == OutboxState.PENDING.value, _FREE)
                .values(lease_owner=token, lease_until=until),
                {"now": now},
            )
            rows = s.execute(
                select(
                    _OUTBOX.c.id,
                    _OUTBOX.c.key,
                    _OUTBOX.c.sink,
                    _OUTBOX.c.payload,
                    _OUTBOX.c.attempts,
                )
                .where(_OUTBOX.c.lease_owner == token)
                .order_by(_OUTBOX.c.next_attempt_at, _OUTBOX.c.id)
            ).all()
        return [
            Claimed(
                id=r.id,
                token=token,
                until=until,
                delivery=Delivery(
                    key=r.key, sink=r.sink, event=json.loads(r.payload), attempt=r.attempts + 1
                ),
            )
            for r in rows
        ]

    def attempt(self, claimed: Claimed) -> str:
        """Deliver one claimed message (outside any transaction) and record how it went;
        returns the state it is left in ("lapsed": not tried, the lease ran out first)."""
        # Started only while half the lease is left: a delivery (whose timeouts the config
        # keeps under a quarter of the lease) then ends before another worker may take the
        # message, however long the earlier ones of the batch took.
        if self.clock() + self.lease / 2 > claimed.until:
            return "lapsed"
        sink = self._by_name.get(claimed.delivery.sink)
        error: DeliveryFailed | None
        if sink is None:
            error = DeliveryFailed(
                f"sink {claimed.delivery.sink!r} is not configured", permanent=True
            )
        else:
            try:
                sink.deliver(claimed.delivery)
                error = None
            except DeliveryFailed as e:
                error = e
            except Exception as e:  # a sink's bug must not stop the worker
                log.exception("sink %s failed on %s", claimed.delivery.sink, claimed.delivery.key)
                error = DeliveryFailed(f"{type(e).__name__}: {e}")
        return self._settle(claimed, error)

    def _settle(self, claimed: Claimed, error: DeliveryFailed | None) -> str:
        now = self.clock()
        attempts = claimed.delivery.attempt
        values: dict[str, object] = {"attempts": attempts, "lease_until": None, "lease_owner": None}
        if error is None:
            state = OutboxState.DELIVERED
            values.update(delivered_at=now, last_error=None)
        elif error.permanent or attempts >= self.max_attempts:
            state = OutboxState.DEAD
            values.update(last_error=_short(str(error)))
            log.error(
                "notification %s is dead after %d attempt(s): %s",
                claimed.delivery.key,
                attempts,
                error,
            )
        else:
            state = OutboxState.PENDING
            delay = self.backoff.delay(attempts, error.retry_after)
            values.update(
                last_error=_short(str(error)), next_attempt_at=now + timedelta(seconds=delay)
            )
            log.warning(
                "notification %s failed (attempt %d), next in %.0fs: %s",
                claimed.delivery.key,
                attempts,
                delay,
                error,
            )
        values["state"] = state.value
        with transaction(self.sessions) as s:
            # Only while the lease is ours: a worker whose lease lapsed (and whose message
            # another worker took) does not overwrite the other's outcome.
            s.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id == claimed.id, _OUTBOX.c.lease_owner == claimed.token)
                .values(**values)
            )
        return state.value

    def deliver_due(self, *, limit: int = 100, batch: int = 10) -> int:
        """Deliver what is due, claimed ``batch`` at a time (a lease covers only messages
        about to be tried), up to ``limit``; returns how many were tried. A message that
        fails is due again only after its backoff: it is not tried twice in one call."""
        tried = 0
        while tried < limit:
            claimed = self.claim(min(batch, limit - tried))
            if not claimed:
                break
            for c in claimed:
                if self.attempt(c) != "lapsed":
                    tried += 1
        return tried

    # ---- what the admin sees ------------------------------------------------------------

    def messages(
        self, states: Sequence[str] = ("pending", "dead"), *, limit: int = 1000
    ) -> list[OutboxMessage]:
        with transaction(self.sessions) as s:
            rows = (
                s.execute(
                    select(OutboxMessage)
                    .where(OutboxMessage.state.in_([OutboxState(x) for x in states]))
                    .order_by(OutboxMessage.id)
                    .limit(limit)
                )
                .scalars()
                .all()
            )
            s.expunge_all()
        return list(rows)

    def retry(self, key: str | None = None, *, dead: bool = False) -> int:
        """Put a message (by key), or every dead one, back to pending, due now, with its
        attempts counted from zero again. Returns how many."""
        now = self.clock()
        cond = (
            _OUTBOX.c.state == OutboxState.DEAD.value
            if dead
            else and_(_OUTBOX.c.key == key, _OUTBOX.c.state != OutboxState.DELIVERED.value)
        )
        with transaction(self.sessions) as s:
            result = s.execute(
                update(_OUTBOX)
                .where(cond)
                .values(
                    state=OutboxState.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    lease_until=None,
                    lease_owner=None,
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    def stats(self) -> tuple[dict[str, int], float]:
        """Messages per state, and the age in seconds of the oldest pending one (0: none)."""
        counts = {s.value: 0 for s in OutboxState}
        with transaction(self.sessions) as s:
            for state, n in s.execute(
                select(_OUTBOX.c.state, func.count()).group_by(_OUTBOX.c.state)
            ):
                counts[str(state)] = int(n)
            oldest = s.scalar(
                select(func.min(OutboxMessage.created_at)).where(
                    OutboxMessage.state == OutboxState.PENDING
                )
            )
        age = 0.0 if oldest is None else max(0.0, (self.clock() - oldest).total_seconds())
        return counts, age


def event_dict(ev: chain.AuditEvent) -> dict[str, object]:
    """The event as recorded, as sinks receive it."""
    return {
        "id": ev.id,
        "type": ev.type,
        "at": ev.at,
        "actor": ev.actor,
        "request_id": ev.request_id,
        "data": dict(ev.data),
    }


def _short(text: str) -> str:
    return text if len(text) <= 1000 else text[:997] + "..."


class _HasOutbox(Protocol):
    @property
    def outbox(self) -> Outbox: ...

    @property
    def service(self) -> Any: ...


def deliver_due(deps: _HasOutbox, *, limit: int = 100) -> int:
    """Deliver every message due now (by the deps' clock), once each; how many were tried."""
    return deps.outbox.deliver_due(limit=limit)


def tick(deps: _HasOutbox) -> int:
    """The time-driven events, by the deps' clock: ``certificate.expiring`` for
    certificates within their rule's ``warn_before``, and the expiry of requests past
    their deadlines. Returns how many events were recorded."""
    service = deps.service
    recorded = int(service.warn_expiring()) + int(service.expire_overdue())
    deps.outbox.prune()
    return recorded


class OutboxWorker:
    """``tick`` and ``deliver_due`` every ``interval`` seconds in a daemon thread, until
    :meth:`stop`. Several workers (processes, replicas) may run at once: the leases
    keep them off each other's messages."""

    def __init__(self, deps: _HasOutbox, *, interval: float = 1.0) -> None:
        self.deps = deps
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db_down = False

    def run_once(self) -> int:
        """One tick and one round of deliveries; how many messages were tried."""
        if not self._guarded(lambda: tick(self.deps), "tick"):
            return 0  # the database is down: deliveries would fail the same way
        n = 0

        def deliver() -> None:
            nonlocal n
            n = deliver_due(self.deps)

        self._guarded(deliver, "delivery")
        return n

    def _guarded(self, step: Callable[[], object], what: str) -> bool:
        """Run ``step``; False when the database was unavailable. A database that is down or
        cut off is said once per outage (nothing was done, every message waits in the
        outbox), not as a traceback a second; anything else is logged with its traceback."""
        try:
            step()
        except DBAPIError as e:
            if not self._db_down:
                log.error(
                    "notification worker: the database is unavailable (%s); retrying",
                    str(e).splitlines()[0][:300],
                )
            self._db_down = True
            return False
        except Exception:
            log.exception("notification %s failed", what)
            return True
        if self._db_down:
            log.warning("notification worker: the database is back")
            self._db_down = False
        return True

    def run(self) -> None:
        """Until :meth:`stop` (a standalone worker runs this in its main thread)."""
        while not self._stop.is_set():
            n = self.run_once()
            if n == 0:  # a full batch: carry on at once
                self._stop.wait(self.interval)

    def start(self) -> OutboxWorker:
        self._thread = threading.Thread(target=self.run, name="jit-ssh-outbox", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Stop after the current pass (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the current pass; False if it did not end within ``timeout``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
