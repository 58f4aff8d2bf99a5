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
    ├── PolicyError     "invalid_policy"   every problem in a policy file, each with file:line: field
    └── PolicyDenied    "policy_denied"    raise it from a denied Decision if you need an exception
"""

from __future__ import annotations

from .decide import MAX_REASON_LENGTH, count_approvals, decide, may_approve
from .errors import PolicyDenied, PolicyError, PolicyProblem
from .loader import demo_policy_path, load_demo_policy, load_policy, parse_policy
from .model import (
    DEFAULT_EXTENSIONS,
    EXTENSIONS,
    AccessRequest,
    ApprovalCheck,
    Approver,
    AutoApproval,
    Decision,
    Outcome,
    Policy,
    Rule,
    Target,
    TimeWindow,
)

__all__ = [
    # loading
    "load_policy",
    "parse_policy",
    "demo_policy_path",
    "load_demo_policy",
    # deciding
    "decide",
    "may_approve",
    "count_approvals",
    # values
    "Policy",
    "Target",
    "Rule",
    "AutoApproval",
    "TimeWindow",
    "AccessRequest",
    "Approver",
    "Decision",
    "Outcome",
    "ApprovalCheck",
    # errors
    "PolicyError",
    "PolicyProblem",
    "PolicyDenied",
    # limits and constants
    "EXTENSIONS",
    "DEFAULT_EXTENSIONS",
    "MAX_REASON_LENGTH",
]
