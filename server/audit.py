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
from datetime import datetime
from typing import Any, Iterator

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from . import audit_chain as chain
from .models import AuditCheckpoint, AuditEvent, AuditHead

__all__ = ["record", "checkpoint", "export", "event_from_row", "install_log_hook", "AUDIT_LOGGER"]

AUDIT_LOGGER = logging.getLogger("jit_ssh.audit")
_PENDING = "jit_ssh.audit.pending"


def _iso(t: datetime) -> str:
    return chain.format_at(t)


def _head(session: Session) -> AuditHead:
    head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, last_id=0, last_hash=chain.GENESIS_HASH.hex())
        session.add(head)
        session.flush()
    return head


def record(
    session: Session,
    *,
    type: str,
    now: datetime,
    actor: str | None = None,
    request_id: str | None = None,
    data: dict[str, Any] | None = None,
    signing_key: Any = None,
    checkpoint_every: int = 0,
) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction."""
    head = _head(session)
    ev = chain.make_event(
        _prev_event(head),
        id=head.last_id + 1,
        at=_iso(now),
        type=type,
        actor=actor,
        request_id=request_id,
        data=data or {},
    )
    row = AuditEvent(
        id=ev.id,
        at=ev.at,
        type=ev.type,
        actor=ev.actor,
        request_id=ev.request_id,
        data=chain.canonical_json(ev.data).decode("utf-8"),
        prev_hash=ev.prev_hash,
        hash=ev.hash,
    )
    session.add(row)
    head.last_id = ev.id
    head.last_hash = ev.hash
    session.flush()
    session.info.setdefault(_PENDING, []).append(ev)
    if signing_key is not None and checkpoint_every and ev.id % checkpoint_every == 0:
        _store_checkpoint(session, chain.sign_checkpoint(signing_key, ev, _iso(now)))
    return row


def _prev_event(head: AuditHead) -> chain.AuditEvent | None:
    if head.last_id == 0:
        return None
    # make_event needs only the previous event's id and hash.
    return chain.AuditEvent(
        id=head.last_id, at="", type="", actor=None, request_id=None, data={}, prev_hash="", hash=head.last_hash
    )


def _store_checkpoint(session: Session, cp: chain.Checkpoint) -> AuditCheckpoint:
    row = AuditCheckpoint(
        event_id=cp.event_id, head_hash=cp.head_hash, at=cp.at, key_fingerprint=cp.key_fingerprint, signature=cp.signature
    )
    session.add(row)
    session.flush()
    return row


def checkpoint(session: Session, signing_key: Any, now: datetime) -> chain.Checkpoint | None:
    """Sign the current chain head (on demand, e.g. before an export)."""
    head = _head(session)
    if head.last_id == 0:
        return None
    last = session.get(AuditEvent, head.last_id)
    assert last is not None
    cp = chain.sign_checkpoint(signing_key, event_from_row(last), _iso(now))
    _store_checkpoint(session, cp)
    return cp


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
        rows = session.execute(
            select(AuditEvent).where(AuditEvent.id > last).order_by(AuditEvent.id).limit(batch)
        ).scalars().all()
        if not rows:
            break
        events.extend(event_from_row(r) for r in rows)
        last = rows[-1].id
    cps = [
        chain.Checkpoint(
            event_id=c.event_id, head_hash=c.head_hash, at=c.at, key_fingerprint=c.key_fingerprint, signature=c.signature
        )
        for c in session.execute(
            select(AuditCheckpoint).where(AuditCheckpoint.event_id > since).order_by(AuditCheckpoint.event_id)
        ).scalars()
    ]
    yield from chain.export_lines(events, cps)


def install_log_hook(session_factory: Any) -> None:
    """Log committed events (one JSON line each) and forget rolled-back ones."""

    @event.listens_for(session_factory, "after_commit")
    def _after_commit(session: Session) -> None:
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
