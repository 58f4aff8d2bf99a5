"""Writing the audit log: one hash-chained row per event, in the caller's transaction.

The chain is ordered by the single ``audit_head`` row, locked ``FOR UPDATE``
(PostgreSQL) or by SQLite's write lock (every transaction is BEGIN IMMEDIATE):
two replicas can never both append event N. Because the event row is written
in the same transaction as the state change it records, a certificate row
and its ``certificate.issued`` event commit together or not at all.

Every committed event is also written as one JSON line to the
``jit_ssh.audit`` logger, after the commit (a SIEM never sees an event that
was rolled back).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, cast

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import Table, bindparam, event, insert, select, update
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from ca import audit as chain

from .models import AuditCheckpoint, AuditEvent, AuditHead

if TYPE_CHECKING:
    from .outbox import Outbox

__all__ = [
    "AuditWriter",
    "record",
    "export",
    "event_from_row",
    "install_log_hook",
    "AUDIT_LOGGER",
]

AUDIT_LOGGER = logging.getLogger("jit_ssh.audit")
_PENDING = "jit_ssh.audit.pending"


def _iso(t: datetime) -> str:
    return chain.format_at(t)


_EVENTS = cast(Table, AuditEvent.__table__)
_HEADS = cast(Table, AuditHead.__table__)
# Statements built once: building one costs about as much as running it.
_INSERT_EVENT = insert(_EVENTS)
_SELECT_HEAD = (
    select(_HEADS.c.last_id, _HEADS.c.last_hash).where(_HEADS.c.id == 1).with_for_update()
)
_UPDATE_HEAD = (
    update(_HEADS)
    .where(_HEADS.c.id == 1)
    .values(last_id=bindparam("new_id"), last_hash=bindparam("new_hash"))
)


_HEAD_SEEN = "jit_ssh.audit.head"


def _current_transaction(session: Session) -> SessionTransaction | None:
    return session.get_nested_transaction() or session.get_transaction()


def _head(session: Session) -> tuple[int, str]:
    """Lock the chain head (``FOR UPDATE``) and return its ``(last_id, last_hash)``.

    Core statements on the session's connection: the head is never an ORM
    object in any session, so nothing can hold a stale copy of it. A second
    event in the same transaction (or savepoint) already holds the lock and
    wrote the head itself: it reuses what :func:`record` remembered.
    """
    seen = session.info.get(_HEAD_SEEN)
    if seen is not None and seen[0] is _current_transaction(session):
        return seen[1], seen[2]
    conn = session.connection()
    row = conn.execute(_SELECT_HEAD).first()
    if row is None:
        conn.execute(insert(_HEADS).values(id=1, last_id=0, last_hash=chain.GENESIS_HASH.hex()))
        return 0, chain.GENESIS_HASH.hex()
    return row[0], row[1]


def record(
    session: Session,
    *,
    type: str,
    now: datetime,
    actor: str | None = None,
    request_id: str | None = None,
    data: Mapping[str, object] | None = None,
) -> chain.AuditEvent:
    """Append one event to the chain inside the caller's transaction, unsigned
    (:meth:`AuditWriter.record` also signs a checkpoint at its interval)."""
    # The ORM's pending changes go first (the statements below bypass autoflush),
    # so rows keep the order in which the caller made them.
    session.flush()
    last_id, last_hash = _head(session)
    ev = chain.make_event(
        _prev_event(last_id, last_hash),
        id=last_id + 1,
        at=_iso(now),
        type=type,
        actor=actor,
        request_id=request_id,
        # Callers hand plain dicts of JSON values; make_event's canonical form refuses anything else.
        data=cast(chain.JsonObject, dict(data or {})),
    )
    conn = session.connection()
    conn.execute(
        _INSERT_EVENT,
        {
            "id": ev.id,
            "at": ev.at,
            "type": ev.type,
            "actor": ev.actor,
            "request_id": ev.request_id,
            "data": chain.canonical_json(ev.data).decode("utf-8"),
            "prev_hash": ev.prev_hash,
            "hash": ev.hash,
        },
    )
    conn.execute(_UPDATE_HEAD, {"new_id": ev.id, "new_hash": ev.hash})
    session.info[_HEAD_SEEN] = (_current_transaction(session), ev.id, ev.hash)
    session.info.setdefault(_PENDING, []).append(ev)
    return ev


@dataclass(frozen=True)
class AuditWriter:
    """The one writer of the audit log: it holds the signing key and the
    checkpoint interval, so that no caller passes them.

    Every ``checkpoint_every``-th event is followed, in the same transaction, by
    a checkpoint: the chain head signed with ``signing_key`` (never the CA key).
    """

    signing_key: ed25519.Ed25519PrivateKey
    checkpoint_every: int = 1000
    #: The transactional outbox: every recorded event is offered to it, in the same
    #: transaction (server/outbox.py). None: nothing notifies.
    outbox: Outbox | None = None

    @property
    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self.signing_key.public_key()

    def record(
        self,
        session: Session,
        *,
        type: str,
        now: datetime,
        actor: str | None = None,
        request_id: str | None = None,
        data: Mapping[str, object] | None = None,
    ) -> chain.AuditEvent:
        """Append one event inside the caller's transaction (see :func:`record`)."""
        ev = record(session, type=type, now=now, actor=actor, request_id=request_id, data=data)
        if self.checkpoint_every and ev.id % self.checkpoint_every == 0:
            _store_checkpoint(session, chain.sign_checkpoint(self.signing_key, ev, _iso(now)))
        if self.outbox is not None:
            self.outbox.enqueue(session, ev)
        return ev

    def checkpoint(self, session: Session, now: datetime) -> chain.Checkpoint | None:
        """Sign the current chain head (on demand, e.g. before an export)."""
        last_id, _ = _head(session)
        if last_id == 0:
            return None
        last = session.get(AuditEvent, last_id)
        assert last is not None
        cp = chain.sign_checkpoint(self.signing_key, event_from_row(last), _iso(now))
        _store_checkpoint(session, cp)
        return cp


