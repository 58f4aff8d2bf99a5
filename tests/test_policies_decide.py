"""policies.decide / may_approve / count_approvals: table-driven, every decision field."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from policies import (
    AccessRequest,
    Approver,
    Decision,
    Outcome,
    PolicyDenied,
    count_approvals,
    decide,
    is_own_request,
    load_demo_policy,
    may_approve,
    parse_policy,
)
from server.errors import http_status

POLICY_TEXT = """\
[targets.db]
principals = ["root@db", "postgres@db"]
login_users = ["root", "postgres"]

[targets.web]
principals = ["deploy@web"]

[targets.logs]
principals = ["logs@logs"]

[[rules]]
name = "dba"
targets = ["db"]
users = ["dora"]
groups = ["dba", "dba-oncall"]
max_duration = "4h"
default_duration = "1h"
approvals_required = 2
approver_groups = ["dba-leads"]
approver_users = ["boss"]
reason_pattern = 'INC-\\d+'
extensions = ["permit-port-forwarding", "permit-pty"]
source_address = ["192.0.2.7", "10.0.0.0/8"]
force_command = "/usr/bin/psql"
approvers_may_shorten = false
pending_ttl = "30m"
claim_window = "5m"

[rules.auto_approve]
groups = ["dba-oncall"]
max_duration = "30m"
hours = "08:00-18:00"
days = ["mon", "tue", "wed", "thu", "fri"]
timezone = "Europe/Berlin"

[[rules]]
name = "eng"
targets = ["db", "web"]
groups = ["engineers"]
max_duration = "1h"
approver_groups = ["sre"]
reason_required = false

[[rules]]
name = "night"
targets = ["logs"]
users = ["night-owl"]
groups = ["support"]
max_duration = "20m"
approver_users = ["sam"]
reason_required = false
extensions = []

[rules.auto_approve]
users = ["night-owl"]
max_duration = "10m"
hours = "22:00-06:00"

