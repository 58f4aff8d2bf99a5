"""Users' hop: disable a user, remove a key, and end the access either leaves behind."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.errors import NotFound
from server.models import (
    LIVE_STATES,
    AccessRequest,
    Certificate,
    RequestState,
    Revocation,
    SshKey,
    User,
)

from .base import ServiceBase

__all__ = ["UserService"]


class UserService(ServiceBase):
    def _lock_user(self, s: Session, name: object) -> User:
        u = (
            s.execute(
                select(User).where(User.name == name).with_for_update(of=User)
            ).scalar_one_or_none()
            if isinstance(name, str)
            else None
        )
        if u is None:
            raise NotFound(f"no user {name!r}", field="name")
        return u

    @staticmethod
    def _loaded(s: Session, u: User) -> User:
        """``u`` as committed, with its keys, groups and roles loaded for use after the session."""
        s.flush()
        s.refresh(u)
        _ = (u.keys, u.groups, u.roles)
        return u

    def set_user_disabled(self, name: object, disabled: bool = True, *, actor: str) -> User:
        """Disable (or enable) a user. Disabling also ends every access the user holds, in
        the same transaction: unexpired certificates are revoked (the KRL lists them at
        once) and pending or approved requests are cancelled, each with its audit event."""
        now = self.now()
        with self._tx() as s:
            u = self._lock_user(s, name)
            u.disabled = disabled
            self._record(
                s,
                "user.disabled" if disabled else "user.enabled",
                now,
                actor=actor,
                data={"user": u.name},
            )
            if disabled:
                self._end_access(s, u, now, actor=actor, why="user disabled")
            return self._loaded(s, u)

    def remove_key(self, name: object, fingerprint: object, *, actor: str) -> User:
        """Remove one of a user's enrolled keys. With the last one gone the user can no
        longer call the API, so their access ends as when disabled (same transaction)."""
        now = self.now()
        with self._tx() as s:
            u = self._lock_user(s, name)
            k = (
                s.execute(
                    select(SshKey).where(
                        SshKey.user_id == u.id,
                        SshKey.fingerprint == fingerprint,
                        SshKey.removed_at.is_(None),
                    )
                ).scalar_one_or_none()
                if isinstance(fingerprint, str)
                else None
            )
            if k is None:
                raise NotFound(
                    f"user {u.name!r} has no enrolled key {fingerprint}", field="fingerprint"
                )
            k.removed_at = now
            self._record(
                s,
                "user.key_removed",
                now,
                actor=actor,
                data={"user": u.name, "fingerprint": fingerprint},
            )
            s.flush()
            left = s.scalar(
                select(func.count())
                .select_from(SshKey)
                .where(SshKey.user_id == u.id, SshKey.removed_at.is_(None))
            )
            if not left:
                self._end_access(s, u, now, actor=actor, why="last key removed")
            return self._loaded(s, u)

    def _end_access(self, s: Session, u: User, now: datetime, *, actor: str, why: str) -> None:
        """Revoke ``u``'s unexpired certificates and cancel their open requests, in ``s``.

        Locks in the order every writer uses: the requests (in id order, as the
        sweep does), then each certificate, then the audit head (by recording).
        """
        rows = (
            s.execute(
                select(AccessRequest)
                .where(
                    AccessRequest.requester_id == u.id,
                    AccessRequest.state.in_(LIVE_STATES),
                )
                .order_by(AccessRequest.id)
                .with_for_update(of=AccessRequest)
                .execution_options(populate_existing=True)
            )
            .scalars()
            .all()
        )
        for req in rows:
            self._refresh(s, req, now)
            if req.state in (RequestState.PENDING, RequestState.APPROVED):
                was = str(req.state)
                req.state = RequestState.CANCELLED
                req.decided_at = now
                self._record(
                    s,
                    "request.cancelled",
                    now,
                    actor=actor,
                    request_id=req.id,
                    data={"reason": why, "was": was, "user": u.name},
                )
            elif req.state == RequestState.ISSUED:
                cert = s.execute(
                    select(Certificate)
                    .where(Certificate.request_id == req.id)
                    .with_for_update(of=Certificate)
                ).scalar_one()
                req.state = RequestState.REVOKED
                if cert.revocation is None:
                    s.add(
                        Revocation(
                            serial=cert.serial,
                            revoked_at=now,
                            revoked_by=actor[:64],
                            reason=why,
                            valid_before=cert.valid_before,
                        )
                    )
                    s.flush()
                    self._record(
                        s,
                        "certificate.revoked",
                        now,
                        actor=actor,
                        request_id=req.id,
                        data={
                            "serial": str(cert.serial),
                            "reason": why,
                            "key_id": cert.key_id,
                            "user": u.name,
                        },
                    )
