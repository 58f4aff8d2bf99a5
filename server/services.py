"""The service layer: every decision and every write, one transaction each.

Views parse and serialise; functions here lock, check, change state, write the
audit event and commit, together. Row locks (``with_for_update``) are what
make concurrent approvals and fetches safe on PostgreSQL; on SQLite every
transaction already holds the write lock from BEGIN (see ``server.db``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

import policies
from ca import (
    InvalidDuration,
    InvalidKeyError,
    IssuedCertificate,
    format_duration,
    issue_certificate,
    make_key_id,
    parse_public_key,
)
from ca.keyring import Keyring
from ca.krl import build_krl, krl_version_at

from . import audit
from .db import CommitThenRaise, transaction
from .errors import (
    AlreadyDecided,
    Forbidden,
    InvalidInput,
    InvalidState,
    KeyMismatch,
    NotApproved,
    NotEligible,
    NotFound,
    RequestExpired,
    SelfApproval,
)
from .models import (
    AccessRequest,
    Approval,
    Certificate,
    RequestState,
    Revocation,
    Role,
    SshKey,
    User,
)

__all__ = ["Service", "PolicyHolder", "CertificateResult"]

# Statements built once (building one costs about as much as running it).
# _LOCK_LEAN: a request loaded without its relationships; each loads (lazily, in
# the same session and under the same row lock) only if read.
_LOCK = (
    select(AccessRequest)
    .where(AccessRequest.id == bindparam("request_id"))
    .with_for_update(of=AccessRequest)
)
_REQUESTS = AccessRequest.__table__
_INSERT_REQUEST = insert(_REQUESTS)
_UPDATE_STATE = (
    update(_REQUESTS)
    .where(_REQUESTS.c.id == bindparam("request_id"))
    .values(state=bindparam("new_state"))
)
_INSERT_CERTIFICATE = insert(Certificate.__table__)
_LOCK_LEAN = _LOCK.options(
    lazyload(AccessRequest.requester),
    lazyload(AccessRequest.approvals),
    lazyload(AccessRequest.certificate),
)

log = logging.getLogger("jit_ssh.service")

MAX_REASON = 1000
MAX_COMMENT = 1000

# Request ids are secrets.token_hex(8); anything else cannot name a request, and
# must not reach the database either (PostgreSQL refuses a NUL in a text parameter).
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
# A serial as the API spells it: decimal ASCII digits, nothing int() would also take
# (a sign, '_', spaces, other scripts' digits).
_SERIAL = re.compile(r"[0-9]{1,20}")


class PolicyHolder:
    """The current policy, reloaded when its file changes (checked at most once a second)."""

    def __init__(
        self,
        path: Path,
        *,
        on_reload: Callable[[policies.Policy, policies.Policy | None], None] | None = None,
    ):
        self.path = path
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._checked = 0.0
        self._policy: policies.Policy | None = None
        self._on_reload = on_reload
        self.reload()

    def reload(self) -> policies.Policy:
        with self._lock:
            st = self.path.stat()
            new = policies.load_policy(self.path)
            old = self._policy
            self._policy, self._mtime = new, st.st_mtime_ns
        if old is not None and old.version != new.version and self._on_reload:
            self._on_reload(new, old)
        return new

    def get(self, monotonic: float | None = None) -> policies.Policy:
        import time

        t = time.monotonic() if monotonic is None else monotonic
        if t - self._checked >= 1.0:
            self._checked = t
            try:
                if self.path.stat().st_mtime_ns != self._mtime:
                    self.reload()
            except (OSError, policies.InvalidPolicy) as e:
                # Keep serving the last good policy; say so loudly.
                log.error(
                    "policy %s not reloaded, keeping version %s: %s",
                    self.path,
                    self._policy and self._policy.version[:12],
                    e,
                )
        assert self._policy is not None
        return self._policy


@dataclass(frozen=True)
class CertificateResult:
    certificate: str
    serial: int
    valid_after: datetime
    valid_before: datetime
    principals: tuple[str, ...]
    key_id: str
    reissued: bool


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def decision_to_dict(d: policies.Decision) -> dict[str, Any]:
    return {
        "outcome": d.outcome.value,
        "allowed": d.allowed,
        "reasons": list(d.reasons),
        "rule": d.rule,
        "policy_version": d.policy_version,
        "duration_seconds": None if d.duration is None else int(d.duration.total_seconds()),
        "approvals_required": d.approvals_required,
        "approver_users": list(d.approver_users),
        "approver_groups": list(d.approver_groups),
        "principals": list(d.principals),
        "extensions": list(d.extensions),
        "force_command": d.force_command,
        "source_address": list(d.source_address),
        "pending_ttl_seconds": None
        if d.pending_ttl is None
        else int(d.pending_ttl.total_seconds()),
        "claim_window_seconds": None
        if d.claim_window is None
        else int(d.claim_window.total_seconds()),
        "approvers_may_shorten": d.approvers_may_shorten,
    }


# Characters that are not visible text: controls (C0 and C1), format characters
# (Cf: bidi overrides and isolates U+202A-U+202E and U+2066-U+2069, zero-width
# U+200B-U+200F, U+2060, U+FEFF, tag characters...), line and paragraph
# separators, and lone surrogates. Shown to an approver, a bidi override
# reorders what follows it ("INC-1234 \u202eevom" reads "INC-1234 move") and a
# zero-width character hides a second text inside the first.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Cn", "Co"})
# Characters of visible categories that show nothing: Hangul fillers, the
# Braille blank, the combining grapheme joiner, Khmer inherent vowels,
# Mongolian variation selectors and the supplementary variation selectors
# (U+E0100-U+E01EF, which can carry a whole hidden text). The emoji variation
# selector U+FE0F stays allowed: emoji use it.
_BLANK_CHARACTERS = frozenset(
    {
        "\u034f",
        "\u115f",
        "\u1160",
        "\u17b4",
        "\u17b5",
        "\u180b",
        "\u180c",
        "\u180d",
        "\u180f",
        "\u2800",
        "\u3164",
        "\uffa0",
    }
) | frozenset(chr(c) for c in range(0xE0100, 0xE01F0))


def _invisible(value: str, allowed: str = "") -> str | None:
    """The first character of ``value`` that is not visible text (but those ``allowed``), or None."""
    if value.isascii():
        # The common case, without a lookup per character.
        for c in value:
            if (c < " " or c == "\x7f") and c not in allowed:
                return c
        return None
    for c in value:
        if (
            unicodedata.category(c) in _INVISIBLE_CATEGORIES or c in _BLANK_CHARACTERS
        ) and c not in allowed:
            return c
    return None


def decision_from_dict(d: dict[str, Any], *, requester: str, target: str) -> policies.Decision:
    """The decision stored with a request (:func:`decision_to_dict`), as a value again."""

    def seconds(value: Any) -> timedelta | None:
        return None if value is None else timedelta(seconds=value)

    return policies.Decision(
        outcome=policies.Outcome(d["outcome"]),
        reasons=tuple(d.get("reasons") or ()),
        policy_version=d["policy_version"],
        requester=requester,
        target=target,
        rule=d.get("rule"),
        duration=seconds(d.get("duration_seconds")),
        approvals_required=int(d.get("approvals_required") or 0),
        approver_users=tuple(d.get("approver_users") or ()),
        approver_groups=tuple(d.get("approver_groups") or ()),
        principals=tuple(d.get("principals") or ()),
        extensions=tuple(d.get("extensions") or ()),
        force_command=d.get("force_command"),
        source_address=tuple(d.get("source_address") or ()),
        pending_ttl=seconds(d.get("pending_ttl_seconds")),
        claim_window=seconds(d.get("claim_window_seconds")),
        approvers_may_shorten=bool(d.get("approvers_may_shorten")),
    )


def _has_control(value: str, allowed: str = "") -> bool:
    """Whether ``value`` holds a control or invisible format character (but those
    ``allowed``), or a lone surrogate, which is not text at all: neither the database
    driver nor the audit log's canonical JSON can encode it."""
    return _invisible(value, allowed) is not None


