"""Read-only queries the pages need beyond the service's: a request's audit trail
and the certificates valid now. Nothing here changes state."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from server.db import transaction
from server.models import AccessRequest, AuditEvent, Certificate, Revocation, User

__all__ = ["TrailEvent", "ActiveCertificate", "audit_trail", "active_certificates"]


@dataclass(frozen=True)
class TrailEvent:
    id: int
    at: str
    type: str
    actor: str | None
    data: dict[str, object]


@dataclass(frozen=True)
class ActiveCertificate:
    serial: int
    request_id: str | None
    requester: str | None
    target: str | None
    reason: str
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    key_id: str


def audit_trail(
    sessions: sessionmaker[Session], request_id: str, limit: int = 500
) -> list[TrailEvent]:
    with transaction(sessions) as s:
        rows = s.execute(
            select(AuditEvent)
            .where(AuditEvent.request_id == request_id)
            .order_by(AuditEvent.id)
            .limit(limit)
        ).scalars()
        return [
            TrailEvent(id=r.id, at=r.at, type=r.type, actor=r.actor, data=json.loads(r.data))
            for r in rows
        ]


def active_certificates(
    sessions: sessionmaker[Session],
    now: datetime,
    *,
    requester_id: int | None = None,
    limit: int = 500,
) -> list[ActiveCertificate]:
    """Certificates valid at ``now`` and not revoked, soonest to expire first;
    only ``requester_id``'s when given."""
    q = (
        select(Certificate, AccessRequest, User)
        .outerjoin(AccessRequest, Certificate.request_id == AccessRequest.id)
        .outerjoin(User, AccessRequest.requester_id == User.id)
        .outerjoin(Revocation, Revocation.serial == Certificate.serial)
        .where(
            Certificate.valid_after <= now, Certificate.valid_before > now, Revocation.id.is_(None)
        )
        .order_by(Certificate.valid_before, Certificate.serial)
        .limit(limit)
    )
    if requester_id is not None:
        q = q.where(AccessRequest.requester_id == requester_id)
    with transaction(sessions) as s:
        return [
            ActiveCertificate(
                serial=c.serial,
                request_id=c.request_id,
                requester=u.name if u is not None else None,
                target=r.target if r is not None else None,
                reason=r.reason if r is not None else "",
                principals=tuple(json.loads(c.principals)),
                valid_after=c.valid_after,
                valid_before=c.valid_before,
                key_id=c.key_id,
            )
            for c, r, u in s.execute(q).all()
        ]