[[rules]]
name = "glass"
break_glass = true
targets = ["db"]
groups = ["sre"]
max_duration = "1h"
"""

POLICY = parse_policy(POLICY_TEXT, source="test.toml")

UTC = UTC
# Monday 2 March 2026; Berlin is UTC+1 then.
MON_10_BERLIN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MON_19_BERLIN = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
MON_0759_BERLIN = datetime(2026, 3, 2, 6, 59, 59, tzinfo=UTC)
MON_0800_BERLIN = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
SAT_10_BERLIN = datetime(2026, 3, 7, 9, 0, tzinfo=UTC)
# Monday 29 June 2026; Berlin is UTC+2 (summer time): 06:30 UTC is 08:30 local.
SUMMER_0830_BERLIN = datetime(2026, 6, 29, 6, 30, tzinfo=UTC)
SUMMER_0730_BERLIN = datetime(2026, 6, 29, 5, 30, tzinfo=UTC)
NOW = MON_10_BERLIN


def req(
    user: str,
    groups: tuple[str, ...] = (),
    target: str = "db",
    minutes: float | None = 20,
    **kw: Any,
) -> AccessRequest:
    duration = None if minutes is None else timedelta(minutes=minutes)
    return AccessRequest(
        requester=user, requester_groups=frozenset(groups), target=target, duration=duration, **kw
    )


M = timedelta(minutes=1)

# (id, request, now, expected attributes, a fragment the reasons must contain)
CASES: list[tuple[str, AccessRequest, datetime, dict[str, Any], str]] = [
    (
        "unknown target",
        req("dora", target="nope", reason="INC-1"),
        NOW,
        {"outcome": Outcome.DENIED, "rule": None},
        "no target named 'nope'",
    ),
    (
        "nobody names the requester",
        req("eve", ("visitors",)),
        NOW,
        {"outcome": Outcome.DENIED, "rule": None},
        "denied by default",
    ),
    (
        "user listed directly",
        req("dora", reason="INC-42 disk full"),
        NOW,
        {
            "outcome": Outcome.NEEDS_APPROVAL,
            "rule": "dba",
            "approvals_required": 2,
            "duration": 20 * M,
        },
        "user 'dora'",
    ),
    (
        "group member",
        req("dan", ("dba",), reason="INC-42"),
        NOW,
        {"outcome": Outcome.NEEDS_APPROVAL, "rule": "dba", "approvals_required": 2},
        "group 'dba'",
    ),
    (
        "reason required by pattern",
        req("dan", ("dba",)),
        NOW,
        {"outcome": Outcome.DENIED, "rule": "dba"},
        "requires a reason",
    ),
    (
        "reason must match (re.search)",
        req("dan", ("dba",), reason="disk full"),
        NOW,
        {"outcome": Outcome.DENIED, "rule": "dba"},
        "does not match the pattern",
    ),
    (
        "reason matches anywhere",
        req("dan", ("dba",), reason="see INC-7, disk full"),
        NOW,
        {"outcome": Outcome.NEEDS_APPROVAL},
        "needs 2 approvals",
    ),
    (
        "blank reason is no reason",
        req("dan", ("dba",), reason="   "),
        NOW,
        {"outcome": Outcome.DENIED},
        "requires a reason",
    ),
    (
        "over the maximum is refused, not shortened",
        req("dan", ("dba",), minutes=241, reason="INC-1"),
        NOW,
        {"outcome": Outcome.DENIED, "rule": "dba", "duration": None},
        "4h1m is over the maximum of 4h",
    ),
    (
        "exactly the maximum",
        req("dan", ("dba",), minutes=240, reason="INC-1"),
        NOW,
        {"outcome": Outcome.NEEDS_APPROVAL, "duration": 240 * M},
        "rule 'dba' applies",
    ),
    (
        "no duration: the rule's default",
        req("dan", ("dba",), minutes=None, reason="INC-1"),
        NOW,
        {"outcome": Outcome.NEEDS_APPROVAL, "duration": 60 * M},
        "default of 1h",
    ),
    (
        "auto-approved inside the window",
        req("olga", ("dba-oncall",), reason="INC-1"),
        MON_10_BERLIN,
        {"outcome": Outcome.AUTO_APPROVED, "approvals_required": 0, "duration": 20 * M},
        "auto-approved: group 'dba-oncall'",
    ),
    (
        "auto window start is inclusive",
        req("olga", ("dba-oncall",), reason="INC-1"),
        MON_0800_BERLIN,
        {"outcome": Outcome.AUTO_APPROVED},
        "auto-approved",
    ),
    (
        "auto window: just before start",
        req("olga", ("dba-oncall",), reason="INC-1"),
        MON_0759_BERLIN,
        {"outcome": Outcome.NEEDS_APPROVAL, "approvals_required": 2},
        "outside the auto-approval window",
    ),
    (
        "auto window: evening",
        req("olga", ("dba-oncall",), reason="INC-1"),
        MON_19_BERLIN,
        {"outcome": Outcome.NEEDS_APPROVAL},
        "outside the auto-approval window (08:00-18:00 mon,tue,wed,thu,fri Europe/Berlin)",
    ),
    (
        "auto window: weekend",
        req("olga", ("dba-oncall",), reason="INC-1"),
        SAT_10_BERLIN,
        {"outcome": Outcome.NEEDS_APPROVAL},
        "outside the auto-approval window",
    ),
    (
        "auto window follows summer time",
        req("olga", ("dba-oncall",), reason="INC-1"),
        SUMMER_0830_BERLIN,
        {"outcome": Outcome.AUTO_APPROVED},
        "auto-approved",
    ),
    (
        "auto window: summer 07:30 local",
        req("olga", ("dba-oncall",), reason="INC-1"),
        SUMMER_0730_BERLIN,
        {"outcome": Outcome.NEEDS_APPROVAL},
        "outside",
    ),
    (
        "auto cap is inclusive",
        req("olga", ("dba-oncall",), minutes=30, reason="INC-1"),
        NOW,
        {"outcome": Outcome.AUTO_APPROVED, "duration": 30 * M},
        "within 30m",
    ),
    (
        "over the auto cap waits for approvers",
        req("olga", ("dba-oncall",), minutes=31, reason="INC-1"),
        NOW,
        {"outcome": Outcome.NEEDS_APPROVAL, "approvals_required": 2, "duration": 31 * M},
        "over the auto-approval maximum of 30m",
    ),
    (
        "auto-approval needs the reason too",
        req("olga", ("dba-oncall",)),
        NOW,
        {"outcome": Outcome.DENIED},
        "requires a reason",
    ),
    (
        "not in the auto group",
        req("dan", ("dba",), reason="INC-1"),
        NOW,
        {"outcome": Outcome.NEEDS_APPROVAL},
        "not auto-approved: only group dba-oncall may be",
    ),
    (
        "second rule for other groups",
        req("erin", ("engineers",), target="web"),
        NOW,
        {
            "outcome": Outcome.NEEDS_APPROVAL,
            "rule": "eng",
            "approvals_required": 1,
            "principals": ("deploy@web",),
        },
        "needs 1 approval from group sre",
    ),
    (
        "first match wins, no fall-through",
        req("erin", ("engineers", "dba")),
        NOW,
        {"outcome": Outcome.DENIED, "rule": "dba"},
        "requires a reason",
    ),
    (
        "first match wins over a longer maximum",
        req("erin", ("engineers", "dba"), minutes=120, reason="INC-9"),
        NOW,
        {"outcome": Outcome.NEEDS_APPROVAL, "rule": "dba"},
        "rule 'dba' applies",
    ),
    (
        "rule covers only its targets",
        req("dan", ("dba",), target="web", reason="INC-1"),
        NOW,
        {"outcome": Outcome.DENIED, "rule": None},
        "no rule lets 'dan' (groups: dba)",
    ),
    (
        "overnight window, late",
        req("night-owl", target="logs", minutes=10),
        datetime(2026, 3, 2, 23, 0, tzinfo=UTC),
        {"outcome": Outcome.AUTO_APPROVED, "rule": "night", "extensions": ()},
        "user 'night-owl'",
    ),
    (
        "overnight window, early",
        req("night-owl", target="logs", minutes=10),
        datetime(2026, 3, 3, 5, 59, tzinfo=UTC),
        {"outcome": Outcome.AUTO_APPROVED},
        "auto-approved",
    ),
    (
        "overnight window end is exclusive",
        req("night-owl", target="logs", minutes=10),
        datetime(2026, 3, 3, 6, 0, tzinfo=UTC),
        {"outcome": Outcome.NEEDS_APPROVAL, "approver_users": ("sam",), "approver_groups": ()},
        "user sam",
    ),
    (
        "overnight window, noon",
        req("night-owl", target="logs", minutes=10),
        datetime(2026, 3, 3, 12, 0, tzinfo=UTC),
        {"outcome": Outcome.NEEDS_APPROVAL},
        "outside the auto-approval window (22:00-06:00 UTC)",
    ),
    (
        "auto by user only",
        req("sue", ("support",), target="logs", minutes=10),
        datetime(2026, 3, 2, 23, 0, tzinfo=UTC),
        {"outcome": Outcome.NEEDS_APPROVAL},
        "only user night-owl may be",
    ),
    (
        "break-glass",
        req("sal", ("sre",), reason="INC-1 all approvers asleep", break_glass=True),
        NOW,
        {
            "outcome": Outcome.BREAK_GLASS,
            "rule": "glass",
            "approvals_required": 0,
            "principals": ("postgres@db", "root@db"),
        },
        "flagged for review",
    ),
    (
        "break-glass needs a reason",
        req("sal", ("sre",), break_glass=True),
        NOW,
        {"outcome": Outcome.DENIED, "rule": "glass"},
        "requires a reason",
    ),
    (
        "break-glass over its maximum",
        req("sal", ("sre",), minutes=61, reason="x", break_glass=True),
        NOW,
        {"outcome": Outcome.DENIED, "rule": "glass"},
        "over the maximum of 1h",
    ),
    (
        "break-glass only matches break-glass rules",
        req("dan", ("dba",), reason="INC-1", break_glass=True),
        NOW,
        {"outcome": Outcome.DENIED, "rule": None},
        "no break-glass rule",
    ),
    (
        "break-glass rules never match normal requests",
        req("sal", ("sre",), reason="x"),
        NOW,
        {"outcome": Outcome.DENIED, "rule": None},
        "no rule lets 'sal'",
    ),
    (
        "one second is fine",
        req("erin", ("engineers",), target="web", minutes=1 / 60),
        NOW,
        {"outcome": Outcome.NEEDS_APPROVAL, "duration": timedelta(seconds=1)},
        "rule 'eng'",
    ),
    (
        "zero duration",
        req("erin", ("engineers",), target="web", minutes=0),
        NOW,
        {"outcome": Outcome.DENIED, "rule": None},
        "at least 1s",
    ),
    (
        "negative duration",
        req("erin", ("engineers",), target="web", minutes=-5),
        NOW,
        {"outcome": Outcome.DENIED},
        "at least 1s",
    ),
    (
        "fractional seconds",
        req("erin", ("engineers",), target="web", minutes=0.5 / 60),
        NOW,
        {"outcome": Outcome.DENIED},
        "whole number of seconds",
    ),
    (
        "empty requester",
        req("", ("engineers",), target="web"),
        NOW,
        {"outcome": Outcome.DENIED},
        "no name",
    ),
    (
        "reason too long",
        req("erin", ("engineers",), target="web", reason="x" * 1001),
        NOW,
        {"outcome": Outcome.DENIED},
        "longer than 1000",
    ),
    (
        "reason with a newline",
        req("erin", ("engineers",), target="web", reason="a\nb"),
        NOW,
        {"outcome": Outcome.DENIED},
        "one line",
    ),
    (
        "names are case-sensitive",
        req("Dora", reason="INC-1"),
        NOW,
        {"outcome": Outcome.DENIED},
        "denied by default",
    ),
]


@pytest.mark.parametrize(
    ("request_", "now", "expected", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(
    request_: AccessRequest, now: datetime, expected: dict[str, Any], reason: str
) -> None:
    decision = decide(POLICY, request_, now)
    for name, value in expected.items():
        assert getattr(decision, name) == value, (name, decision)
    assert any(reason in r for r in decision.reasons), decision.reasons
    assert decision.policy_version == POLICY.version
    assert decision.requester == request_.requester and decision.target == request_.target
    _check_invariants(decision)


def _check_invariants(decision: Decision) -> None:
    assert decision.reasons
    if not decision.allowed:
        assert decision.principals == () and decision.extensions == ()
        assert decision.duration is None and decision.approvals_required == 0
        assert decision.force_command is None and decision.source_address == ()
        assert decision.pending_ttl is None and decision.claim_window is None
    else:
        assert decision.rule is not None and decision.principals
        assert decision.duration is not None and decision.duration >= timedelta(seconds=1)
        assert (decision.approvals_required > 0) == (decision.outcome is Outcome.NEEDS_APPROVAL)


def test_every_field_of_an_allowed_decision() -> None:
    decision = decide(POLICY, req("dora", minutes=90, reason="INC-1"), NOW)
    assert decision == Decision(
        outcome=Outcome.NEEDS_APPROVAL,
        reasons=decision.reasons,
        policy_version=POLICY.version,
        requester="dora",
        target="db",
        rule="dba",
        duration=timedelta(minutes=90),
        approvals_required=2,
        approver_users=("boss",),
        approver_groups=("dba-leads",),
        principals=("postgres@db", "root@db"),
        extensions=("permit-port-forwarding", "permit-pty"),
        force_command="/usr/bin/psql",
        source_address=("10.0.0.0/8", "192.0.2.7/32"),
        pending_ttl=timedelta(minutes=30),
        claim_window=timedelta(minutes=5),
        approvers_may_shorten=False,
    )
    assert decision.allowed and decision.needs_approval
    assert (
        not decision.auto_approved and not decision.break_glass and not decision.flagged_for_review
    )
    assert decision.critical_options() == {
        "force-command": "/usr/bin/psql",
        "source-address": "10.0.0.0/8,192.0.2.7/32",
    }


def test_flags_follow_the_outcome() -> None:
    auto = decide(POLICY, req("olga", ("dba-oncall",), reason="INC-1"), NOW)
    assert auto.auto_approved and auto.allowed and not auto.flagged_for_review
    glass = decide(POLICY, req("sal", ("sre",), reason="x", break_glass=True), NOW)
    assert glass.break_glass and glass.flagged_for_review and not glass.auto_approved
    assert glass.critical_options() == {}
    assert glass.extensions == ("permit-pty",)


def test_to_dict_is_json_ready() -> None:
    import json

    body = decide(POLICY, req("dora", reason="INC-1"), NOW).to_dict()
    assert json.loads(json.dumps(body)) == body
    assert body["allowed"] is True and body["auto_approved"] is False
    assert body["approvals_required"] == 2
    assert body["approvers"] == {"users": ["boss"], "groups": ["dba-leads"]}
    assert body["principals"] == ["postgres@db", "root@db"]
    assert body["duration_seconds"] == 1200
    assert body["rule"] == "dba"
    assert body["policy_version"] == POLICY.version
    assert all(isinstance(r, str) for r in body["reasons"])


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(POLICY, req("dora", reason="INC-1"), datetime(2026, 3, 2, 9, 0))


def test_now_in_another_zone_is_the_same_moment() -> None:
    other = NOW.astimezone(timezone(timedelta(hours=-7)))
    assert decide(POLICY, req("olga", ("dba-oncall",), reason="INC-1"), other).auto_approved


def test_policy_denied_carries_the_decision() -> None:
    decision = decide(POLICY, req("eve"), NOW)
    err = PolicyDenied(decision)
    assert err.code == "policy_denied" and http_status(err) == 403
    assert err.decision is decision
    assert "denied by default" in str(err)


# -- the demo policy, as the issue states it ------------------------------------

DEMO = load_demo_policy()


@pytest.mark.parametrize(
    ("groups", "minutes", "outcome", "approvals"),
    [
        (("engineers",), 30, Outcome.NEEDS_APPROVAL, 1),
        (("engineers",), 60, Outcome.NEEDS_APPROVAL, 1),
        (("engineers",), 61, Outcome.DENIED, 0),
        (("engineers",), 1 / 60, Outcome.NEEDS_APPROVAL, 1),
        (("oncall",), 15, Outcome.AUTO_APPROVED, 0),
        (("oncall",), 1 / 60, Outcome.AUTO_APPROVED, 0),
        (("oncall",), 16, Outcome.NEEDS_APPROVAL, 1),
        (("engineers", "oncall"), 10, Outcome.AUTO_APPROVED, 0),
        (("approvers",), 10, Outcome.DENIED, 0),
        ((), 10, Outcome.DENIED, 0),
    ],
)
def test_demo_policy(
    groups: tuple[str, ...], minutes: float, outcome: Outcome, approvals: int
) -> None:
    decision = decide(DEMO, req("alice", groups, target="demo", minutes=minutes), NOW)
    assert decision.outcome is outcome, decision.reasons
    assert decision.approvals_required == approvals
    if decision.allowed:
        assert decision.principals == ("jit-demo@demo",)
        assert decision.approver_groups == ("approvers",)


def test_demo_default_duration_is_15_minutes() -> None:
    decision = decide(DEMO, req("alice", ("oncall",), target="demo", minutes=None), NOW)
    assert decision.auto_approved and decision.duration == timedelta(minutes=15)


# -- may_approve and count_approvals ----------------------------------------------

PENDING = req("dan", ("dba",), reason="INC-1", minutes=60)
ENG = req("erin", ("engineers",), target="web", minutes=60)

# (id, request, approver, now, duration, allowed, fragment)
APPROVALS: list[tuple[str, AccessRequest, Approver, datetime, timedelta | None, bool, str]] = [
    (
        "approver by group",
        PENDING,
        Approver("lee", frozenset({"dba-leads"})),
        NOW,
        None,
        True,
        "group 'dba-leads'",
    ),
    ("approver by user", PENDING, Approver("boss"), NOW, None, True, "user 'boss'"),
    (
        "not an approver",
        PENDING,
        Approver("erin", frozenset({"engineers"})),
        NOW,
        None,
        False,
        "not an approver",
    ),
    (
        "requester in the approver group",
        replace(PENDING, requester_groups=frozenset({"dba", "dba-leads"})),
        Approver("dan", frozenset({"dba-leads"})),
        NOW,
        None,
        False,
        "never approve their own",
    ),
    (
        "requester listed as approver user",
        req("boss", ("dba",), reason="INC-1"),
        Approver("boss"),
        NOW,
        None,
        False,
        "never approve their own",
    ),
    (
        "request the policy denies",
        replace(PENDING, duration=timedelta(hours=5)),
        Approver("boss"),
        NOW,
        None,
        False,
        "does not allow this request",
    ),
    (
        "break-glass needs no approver",
        req("sal", ("sre",), reason="x", break_glass=True),
        Approver("boss"),
        NOW,
        None,
        False,
        "self-approved",
    ),
    (
        "still pending",
        replace(PENDING, submitted_at=NOW - timedelta(minutes=29)),
        Approver("boss"),
        NOW,
        None,
        True,
        "may approve",
    ),
    (
        "pending too long",
        replace(PENDING, submitted_at=NOW - timedelta(minutes=30)),
        Approver("boss"),
        NOW,
        None,
        False,
        "expired",
    ),
    (
        "same duration is fine without shortening",
        PENDING,
        Approver("boss"),
        NOW,
        timedelta(hours=1),
        True,
        "may approve",
    ),
    (
        "rule forbids shortening",
        PENDING,
        Approver("boss"),
        NOW,
        timedelta(minutes=30),
        False,
        "does not let approvers shorten",
    ),
    (
        "shortening allowed",
        ENG,
        Approver("sara", frozenset({"sre"})),
        NOW,
        timedelta(minutes=5),
        True,
        "may approve",
    ),
    (
        "never lengthen",
        ENG,
        Approver("sara", frozenset({"sre"})),
        NOW,
        timedelta(minutes=61),
        False,
        "never lengthen",
    ),
    (
        "zero duration",
        ENG,
        Approver("sara", frozenset({"sre"})),
        NOW,
        timedelta(0),
        False,
        "at least 1s",
    ),
]


@pytest.mark.parametrize(
    ("request_", "approver", "now", "duration", "allowed", "fragment"),
    [a[1:] for a in APPROVALS],
    ids=[a[0] for a in APPROVALS],
)
def test_may_approve(
    request_: AccessRequest,
    approver: Approver,
    now: datetime,
    duration: timedelta | None,
    allowed: bool,
    fragment: str,
) -> None:
    check = may_approve(POLICY, request_, approver, now, duration=duration)
    assert check.allowed is allowed, check.reason
    assert fragment in check.reason


def test_auto_approvable_requests_may_still_be_approved_by_hand() -> None:
    # Harmless, and it keeps a request that was pending (outside the window) approvable later.
    request = req("olga", ("dba-oncall",), reason="INC-1")
    assert decide(POLICY, request, NOW).auto_approved
    assert may_approve(POLICY, request, Approver("boss"), NOW).allowed


def test_count_approvals_counts_distinct_eligible_approvers_never_the_requester() -> None:
    request = replace(PENDING, requester_groups=frozenset({"dba", "dba-leads"}))
    approvers = [
        Approver("dan", frozenset({"dba-leads"})),  # the requester
        Approver("lee", frozenset({"dba-leads"})),
        Approver("lee", frozenset({"dba-leads"})),  # twice
        Approver("erin", frozenset({"engineers"})),  # not an approver
        Approver("boss"),
    ]
    assert count_approvals(POLICY, request, approvers, NOW) == 2
    assert count_approvals(POLICY, request, approvers[:1], NOW) == 0
    assert count_approvals(POLICY, request, [], NOW) == 0


def test_may_approve_gives_every_reason_that_applies() -> None:
    # The requester, outside the approver groups, after the pending time: three refusals.
    late = replace(PENDING, submitted_at=NOW - timedelta(days=30))
    check = may_approve(POLICY, late, Approver("dan", frozenset({"dba"})), NOW)
    assert not check.allowed and check.own_request
    assert len(check.reasons) == 3, check.reasons
    assert "their own request" in check.reasons[0]
    assert "is not an approver" in check.reasons[1]
    assert "the request expired" in check.reasons[2]
    assert check.reason == "; ".join(check.reasons)


def test_is_own_request() -> None:
    assert is_own_request(PENDING, Approver("dan"))
    assert not is_own_request(PENDING, Approver("lee"))


# -- the stored decision ----------------------------------------------------------


def test_decision_record_round_trips() -> None:
    d = decide(POLICY, PENDING, NOW)
    record = d.to_record()
    assert json.loads(json.dumps(record)) == record
    assert Decision.from_record(record, requester=d.requester, target=d.target) == d


def test_a_record_without_newer_keys_reads_with_their_defaults() -> None:
    old = {"outcome": "needs_approval", "policy_version": "v1", "duration_seconds": 60}
    d = Decision.from_record(old, requester="dan", target="db")
    assert d.duration == timedelta(minutes=1) and d.claim_window is None
    assert d.principals == () and d.approvals_required == 0 and not d.approvers_may_shorten


@pytest.mark.parametrize(
    ("record", "key"),
    [
        ({"policy_version": "v1"}, "outcome"),
        ({"outcome": "maybe", "policy_version": "v1"}, "outcome"),
        ({"outcome": "denied"}, "policy_version"),
        ({"outcome": "denied", "policy_version": "v1", "principals": "root"}, "principals"),
        ({"outcome": "denied", "policy_version": "v1", "duration_seconds": "60"}, "duration"),
        ({"outcome": "denied", "policy_version": "v1", "approvals_required": True}, "approvals"),
    ],
)
def test_a_malformed_record_is_refused_naming_the_key(record: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        Decision.from_record(record, requester="dan", target="db")
