"""Errors raised by the policy library.

A policy that cannot be loaded raises :class:`InvalidPolicy`, which carries every
problem found (not just the first), each naming the file, the line where known
and the field. A request the policy refuses is *not* an error: :func:`decide`
returns a :class:`~policies.Decision` whose ``reasons`` say why. Callers that
want an exception for a refusal (an API handler, say) raise
:class:`PolicyDenied` from that decision::

    JitSshError                     (ca.errors)
    ├── InvalidPolicy     code "invalid_policy"   unreadable, malformed or invalid policy file
    └── PolicyDenied    code "policy_denied"    the policy refuses this request
        └── PolicyChanged           "policy_changed"           the policy changed while the
            │                                                  request was in flight and now refuses it
            ├── NoPrincipalsLeft        "no_principals_left"       no principal both versions allow
            ├── ForceCommandConflict    "force_command_conflict"   the versions force different commands
            ├── SourceAddressConflict   "source_address_conflict"  no source address both versions allow
            └── MoreApprovalsRequired   "more_approvals_required"  the current policy needs more approvals
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ca.errors import JitSshError

if TYPE_CHECKING:  # pragma: no cover
    from .model import Decision

__all__ = [
    "PolicyProblem",
    "InvalidPolicy",
    "PolicyDenied",
    "PolicyChanged",
    "NoPrincipalsLeft",
    "ForceCommandConflict",
    "SourceAddressConflict",
    "MoreApprovalsRequired",
]


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy file.

    ``line`` is 1-based, or ``None`` when it cannot be told (a key that is
    missing altogether is reported at the line of the table that lacks it).
    ``field`` is a dotted path such as ``rules[0].auto_approve.max_duration``.
    """

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class InvalidPolicy(JitSshError):
    """The policy file could not be read, parsed or validated.

    ``problems`` lists everything found; ``file``, ``line`` and ``field`` repeat
    the first problem's so that a one-line report still points somewhere useful.
    """

    code = "invalid_policy"

    def __init__(self, problems: Iterable[PolicyProblem]) -> None:
        self.problems: tuple[PolicyProblem, ...] = tuple(problems)
        if not self.problems:
            raise ValueError("InvalidPolicy needs at least one problem")
        first = self.problems[0]
        message = str(first)
        if len(self.problems) > 1:
            message += f" (and {len(self.problems) - 1} more problem{'s' if len(self.problems) > 2 else ''})"
        super().__init__(message, field=first.field)
        self.file = first.file
        self.line = first.line


class PolicyDenied(JitSshError):
    """The policy refuses a request; ``decision`` holds the full answer and its reasons."""

    code = "policy_denied"

    def __init__(self, decision: Decision) -> None:
        reasons = "; ".join(decision.reasons) or "denied by policy"
        super().__init__(f"request denied by policy: {reasons}")
        self.decision = decision


class PolicyChanged(PolicyDenied):
    """A request in flight can no longer be granted: the policy changed since it was decided.

    Raised by :func:`policies.narrow` (and by the service at a fetch that lacks
    approvals the current policy requires). ``decision`` is the *current*
    decision (its reasons say why), ``stored`` the one made when the request was
    submitted (or last narrowed).
    """

    code = "policy_changed"

    def __init__(self, message: str, *, current: Decision, stored: Decision) -> None:
        JitSshError.__init__(self, message)
        self.decision = current
        self.stored = stored


class NoPrincipalsLeft(PolicyChanged):
    """No principal is allowed by both the stored and the current decision."""

    code = "no_principals_left"


class ForceCommandConflict(PolicyChanged):
    """The stored and the current decision force two different commands."""

    code = "force_command_conflict"


class SourceAddressConflict(PolicyChanged):
    """The stored and the current decision restrict source addresses to disjoint sets."""

    code = "source_address_conflict"


class MoreApprovalsRequired(PolicyChanged):
    """The current policy needs more approvals than the request was given."""

    code = "more_approvals_required"
