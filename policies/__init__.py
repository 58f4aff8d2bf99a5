"""Policies as code: who may reach which targets, for how long, approved by whom.

A pure library (standard library and :mod:`ca` only): no clock, no I/O beyond
reading the policy file you name. The file format is TOML and is described in
``docs/policies.md``; ``policies/demo.toml`` is a complete, commented example.

    >>> from datetime import datetime, timedelta, timezone
    >>> policy = load_demo_policy()
    >>> request = AccessRequest(requester="alice", requester_groups={"oncall"},
    ...                         target="demo", duration=timedelta(minutes=10))
    >>> decide(policy, request, datetime(2026, 1, 1, tzinfo=timezone.utc)).outcome
    <Outcome.AUTO_APPROVED: 'auto_approved'>

Errors (see :mod:`policies.errors`)::

    JitSshError                     (ca.errors)
    ├── InvalidPolicy     "invalid_policy"   every problem in a policy file, each with file:line: field
    └── PolicyDenied    "policy_denied"    raise it from a denied Decision if you need an exception
        └── PolicyChanged   "policy_changed"   a request in flight that the current policy refuses
            (NoPrincipalsLeft, ForceCommandConflict, SourceAddressConflict, MoreApprovalsRequired)

A request in flight (approved or fetched after the policy changed) is decided
again with :func:`redecide` and granted what :func:`narrow` leaves of both
decisions; :func:`narrowing` says what was taken away.
"""

from __future__ import annotations

from .decide import MAX_REASON_LENGTH, count_approvals, decide, is_own_request, may_approve
from .errors import (
    ForceCommandConflict,
    InvalidPolicy,
    MoreApprovalsRequired,
    NoPrincipalsLeft,
    PolicyChanged,
    PolicyDenied,
    PolicyProblem,
    SourceAddressConflict,
)
from .loader import demo_policy_path, load_demo_policy, load_policy, parse_policy
from .model import (
    APPROVER_AUTH,
    DEFAULT_EXTENSIONS,
    EXTENSIONS,
    AccessRequest,
    ApprovalCheck,
    Approver,
    AutoApproval,
    Decision,
    DecisionRecord,
    Outcome,
    Policy,
    Rule,
    Target,
    TimeWindow,
)
from .narrow import narrow, narrowing, redecide

__all__ = [
    # loading
    "load_policy",
    "parse_policy",
    "demo_policy_path",
    "load_demo_policy",
    # deciding
    "decide",
    "may_approve",
    "is_own_request",
    "count_approvals",
    # requests in flight
    "redecide",
    "narrow",
    "narrowing",
    # values
    "Policy",
    "Target",
    "Rule",
    "AutoApproval",
    "TimeWindow",
    "AccessRequest",
    "Approver",
    "Decision",
    "DecisionRecord",
    "Outcome",
    "ApprovalCheck",
    # errors
    "InvalidPolicy",
    "PolicyProblem",
    "PolicyDenied",
    "PolicyChanged",
    "NoPrincipalsLeft",
    "ForceCommandConflict",
    "SourceAddressConflict",
    "MoreApprovalsRequired",
    # limits and constants
    "EXTENSIONS",
    "DEFAULT_EXTENSIONS",
    "APPROVER_AUTH",
    "MAX_REASON_LENGTH",
]
