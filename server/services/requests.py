"""Requests' hop: submit, read, list, approve, deny, cancel, expire."""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import policies
from ca import MAX_DURATION as CA_MAX_DURATION
from ca import InvalidDuration, format_duration
from server.db import CommitThenRaise
from server.errors import (
    AlreadyDecided,
    ApproverAuthRequired,
    ChatApprovalOff,
    ExtensionPending,
    Forbidden,
    InvalidInput,
    InvalidState,
    NotEligible,
    NotExtendable,
    NotFound,
    RequestExpired,
    SelfApproval,
)
from server.models import (
    LIVE_STATES,
    AccessRequest,
    Approval,
    ApprovalDecision,
    Certificate,
    GroupsSource,
    PolicyState,
    RequestState,
    Role,
    User,
    UserGroup,
    UserRole,
    decision_text,
)

from . import fast
from .base import ServiceBase, with_allowance
from .validation import MAX_COMMENT, MAX_REASON, check_request_id, check_target, check_text

__all__ = [
    "RequestService",
    "ApprovalContext",
    "check_channel",
    "MayDecide",
    "NotDecidable",
    "WhoMayApprove",
    "removed_target_reason",
]

#: A web session signed in by single sign-on within this long is "fresh" (``approver_auth``).
FRESH_SSO = timedelta(minutes=15)


@dataclass(frozen=True)
class ApprovalContext:
    """How an approval or denial reaches the service: the channel, and what its sign-in
    proved. The rule's ``chat_approval`` and ``approver_auth`` are judged on it, under the
    request's row lock, whichever way the decision came.

    ``via``: "api" (a signed API call: an API key proves neither TOTP nor SSO), "web" (a
    browser session: ``totp`` whether it gave a TOTP code, ``sso_at`` when it signed in by
    single sign-on) or "chat" (a verified Slack interaction: it proves neither).
    """

    via: str = "api"
    totp: bool = False
    sso_at: datetime | None = None


API = ApprovalContext()


def check_channel(
    policy: policies.Policy,
    rule_names: Iterable[str | None],
    ctx: ApprovalContext,
    now: datetime,
) -> None:
    """Refuse a decision that any of the named rules does not let ``ctx`` make (see
    :class:`ApprovalContext`): the rule the request was filed under and the rule that
    decides it now, so that renaming a rule, or a new rule in front of it, never lifts
    what either asks for. A name the policy no longer has is skipped: the current
    decision's rule, which the policy has by definition, is always judged."""
    for name in dict.fromkeys(rule_names):
        rule = policy.rule(name) if name else None
        if rule is not None:
            _check_rule_channel(rule, ctx, now)


def _check_rule_channel(rule: policies.Rule, ctx: ApprovalContext, now: datetime) -> None:
    if ctx.via == "chat" and not rule.chat_approval:
        raise ChatApprovalOff(
            f"rule {rule.name!r} does not let approvers decide from chat; open the request's web page",
            field="id",
        )
    if rule.approver_auth == "totp" and not (ctx.via == "web" and ctx.totp):
        raise ApproverAuthRequired(
            f"rule {rule.name!r} needs approvals made in the web form, signed in with a TOTP code",
            field="id",
        )
    if rule.approver_auth == "fresh_sso" and not (
        ctx.via == "web" and ctx.sso_at is not None and now - ctx.sso_at <= FRESH_SSO
    ):
        raise ApproverAuthRequired(
            f"rule {rule.name!r} needs approvals made in the web form within 15 minutes of "
            "signing in by single sign-on; sign in again",
            field="id",
        )


#: At most this many eligible approvers are named in a request's view (the rest are counted).
MAX_NAMED_APPROVERS = 20
#: At most this many approver accounts are judged for one view.
_MAX_CANDIDATES = 500

#: The states a removed target's requests are expired from: not yet a certificate. An issued
#: certificate is signed already and stays valid until it expires or is revoked.
_UNISSUED = (RequestState.PENDING, RequestState.APPROVED)


