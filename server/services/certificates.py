"""Certificates' hop: fetch (issue) a certificate, revoke one, build the KRL."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

import policies
from ca import (
    InvalidKeyError,
    IssuedCertificate,
    format_duration,
    issue_certificate,
    make_key_id,
    parse_public_key,
)
from ca.keys import PublicKey
from ca.krl import build_krl, krl_version_at
from server.db import CommitThenRaise
from server.errors import (
    Forbidden,
    InvalidInput,
    InvalidState,
    KeyMismatch,
    NotApproved,
    NotExtendable,
    NotFound,
    RequestExpired,
)
from server.models import (
    AccessRequest,
    Certificate,
    RequestState,
    Revocation,
    Role,
    User,
    decision_text,
)

from . import fast
from .base import ServiceBase
from .validation import MAX_REASON, check_serial, check_text

__all__ = ["CertificateService", "CertificateResult"]


@dataclass(frozen=True)
class CertificateResult:
    certificate: str
    serial: int
    valid_after: datetime
    valid_before: datetime
    principals: tuple[str, ...]
    key_id: str
    reissued: bool
    #: An extension's certificate: the serial of the certificate it replaced (now revoked).
    replaces_serial: int | None = None


class CertificateService(ServiceBase):
    def fetch_certificate(
        self, user: User, request_id: object, public_key: object
    ) -> CertificateResult:
        if not isinstance(public_key, str):
            raise InvalidInput("public_key must be an OpenSSH public key line", field="public_key")
        if "\n" in public_key.strip() or "\r" in public_key.strip():
            # parse_public_key would read a second key line as the first one's comment.
            raise InvalidKeyError("public_key must be one line: one key", field="public_key")
        key = parse_public_key(public_key, field="public_key")
        for attempt in range(3):
            try:
                return self._fetch_once(user, request_id, key)
            except IntegrityError:
                # A serial collision (2**-63 per pair) or a racing insert: try again from the top.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _fetch_once(self, user: User, request_id: object, key: PublicKey) -> CertificateResult:
        now = self.now()
        # Read before the transaction: a reload records its own audit event.
        policy = self.policy.get()
        with self._tx() as s:
            req = self._lock_request(s, request_id, lean=True)
            me = self._me(s, user)
            assert me is not None
            if req.requester_id != me.id:
                raise Forbidden(
                    "only the requester can fetch this request's certificate", field="id"
                )
            self._refresh(s, req, now)
            # Only an issued request has a certificate (the row and the state change
            # commit together): load it only then.
            cert = req.certificate if req.state == RequestState.ISSUED else None
            if cert is not None:
                if cert.public_key_fingerprint != key.fingerprint:
                    raise KeyMismatch(
                        "this request's certificate was issued for another public key; one request, one key",
                        field="public_key",
                    )
                self._record(
                    s,
                    "certificate.fetched_again",
                    now,
                    actor=me.name,
                    request_id=req.id,
                    data={"serial": str(cert.serial)},
                )
                replaced = None
                if req.extends_id is not None:
                    replaced = s.scalar(
                        select(Certificate.serial).where(Certificate.request_id == req.extends_id)
                    )
                return _result(cert, reissued=True, replaces_serial=replaced)
            if req.state == RequestState.PENDING:
                raise NotApproved(f"request {req.id} is still pending approval", field="id")
            if req.state == RequestState.EXPIRED:
                raise CommitThenRaise(RequestExpired(f"request {req.id} expired", field="id"))
            if req.state != RequestState.APPROVED:
                raise InvalidState(f"request {req.id} is {req.state}", field="id")
            # An extension: the access it extends, locked after this request (the order
            # every writer uses: the extension, then the original, then certificates).
            old: Certificate | None = None
            original: AccessRequest | None = None
            extensions_seconds: int | None = None
            if req.extends_id is not None:
                original, old = self._replaced(s, req, me, key, now)
                extensions_seconds, _ = self._extension_seconds(
                    s, req.extends_id, req.granted_seconds
                )
            if req.break_glass:
                approvers = ["break-glass"]
            elif req.auto_approved:
                approvers = ["auto"]
            else:
                approvers = []  # counted below, under the current policy
            # Decided again under the current policy (and the requester's groups now):
            # the certificate carries what both this and the stored decision allow.
            # The auto-approval window is judged when the request was approved.
            preq = self._policy_request(req, me.group_names, requester=me.name)
            if not (req.break_glass or req.auto_approved):
                # Only approvals that still count under the current policy make up
                # the quorum (and name the approvers in the key id).
                granted = timedelta(seconds=req.granted_seconds)
                # Judged for what can still be issued: a grant over the current
                # maximum is cut to it below, and must not void every approval.
                current = policies.redecide(
                    policy, replace(preq, duration=granted), req.decided_at or now
                )
                counted_for = (
                    min(granted, current.duration)
                    if current.allowed and current.duration
                    else granted
                )
                approvers = self._counted_approvers(req, policy, preq, counted_for)
            given = 0 if (req.break_glass or req.auto_approved) else len(approvers)
            decision, policy_check = self._recheck(
                s,
                req,
                policy,
                preq,
                now,
                hop="fetch",
                actor=me.name,
                decided_at=req.decided_at,
                approvals_given=given,
                extensions_seconds=extensions_seconds,
            )
            assert decision.duration is not None
            if (
                decision.claim_window is not None
                and req.decided_at is not None
                and now >= req.decided_at + decision.claim_window
            ):
                # The current policy's claim window is shorter than the one the
                # request was approved under, and it has passed.
                req.state = RequestState.EXPIRED
                self._record(
                    s,
                    "request.expired",
                    now,
                    request_id=req.id,
                    data={"was": "approved", "policy": "claim window shortened"},
                )
                raise CommitThenRaise(
                    RequestExpired(
                        f"request {req.id} was approved more than {format_duration(decision.claim_window)} ago, "
                        "the current policy's claim window; ask again",
                        field="id",
                    )
                )
            seconds = min(req.granted_seconds, int(decision.duration.total_seconds()))
            if policy_check["result"] == "narrowed":
                req.decision = decision_text(decision)
                req.granted_seconds = seconds
            duration = timedelta(seconds=seconds)
            backdate = timedelta(seconds=min(self.backdate_seconds, seconds // 10))
            if old is not None:
                # The extension runs on from the old certificate's end (or from now,
                # should that have passed): valid_before = max(old, now) + granted.
                start = max(old.valid_before, now).replace(microsecond=0)
                end = start + timedelta(seconds=seconds)
                duration = end - (now.replace(microsecond=0) - backdate)
            issued: IssuedCertificate = issue_certificate(
                self.keyring.signing_key,
                key,
                principals=decision.principals,
                duration=duration,
                key_id=make_key_id(req.id, me.name, approvers),
                now=now,
                backdate=backdate,
                extensions=decision.extensions,
                force_command=decision.force_command,
                source_address=decision.source_address or None,
            )
            # Core statements (the ORM's unit of work costs more than they do): the
            # request becomes issued and its certificate row is written, in this
            # transaction, under the request's row lock.
            fast.mark_issued(s, req.id)
            fast.insert_certificate(
                s,
                {
                    "serial": issued.serial,
                    "request_id": req.id,
                    "key_id": issued.key_id,
                    "principals": json.dumps(list(issued.principals), separators=(",", ":")),
                    "valid_after": issued.valid_after,
                    "valid_before": issued.valid_before,
                    "public_key_fingerprint": key.fingerprint,
                    "ca_fingerprint": issued.ca_public_key.fingerprint,
                    "certificate": issued.openssh,
                    "issued_at": now,
                    "backdate_seconds": int(backdate.total_seconds()),
                    "offline": False,
                },
            )
            set_committed_value(req, "state", RequestState.ISSUED)
            self._record(
                s,
                "certificate.issued",
                now,
                actor=me.name,
                request_id=req.id,
                data={
                    "serial": str(issued.serial),
                    "key_id": issued.key_id,
                    "principals": list(issued.principals),
                    "valid_after": issued.valid_after.isoformat(),
                    "valid_before": issued.valid_before.isoformat(),
                    "backdate_seconds": int(backdate.total_seconds()),
                    "public_key_fingerprint": key.fingerprint,
                    "ca_fingerprint": issued.ca_public_key.fingerprint,
                    "policy": policy_check,
                    # An extension: the access it extends, and the serial it replaces (revoked
                    # in this transaction, by the event after this one).
                    **(
                        {"extends": req.extends_id, "replaces_serial": str(old.serial)}
                        if old is not None and req.extends_id is not None
                        else {}
                    ),
                },
            )
            if old is not None and original is not None:
                # In the issuance's transaction: the new certificate never leaves
                # while the one it replaces is still unrevoked.
                reason = f"replaced by extension {req.id}"
                s.add(
                    Revocation(
                        serial=old.serial,
                        revoked_at=now,
                        revoked_by=me.name,
                        reason=reason,
                        valid_before=old.valid_before,
                    )
                )
                if original.state in (RequestState.ISSUED, RequestState.ENDED):
                    original.state = RequestState.REVOKED
                s.flush()
                self._record(
                    s,
                    "certificate.revoked",
                    now,
                    actor=me.name,
                    request_id=original.id,
                    data={
                        "serial": str(old.serial),
                        "reason": reason,
                        "key_id": old.key_id,
                        "replaced_by": req.id,
                    },
                )
            result = CertificateResult(
                certificate=issued.openssh,
                serial=issued.serial,
                valid_after=issued.valid_after,
                valid_before=issued.valid_before,
                principals=tuple(issued.principals),
                key_id=issued.key_id,
                reissued=False,
                replaces_serial=None if old is None else old.serial,
            )
        # Only now, after the commit, does the certificate leave this function.
        return result

    def _replaced(
        self, s: Session, req: AccessRequest, me: User, key: PublicKey, now: datetime
    ) -> tuple[AccessRequest, Certificate]:
        """The access extension ``req`` replaces and its certificate, locked, checked:
        still the caller's and unrevoked, and ``key`` is its key."""
        assert req.extends_id is not None
        original = self._lock_request(s, req.extends_id, lean=True)
        cert = s.execute(
            select(Certificate)
            .where(Certificate.request_id == original.id)
            .with_for_update(of=Certificate)
        ).scalar_one_or_none()
        if original.requester_id != me.id or cert is None:
            raise NotExtendable(
                f"request {req.id} extends {original.id}, which has no certificate of yours",
                field="id",
            )
        if cert.revocation is not None:
            raise NotExtendable(
                f"the access request {req.id} extends (request {original.id}, serial {cert.serial}) "
                "was revoked; ask for new access with jit-ssh login",
                field="id",
            )
        if cert.public_key_fingerprint != key.fingerprint:
            raise KeyMismatch(
                "an extension keeps the access's key: send the public key of the "
                f"certificate it replaces (serial {cert.serial})",
                field="public_key",
            )
        self._refresh(s, original, now)
        return original, cert

    def revoke(self, user: User, serial: object, *, reason: object = "") -> Revocation:
        reason = check_text(reason, "reason", MAX_REASON)
        serial_no = check_serial(serial)
        now = self.now()
        with self._tx() as s:
            request_id = s.execute(
                select(Certificate.request_id).where(Certificate.serial == serial_no)
            ).first()
            if request_id is None:
                raise NotFound(f"no certificate with serial {serial_no}", field="serial")
            # Lock in the order every writer uses (request, then certificate, then the
            # audit head), so that the request's state cannot change under this one.
            req = None
            if request_id[0] is not None:
                req = self._lock_request(s, request_id[0])
            cert = s.execute(
                select(Certificate)
                .where(Certificate.serial == serial_no)
                .with_for_update(of=Certificate)
            ).scalar_one()
            me = self._me(s, user)
            assert me is not None
            own = req is not None and req.requester_id == me.id
            if not (own or me.has_role(Role.APPROVER) or me.has_role(Role.ADMIN)):
                raise Forbidden(
                    "only the requester, an approver or an admin can revoke a certificate",
                    field="serial",
                )
            if cert.revocation is not None:
                return cert.revocation
            if req is not None:
                self._refresh(s, req, now)
            rev = Revocation(
                serial=cert.serial,
                revoked_at=now,
                revoked_by=me.name,
                reason=reason,
                valid_before=cert.valid_before,
            )
            s.add(rev)
            if req is not None and req.state in (
                RequestState.ISSUED,
                RequestState.ENDED,
            ):
                req.state = RequestState.REVOKED
            s.flush()
            self._record(
                s,
                "certificate.revoked",
                now,
                actor=me.name,
                request_id=cert.request_id,
                data={"serial": str(cert.serial), "reason": reason, "key_id": cert.key_id},
            )
            return rev

    def krl(self) -> tuple[bytes, str]:
        """The current KRL and its ETag (which changes only when the KRL's content or version does).

        A revoked serial stays listed until its certificate's ``valid_before``
        plus ``krl_clock_skew``: a host whose clock lags still refuses it for as
        long as its sshd could still think the certificate valid.

        The version is the newest revocation time in the database, over every
        revocation row (expired ones too, so that expiry never lowers it), in
        microseconds (``ca.krl.krl_version_at``). All replicas read it from the
        same rows, so they agree whichever one a host reaches; after a restore
        from an older backup it drops (hosts report that and keep their KRL),
        and the next revocation is again newer than anything before. Rows
        stamped further ahead than ``krl_clock_skew`` (a replica with a wrong
        clock) are left out of the version, never out of the list: hosts refuse
        such versions, and one of them must not hold every host's KRL back.
        """
        now = self.now()
        skew = timedelta(seconds=self.krl_clock_skew)
        with self._tx() as s:
            serials = sorted(
                s.execute(
                    select(Revocation.serial).where(Revocation.valid_before > now - skew)
                ).scalars()
            )
            newest = s.scalar(
                select(func.max(Revocation.revoked_at)).where(Revocation.revoked_at <= now + skew)
            )
        version = krl_version_at(newest) if newest is not None else 0
        ca_blobs = [k.public.blob for k in self.keyring.keys]
        h = hashlib.sha256()
        h.update(version.to_bytes(8, "big"))
        for b in ca_blobs:
            h.update(len(b).to_bytes(4, "big") + b)
        for serial in serials:
            h.update(serial.to_bytes(8, "big"))
        etag = h.hexdigest()[:32]
        data = build_krl(
            ca_keys=ca_blobs, serials=serials, version=version, now=now, comment="jit-ssh"
        )
        return data, etag


def _result(
    cert: Certificate, *, reissued: bool, replaces_serial: int | None = None
) -> CertificateResult:
    return CertificateResult(
        certificate=cert.certificate,
        serial=cert.serial,
        valid_after=cert.valid_after,
        valid_before=cert.valid_before,
        principals=tuple(json.loads(cert.principals)),
        key_id=cert.key_id,
        reissued=reissued,
        replaces_serial=replaces_serial,
    )
