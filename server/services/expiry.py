"""The time-driven events (run by the notification worker's ``tick``, by the service's clock).

* ``certificate.expiring``: an issued, unrevoked certificate within its rule's
  ``warn_before`` (under the CURRENT policy; 5 minutes when the rule is gone) of its
  ``valid_before`` is announced once, which ``Certificate.warned_at`` records;
* ``request.expired`` / ``request.ended``: a request past its deadline is moved on, as a
  read of it would (:meth:`ServiceBase._refresh`), without waiting for that read.

Both find their rows with a query that reads only the few rows concerned, then lock them
in id order (two workers, or a worker and a list, cannot deadlock) and judge them again
under the lock: of two workers doing this at once, one records, the other finds nothing.
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select

from server.models import AccessRequest, Certificate, RequestState, Revocation

from .base import DEFAULT_WARN_BEFORE, ServiceBase

__all__ = ["ExpiryService", "DEFAULT_WARN_BEFORE"]


class ExpiryService(ServiceBase):
    def warn_expiring(self) -> int:
        """Record ``certificate.expiring`` for each certificate now within its lead time;
        returns how many."""
        now = self.now()
        policy = self.policy.get()
        longest = max([DEFAULT_WARN_BEFORE, *(r.warn_before for r in policy.rules)])
        with self._tx() as s:
            candidates = s.execute(
                select(AccessRequest.id, AccessRequest.rule, Certificate.valid_before)
                .join(Certificate, Certificate.request_id == AccessRequest.id)
                .outerjoin(Revocation, Revocation.serial == Certificate.serial)
                .where(
                    AccessRequest.state == RequestState.ISSUED,
                    Certificate.warned_at.is_(None),
                    Revocation.id.is_(None),
                    Certificate.valid_before > now,
                    Certificate.valid_before <= now + longest,
                )
                .order_by(AccessRequest.id)
            ).all()
            due = [rid for rid, rule, vb in candidates if vb - self.warn_before(rule) <= now < vb]
            if not due:
                return 0
            locked = self._lock_requests(s, due)
            n = 0
            for req in locked:
                cert = req.certificate
                if (
                    req.state != RequestState.ISSUED
                    or cert is None
                    or cert.warned_at is not None
                    or cert.revocation is not None
                    or not cert.valid_before - self.warn_before(req.rule) <= now < cert.valid_before
                ):
                    continue  # another worker (or a revocation) came first
                s.refresh(cert)
                if cert.warned_at is not None:
                    continue
                cert.warned_at = now
                self._record(
                    s,
                    "certificate.expiring",
                    now,
                    request_id=req.id,
                    data={
                        "serial": str(cert.serial),
                        "valid_before": cert.valid_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "seconds_left": int((cert.valid_before - now).total_seconds()),
                        "target": req.target,
                    },
                )
                n += 1
            return n

    def expire_overdue(self) -> int:
        """Move every request past its deadline (pending too long, approved and not
        fetched in its claim window, issued past ``valid_before``); returns how many."""
        now = self.now()
        with self._tx() as s:
            overdue = list(
                s.execute(
                    select(AccessRequest.id)
                    .outerjoin(Certificate, Certificate.request_id == AccessRequest.id)
                    .where(
                        or_(
                            and_(
                                AccessRequest.state == RequestState.PENDING,
                                AccessRequest.pending_until <= now,
                            ),
                            and_(
                                AccessRequest.state == RequestState.APPROVED,
                                AccessRequest.claim_until <= now,
                            ),
                            and_(
                                AccessRequest.state == RequestState.ISSUED,
                                Certificate.valid_before <= now,
                            ),
                        )
                    )
                    .order_by(AccessRequest.id)
                ).scalars()
            )
            if not overdue:
                return 0
            rows = self._lock_requests(s, overdue)
            n = 0
            for r in rows:
                before = r.state
                self._refresh(s, r, now)
                n += r.state != before
            return n