def removed_target_reason(version: str) -> str:
    """Why a request was expired when its target left the policy (``deny_reason``)."""
    return f"target removed from the policy (version {version[:12]})"


def _expired(req: AccessRequest, text: str) -> str:
    """``text``, with the reason the request was expired early when there is one."""
    return f"{text}: {req.deny_reason}" if req.deny_reason else text


class NotDecidable(enum.StrEnum):
    """Why a user may not approve or deny a request (see :class:`MayDecide`)."""

    OWN_REQUEST = "own_request"
    NOT_PENDING = "not_pending"
    NOT_APPROVER = "not_approver"
    ALREADY_DECIDED = "already_decided"
    #: The policy does not let them: its reasons say why.
    POLICY = "policy"


@dataclass(frozen=True)
class MayDecide:
    """What :meth:`RequestService.may_decide` answers: whether the user may approve or
    deny, why not, and the policy's reasons (every one that applies)."""

    allowed: bool
    why_not: NotDecidable | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class WhoMayApprove:
    """Who may still approve a pending request under the current policy (what
    :meth:`RequestService.who_may_approve` answers, for the requester's wait).

    ``groups`` and ``users`` are the deciding rule's approvers as the policy names
    them; ``eligible`` names (sorted, at most :data:`MAX_NAMED_APPROVERS`) the enabled
    accounts with the approver role that the policy lets approve now, never the
    requester nor anyone who already decided; ``eligible_total`` counts them all."""

    groups: tuple[str, ...]
    users: tuple[str, ...]
    eligible: tuple[str, ...]
    eligible_total: int