def _text(value: Any, name: str, limit: int, *, required: bool = False) -> str:
    """THE check of free text people type (reasons and comments), for the API and the
    web pages alike: a string, at most ``limit`` characters, visible text only (tabs
    and newlines allowed; accents, CJK and emoji are text)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    if len(value) > limit:
        raise InvalidInput(f"{name} is longer than {limit} characters", field=name)
    bad = _invisible(value, "\t\n")
    if bad is not None:
        if unicodedata.category(bad) in ("Cc", "Cs"):
            raise InvalidInput(f"{name} holds control characters", field=name)
        raise InvalidInput(
            f"{name} holds invisible formatting characters (U+{ord(bad):04X}), which can disguise the text "
            "shown to approvers; remove them",
            field=name,
        )
    if required and not value.strip():
        raise InvalidInput(f"{name} is required", field=name)
    return value


@dataclass
class Service:
    sessions: sessionmaker[Session]
    keyring: Keyring
    policy: PolicyHolder
    audit_key: Any
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    backdate_seconds: int = 0
    checkpoint_every: int = 1000
    #: Seconds a revoked serial stays in the KRL past its valid_before (hosts' clock skew).
    krl_clock_skew: int = 300
    notify: Callable[[str, dict[str, Any]], None] | None = None

    # ---- helpers -----------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock()

    def _record(self, s: Session, type: str, now: datetime, **kw: Any) -> None:
        audit.record(
            s,
            type=type,
            now=now,
            signing_key=self.audit_key,
            checkpoint_every=self.checkpoint_every,
            **kw,
        )

    def _tx(self) -> Any:
        return transaction(self.sessions)

    @staticmethod
    def _me(s: Session, user: User) -> User | None:
        """The caller in this session. The caller was loaded (with groups and
        roles) by authentication moments ago, in this same HTTP request: attach
        that copy instead of loading it again (three queries per call)."""
        state = sa_inspect(user)
        if state.detached and "groups" in state.dict and "roles" in state.dict:
            return s.merge(user, load=False)
        return s.get(User, user.id)

    def _lock_request(self, s: Session, request_id: Any, *, lean: bool = False) -> AccessRequest:
        """Lock the request's row. ``lean``: load no relationship up front (each
        loads, under the lock, when first read), for callers that return no request."""
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            raise NotFound("no such request", field="id")
        req = s.execute(
            _LOCK_LEAN if lean else _LOCK, {"request_id": request_id}
        ).scalar_one_or_none()
        if req is None:
            raise NotFound(f"no request {request_id!r}", field="id")
        return req

    @staticmethod
    def _overdue(req: AccessRequest, now: datetime) -> bool:
        """Whether :meth:`_refresh` would move ``req`` (judged on what was read)."""
        if req.state == RequestState.PENDING.value:
            return now >= req.pending_until
        if req.state == RequestState.APPROVED.value:
            return req.claim_until is not None and now >= req.claim_until
        if req.state == RequestState.ISSUED.value:
            return req.certificate is not None and now >= req.certificate.valid_before
        return False

    def _refresh_all(self, s: Session, rows: Sequence[AccessRequest], now: datetime) -> None:
        """:meth:`_refresh` rows read without a lock (lists): lock the overdue ones first.

        Without the lock, a list could write "expired" over a request that a
        concurrent fetch had just moved to "issued" (PostgreSQL's UPDATE waits for
        the fetch to commit, then overwrites it). Locked in id order, as the sweep
        does, so two lists cannot deadlock.
        """
        overdue = sorted(r.id for r in rows if self._overdue(r, now))
        if not overdue:
            return
        s.execute(
            select(AccessRequest)
            .where(AccessRequest.id.in_(overdue))
            .order_by(AccessRequest.id)
            .with_for_update(of=AccessRequest)
            .execution_options(populate_existing=True)
        ).scalars().all()
        for r in rows:
            if r.id in overdue:
                self._refresh(s, r, now)

    def _refresh(self, s: Session, req: AccessRequest, now: datetime) -> None:
        """Move a request past its deadlines (checked on every read and write), under its row lock."""
        if req.state == RequestState.PENDING.value and now >= req.pending_until:
            req.state = RequestState.EXPIRED.value
            self._record(s, "request.expired", now, request_id=req.id, data={"was": "pending"})
        elif (
            req.state == RequestState.APPROVED.value
            and req.claim_until is not None
            and now >= req.claim_until
        ):
            req.state = RequestState.EXPIRED.value
            self._record(s, "request.expired", now, request_id=req.id, data={"was": "approved"})
        elif (
            req.state == RequestState.ISSUED.value
            and req.certificate is not None
            and now >= req.certificate.valid_before
        ):
            req.state = RequestState.ENDED.value
            self._record(
                s,
                "request.ended",
                now,
                request_id=req.id,
                data={"serial": str(req.certificate.serial)},
            )

    def _policy_request(
        self, req: AccessRequest, groups: Iterable[str], *, requester: str | None = None
    ) -> policies.AccessRequest:
        """``req`` as the policy sees it. ``requester``: the requester's name when the
        caller has it already (the fetch, which loads no relationship it need not)."""
        return policies.AccessRequest(
            requester=requester if requester is not None else req.requester.name,
            target=req.target,
            duration=timedelta(seconds=req.requested_seconds),
            reason=req.reason,
            requester_groups=frozenset(groups),
            break_glass=req.break_glass,
            submitted_at=req.created_at,
        )

    @staticmethod
    def _counted_approvers(
        req: AccessRequest,
        policy: policies.Policy,
        preq: policies.AccessRequest,
        duration: timedelta,
    ) -> list[str]:
        """The approvers whose approval of ``req`` still counts, by name, sorted.

        An approval counts only while its approver is enabled, still has the
        approver role and is still an approver of the request's rule under the
        CURRENT policy (judged at the moment they approved, so the pending time
        does not count against them). An approval by someone since disabled,
        stripped of the role or moved out of the approver groups no longer
        makes up the quorum, neither when the last approval arrives nor at fetch.
        """
        names: set[str] = set()
        for a in req.approvals:
            if a.decision != "approve":
                continue
            who = a.approver
            if who.disabled or not who.has_role(Role.APPROVER):
                continue
            approver = policies.Approver(name=who.name, groups=frozenset(who.group_names))
            if policies.may_approve(
                policy, replace(preq, duration=duration), approver, a.created_at
            ).allowed:
                names.add(who.name)
        return sorted(names)

    def _recheck(
        self,
        s: Session,
        req: AccessRequest,
        policy: policies.Policy,
        preq: policies.AccessRequest,
        now: datetime,
        *,
        hop: str,
        actor: str,
        decided_at: datetime | None = None,
        approvals_given: int | None = None,
    ) -> tuple[policies.Decision, dict[str, Any]]:
        """Decide ``req`` again under ``policy`` (the current one) and narrow its stored decision.

        Returns what both allow and the ``policy`` record for the audit event
        (``unchanged`` or ``narrowed``, with what changed and both versions).
        When nothing can be granted (the policy now refuses the request, no
        principal or source address is left, two forced commands, or fewer
        ``approvals_given`` than the current policy requires), the request ends
        as denied, a ``request.refused`` event says why, and the refusal
        (a :class:`policies.PolicyChanged`, 403) is raised after the commit.
        ``decided_at``: judge the auto-approval window at the moment the request
        was approved, not at the fetch.
        """
        stored = decision_from_dict(
            json.loads(req.decision), requester=preq.requester, target=req.target
        )
        current = policies.redecide(policy, preq, decided_at or now)
        versions = {
            "stored_policy_version": stored.policy_version,
            "current_policy_version": current.policy_version,
        }
        try:
            narrowed = policies.narrow(stored, current)
            if approvals_given is not None and approvals_given < narrowed.approvals_required:
                raise policies.MoreApprovalsRequired(
                    f"the policy changed: this request now needs {narrowed.approvals_required} approval(s) and was "
                    f"given {approvals_given}; it is not issued, ask again",
                    current=current,
                    stored=stored,
                )
        except policies.PolicyChanged as err:
            req.state = RequestState.DENIED.value
            req.decided_at = now
            req.deny_reason = f"refused by the current policy ({err.code}): {err}"[:MAX_REASON]
            check = {
                "result": "refused",
                "code": err.code,
                "reasons": list(current.reasons),
                **versions,
            }
            self._record(
                s,
                "request.refused",
                now,
                actor=actor,
                request_id=req.id,
                data={"at": hop, "target": req.target, "reasons": [str(err)], "policy": check},
            )
            raise CommitThenRaise(err) from None
        changes = policies.narrowing(stored, narrowed)
        check = {"result": "narrowed" if changes else "unchanged", **versions}
        if changes:
            check["changes"] = changes
        return narrowed, check

    def current_grant(self, req: AccessRequest) -> tuple[dict[str, Any], str | None]:
        """What a request in flight would get under the current policy, for display; writes nothing.

        Returns the decision (as :func:`decision_to_dict`) the next approval or
        fetch would narrow it to, and a note when that differs from the stored
        one (``None`` when unchanged, and for requests no longer in flight).
        """
        stored_dict = json.loads(req.decision)
        if req.state not in (RequestState.PENDING.value, RequestState.APPROVED.value):
            return stored_dict, None
        approved = req.state == RequestState.APPROVED.value
        preq = self._policy_request(req, req.requester.group_names)
        stored = decision_from_dict(stored_dict, requester=preq.requester, target=req.target)
        current = policies.redecide(
            self.policy.get(), preq, (req.decided_at if approved else None) or self.now()
        )
        try:
            narrowed = policies.narrow(stored, current)
            given = len({a.approver_id for a in req.approvals if a.decision == "approve"})
            if (
                approved
                and not (req.auto_approved or req.break_glass)
                and given < narrowed.approvals_required
            ):
                return stored_dict, (
                    f"The policy changed: this request now needs {narrowed.approvals_required} "
                    "approvals; it will be refused when fetched."
                )
            if approved and (req.auto_approved or req.break_glass) and narrowed.approvals_required:
                return (
                    stored_dict,
                    "The policy changed: this request now needs approval; it will be refused when fetched.",
                )
        except policies.PolicyChanged as err:
            return stored_dict, f"The current policy refuses this request ({err.code}): {err}"
        if not policies.narrowing(stored, narrowed):
            return stored_dict, None
        return decision_to_dict(
            narrowed
        ), "The policy changed since this request was made: shown is what can still be issued."

    def _notify(self, kind: str, payload: dict[str, Any]) -> None:
        if self.notify is not None:
            try:
                self.notify(kind, payload)
            except Exception:
                log.exception("notification %s failed", kind)

    # ---- users ---------------------------------------------------------------------

    def user_by_name(self, s: Session, name: str) -> User | None:
        return s.execute(select(User).where(User.name == name)).scalar_one_or_none()

    def _lock_user(self, s: Session, name: Any) -> User:
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

    def set_user_disabled(self, name: Any, disabled: bool = True, *, actor: str) -> User:
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

    def remove_key(self, name: Any, fingerprint: Any, *, actor: str) -> User:
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
                    AccessRequest.state.in_(
                        [
                            RequestState.PENDING.value,
                            RequestState.APPROVED.value,
                            RequestState.ISSUED.value,
                        ]
                    ),
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
            if req.state in (RequestState.PENDING.value, RequestState.APPROVED.value):
                was = req.state
                req.state = RequestState.CANCELLED.value
                req.decided_at = now
                self._record(
                    s,
                    "request.cancelled",
                    now,
                    actor=actor,
                    request_id=req.id,
                    data={"reason": why, "was": was, "user": u.name},
                )
            elif req.state == RequestState.ISSUED.value:
                cert = s.execute(
                    select(Certificate)
                    .where(Certificate.request_id == req.id)
                    .with_for_update(of=Certificate)
                ).scalar_one()
                req.state = RequestState.REVOKED.value
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

    # ---- requests ------------------------------------------------------------------

    def submit(
        self,
        user: User,
        *,
        target: Any,
        duration: timedelta | None,
        reason: Any,
        break_glass: bool = False,
    ) -> AccessRequest:
        if not isinstance(target, str) or not target or len(target) > 128 or _has_control(target):
            raise InvalidInput("target must be a target name", field="target")
        reason = _text(reason, "reason", MAX_REASON)
        now = self.now()
        policy = self.policy.get()
        with self._tx() as s:
            me = self._me(s, user)
            assert me is not None
            preq = policies.AccessRequest(
                requester=me.name,
                target=target,
                duration=duration,
                reason=reason,
                requester_groups=frozenset(me.group_names),
                break_glass=break_glass,
                submitted_at=now,
            )
            decision = policies.decide(policy, preq, now)
            if not decision.allowed:
                self._record(
                    s,
                    "request.refused",
                    now,
                    actor=me.name,
                    data={
                        "target": target,
                        "reasons": list(decision.reasons),
                        "policy_version": policy.version,
                    },
                )
                # The refusal is recorded, then reported: commit before raising.
                raise CommitThenRaise(policies.PolicyDenied(decision))
            assert decision.duration is not None
            seconds = int(decision.duration.total_seconds())
            auto = decision.outcome in (
                policies.Outcome.AUTO_APPROVED,
                policies.Outcome.BREAK_GLASS,
            )
            values = dict(
                id=secrets.token_hex(8),
                requester_id=me.id,
                target=target,
                reason=reason,
                requested_seconds=seconds,
                granted_seconds=seconds,
                state=(RequestState.APPROVED if auto else RequestState.PENDING).value,
                policy_version=decision.policy_version,
                rule=decision.rule,
                decision=_json(decision_to_dict(decision)),
                approvals_required=decision.approvals_required,
                auto_approved=auto,
                break_glass=decision.outcome is policies.Outcome.BREAK_GLASS,
                created_at=now,
                pending_until=now + (decision.pending_ttl or timedelta(hours=1)),
                decided_at=now if auto else None,
                claim_until=now + (decision.claim_window or timedelta(minutes=15))
                if auto
                else None,
                deny_reason=None,
            )
            # A Core insert of every column (the ORM's unit of work costs more than
            # the statement), and the same values, not read back, for the response:
            # a new request has no approvals and no certificate yet.
            s.flush()
            s.connection().execute(_INSERT_REQUEST, values)
            req = AccessRequest(**values)
            req.requester = me
            req.approvals = []
            req.certificate = None
            self._record(
                s,
                "request.created",
                now,
                actor=me.name,
                request_id=req.id,
                data={
                    "target": target,
                    "duration_seconds": seconds,
                    "reason": reason,
                    "rule": decision.rule,
                    "outcome": decision.outcome.value,
                    "policy_version": decision.policy_version,
                    "approvals_required": decision.approvals_required,
                },
            )
            if auto:
                self._record(
                    s,
                    "request.approved",
                    now,
                    actor=None if not req.break_glass else me.name,
                    request_id=req.id,
                    data={
                        "auto": True,
                        "break_glass": req.break_glass,
                        "duration_seconds": seconds,
                        # Decided just now: nothing to narrow.
                        "policy": {
                            "result": "unchanged",
                            "stored_policy_version": decision.policy_version,
                            "current_policy_version": decision.policy_version,
                        },
                    },
                )
        self._notify(
            "request.created",
            {
                "request_id": req.id,
                "requester": user.name,
                "target": target,
                "state": req.state,
                "reason": reason,
                "duration_seconds": seconds,
            },
        )
        return req

    def get(self, user: User, request_id: Any) -> AccessRequest:
        now = self.now()
        with self._tx() as s:
            req = self._lock_request(s, request_id)
            me = self._me(s, user)
            assert me is not None
            if req.requester_id != me.id and not (
                me.has_role(Role.APPROVER) or me.has_role(Role.ADMIN)
            ):
                raise NotFound(f"no request {request_id!r}", field="id")
            self._refresh(s, req, now)
            s.flush()
            s.refresh(req)
            return req

    def list(
        self, user: User, *, mine: bool = False, pending_for_me: bool = False, limit: int = 100
    ) -> list[AccessRequest]:
        now = self.now()
        policy = self.policy.get()
        with self._tx() as s:
            me = self._me(s, user)
            assert me is not None
            if pending_for_me and not mine and not me.has_role(Role.APPROVER):
                # The list shows other people's reasons: only for those who may decide
                # on them (an approver group in the policy is not enough without the role).
                raise NotEligible(
                    f"{me.name!r} does not have the approver role", field="pending_for_me"
                )
            q = select(AccessRequest).order_by(AccessRequest.created_at.desc()).limit(limit)
            if mine or not pending_for_me:
                if mine or not (me.has_role(Role.ADMIN)):
                    q = q.where(AccessRequest.requester_id == me.id)
                rows = list(s.execute(q).scalars())
                self._refresh_all(s, rows, now)
                return rows
            rows = list(
                s.execute(
                    select(AccessRequest)
                    .where(
                        AccessRequest.state == RequestState.PENDING.value,
                        AccessRequest.requester_id != me.id,
                    )
                    .order_by(AccessRequest.created_at)
                    .limit(500)
                ).scalars()
            )
            out = []
            approver = policies.Approver(name=me.name, groups=frozenset(me.group_names))
            self._refresh_all(s, rows, now)
            for r in rows:
                if r.state != RequestState.PENDING.value:
                    continue
                if any(a.approver_id == me.id for a in r.approvals):
                    continue
                groups = r.requester.group_names
                if policies.may_approve(
                    policy, self._policy_request(r, groups), approver, now
                ).allowed:
                    out.append(r)
            return out[:limit]

    def approve(
        self, user: User, request_id: Any, *, comment: Any = "", duration: timedelta | None = None
    ) -> AccessRequest:
        comment = _text(comment, "comment", MAX_COMMENT)
        return self._decide(user, request_id, approve=True, text=comment, duration=duration)

    def deny(self, user: User, request_id: Any, *, reason: Any) -> AccessRequest:
        reason = _text(reason, "reason", MAX_REASON, required=True)
        return self._decide(user, request_id, approve=False, text=reason, duration=None)

    def _decide(
        self, user: User, request_id: Any, *, approve: bool, text: str, duration: timedelta | None
    ) -> AccessRequest:
        now = self.now()
        policy = self.policy.get()
        notify: tuple[str, dict[str, Any]] | None = None
        with self._tx() as s:
            req = self._lock_request(s, request_id)
            me = self._me(s, user)
            assert me is not None
            self._refresh(s, req, now)
            if req.requester_id == me.id:
                raise SelfApproval(
                    "requesters can never approve or deny their own request", field="id"
                )
            if not me.has_role(Role.APPROVER):
                raise NotEligible(f"{me.name!r} does not have the approver role", field="id")
            if req.state == RequestState.EXPIRED.value:
                raise CommitThenRaise(
                    RequestExpired(f"request {req.id} expired before it was decided", field="id")
                )
            if req.state != RequestState.PENDING.value:
                raise InvalidState(f"request {req.id} is {req.state}, not pending", field="id")
            if any(a.approver_id == me.id for a in req.approvals):
                raise AlreadyDecided(f"{me.name!r} already decided on request {req.id}", field="id")
            if (
                approve
                and duration is not None
                and duration > timedelta(seconds=req.requested_seconds)
            ):
                # Bad input, not a question of who approves: say which field and why.
                raise InvalidDuration(
                    f"approvers may shorten a request, never lengthen it ({req.requested_seconds} s was asked for)",
                    field="duration",
                )
            preq = self._policy_request(req, req.requester.group_names)
            # Decided again under the current policy: what it no longer allows is
            # dropped now, so approvers approve (and see) what can still be issued.
            narrowed, policy_check = self._recheck(
                s, req, policy, preq, now, hop="approval", actor=me.name
            )
            assert narrowed.duration is not None
            check = policies.may_approve(
                policy,
                replace(preq, duration=narrowed.duration),
                policies.Approver(name=me.name, groups=frozenset(me.group_names)),
                now,
                duration=min(duration, narrowed.duration)
                if (approve and duration is not None)
                else None,
            )
            if not check.allowed:
                raise NotEligible(check.reason, field="id")
            s.add(
                Approval(
                    request_id=req.id,
                    approver_id=me.id,
                    decision="approve" if approve else "deny",
                    comment=text,
                    shortened_seconds=int(duration.total_seconds())
                    if (duration is not None and approve)
                    else None,
                    created_at=now,
                )
            )
            s.flush()
            s.refresh(req)
            if not approve:
                req.state = RequestState.DENIED.value
                req.decided_at = now
                req.deny_reason = text
                self._record(
                    s,
                    "request.denied",
                    now,
                    actor=me.name,
                    request_id=req.id,
                    data={"reason": text},
                )
                notify = ("request.denied", {"request_id": req.id, "by": me.name, "reason": text})
            else:
                if policy_check["result"] == "narrowed":
                    # The request now carries the narrowed decision: the API and the
                    # approver pages show it, and the fetch narrows it again.
                    req.decision = _json(decision_to_dict(narrowed))
                    req.approvals_required = narrowed.approvals_required
                approvals = [a for a in req.approvals if a.decision == "approve"]
                counted = self._counted_approvers(req, policy, preq, narrowed.duration)
                self._record(
                    s,
                    "request.approval",
                    now,
                    actor=me.name,
                    request_id=req.id,
                    data={
                        "comment": text,
                        "duration_seconds": None
                        if duration is None
                        else int(duration.total_seconds()),
                        "approvals": len(counted),
                        "required": req.approvals_required,
                        "policy": policy_check,
                    },
                )
                if len(counted) >= req.approvals_required:
                    approvals = [a for a in approvals if a.approver.name in counted]
                    shortened = [a.shortened_seconds for a in approvals if a.shortened_seconds]
                    req.granted_seconds = min(
                        [req.requested_seconds, int(narrowed.duration.total_seconds()), *shortened]
                    )
                    req.state = RequestState.APPROVED.value
                    req.decided_at = now
                    claim = (
                        int(narrowed.claim_window.total_seconds()) if narrowed.claim_window else 900
                    )
                    req.claim_until = now + timedelta(seconds=claim)
                    self._record(
                        s,
                        "request.approved",
                        now,
                        actor=me.name,
                        request_id=req.id,
                        data={
                            "by": sorted(a.approver.name for a in approvals),
                            "duration_seconds": req.granted_seconds,
                            "policy": policy_check,
                        },
                    )
                    notify = ("request.approved", {"request_id": req.id, "by": me.name})
            s.flush()
            s.refresh(req)
        if notify:
            self._notify(*notify)
        return req

    def cancel(self, user: User, request_id: Any) -> AccessRequest:
        now = self.now()
        with self._tx() as s:
            req = self._lock_request(s, request_id)
            me = self._me(s, user)
            assert me is not None
            if req.requester_id != me.id and not me.has_role(Role.ADMIN):
                raise Forbidden("only the requester (or an admin) can cancel a request", field="id")
            self._refresh(s, req, now)
            if req.state == RequestState.EXPIRED.value:
                # As approve, deny and fetch say: 410, and the expiry just found is kept.
                raise CommitThenRaise(RequestExpired(f"request {req.id} expired", field="id"))
            if req.state not in (RequestState.PENDING.value, RequestState.APPROVED.value):
                raise InvalidState(
                    f"request {req.id} is {req.state}; only pending or approved requests can be cancelled",
                    field="id",
                )
            req.state = RequestState.CANCELLED.value
            req.decided_at = now
            self._record(s, "request.cancelled", now, actor=me.name, request_id=req.id)
            s.flush()
            s.refresh(req)
            return req

    # ---- certificates ---------------------------------------------------------------

    def fetch_certificate(self, user: User, request_id: Any, public_key: Any) -> CertificateResult:
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

    def _fetch_once(self, user: User, request_id: Any, key: Any) -> CertificateResult:
        now = self.now()
        # Read before the transaction: a reload records its own audit event.
        policy = self.policy.get()
        notify = None
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
            cert = req.certificate if req.state == RequestState.ISSUED.value else None
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
                return _result(cert, reissued=True)
            if req.state == RequestState.PENDING.value:
                raise NotApproved(f"request {req.id} is still pending approval", field="id")
            if req.state == RequestState.EXPIRED.value:
                raise CommitThenRaise(RequestExpired(f"request {req.id} expired", field="id"))
            if req.state != RequestState.APPROVED.value:
                raise InvalidState(f"request {req.id} is {req.state}", field="id")
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
            )
            assert decision.duration is not None
            if (
                decision.claim_window is not None
                and req.decided_at is not None
                and now >= req.decided_at + decision.claim_window
            ):
                # The current policy's claim window is shorter than the one the
                # request was approved under, and it has passed.
                req.state = RequestState.EXPIRED.value
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
                req.decision = _json(decision_to_dict(decision))
                req.granted_seconds = seconds
            duration = timedelta(seconds=seconds)
            backdate = timedelta(seconds=min(self.backdate_seconds, seconds // 10))
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
            s.flush()
            conn = s.connection()
            conn.execute(
                _UPDATE_STATE, {"request_id": req.id, "new_state": RequestState.ISSUED.value}
            )
            conn.execute(
                _INSERT_CERTIFICATE,
                {
                    "serial": issued.serial,
                    "request_id": req.id,
                    "key_id": issued.key_id,
                    "principals": _json(list(issued.principals)),
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
            set_committed_value(req, "state", RequestState.ISSUED.value)
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
            )
            notify = (
                "certificate.issued",
                {"request_id": req.id, "serial": issued.serial, "requester": me.name},
            )
        # Only now, after the commit, does the certificate leave this function.
        if notify:
            self._notify(*notify)
        return result

    def revoke(self, user: User, serial: Any, *, reason: Any = "") -> Revocation:
        reason = _text(reason, "reason", MAX_REASON)
        if isinstance(serial, int) and not isinstance(serial, bool):
            serial = str(serial)
        if not isinstance(serial, str) or not _SERIAL.fullmatch(serial):
            raise NotFound("no such certificate", field="serial")
        serial_no = int(serial)
        if not 0 < serial_no < 2**63:
            raise NotFound("no such certificate", field="serial")
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
                RequestState.ISSUED.value,
                RequestState.ENDED.value,
            ):
                req.state = RequestState.REVOKED.value
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

    def expire_sweep(self) -> int:
        now = self.now()
        n = 0
        with self._tx() as s:
            rows = (
                s.execute(
                    select(AccessRequest)
                    .where(
                        AccessRequest.state.in_(
                            [
                                RequestState.PENDING.value,
                                RequestState.APPROVED.value,
                                RequestState.ISSUED.value,
                            ]
                        )
                    )
                    .order_by(AccessRequest.id)
                    .with_for_update(of=AccessRequest)
                )
                .scalars()
                .all()
            )
            for r in rows:
                before = r.state
                self._refresh(s, r, now)
                n += r.state != before
        return n

    # ---- KRL -------------------------------------------------------------------------

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


def _result(cert: Certificate, *, reissued: bool) -> CertificateResult:
    return CertificateResult(
        certificate=cert.certificate,
        serial=cert.serial,
        valid_after=cert.valid_after,
        valid_before=cert.valid_before,
        principals=tuple(json.loads(cert.principals)),
        key_id=cert.key_id,
        reissued=reissued,
    )
