"""The values a policy is made of, and the values ``decide`` works with.

All are frozen dataclasses: a loaded :class:`Policy` can be shared between
threads and requests, and nothing downstream can change a decision after the
fact. Build policies with :func:`policies.load_policy` or
:func:`policies.parse_policy`, which validate; the constructors here do not.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import Enum
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from ca.certs import DEFAULT_EXTENSIONS as CA_DEFAULT_EXTENSIONS
from ca.certs import KNOWN_EXTENSIONS

__all__ = [
    "APPROVER_AUTH",
    "EXTENSIONS",
    "DEFAULT_EXTENSIONS",
    "WEEKDAYS",
    "Outcome",
    "Target",
    "TimeWindow",
    "AutoApproval",
    "Rule",
    "Policy",
    "AccessRequest",
    "Approver",
    "Decision",
    "DecisionRecord",
    "ApprovalCheck",
]

#: Certificate extensions a rule may grant: exactly those the CA signs.
EXTENSIONS: frozenset[str] = KNOWN_EXTENSIONS
#: What a rule grants when it does not list ``extensions``.
DEFAULT_EXTENSIONS: tuple[str, ...] = CA_DEFAULT_EXTENSIONS
#: What a rule's ``approver_auth`` may ask of an approval's sign-in.
APPROVER_AUTH: tuple[str, ...] = ("any", "totp", "fresh_sso")
#: Day names for auto-approval windows, Monday first (``datetime.weekday()`` order).
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: Bumped if the meaning of a policy file ever changes; part of every version hash.
FORMAT = 1


class Outcome(Enum):
    """What the policy says about a request."""

    #: No rule allows it, or the matching rule refuses it (see the reasons).
    DENIED = "denied"
    #: Allowed once enough distinct approvers (never the requester) approve.
    NEEDS_APPROVAL = "needs_approval"
    #: Allowed now, no approver needed.
    AUTO_APPROVED = "auto_approved"
    #: Allowed now on the requester's own say-so; flagged for review afterwards.
    BREAK_GLASS = "break_glass"


@dataclass(frozen=True)
class Target:
    """A set of hosts reachable with the same certificate principals."""

    name: str
    #: Principals written into the certificate (host-scoped, e.g. ``root@prod-db``).
    principals: tuple[str, ...]
    #: Accounts on the target's hosts that accept those principals (for ``host setup``).
    login_users: tuple[str, ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "principals": list(self.principals),
            "login_users": list(self.login_users),
        }


@dataclass(frozen=True)
class TimeWindow:
    """Local hours and days of the week, in one time zone.

    ``start``/``end`` of ``None`` means all day. When ``end <= start`` the window
    runs past midnight (``22:00-06:00``). ``days`` are ``datetime.weekday()``
    numbers of the *local* date of the moment tested.
    """

    start: time | None = None
    end: time | None = None
    timezone: str = "UTC"
    days: tuple[int, ...] = tuple(range(7))

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone))
        if local.weekday() not in self.days:
            return False
        if self.start is None or self.end is None:
            return True
        t = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def describe(self) -> str:
        parts = []
        if self.start is not None and self.end is not None:
            parts.append(f"{self.start:%H:%M}-{self.end:%H:%M}")
        if tuple(self.days) != tuple(range(7)):
            parts.append(",".join(WEEKDAYS[d] for d in self.days))
        parts.append(self.timezone)
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hours": None
            if self.start is None or self.end is None
            else f"{self.start:%H:%M}-{self.end:%H:%M}",
            "days": [WEEKDAYS[d] for d in self.days],
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class AutoApproval:
    """Who is approved without an approver, for how long at most, and when."""

    max_duration: timedelta
    groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    window: TimeWindow | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_duration": int(self.max_duration.total_seconds()),
            "groups": sorted(self.groups),
            "users": sorted(self.users),
            "window": None if self.window is None else self.window.to_dict(),
        }


@dataclass(frozen=True)
class Rule:
    """Who may request which targets, for how long, and who must approve."""

    name: str
    targets: tuple[str, ...]
    max_duration: timedelta
    default_duration: timedelta
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    approvals_required: int = 1
    approver_users: frozenset[str] = frozenset()
    approver_groups: frozenset[str] = frozenset()
    auto_approve: AutoApproval | None = None
    reason_required: bool = True
    #: Compiled at load time; a reason must contain a match (``re.search``).
    reason_pattern: re.Pattern[str] | None = None
    pending_ttl: timedelta = timedelta(hours=1)
    claim_window: timedelta = timedelta(minutes=15)
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    force_command: str | None = None
    source_address: tuple[str, ...] = ()
    approvers_may_shorten: bool = True
    break_glass: bool = False
    description: str = ""
    #: How long before a certificate's valid_before its requester is warned (chat, webhook,
    #: ``jit-ssh status`` and ``jit-ssh ssh``).
    warn_before: timedelta = timedelta(minutes=5)
    #: Whether approvers may approve or deny from a chat message's buttons (Slack). Off by
    #: default: the button then opens the request's web page.
    chat_approval: bool = False
    #: The Slack channel this rule's requests are posted to (else the server's default).
    slack_channel: str | None = None
    #: What an approval must be made with: "any" sign-in, a web session that gave a TOTP
    #: code ("totp"), or a web session signed in by SSO within the last 15 minutes
    #: ("fresh_sso"). A chat button proves neither: such a rule never approves from chat.
    approver_auth: str = "any"
    #: Extensions (``jit-ssh extend``) are auto-approved while the extensions of one access
    #: add up to at most this; beyond it (or when unset) they are decided as any request.
    extension_allowance: timedelta | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "targets": list(self.targets),
            "users": sorted(self.users),
            "groups": sorted(self.groups),
            "max_duration": int(self.max_duration.total_seconds()),
            "default_duration": int(self.default_duration.total_seconds()),
            "approvals_required": self.approvals_required,
            "approver_users": sorted(self.approver_users),
            "approver_groups": sorted(self.approver_groups),
            "auto_approve": None if self.auto_approve is None else self.auto_approve.to_dict(),
            "reason_required": self.reason_required,
            "reason_pattern": None if self.reason_pattern is None else self.reason_pattern.pattern,
            "pending_ttl": int(self.pending_ttl.total_seconds()),
            "claim_window": int(self.claim_window.total_seconds()),
            "extensions": list(self.extensions),
            "force_command": self.force_command,
            "source_address": list(self.source_address),
            "approvers_may_shorten": self.approvers_may_shorten,
            "break_glass": self.break_glass,
            **self._notification_keys(),
        }

    def _notification_keys(self) -> dict[str, Any]:
        """The keys added with notifications and extensions, where a rule sets them: a
        policy that sets none keeps the version it had before they existed."""
        out: dict[str, Any] = {}
        if self.warn_before != timedelta(minutes=5):
            out["warn_before"] = int(self.warn_before.total_seconds())
        if self.chat_approval:
            out["chat_approval"] = True
        if self.slack_channel is not None:
            out["slack_channel"] = self.slack_channel
        if self.approver_auth != "any":
            out["approver_auth"] = self.approver_auth
        if self.extension_allowance is not None:
            out["extension_allowance"] = int(self.extension_allowance.total_seconds())
        return out


@dataclass(frozen=True)
class Policy:
    """A validated policy. ``version`` is the SHA-256 (hex) of :meth:`canonical_json`.

    The version depends on meaning, not layout: comments, whitespace, key order
    and the order of names in a list do not change it; any value does. Rule
    order does too, because the first matching rule wins.
    """

    targets: tuple[Target, ...]
    rules: tuple[Rule, ...]
    description: str = ""
    #: Where the policy came from (a path, or ``"<string>"``); not part of the version.
    source: str = field(default="<string>", compare=False)
    version: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
        object.__setattr__(self, "version", digest)

    def target(self, name: str) -> Target | None:
        for t in self.targets:
            if t.name == name:
                return t
        return None

    def rule(self, name: str) -> Rule | None:
        for r in self.rules:
            if r.name == name:
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        """The normalised policy: durations in seconds, every default filled in."""
        return {
            "format": FORMAT,
            "description": self.description,
            "targets": {t.name: t.to_dict() for t in self.targets},
            "rules": [r.to_dict() for r in self.rules],
        }

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class AccessRequest:
    """What someone asks for. ``duration=None`` means the matching rule's default.

    ``requester_groups`` come from the service's user records, never from the
    requester. ``submitted_at`` (aware) lets :func:`may_approve` refuse a
    request whose pending time is over.
    """

    requester: str
    target: str
    duration: timedelta | None = None
    reason: str = ""
    requester_groups: frozenset[str] = frozenset()
    break_glass: bool = False
    submitted_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.requester_groups, frozenset):
            object.__setattr__(self, "requester_groups", frozenset(self.requester_groups))


@dataclass(frozen=True)
class Approver:
    """Someone who wants to approve a request, with the groups the service knows them by."""

    name: str
    groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.groups, frozenset):
            object.__setattr__(self, "groups", frozenset(self.groups))


class DecisionRecord(TypedDict):
    """A :class:`Decision` as stored with a request (JSON): :meth:`Decision.to_record`.

    The requester and the target are stored beside it, not in it. Durations
    are whole seconds. Rows written before a key existed lack it:
    :meth:`Decision.from_record` reads a missing key as its default.
    """

    outcome: str
    allowed: bool
    reasons: list[str]
    rule: str | None
    policy_version: str
    duration_seconds: int | None
    approvals_required: int
    approver_users: list[str]
    approver_groups: list[str]
    principals: list[str]
    extensions: list[str]
    force_command: str | None
    source_address: list[str]
    pending_ttl_seconds: int | None
    claim_window_seconds: int | None
    approvers_may_shorten: bool


def _seconds(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds())


def _record_strings(record: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = record.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"the stored decision's {key} must be a list of strings")
    return tuple(value)


def _record_text(record: Mapping[str, object], key: str, *, required: bool = False) -> str | None:
    value = record.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValueError(f"the stored decision's {key} must be a string")
    return value


def _record_int(record: Mapping[str, object], key: str) -> int | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"the stored decision's {key} must be a whole number >= 0")
    return value


def _record_duration(record: Mapping[str, object], key: str) -> timedelta | None:
    value = _record_int(record, key)
    return None if value is None else timedelta(seconds=value)


@dataclass(frozen=True)
class Decision:
    """The policy's answer to one request at one moment.

    A denied decision never carries principals, extensions, options or a
    duration. ``duration`` is what was asked for (or the rule's default): the
    policy refuses a longer request, it never shortens one.
    """

    outcome: Outcome
    reasons: tuple[str, ...]
    policy_version: str
    requester: str
    target: str
    rule: str | None = None
    duration: timedelta | None = None
    approvals_required: int = 0
    approver_users: tuple[str, ...] = ()
    approver_groups: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    force_command: str | None = None
    source_address: tuple[str, ...] = ()
    pending_ttl: timedelta | None = None
    claim_window: timedelta | None = None
    approvers_may_shorten: bool = False

    @property
    def allowed(self) -> bool:
        return self.outcome is not Outcome.DENIED

    @property
    def auto_approved(self) -> bool:
        return self.outcome is Outcome.AUTO_APPROVED

    @property
    def break_glass(self) -> bool:
        return self.outcome is Outcome.BREAK_GLASS

    @property
    def flagged_for_review(self) -> bool:
        """Break-glass access is granted at once and reviewed afterwards."""
        return self.outcome is Outcome.BREAK_GLASS

    @property
    def needs_approval(self) -> bool:
        return self.outcome is Outcome.NEEDS_APPROVAL

    def critical_options(self) -> dict[str, str]:
        """OpenSSH critical options for the certificate (``source-address`` comma-joined)."""
        options: dict[str, str] = {}
        if self.force_command is not None:
            options["force-command"] = self.force_command
        if self.source_address:
            options["source-address"] = ",".join(self.source_address)
        return options

    def to_record(self) -> DecisionRecord:
        """The decision as stored with a request; :meth:`from_record` reads it back."""
        return {
            "outcome": self.outcome.value,
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "rule": self.rule,
            "policy_version": self.policy_version,
            "duration_seconds": _seconds(self.duration),
            "approvals_required": self.approvals_required,
            "approver_users": list(self.approver_users),
            "approver_groups": list(self.approver_groups),
            "principals": list(self.principals),
            "extensions": list(self.extensions),
            "force_command": self.force_command,
            "source_address": list(self.source_address),
            "pending_ttl_seconds": _seconds(self.pending_ttl),
            "claim_window_seconds": _seconds(self.claim_window),
            "approvers_may_shorten": self.approvers_may_shorten,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, object], *, requester: str, target: str) -> Decision:
        """The decision :meth:`to_record` stored (with its request's requester and
        target), as a value again. A key missing from an older row takes its default;
        a value of the wrong type raises ``ValueError`` naming the key."""
        outcome = _record_text(record, "outcome", required=True)
        version = _record_text(record, "policy_version", required=True)
        assert outcome is not None and version is not None
        try:
            kind = Outcome(outcome)
        except ValueError:
            raise ValueError(f"the stored decision's outcome {outcome!r} is unknown") from None
        shorten = record.get("approvers_may_shorten", False)
        if not isinstance(shorten, bool):
            raise ValueError("the stored decision's approvers_may_shorten must be true or false")
        return cls(
            outcome=kind,
            reasons=_record_strings(record, "reasons"),
            policy_version=version,
            requester=requester,
            target=target,
            rule=_record_text(record, "rule"),
            duration=_record_duration(record, "duration_seconds"),
            approvals_required=_record_int(record, "approvals_required") or 0,
            approver_users=_record_strings(record, "approver_users"),
            approver_groups=_record_strings(record, "approver_groups"),
            principals=_record_strings(record, "principals"),
            extensions=_record_strings(record, "extensions"),
            force_command=_record_text(record, "force_command"),
            source_address=_record_strings(record, "source_address"),
            pending_ttl=_record_duration(record, "pending_ttl_seconds"),
            claim_window=_record_duration(record, "claim_window_seconds"),
            approvers_may_shorten=shorten,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, as ``jit-ssh policy explain --json`` prints it."""
        seconds = _seconds
        return {
            "allowed": self.allowed,
            "outcome": self.outcome.value,
            "auto_approved": self.auto_approved,
            "break_glass": self.break_glass,
            "flagged_for_review": self.flagged_for_review,
            "approvals_required": self.approvals_required,
            "approvers": {"users": list(self.approver_users), "groups": list(self.approver_groups)},
            "principals": list(self.principals),
            "extensions": list(self.extensions),
            "force_command": self.force_command,
            "source_address": list(self.source_address),
            "duration_seconds": seconds(self.duration),
            "pending_ttl_seconds": seconds(self.pending_ttl),
            "claim_window_seconds": seconds(self.claim_window),
            "approvers_may_shorten": self.approvers_may_shorten,
            "requester": self.requester,
            "target": self.target,
            "rule": self.rule,
            "reasons": list(self.reasons),
            "policy_version": self.policy_version,
        }


@dataclass(frozen=True)
class ApprovalCheck:
    """Whether one approver may approve one request now, and every reason why
    (not): when refused, each refusal that applies, not just the first.
    ``own_request``: the approver is the requester (never allowed)."""

    allowed: bool
    reasons: tuple[str, ...]
    own_request: bool = False

    @property
    def reason(self) -> str:
        """The reasons as one sentence."""
        return "; ".join(self.reasons)