def _prev_event(last_id: int, last_hash: str) -> chain.AuditEvent | None:
    if last_id == 0:
        return None
    # make_event needs only the previous event's id and hash.
    return chain.AuditEvent(
        id=last_id,
        at="",
        type="",
        actor=None,
        request_id=None,
        data={},
        prev_hash="",
        hash=last_hash,
    )


def _store_checkpoint(session: Session, cp: chain.Checkpoint) -> AuditCheckpoint:
    row = AuditCheckpoint(
        event_id=cp.event_id,
        head_hash=cp.head_hash,
        at=cp.at,
        key_fingerprint=cp.key_fingerprint,
        signature=cp.signature,
    )
    session.add(row)
    session.flush()
    return row


def event_from_row(row: AuditEvent) -> chain.AuditEvent:
    return chain.AuditEvent(
        id=row.id,
        at=row.at,
        type=row.type,
        actor=row.actor,
        request_id=row.request_id,
        data=json.loads(row.data),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def export(session: Session, since: int = 0, batch: int = 5000) -> Iterator[str]:
    """JSON lines: every event with id > ``since`` and the checkpoints that cover them."""
    events: list[chain.AuditEvent] = []
    last = since
    while True:
        rows = (
            session.execute(
                select(AuditEvent).where(AuditEvent.id > last).order_by(AuditEvent.id).limit(batch)
            )
            .scalars()
            .all()
        )
        if not rows:
            break
        events.extend(event_from_row(r) for r in rows)
        last = rows[-1].id
    cps = [
        chain.Checkpoint(
            event_id=c.event_id,
            head_hash=c.head_hash,
            at=c.at,
            key_fingerprint=c.key_fingerprint,
            signature=c.signature,
        )
        for c in session.execute(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.event_id > since)
            .order_by(AuditCheckpoint.event_id)
        ).scalars()
    ]
    yield from chain.export_lines(events, cps)


def install_log_hook(session_factory: sessionmaker[Session]) -> None:
    """Log committed events (one JSON line each) and forget rolled-back ones."""

    @event.listens_for(session_factory, "after_commit")
    def _after_commit(session: Session) -> None:
        session.info.pop(_HEAD_SEEN, None)
        for ev in session.info.pop(_PENDING, []):
            AUDIT_LOGGER.info(
                json.dumps(
                    {
                        "audit_id": ev.id,
                        "at": ev.at,
                        "type": ev.type,
                        "actor": ev.actor,
                        "request_id": ev.request_id,
                        "data": ev.data,
                        "hash": ev.hash,
                    },
                    sort_keys=True,
                )
            )

    @event.listens_for(session_factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        session.info.pop(_PENDING, None)
        session.info.pop(_HEAD_SEEN, None)