class RequestService(ServiceBase):
    def submit(
        self,
        user: User,
        *,
        target: object,
        duration: timedelta | None,
        reason: object,
        break_glass: bool = False,
        extends: object = None,
    ) -> AccessRequest:
        """File a request. ``extends``: the id of the caller's running access
        (an issued request) that this one extends (``jit-ssh extend``): its
        target, decided by the current policy like any request for it, with the
        rule's ``extension_allowance`` on top."""
        extends_id: str | None = None
        if extends is not None:
            try:
                extends_id = check_request_id(extends)
            except NotFound:
                raise NotFound("no such request", field="extends") from None
            if break_glass:
                raise InvalidInput(
                    "an extension is never break-glass: extend with a reason, or use break-glass login",
                    field="break_glass",
                )
            if target is not None:
                target = check_target(target)
        else:
            target = check_target(target)
        reason = check_text(reason, "reason", MAX_REASON)
        now = self.now()
        policy = self.policy.get()
        allowance: dict[str, object] | None = None
        with self._tx() as s:
            me = self._me(s, user)
            assert me is not None
            if extends_id is not None:
                original = self._extendable(s, me, extends_id, now)
                if target is not None and target != original.target:
                    raise InvalidInput(
                        f"an extension is for the target of the access it extends ({original.target!r}), "
                        f"not {target!r}",
                        field="target",
                    )
                target = original.target
            assert isinstance(target, str)
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
            if decision.allowed and extends_id is not None:
                assert decision.duration is not None
                added = int(decision.duration.total_seconds())
                ext_seconds, _ = self._extension_seconds(s, extends_id, added)
                decision, allowance = with_allowance(policy, decision, ext_seconds)
                assert original.certificate is not None
                life = max(original.certificate.valid_before, now) + timedelta(seconds=added) - now
                if life > CA_MAX_DURATION:
                    raise NotExtendable(
                        f"the certificate would be valid for {format_duration(life)} from now, over "
                        f"the CA's limit of {format_duration(CA_MAX_DURATION)}; extend it later, "
                        "or ask for a new access",
                        field="duration",
                    )
            if not decision.allowed:
                refused: dict[str, object] = {
                    "target": target,
                    "reasons": list(decision.reasons),
                    "policy_version": policy.version,
                }
                if extends_id is not None:
                    refused["extends"] = extends_id
                self._record(s, "request.refused", now, actor=me.name, data=refused)
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
                decision=decision_text(decision),
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
                # What the decision used: the requester's groups now, and where they came from.
                groups_used=json.dumps(list(me.group_names)),
                groups_source=str(me.groups_source or GroupsSource.LOCAL),
                extends_id=extends_id,
            )
            # A Core insert of every column (the ORM's unit of work costs more than
            # the statement), and the same values, not read back, for the response:
            # a new request has no approvals and no certificate yet.
            fast.insert_request(s, values)
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
                    **({"extends": extends_id} if extends_id is not None else {}),
                    **({"extension_allowance": allowance} if allowance is not None else {}),
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
                        **({"extension_allowance": allowance} if allowance is not None else {}),
                        # Decided just now: nothing to narrow.
                        "policy": {
                            "result": "unchanged",
                            "stored_policy_version": decision.policy_version,
                            "current_policy_version": decision.policy_version,
                        },
                    },
                )
        return req

    def _extendable(self, s: Session, me: User, extends_id: str, now: datetime) -> AccessRequest:
        """The caller's running access ``extends_id``, locked, if it may be extended now.

        Someone else's request is "not found", as everywhere else (its existence
        is not told). Refused (:class:`NotExtendable`, saying why) unless it is
        issued, its certificate unexpired and unrevoked, and not replaced by an
        extension; and (:class:`ExtensionPending`) while another extension of it
        is pending or approved. Submits of extensions of one access queue on the
        original's row lock, so only one can pass that check.
        """
        original = fast.lock_request_row(s, extends_id, lean=True)
        if original is None or original.requester_id != me.id:
            raise NotFound(f"no request {extends_id!r}", field="extends")
        self._refresh(s, original, now)
        later = s.execute(
            select(AccessRequest)
            .where(AccessRequest.extends_id == original.id)
            .order_by(AccessRequest.created_at.desc())
        ).scalars()
        successors = list(later)
        replaced = [
            r
            for r in successors
            if r.state in (RequestState.ISSUED, RequestState.ENDED, RequestState.REVOKED)
        ]
        if replaced:
            raise NotExtendable(
                f"request {original.id} was replaced by extension {replaced[0].id}; extend that one",
                field="extends",
            )
        cert: Certificate | None = original.certificate
        if original.state == RequestState.ENDED or (
            cert is not None and original.state == RequestState.ISSUED and now >= cert.valid_before
        ):
            raise CommitThenRaise(
                NotExtendable(
                    f"request {original.id}'s certificate has expired; ask for new access with jit-ssh login",
                    field="extends",
                )
            )
        if original.state == RequestState.REVOKED or (
            cert is not None and cert.revocation is not None
        ):
            raise NotExtendable(
                f"request {original.id}'s certificate was revoked; ask for new access with jit-ssh login",
                field="extends",
            )
        if original.state != RequestState.ISSUED or cert is None:
            raise NotExtendable(
                f"request {original.id} is {original.state}, not a running access: "
                "only an issued certificate can be extended",
                field="extends",
            )
        for r in successors:
            # Judged on what was read: the other extension's row is not locked here
            # (a fetch locks it and then this one: locking it too could deadlock).
            if self._open(r, now):
                raise ExtensionPending(
                    f"request {original.id} already has extension {r.id} ({r.state}); "
                    "wait for it, or cancel it first",
                    field="extends",
                )
        return original

    @staticmethod
    def _open(r: AccessRequest, now: datetime) -> bool:
        """Whether ``r`` is pending or approved and not past its deadline."""
        if r.state == RequestState.PENDING:
            return now < r.pending_until
        if r.state == RequestState.APPROVED:
            return r.claim_until is None or now < r.claim_until
        return False

    def get(self, user: User, request_id: object) -> AccessRequest:
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

    def who_may_approve(self, req: AccessRequest) -> WhoMayApprove | None:
        """Who may still approve ``req`` (as :meth:`get` returned it), or ``None`` when it
        is not pending or the current policy no longer lets anyone approve it. Reads only."""
        if req.state != RequestState.PENDING:
            return None
        now = self.now()
        policy = self.policy.get()
        preq = self._policy_request(req, req.requester.group_names)
        decision = policies.decide(policy, preq, now)
        rule = policy.rule(decision.rule or "") if decision.allowed else None
        if rule is None or rule.break_glass:
            return None
        decided = {a.approver_id for a in req.approvals}
        groups, users = sorted(rule.approver_groups), sorted(rule.approver_users)
        named = []
        if groups:
            named.append(User.id.in_(select(UserGroup.user_id).where(UserGroup.name.in_(groups))))
        if users:
            named.append(User.name.in_(users))
        eligible: list[str] = []
        if named:
            with self._tx() as s:
                rows = s.execute(
                    select(User)
                    .where(
                        User.disabled.is_(False),
                        User.id != req.requester_id,
                        User.id.in_(
                            select(UserRole.user_id).where(UserRole.role == Role.APPROVER.value)
                        ),
                        or_(*named),
                    )
                    .order_by(User.name)
                    .limit(_MAX_CANDIDATES)
                ).scalars()
                for u in rows:
                    if u.id in decided:
                        continue
                    approver = policies.Approver(name=u.name, groups=frozenset(u.group_names))
                    if policies.may_approve(policy, preq, approver, now).allowed:
                        eligible.append(u.name)
        return WhoMayApprove(
            groups=tuple(groups),
            users=tuple(users),
            eligible=tuple(eligible[:MAX_NAMED_APPROVERS]),
            eligible_total=len(eligible),
        )

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
                        AccessRequest.state == RequestState.PENDING,
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
                if r.state != RequestState.PENDING:
                    continue
                if any(a.approver_id == me.id for a in r.approvals):
                    continue
                groups = r.requester.group_names
                if policies.may_approve(
                    policy, self._policy_request(r, groups), approver, now
                ).allowed:
                    out.append(r)
            return out[:limit]

    def may_decide(self, user: User, req: AccessRequest) -> MayDecide:
        """Whether ``user`` may approve or deny ``req`` (as :meth:`get` returned it), and
        why not. Writes nothing: :meth:`approve` and :meth:`deny` judge again under the
        request's row lock. Who may approve is the policy's to say
        (``policies.may_approve``); this adds the request's state and the user's role."""
        preq = self._policy_request(req, req.requester.group_names)
        approver = policies.Approver(name=user.name, groups=frozenset(user.group_names))
        if policies.is_own_request(preq, approver):
            return MayDecide(False, NotDecidable.OWN_REQUEST)
        if req.state != RequestState.PENDING:
            return MayDecide(False, NotDecidable.NOT_PENDING)
        if not user.has_role(Role.APPROVER):
            return MayDecide(False, NotDecidable.NOT_APPROVER)
        if any(a.approver_id == user.id for a in req.approvals):
            return MayDecide(False, NotDecidable.ALREADY_DECIDED)
        check = policies.may_approve(self.policy.get(), preq, approver, self.now())
        if not check.allowed:
            return MayDecide(False, NotDecidable.POLICY, check.reasons)
        return MayDecide(True, None, check.reasons)

    def approve(
        self,
        user: User,
        request_id: object,
        *,
        comment: object = "",
        duration: timedelta | None = None,
        context: ApprovalContext = API,
    ) -> AccessRequest:
        comment = check_text(comment, "comment", MAX_COMMENT)
        return self._decide(
            user, request_id, approve=True, text=comment, duration=duration, context=context
        )

    def deny(
        self, user: User, request_id: object, *, reason: object, context: ApprovalContext = API
    ) -> AccessRequest:
        reason = check_text(reason, "reason", MAX_REASON, required=True)
        return self._decide(
            user, request_id, approve=False, text=reason, duration=None, context=context
        )

    def _decide(
        self,
        user: User,
        request_id: object,
        *,
        approve: bool,
        text: str,
        duration: timedelta | None,
        context: ApprovalContext = API,
    ) -> AccessRequest:
        now = self.now()
        policy = self.policy.get()
        with self._tx() as s:
            req = self._lock_request(s, request_id)
            me = self._me(s, user)
            assert me is not None
            self._refresh(s, req, now)
            preq = self._policy_request(req, req.requester.group_names)
            approver = policies.Approver(name=me.name, groups=frozenset(me.group_names))
            if policies.is_own_request(preq, approver):
                raise SelfApproval(
                    "requesters can never approve or deny their own request", field="id"
                )
            if not me.has_role(Role.APPROVER):
                raise NotEligible(f"{me.name!r} does not have the approver role", field="id")
            if req.state == RequestState.EXPIRED:
                raise CommitThenRaise(
                    RequestExpired(
                        _expired(req, f"request {req.id} expired before it was decided"),
                        field="id",
                    )
                )
            if req.state != RequestState.PENDING:
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
            # Decided again under the current policy: what it no longer allows is
            # dropped now, so approvers approve (and see) what can still be issued.
            narrowed, policy_check = self._recheck(
                s, req, policy, preq, now, hop="approval", actor=me.name
            )
            assert narrowed.duration is not None
            check = policies.may_approve(
                policy,
                replace(preq, duration=narrowed.duration),
                approver,
                now,
                duration=min(duration, narrowed.duration)
                if (approve and duration is not None)
                else None,
            )
            if not check.allowed:
                raise NotEligible(check.reason, field="id")
            # The channel last: who may decide is said first, whichever way they came.
            check_channel(policy, (req.rule, narrowed.rule), context, now)
            s.add(
                Approval(
                    via=context.via,
                    request_id=req.id,
                    approver_id=me.id,
                    decision=ApprovalDecision.APPROVE if approve else ApprovalDecision.DENY,
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
                req.state = RequestState.DENIED
                req.decided_at = now
                req.deny_reason = text
                self._record(
                    s,
                    "request.denied",
                    now,
                    actor=me.name,
                    request_id=req.id,
                    data={"reason": text, "via": context.via},
                )
            else:
                if policy_check["result"] == "narrowed":
                    # The request now carries the narrowed decision: the API and the
                    # approver pages show it, and the fetch narrows it again.
                    req.decision = decision_text(narrowed)
                    req.approvals_required = narrowed.approvals_required
                approvals = [a for a in req.approvals if a.decision == ApprovalDecision.APPROVE]
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
                        "via": context.via,
                    },
                )
                if len(counted) >= req.approvals_required:
                    approvals = [a for a in approvals if a.approver.name in counted]
                    shortened = [a.shortened_seconds for a in approvals if a.shortened_seconds]
                    req.granted_seconds = min(
                        [req.requested_seconds, int(narrowed.duration.total_seconds()), *shortened]
                    )
                    req.state = RequestState.APPROVED
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
            s.flush()
            s.refresh(req)
        return req

    def cancel(self, user: User, request_id: object) -> AccessRequest:
        now = self.now()
        with self._tx() as s:
            req = self._lock_request(s, request_id)
            me = self._me(s, user)
            assert me is not None
            if req.requester_id != me.id and not me.has_role(Role.ADMIN):
                raise Forbidden("only the requester (or an admin) can cancel a request", field="id")
            self._refresh(s, req, now)
            if req.state == RequestState.EXPIRED:
                # As approve, deny and fetch say: 410, and the expiry just found is kept.
                raise CommitThenRaise(
                    RequestExpired(_expired(req, f"request {req.id} expired"), field="id")
                )
            if req.state not in (RequestState.PENDING, RequestState.APPROVED):
                raise InvalidState(
                    f"request {req.id} is {req.state}; only pending or approved requests can be cancelled",
                    field="id",
                )
            req.state = RequestState.CANCELLED
            req.decided_at = now
            self._record(s, "request.cancelled", now, actor=me.name, request_id=req.id)
            s.flush()
            s.refresh(req)
            return req

    def expire_sweep(self) -> int:
        now = self.now()
        # The sweep runs from `jit-ssh admin expire`, a one-shot process: the policy as
        # its file says, recording no change (the server's workers do that).
        policy = self.policy.current()
        n = 0
        with self._tx() as s:
            # A request filed through a worker that had not yet seen the change is
            # caught here (the change's own transaction expired the others).
            n += self._expire_removed_targets(s, policy, now)
            rows = (
                s.execute(
                    select(AccessRequest)
                    .where(AccessRequest.state.in_(LIVE_STATES))
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

    # ---- policy changes ----------------------------------------------------------------

    def record_policy_version(self, policy: policies.Policy) -> bool:
        """Record that ``policy`` is now in force, once for all workers and replicas.

        Compare-and-set on the one :class:`~server.models.PolicyState` row,
        under its row lock (SQLite: the write lock every transaction takes): the
        worker that moves it from the recorded version records
        ``policy.reloaded`` (with that version as ``previous``) and expires the
        unissued requests whose target the policy no longer has, in the same
        transaction; a worker that finds the row at ``policy.version`` already
        records nothing. A first version (the row holds none) is stored without
        an event. Returns whether this call recorded the change.
        """
        now = self.now()
        with self._tx() as s:
            row = self._lock_policy_state(s)
            previous = row.version
            if previous == policy.version:
                return False
            if self._file_version() != policy.version:
                # A hand-over that waited for the lock while the file moved on: recording
                # it now would log a change that is not in force, and expire requests the
                # version in force allows. The file's version is handed over next.
                return False
            row.version = policy.version
            row.changed_at = now
            if previous is None:
                return False
            ev = self.audit.record(
                s,
                type="policy.reloaded",
                now=now,
                data={
                    "path": str(self.policy.path),
                    "version": policy.version,
                    "previous": previous,
                },
            )
            row.audit_event_id = ev.id
            self._expire_removed_targets(s, policy, now)
        return True

    def _file_version(self) -> str | None:
        """The version the policy file holds now (None when it cannot be read), checked under
        the policy state row's lock."""
        try:
            return policies.load_policy(self.policy.path).version
        except (OSError, policies.InvalidPolicy):
            return None

    @staticmethod
    def _lock_policy_state(s: Session) -> PolicyState:
        """The policy state row, locked ``FOR UPDATE`` (created if a database lacks it)."""
        lock = select(PolicyState).where(PolicyState.id == 1).with_for_update()
        row = s.execute(lock).scalar_one_or_none()
        if row is None:
            # Migration 0006 creates the row; should it be gone, two workers may race
            # to put it back: the loser's insert fails and it reads the winner's.
            try:
                with s.begin_nested():
                    s.add(PolicyState(id=1, version=None))
            except IntegrityError:
                pass
            row = s.execute(lock.execution_options(populate_existing=True)).scalar_one()
        return row

    def _expire_removed_targets(self, s: Session, policy: policies.Policy, now: datetime) -> int:
        """Expire, under their row locks, the pending and approved requests whose target
        ``policy`` no longer has, each with its reason and a ``request.expired`` event."""
        known = [t.name for t in policy.targets]
        rows = (
            s.execute(
                select(AccessRequest)
                .where(AccessRequest.state.in_(_UNISSUED), AccessRequest.target.not_in(known))
                .order_by(AccessRequest.id)
                .with_for_update(of=AccessRequest)
            )
            .scalars()
            .all()
        )
        reason = removed_target_reason(policy.version)
        for r in rows:
            was = r.state
            r.state = RequestState.EXPIRED
            r.deny_reason = reason
            self._record(
                s,
                "request.expired",
                now,
                request_id=r.id,
                data={
                    "was": str(was),
                    "reason": reason,
                    "target": r.target,
                    "policy_version": policy.version,
                },
            )
        return len(rows)
