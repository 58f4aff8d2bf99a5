"""What every hop of the service shares: its dependencies, the transaction, the
request's row lock, its deadlines, and the re-decision of a request in flight
under the current policy (which both an approval and a fetch make).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import NotRequired, TypedDict

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import policies
from ca import format_duration
from ca.keyring import Keyring
from server import audit
from server.db import CommitThenRaise, transaction
from server.errors import NotFound
from server.keystore import LiveKeyring
from server.models import AccessRequest, ApprovalDecision, RequestState, Role, User

from . import fast
from .policy_source import PolicyHolder
from .validation import MAX_REASON, check_request_id

__all__ = ["ServiceBase", "PolicyCheck", "ExtensionInfo"]

#: How many links of an extension chain are followed at most (each one is a fetched extension).
MAX_CHAIN = 1000


@dataclass(frozen=True)
class ExtensionInfo:
    """What an extension (``jit-ssh extend``) adds to the access it extends.

    ``of``: the request it extends; ``added_seconds``: its own grant;
    ``extensions_seconds``: every extension of the access so far, this one
    included (what a rule's ``extension_allowance`` caps); ``total_seconds``:
    the whole access, the first request's grant plus all of that.
    """

    of: str
    added_seconds: int
    extensions_seconds: int
    total_seconds: int

    def to_dict(self) -> dict[str, object]:
        return {
            "of": self.of,
            "added_seconds": self.added_seconds,
            "extensions_seconds": self.extensions_seconds,
            "total_seconds": self.total_seconds,
        }


def with_allowance(
    policy: policies.Policy, decision: policies.Decision, extensions_seconds: int
) -> tuple[policies.Decision, dict[str, object] | None]:
    """``decision`` for an extension, with its rule's ``extension_allowance`` applied.

    An extension the rule would send to approvers is auto-approved while the
    access's extensions (``extensions_seconds``, this one included) add up to at
    most the allowance. Returns the decision and, when the allowance decided it,
    what the audit event records about it (else ``None``).
    """
    rule = policy.rule(decision.rule or "")
    allowance = rule.extension_allowance if rule is not None else None
    cap = None if allowance is None else int(allowance.total_seconds())
    if decision.outcome is policies.Outcome.AUTO_APPROVED and rule is not None:
        # The rule's auto_approve grants a fresh access of its own length; chained onto a
        # running one, extension after extension, it would make one certificate of any
        # length with nobody asked. An extension is auto-approved by the allowance only.
        if cap is not None and extensions_seconds <= cap:
            return _allowed_by_allowance(decision, extensions_seconds, cap)
        why = (
            "an extension is auto-approved only within the rule's extension_allowance"
            if cap is None
            else f"the extensions would add up to {format_duration(extensions_seconds)}, over the "
            f"rule's extension allowance of {format_duration(cap)}"
        )
        return (
            replace(
                decision,
                outcome=policies.Outcome.NEEDS_APPROVAL,
                approvals_required=max(1, rule.approvals_required),
                reasons=(*decision.reasons, f"needs approval: {why}"),
            ),
            None,
        )
    if decision.outcome is not policies.Outcome.NEEDS_APPROVAL or cap is None:
        return decision, None
    if extensions_seconds > cap:
        note = (
            f"not within the extension allowance: the extensions would add up to "
            f"{format_duration(extensions_seconds)}, over {format_duration(cap)}"
        )
        return replace(decision, reasons=(*decision.reasons, note)), None
    return _allowed_by_allowance(decision, extensions_seconds, cap)


def _allowed_by_allowance(
    decision: policies.Decision, extensions_seconds: int, cap: int
) -> tuple[policies.Decision, dict[str, object]]:
    note = (
        f"auto-approved: an extension, the extensions add up to {format_duration(extensions_seconds)}, "
        f"within the rule's extension allowance of {format_duration(cap)}"
    )
    auto = replace(
        decision,
        outcome=policies.Outcome.AUTO_APPROVED,
        approvals_required=0,
        reasons=(*decision.reasons, note),
    )
    return auto, {"allowance_seconds": cap, "extensions_seconds": extensions_seconds}


class PolicyCheck(TypedDict):
    """How a request in flight fared when decided again under the current policy,
    as its audit event records it (``policy``)."""

    #: "unchanged" or "narrowed" (a refusal raises instead).
    result: str
    stored_policy_version: str
    current_policy_version: str
    #: What the current policy took away (``policies.narrowing``), when narrowed.
    changes: NotRequired[dict[str, object]]


log = logging.getLogger("jit_ssh.service")

#: The expiry warning's lead time when the request's rule is no longer in the policy.
DEFAULT_WARN_BEFORE = timedelta(minutes=5)


@dataclass
class ServiceBase:
    sessions: sessionmaker[Session]
    keyring: Keyring | LiveKeyring
    policy: PolicyHolder
    audit: audit.AuditWriter
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    backdate_seconds: int = 0
    #: Seconds a revoked serial stays in the KRL past its valid_before (hosts' clock skew).
    krl_clock_skew: int = 300

    # ---- helpers -----------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock()

    def _record(
        self,
        s: Session,
        type: str,
        now: datetime,
        *,
        actor: str | None = None,
        request_id: str | None = None,
        data: dict[str, object] | None = None,
    ) -> None:
        self.audit.record(s, type=type, now=now, actor=actor, request_id=request_id, data=data)

    def _tx(self) -> AbstractContextManager[Session]:
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

    def _lock_request(self, s: Session, request_id: object, *, lean: bool = False) -> AccessRequest:
        """Lock the request's row. ``lean``: load no relationship up front (each
        loads, under the lock, when first read), for callers that return no request."""
        request_id = check_request_id(request_id)
        req = fast.lock_request_row(s, request_id, lean=lean)
        if req is None:
            raise NotFound(f"no request {request_id!r}", field="id")
        return req

    @staticmethod
    def _overdue(req: AccessRequest, now: datetime) -> bool:
        """Whether :meth:`_refresh` would move ``req`` (judged on what was read)."""
        if req.state == RequestState.PENDING:
            return now >= req.pending_until
        if req.state == RequestState.APPROVED:
            return req.claim_until is not None and now >= req.claim_until
        if req.state == RequestState.ISSUED:
            return req.certificate is not None and now >= req.certificate.valid_before
        return False

    @staticmethod
    def _lock_requests(s: Session, ids: Iterable[str]) -> list[AccessRequest]:
        """Lock the requests ``ids`` (``FOR UPDATE``), in id order so that two callers
        cannot deadlock, and read them afresh under the lock."""
        return list(
            s.execute(
                select(AccessRequest)
                .where(AccessRequest.id.in_(sorted(ids)))
                .order_by(AccessRequest.id)
                .with_for_update(of=AccessRequest)
                .execution_options(populate_existing=True)
            ).scalars()
        )

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
        self._lock_requests(s, overdue)
        for r in rows:
            if r.id in overdue:
                self._refresh(s, r, now)

    def _refresh(self, s: Session, req: AccessRequest, now: datetime) -> None:
        """Move a request past its deadlines (checked on every read and write), under its row lock."""
        if req.state == RequestState.PENDING and now >= req.pending_until:
            req.state = RequestState.EXPIRED
            self._record(s, "request.expired", now, request_id=req.id, data={"was": "pending"})
        elif (
            req.state == RequestState.APPROVED
            and req.claim_until is not None
            and now >= req.claim_until
        ):
            req.state = RequestState.EXPIRED
            self._record(s, "request.expired", now, request_id=req.id, data={"was": "approved"})
        elif (
            req.state == RequestState.ISSUED
            and req.certificate is not None
            and now >= req.certificate.valid_before
        ):
            req.state = RequestState.ENDED
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
            if a.decision != ApprovalDecision.APPROVE:
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
        extensions_seconds: int | None = None,
    ) -> tuple[policies.Decision, PolicyCheck]:
        """Decide ``req`` again under ``policy`` (the current one) and narrow its stored decision.

        Returns what both allow and the ``policy`` record for the audit event
        (``unchanged`` or ``narrowed``, with what changed and both versions).
        When nothing can be granted (the policy now refuses the request, no
        principal or source address is left, two forced commands, or fewer
        ``approvals_given`` than the current policy requires), the request ends
        as denied, a ``request.refused`` event says why, and the refusal
        (a :class:`policies.PolicyChanged`, 403) is raised after the commit.
        ``decided_at``: judge the auto-approval window at the moment the request
        was approved, not at the fetch. ``extensions_seconds``: ``req`` is an
        extension, and the access's extensions add up to this (the rule's
        ``extension_allowance`` is judged on it, as at submit).
        """
        stored = req.stored_decision(requester=preq.requester)
        current = policies.redecide(policy, preq, decided_at or now)
        if extensions_seconds is not None:
            current, _ = with_allowance(policy, current, extensions_seconds)
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
            req.state = RequestState.DENIED
            req.decided_at = now
            req.deny_reason = f"refused by the current policy ({err.code}): {err}"[:MAX_REASON]
            refused: dict[str, object] = {
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
                data={"at": hop, "target": req.target, "reasons": [str(err)], "policy": refused},
            )
            raise CommitThenRaise(err) from None
        changes = policies.narrowing(stored, narrowed)
        check: PolicyCheck = {
            "result": "narrowed" if changes else "unchanged",
            "stored_policy_version": stored.policy_version,
            "current_policy_version": current.policy_version,
        }
        if changes:
            check["changes"] = changes
        return narrowed, check

    @staticmethod
    def _chain(s: Session, first_id: str | None) -> list[tuple[str, str | None, int]]:
        """The requests of an access from ``first_id`` back to the first one, as
        (id, extends_id, granted_seconds), newest first. Reads only."""
        out: list[tuple[str, str | None, int]] = []
        seen: set[str] = set()
        at = first_id
        while at is not None and at not in seen and len(out) < MAX_CHAIN:
            seen.add(at)
            row = s.execute(
                select(
                    AccessRequest.id, AccessRequest.extends_id, AccessRequest.granted_seconds
                ).where(AccessRequest.id == at)
            ).first()
            if row is None:
                break
            out.append((row[0], row[1], row[2]))
            at = row[1]
        return out

    def _extension_seconds(self, s: Session, extends_id: str, added: int) -> tuple[int, int]:
        """For an extension of ``extends_id`` adding ``added`` seconds: (the
        extensions of the access, this one included; the whole access)."""
        chain = self._chain(s, extends_id)
        earlier = sum(g for _, ext, g in chain if ext is not None)
        first = chain[-1][2] if chain else 0
        return earlier + added, first + earlier + added

    def extension_info(self, req: AccessRequest) -> ExtensionInfo | None:
        """What ``req`` adds to the access it extends (``None``: it extends none). Reads only."""
        if req.extends_id is None:
            return None
        with self._tx() as s:
            ext, total = self._extension_seconds(s, req.extends_id, req.granted_seconds)
        return ExtensionInfo(
            of=req.extends_id,
            added_seconds=req.granted_seconds,
            extensions_seconds=ext,
            total_seconds=total,
        )

    def warn_before(self, rule_name: str | None) -> timedelta:
        """How long before its certificate expires a request's requester is warned: its
        rule's ``warn_before`` under the current policy (5 minutes when the rule is gone)."""
        rule = self.policy.get().rule(rule_name) if rule_name else None
        return rule.warn_before if rule is not None else DEFAULT_WARN_BEFORE

    def warn_before_seconds(self, req: AccessRequest) -> int:
        """:meth:`warn_before` for ``req``, in seconds (the request view's ``warn_before_seconds``)."""
        return int(self.warn_before(req.rule).total_seconds())

    def current_grant(self, req: AccessRequest) -> tuple[policies.Decision, str | None]:
        """What a request in flight would get under the current policy, for display; writes nothing.

        Returns the decision the next approval or fetch would narrow it to, and a
        note when that differs from the stored one (``None`` when unchanged, and
        for requests no longer in flight).
        """
        stored = req.stored_decision()
        if req.state not in (RequestState.PENDING, RequestState.APPROVED):
            return stored, None
        approved = req.state == RequestState.APPROVED
        preq = self._policy_request(req, req.requester.group_names)
        policy = self.policy.get()
        current = policies.redecide(
            policy, preq, (req.decided_at if approved else None) or self.now()
        )
        info = self.extension_info(req)
        if info is not None:
            current, _ = with_allowance(policy, current, info.extensions_seconds)
        try:
            narrowed = policies.narrow(stored, current)
            given = len(
                {a.approver_id for a in req.approvals if a.decision == ApprovalDecision.APPROVE}
            )
            if (
                approved
                and not (req.auto_approved or req.break_glass)
                and given < narrowed.approvals_required
            ):
                return stored, (
                    f"The policy changed: this request now needs {narrowed.approvals_required} "
                    "approvals; it will be refused when fetched."
                )
            if approved and (req.auto_approved or req.break_glass) and narrowed.approvals_required:
                return (
                    stored,
                    "The policy changed: this request now needs approval; it will be refused when fetched.",
                )
        except policies.PolicyChanged as err:
            return stored, f"The current policy refuses this request ({err.code}): {err}"
        if not policies.narrowing(stored, narrowed):
            return stored, None
        return (
            narrowed,
            "The policy changed since this request was made: shown is what can still be issued.",
        )
