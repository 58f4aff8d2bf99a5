"""Requests in flight: what may still be granted after the policy changed.

A request is decided when it is submitted, and that decision is stored with
it. It may be approved and fetched much later, under another policy (or after
the requester left a group). So at approval and at fetch the service decides
again under the policy in force then (:func:`redecide`) and grants at most
what *both* decisions allow (:func:`narrow`):

- principals and extensions: those in both (the stored order is kept);
- duration: the shorter. :func:`redecide` cuts a duration over the current
  rule's maximum to that maximum instead of refusing the request;
- ``force-command``: the one that is set, if only one is; two different
  commands cannot both hold, so the request is refused;
- ``source-address``: the addresses in both sets (CIDR-aware: ``10.1.0.0/16``
  and ``10.0.0.0/8`` give ``10.1.0.0/16``); refused when nothing is left;
- approvals required: the larger; pending time and claim window: the shorter;
  approvers may shorten only if both say so.

When nothing can be granted, :func:`narrow` raises a
:class:`~policies.errors.PolicyChanged` (a :class:`~policies.PolicyDenied`)
with a stable code. All of it is pure: time comes in as ``now``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ca.durations import format_duration

from .decide import _matching_rule, decide
from .errors import ForceCommandConflict, NoPrincipalsLeft, PolicyChanged, SourceAddressConflict
from .model import AccessRequest, Decision, Outcome, Policy

__all__ = ["redecide", "narrow", "narrowing"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def redecide(policy: Policy, request: AccessRequest, now: datetime) -> Decision:
    """:func:`~policies.decide` for a request already in flight.

    The one difference: a duration over the current rule's maximum is cut to
    that maximum (and a reason says so) rather than refused, because the
    request was within the maximum when it was made. ``now`` decides the
    auto-approval window, as in :func:`decide`.
    """
    decision = decide(policy, request, now)
    if decision.allowed or request.duration is None:
        return decision
    found = _matching_rule(policy, request)
    if found is None or request.duration <= found[0].max_duration:
        return decision
    cap = found[0].max_duration
    cut = decide(policy, replace(request, duration=cap), now)
    if not cut.allowed:
        return cut
    note = (
        f"{format_duration(request.duration)} is over the current maximum of {format_duration(cap)} "
        f"for rule {found[0].name!r}: cut to {format_duration(cap)}"
    )
    return replace(cut, reasons=(*cut.reasons, note))


def _min(a: timedelta | None, b: timedelta | None) -> timedelta | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _networks(values: tuple[str, ...]) -> list[_Network]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def _intersect_sources(stored: tuple[str, ...], current: tuple[str, ...]) -> tuple[str, ...] | None:
    """The addresses both lists allow; ``()`` is "any address"; ``None`` when the intersection is empty.

    Two CIDR blocks either nest or are disjoint, so the intersection of two
    lists is the set of the smaller block of every nesting pair.
    """
    if not current:
        return stored
    if not stored:
        return current
    both: list[_Network] = []
    for a in _networks(stored):
        for b in _networks(current):
            if a.version != b.version:
                continue
            if a.subnet_of(b):  # type: ignore[arg-type]
                both.append(a)
            elif b.subnet_of(a):  # type: ignore[arg-type]
                both.append(b)
    if not both:
        return None
    out = _reduce(both)
    # Unchanged means unchanged: keep the stored spelling and order.
    return stored if set(out) == set(_reduce(_networks(stored))) else out


def _reduce(networks: list[_Network]) -> tuple[str, ...]:
    """Without duplicates and blocks inside another one (no collapsing: two
    halves stay two entries, so a list that did not change compares equal)."""
    unique = [n for i, n in enumerate(networks) if n not in networks[:i]]
    return tuple(
        str(n)
        for n in unique
        if not any(m != n and m.version == n.version and n.subnet_of(m) for m in unique)  # type: ignore[arg-type]
    )


def _outcome(stored: Decision, current: Decision, approvals: int) -> Outcome:
    if approvals > 0 or Outcome.NEEDS_APPROVAL in (stored.outcome, current.outcome):
        return Outcome.NEEDS_APPROVAL
    if Outcome.BREAK_GLASS in (stored.outcome, current.outcome):
        return Outcome.BREAK_GLASS
    return Outcome.AUTO_APPROVED


def narrow(stored: Decision, current: Decision) -> Decision:
    """What both ``stored`` (made earlier) and ``current`` (made now) allow.

    The result never grants more than either input: see the module docstring.
    Its rule, reasons, approvers and ``policy_version`` are the current ones.
    Raises :class:`~policies.errors.PolicyChanged` (or a subclass naming the
    conflict) when nothing can be granted, and ``ValueError`` for decisions
    about different requests or a stored decision that was a denial.
    """
    if (stored.requester, stored.target) != (current.requester, current.target):
        raise ValueError("narrow: the two decisions are about different requests")
    if not stored.allowed:
        raise ValueError("narrow: the stored decision is a denial; nothing was ever granted")
    if not current.allowed:
        reasons = "; ".join(current.reasons) or "denied by policy"
        raise PolicyChanged(
            f"the policy changed since the request was decided and no longer allows it: {reasons}",
            current=current,
            stored=stored,
        )
    principals = tuple(p for p in stored.principals if p in current.principals)
    if not principals:
        raise NoPrincipalsLeft(
            f"the policy changed: none of the principals granted before ({', '.join(stored.principals)}) "
            f"is granted now ({', '.join(current.principals) or 'none'})",
            current=current,
            stored=stored,
        )
    force_command = stored.force_command
    if current.force_command is not None:
        if force_command is not None and force_command != current.force_command:
            raise ForceCommandConflict(
                f"the policy changed: the request was granted the forced command {force_command!r}, "
                f"the current policy forces {current.force_command!r}; refused rather than pick one",
                current=current,
                stored=stored,
            )
        force_command = current.force_command
    sources = _intersect_sources(stored.source_address, current.source_address)
    if sources is None:
        raise SourceAddressConflict(
            f"the policy changed: no source address is allowed both before ({', '.join(stored.source_address)}) "
            f"and now ({', '.join(current.source_address)})",
            current=current,
            stored=stored,
        )
    approvals = max(stored.approvals_required, current.approvals_required)
    return replace(
        current,
        outcome=_outcome(stored, current, approvals),
        duration=_min(stored.duration, current.duration),
        approvals_required=approvals,
        principals=principals,
        extensions=tuple(e for e in stored.extensions if e in current.extensions),
        force_command=force_command,
        source_address=sources,
        pending_ttl=_min(stored.pending_ttl, current.pending_ttl),
        claim_window=_min(stored.claim_window, current.claim_window),
        approvers_may_shorten=stored.approvers_may_shorten and current.approvers_may_shorten,
    )


def _seconds(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds())


def narrowing(before: Decision, after: Decision) -> dict[str, Any]:
    """What :func:`narrow` took away from ``before`` to give ``after``, JSON-ready.

    ``{}`` when the grant is unchanged (the rule, reasons and policy version may
    still differ). Keys appear only for what changed: ``principals_dropped``,
    ``extensions_dropped`` (lists), and ``{"from": ..., "to": ...}`` for
    ``duration_seconds``, ``force_command``, ``source_address``,
    ``approvals_required``, ``outcome``, ``pending_ttl_seconds``,
    ``claim_window_seconds`` and ``approvers_may_shorten``.
    """
    out: dict[str, Any] = {}
    dropped = [p for p in before.principals if p not in after.principals]
    if dropped:
        out["principals_dropped"] = dropped
    dropped = [e for e in before.extensions if e not in after.extensions]
    if dropped:
        out["extensions_dropped"] = dropped

    def changed(name: str, a: Any, b: Any) -> None:
        if a != b:
            out[name] = {"from": a, "to": b}

    changed("duration_seconds", _seconds(before.duration), _seconds(after.duration))
    changed("force_command", before.force_command, after.force_command)
    if set(before.source_address) != set(after.source_address):
        out["source_address"] = {
            "from": list(before.source_address),
            "to": list(after.source_address),
        }
    changed("approvals_required", before.approvals_required, after.approvals_required)
    changed("outcome", before.outcome.value, after.outcome.value)
    changed("pending_ttl_seconds", _seconds(before.pending_ttl), _seconds(after.pending_ttl))
    changed("claim_window_seconds", _seconds(before.claim_window), _seconds(after.claim_window))
    changed("approvers_may_shorten", before.approvers_may_shorten, after.approvers_may_shorten)
    return out
