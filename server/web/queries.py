"""Read-only queries the pages need beyond the service's: a request's audit trail,
the certificates valid now, a requester's valid access and recent requests, an
approver's decisions, a certificate to revoke. Nothing here changes state.

Who may see what is the views' to check, with the request page's rule: the
requester, or anyone with the approver or admin role."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from server.db import transaction
from server.models import (
    AccessRequest,
    Approval,
    ApprovalDecision,
    AuditEvent,
    Certificate,
    RequestState,
    Revocation,
    User,
)

__all__ = [
    "TrailEvent",
    "ActiveCertificate",
    "ValidAccess",
    "Decider",
    "RecentRequest",
    "MyDecision",
    "CertificateToRevoke",
    "audit_trail",
    "active_certificates",
    "effective_state",
    "valid_access",
    "recent_requests",
    "decided_by",
    "certificate_to_revoke",
]


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


# ---------------------------------------------------------------------------- approver context


def effective_state(
    state: RequestState,
    now: datetime,
    *,
    pending_until: datetime,
    claim_until: datetime | None,
    valid_before: datetime | None,
) -> RequestState:
    """The state a request is in at ``now``, past the deadlines the service moves it
    over on its next read or write (``ServiceBase._refresh``): a read-only list must not
    say "pending" of a request that lapsed a minute ago."""
    if state == RequestState.PENDING and now >= pending_until:
        return RequestState.EXPIRED
    if state == RequestState.APPROVED and claim_until is not None and now >= claim_until:
        return RequestState.EXPIRED
    if state == RequestState.ISSUED and valid_before is not None and now >= valid_before:
        return RequestState.ENDED
    return state


@dataclass(frozen=True)
class ValidAccess:
    """A certificate that a requester holds now for a target, and the request it came from."""

    request_id: str
    serial: int
    valid_before: datetime


def valid_access(
    sessions: sessionmaker[Session],
    now: datetime,
    *,
    requester_id: int,
    target: str,
    other_than: str | None = None,
    limit: int = 10,
) -> list[ValidAccess]:
    """``requester_id``'s certificates for ``target`` valid at ``now`` and not revoked,
    longest-valid first; not the one of request ``other_than`` (the page's own)."""
    q = (
        select(AccessRequest.id, Certificate.serial, Certificate.valid_before)
        .join(Certificate, Certificate.request_id == AccessRequest.id)
        .outerjoin(Revocation, Revocation.serial == Certificate.serial)
        .where(
            # ix_requests_requester_state: this requester's requests, issued ones only.
            AccessRequest.requester_id == requester_id,
            AccessRequest.state == RequestState.ISSUED,
            AccessRequest.target == target,
            Certificate.valid_after <= now,
            Certificate.valid_before > now,
            Revocation.id.is_(None),
        )
        .order_by(Certificate.valid_before.desc(), Certificate.serial)
        .limit(limit)
    )
    if other_than is not None:
        q = q.where(AccessRequest.id != other_than)
    with transaction(sessions) as s:
        return [
            ValidAccess(request_id=rid, serial=serial, valid_before=until)
            for rid, serial, until in s.execute(q).all()
        ]


@dataclass(frozen=True)
class Decider:
    """One approver's answer on a request, as a list shows it."""

    name: str
    decision: ApprovalDecision
    comment: str


@dataclass(frozen=True)
class RecentRequest:
    id: str
    target: str
    state: RequestState
    created_at: datetime
    deny_reason: str | None
    deciders: tuple[Decider, ...]


def _deciders(s: Session, request_ids: list[str]) -> dict[str, list[Decider]]:
    """The approvals of ``request_ids`` in one query (approvals.request_id is indexed)."""
    out: dict[str, list[Decider]] = {rid: [] for rid in request_ids}
    if not request_ids:
        return out
    rows = s.execute(
        select(Approval.request_id, User.name, Approval.decision, Approval.comment)
        .join(User, Approval.approver_id == User.id)
        .where(Approval.request_id.in_(request_ids))
        .order_by(Approval.id)
    ).all()
    for rid, name, decision, comment in rows:
        out[rid].append(Decider(name=name, decision=decision, comment=comment or ""))
    return out


def recent_requests(
    sessions: sessionmaker[Session],
    now: datetime,
    *,
    requester_id: int,
    other_than: str | None = None,
    limit: int = 10,
) -> list[RecentRequest]:
    """``requester_id``'s latest ``limit`` requests, newest first, with who decided them:
    two queries whatever the number of rows (requests by the indexed requester_id, then
    their approvals by the indexed request_id)."""
    q = (
        select(
            AccessRequest.id,
            AccessRequest.target,
            AccessRequest.state,
            AccessRequest.created_at,
            AccessRequest.pending_until,
            AccessRequest.claim_until,
            AccessRequest.deny_reason,
            Certificate.valid_before,
        )
        .outerjoin(Certificate, Certificate.request_id == AccessRequest.id)
        .where(AccessRequest.requester_id == requester_id)
        .order_by(AccessRequest.created_at.desc(), AccessRequest.id)
        .limit(limit)
    )
    if other_than is not None:
        q = q.where(AccessRequest.id != other_than)
    with transaction(sessions) as s:
        rows = s.execute(q).all()
        deciders = _deciders(s, [r.id for r in rows])
        return [
            RecentRequest(
                id=r.id,
                target=r.target,
                state=effective_state(
                    r.state,
                    now,
                    pending_until=r.pending_until,
                    claim_until=r.claim_until,
                    valid_before=r.valid_before,
                ),
                created_at=r.created_at,
                deny_reason=r.deny_reason,
                deciders=tuple(deciders[r.id]),
            )
            for r in rows
        ]


@dataclass(frozen=True)
class MyDecision:
    """One of an approver's decisions, with the request as it stands now."""

    request_id: str
    decided_at: datetime
    decision: ApprovalDecision
    comment: str
    shortened_seconds: int | None
    requester: str
    target: str
    reason: str
    state: RequestState
    deny_reason: str | None


def decided_by(
    sessions: sessionmaker[Session],
    now: datetime,
    *,
    approver_id: int,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[MyDecision], bool]:
    """``approver_id``'s decisions, newest first: one page of ``limit`` from ``offset``,
    and whether there are more. One query, by the indexed ``approvals.approver_id``
    (``ix_approvals_approver``) in id order."""
    q = (
        select(
            Approval.request_id,
            Approval.created_at,
            Approval.decision,
            Approval.comment,
            Approval.shortened_seconds,
            User.name,
            AccessRequest.target,
            AccessRequest.reason,
            AccessRequest.state,
            AccessRequest.pending_until,
            AccessRequest.claim_until,
            AccessRequest.deny_reason,
            Certificate.valid_before,
        )
        .join(AccessRequest, Approval.request_id == AccessRequest.id)
        .join(User, AccessRequest.requester_id == User.id)
        .outerjoin(Certificate, Certificate.request_id == AccessRequest.id)
        .where(Approval.approver_id == approver_id)
        .order_by(Approval.id.desc())
        .offset(offset)
        .limit(limit + 1)
    )
    with transaction(sessions) as s:
        rows = s.execute(q).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return [
            MyDecision(
                request_id=r.request_id,
                decided_at=r.created_at,
                decision=r.decision,
                comment=r.comment or "",
                shortened_seconds=r.shortened_seconds,
                requester=r.name,
                target=r.target,
                reason=r.reason or "",
                state=effective_state(
                    r.state,
                    now,
                    pending_until=r.pending_until,
                    claim_until=r.claim_until,
                    valid_before=r.valid_before,
                ),
                deny_reason=r.deny_reason,
            )
            for r in rows
        ], more


@dataclass(frozen=True)
class CertificateToRevoke:
    """What the revoke confirmation shows of one certificate."""

    serial: int
    request_id: str | None
    requester_id: int | None
    requester: str | None
    target: str | None
    principals: tuple[str, ...]
    valid_before: datetime
    revoked_by: str | None
    revoked_at: datetime | None


def certificate_to_revoke(
    sessions: sessionmaker[Session], serial: int
) -> CertificateToRevoke | None:
    """The certificate with ``serial`` (the primary key), its request's requester and
    its revocation, if any; None when there is no such certificate."""
    q = (
        select(Certificate, AccessRequest.target, User.id, User.name, Revocation)
        .outerjoin(AccessRequest, Certificate.request_id == AccessRequest.id)
        .outerjoin(User, AccessRequest.requester_id == User.id)
        .outerjoin(Revocation, Revocation.serial == Certificate.serial)
        .where(Certificate.serial == serial)
    )
    with transaction(sessions) as s:
        row = s.execute(q).first()
        if row is None:
            return None
        c, target, uid, uname, rev = row
        return CertificateToRevoke(
            serial=c.serial,
            request_id=c.request_id,
            requester_id=uid,
            requester=uname,
            target=target,
            principals=tuple(json.loads(c.principals)),
            valid_before=c.valid_before,
            revoked_by=rev.revoked_by if rev is not None else None,
            revoked_at=rev.revoked_at if rev is not None else None,
        )
