"""Decisions: pure functions of a policy, a request and the time.

How rules combine (also in docs/policies.md): the rules are tried in file
order, and the **first rule that names the requester** (as a user, or one of
their groups) **and the target** (and is a break-glass rule exactly when the
request is a break-glass request) **decides**. Later rules are not consulted,
even if the first one then refuses (a duration over its maximum, a missing
reason). No matching rule: denied. So put narrow rules before broad ones.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import datetime, timedelta

from ca.durations import format_duration

from .model import AccessRequest, ApprovalCheck, Approver, Decision, Outcome, Policy, Rule

__all__ = ["decide", "may_approve", "is_own_request", "count_approvals", "MAX_REASON_LENGTH"]

#: Longest reason a request may carry; it is stored and shown to approvers.
MAX_REASON_LENGTH = 1000


def _check_now(now: datetime) -> None:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime (UTC)")


def _who(request: AccessRequest) -> str:
    groups = ", ".join(sorted(request.requester_groups))
    return (
        f"{request.requester!r} (groups: {groups})"
        if groups
        else f"{request.requester!r} (no groups)"
    )


def _member(
    name: str, groups: frozenset[str], users: frozenset[str], of_groups: frozenset[str]
) -> str | None:
    """How ``name`` with ``groups`` is named by ``users``/``of_groups``, or ``None``."""
    if name in users:
        return f"user {name!r}"
    shared = sorted(groups & of_groups)
    if shared:
        return f"group {shared[0]!r}"
    return None


def _list(kind: str, names: Iterable[str]) -> str:
    names = sorted(names)
    if not names:
        return ""
    return f"{kind}{'s' if len(names) > 1 else ''} {', '.join(names)}"


def _approvers(rule: Rule) -> str:
    parts = [
        p for p in (_list("group", rule.approver_groups), _list("user", rule.approver_users)) if p
    ]
    return " or ".join(parts)


def _matching_rule(policy: Policy, request: AccessRequest) -> tuple[Rule, str] | None:
    for rule in policy.rules:
        if rule.break_glass != request.break_glass or request.target not in rule.targets:
            continue
        how = _member(request.requester, request.requester_groups, rule.users, rule.groups)
        if how is not None:
            return rule, how
    return None


def _request_problems(request: AccessRequest) -> list[str]:
    problems = []
    if not request.requester:
        problems.append("the requester has no name")
    if request.duration is not None:
        seconds = request.duration.total_seconds()
        if seconds < 1 or seconds != int(seconds):
            problems.append("the duration must be a whole number of seconds, at least 1s")
    if len(request.reason) > MAX_REASON_LENGTH:
        problems.append(f"the reason is longer than {MAX_REASON_LENGTH} characters")
    elif any(unicodedata.category(c) == "Cc" and c not in "\t" for c in request.reason):
        problems.append("the reason must be one line without control characters")
    return problems


def decide(policy: Policy, request: AccessRequest, now: datetime) -> Decision:
    """The policy's answer to ``request`` at ``now`` (an aware datetime).

    Never raises for a request the policy refuses: the returned decision says
    so, with its reasons. Raises ``ValueError`` only for a naive ``now``.
    """
    _check_now(now)

    def deny(*reasons: str, rule: Rule | None = None) -> Decision:
        return Decision(
            outcome=Outcome.DENIED,
            reasons=tuple(reasons),
            policy_version=policy.version,
            requester=request.requester,
            target=request.target,
            rule=None if rule is None else rule.name,
        )

    problems = _request_problems(request)
    if problems:
        return deny(*problems)
    target = policy.target(request.target)
    if target is None:
        return deny(f"there is no target named {request.target!r} in the policy")

    found = _matching_rule(policy, request)
    if found is None:
        kind = "break-glass rule" if request.break_glass else "rule"
        return deny(
            f"no {kind} lets {_who(request)} request target {target.name!r}; denied by default"
        )
    rule, how = found
    matched = f"rule {rule.name!r} applies: it names {how} and target {target.name!r}"

    duration = request.duration if request.duration is not None else rule.default_duration
    refusals = []
    if duration > rule.max_duration:
        refusals.append(
            f"{format_duration(duration)} is over the maximum of {format_duration(rule.max_duration)} "
            f"for rule {rule.name!r}; ask for {format_duration(rule.max_duration)} or less"
        )
    reason = request.reason.strip()
    if rule.reason_required and not reason:
        refusals.append(f"rule {rule.name!r} requires a reason")
    elif rule.reason_pattern is not None and not rule.reason_pattern.search(reason):
        # The pattern as written (a TOML literal string), not repr(): that doubles each backslash.
        refusals.append(
            f"the reason does not match the pattern '{rule.reason_pattern.pattern}' required by rule {rule.name!r}"
        )
    if refusals:
        return deny(matched, *refusals, rule=rule)

    reasons = [matched]
    if request.duration is None:
        reasons.append(f"no duration asked for: the rule's default of {format_duration(duration)}")
    approvals = 0
    if rule.break_glass:
        outcome = Outcome.BREAK_GLASS
        reasons.append("break-glass: self-approved now, flagged for review afterwards")
    else:
        outcome = Outcome.NEEDS_APPROVAL
        auto = rule.auto_approve
        if auto is not None:
            auto_how = _member(request.requester, request.requester_groups, auto.users, auto.groups)
            if auto_how is None:
                names = " or ".join(
                    p for p in (_list("group", auto.groups), _list("user", auto.users)) if p
                )
                reasons.append(f"not auto-approved: only {names} may be")
            elif duration > auto.max_duration:
                reasons.append(
                    f"not auto-approved: {format_duration(duration)} is over the auto-approval "
                    f"maximum of {format_duration(auto.max_duration)}"
                )
            elif auto.window is not None and not auto.window.contains(now):
                reasons.append(
                    f"not auto-approved: outside the auto-approval window ({auto.window.describe()})"
                )
            else:
                outcome = Outcome.AUTO_APPROVED
                cap = format_duration(auto.max_duration)
                reasons.append(
                    f"auto-approved: {auto_how}, {format_duration(duration)} is within {cap}"
                )
        if outcome is Outcome.NEEDS_APPROVAL:
            approvals = rule.approvals_required
            plural = "s" if approvals > 1 else ""
            reasons.append(
                f"needs {approvals} approval{plural} from {_approvers(rule)}, never counting the requester"
            )
    return Decision(
        outcome=outcome,
        reasons=tuple(reasons),
        policy_version=policy.version,
        requester=request.requester,
        target=target.name,
        rule=rule.name,
        duration=duration,
        approvals_required=approvals,
        approver_users=tuple(sorted(rule.approver_users)),
        approver_groups=tuple(sorted(rule.approver_groups)),
        principals=target.principals,
        extensions=rule.extensions,
        force_command=rule.force_command,
        source_address=rule.source_address,
        pending_ttl=rule.pending_ttl,
        claim_window=rule.claim_window,
        approvers_may_shorten=rule.approvers_may_shorten,
    )


def may_approve(
    policy: Policy,
    request: AccessRequest,
    approver: Approver,
    now: datetime,
    *,
    duration: timedelta | None = None,
) -> ApprovalCheck:
    """Whether ``approver`` may approve ``request`` at ``now`` under ``policy`` (the current one).

    ``duration``, if given, is what the approver grants instead of what was asked
    for: only shorter, and only where the rule lets approvers shorten. The
    requester may never approve their own request, whatever groups they are in.
    """
    decision = decide(policy, request, now)
    own = is_own_request(request, approver)
    if not decision.allowed:
        return ApprovalCheck(
            False,
            ("the policy does not allow this request: " + "; ".join(decision.reasons),),
            own_request=own,
        )
    rule = policy.rule(decision.rule or "")
    assert rule is not None
    if rule.break_glass:
        # Nobody approves a break-glass request: nothing else to judge.
        return ApprovalCheck(
            False,
            ("a break-glass request is self-approved; it is reviewed afterwards instead",),
            own_request=own,
        )
    refusals: list[str] = []
    if own:
        refusals.append("requesters may never approve their own request")
    how = _member(approver.name, approver.groups, rule.approver_users, rule.approver_groups)
    if how is None:
        refusals.append(
            f"{approver.name!r} is not an approver for rule {rule.name!r} ({_approvers(rule)})"
        )
    if request.submitted_at is not None:
        _check_now(request.submitted_at)
        if now >= request.submitted_at + rule.pending_ttl:
            refusals.append(
                f"the request expired: it was pending longer than {format_duration(rule.pending_ttl)}"
            )
    if duration is not None:
        asked = decision.duration
        assert asked is not None
        seconds = duration.total_seconds()
        if seconds < 1 or seconds != int(seconds):
            refusals.append("the approved duration must be a whole number of seconds, at least 1s")
        elif duration > asked:
            refusals.append(
                f"approvers may shorten a request, never lengthen it ({format_duration(asked)} was asked for)"
            )
        elif duration < asked and not rule.approvers_may_shorten:
            refusals.append(f"rule {rule.name!r} does not let approvers shorten the duration")
    if refusals:
        return ApprovalCheck(False, tuple(refusals), own_request=own)
    return ApprovalCheck(True, (f"{approver.name!r} may approve as {how} of rule {rule.name!r}",))


def is_own_request(request: AccessRequest, approver: Approver) -> bool:
    """Whether ``approver`` is the requester: who may never approve (nor deny) it."""
    return approver.name == request.requester


def count_approvals(
    policy: Policy, request: AccessRequest, approvers: Iterable[Approver], now: datetime
) -> int:
    """How many *distinct* eligible approvers are in ``approvers`` (never the requester)."""
    names = {a.name for a in approvers if may_approve(policy, request, a, now).allowed}
    names.discard(request.requester)
    return len(names)
