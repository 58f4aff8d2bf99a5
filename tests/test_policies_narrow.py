"""policies.narrow / redecide / narrowing: a request in flight gets at most what both decisions allow."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import (
    EXTENSIONS,
    AccessRequest,
    Decision,
    ForceCommandConflict,
    NoPrincipalsLeft,
    Outcome,
    PolicyChanged,
    PolicyDenied,
    SourceAddressConflict,
    decide,
    narrow,
    narrowing,
    parse_policy,
    redecide,
)
from server.errors import http_status

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

POLICY = """
[targets.prod-db]
principals = ["root@prod-db", "postgres@prod-db"]

[[rules]]
name = "prod"
targets = ["prod-db"]
groups = ["engineers"]
max_duration = "{max}"
default_duration = "30m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = false
"""


def _decision(**kw: object) -> Decision:
    base: dict[str, object] = dict(
        outcome=Outcome.NEEDS_APPROVAL,
        reasons=("ok",),
        policy_version="v1",
        requester="alice",
        target="prod-db",
        rule="prod",
        duration=timedelta(hours=1),
        approvals_required=1,
        principals=("root@prod-db", "postgres@prod-db"),
        extensions=("permit-pty", "permit-port-forwarding"),
        pending_ttl=timedelta(hours=1),
        claim_window=timedelta(minutes=15),
        approvers_may_shorten=True,
    )
    base.update(kw)
    return Decision(**base)  # type: ignore[arg-type]


# ---- examples ---------------------------------------------------------------------------------


def test_the_reported_case_root_and_forwarding_removed() -> None:
    stored = _decision()
    current = _decision(
        policy_version="v2", principals=("postgres@prod-db",), extensions=("permit-pty",)
    )
    out = narrow(stored, current)
    assert out.principals == ("postgres@prod-db",)
    assert out.extensions == ("permit-pty",)
    assert out.policy_version == "v2"
    assert narrowing(stored, out) == {
        "principals_dropped": ["root@prod-db"],
        "extensions_dropped": ["permit-port-forwarding"],
    }


def test_unchanged_says_so() -> None:
    stored = _decision()
    out = narrow(stored, replace(stored, policy_version="v2", reasons=("other",)))
    assert narrowing(stored, out) == {}
    assert out.principals == stored.principals and out.extensions == stored.extensions


def test_current_denial_refuses_with_its_reasons() -> None:
    denied = Decision(
        outcome=Outcome.DENIED,
        reasons=("there is no target named 'prod-db'",),
        policy_version="v2",
        requester="alice",
        target="prod-db",
    )
    with pytest.raises(PolicyChanged) as e:
        narrow(_decision(), denied)
    assert e.value.code == "policy_changed" and isinstance(e.value, PolicyDenied)
    assert http_status(e.value) == 403
    assert "no target named" in str(e.value) and e.value.decision is denied


def test_no_common_principal_refuses() -> None:
    with pytest.raises(NoPrincipalsLeft) as e:
        narrow(_decision(principals=("root@prod-db",)), _decision(principals=("postgres@prod-db",)))
    assert e.value.code == "no_principals_left"


@pytest.mark.parametrize(
    ("stored", "current", "expected"),
    [
        (None, None, None),
        ("/bin/a", None, "/bin/a"),
        (None, "/bin/b", "/bin/b"),
        ("/bin/a", "/bin/a", "/bin/a"),
    ],
)
def test_force_command_one_side_wins(
    stored: str | None, current: str | None, expected: str | None
) -> None:
    out = narrow(_decision(force_command=stored), _decision(force_command=current))
    assert out.force_command == expected


def test_two_force_commands_refuse() -> None:
    with pytest.raises(ForceCommandConflict) as e:
        narrow(_decision(force_command="/usr/bin/uptime"), _decision(force_command="/usr/bin/psql"))
    assert e.value.code == "force_command_conflict"


@pytest.mark.parametrize(
    ("stored", "current", "expected"),
    [
        ((), (), ()),
        (("10.0.0.0/8",), (), ("10.0.0.0/8",)),
        ((), ("192.0.2.0/24",), ("192.0.2.0/24",)),
        (("10.0.0.0/8",), ("10.1.0.0/16", "192.0.2.0/24"), ("10.1.0.0/16",)),
        (
            ("10.1.2.3/32", "2001:db8::/32"),
            ("10.0.0.0/8", "2001:db8:1::/48"),
            ("10.1.2.3/32", "2001:db8:1::/48"),
        ),
        (("10.0.0.0/9", "10.128.0.0/9"), ("10.0.0.0/8",), ("10.0.0.0/9", "10.128.0.0/9")),
    ],
)
def test_source_address_intersection(
    stored: tuple[str, ...], current: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    out = narrow(_decision(source_address=stored), _decision(source_address=current))
    assert set(out.source_address) == set(expected)


def test_disjoint_source_addresses_refuse() -> None:
    with pytest.raises(SourceAddressConflict) as e:
        narrow(
            _decision(source_address=("10.0.0.0/8",)),
            _decision(source_address=("192.0.2.0/24", "2001:db8::/32")),
        )
    assert e.value.code == "source_address_conflict"


def test_approvals_duration_and_deadlines_take_the_stricter() -> None:
    stored = _decision(
        outcome=Outcome.AUTO_APPROVED, approvals_required=0, duration=timedelta(minutes=15)
    )
    current = _decision(
        approvals_required=2,
        duration=timedelta(minutes=10),
        claim_window=timedelta(minutes=5),
        pending_ttl=timedelta(hours=2),
        approvers_may_shorten=False,
    )
    out = narrow(stored, current)
    assert out.outcome is Outcome.NEEDS_APPROVAL and out.approvals_required == 2
    assert out.duration == timedelta(minutes=10)
    assert out.claim_window == timedelta(minutes=5) and out.pending_ttl == timedelta(hours=1)
    assert out.approvers_may_shorten is False
    changes = narrowing(stored, out)
    assert changes["duration_seconds"] == {"from": 900, "to": 600}
    assert changes["approvals_required"] == {"from": 0, "to": 2}
    assert changes["outcome"] == {"from": "auto_approved", "to": "needs_approval"}


def test_different_requests_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        narrow(_decision(), _decision(target="other"))


def test_redecide_cuts_a_duration_over_the_new_maximum() -> None:
    policy = parse_policy(POLICY.format(max="1h"))
    request = AccessRequest(
        requester="alice",
        target="prod-db",
        duration=timedelta(hours=2),
        requester_groups={"engineers"},
    )
    assert not decide(policy, request, NOW).allowed  # a new request for 2h is refused...
    again = redecide(policy, request, NOW)  # ...one in flight is cut to the maximum
    assert again.allowed and again.duration == timedelta(hours=1)
    assert "cut to 1h" in again.reasons[-1]
    inside = replace(request, duration=timedelta(minutes=20))
    assert redecide(policy, inside, NOW) == decide(policy, inside, NOW)
    # Anything else that refuses still refuses.
    stranger = replace(request, requester_groups=frozenset({"visitors"}))
    assert not redecide(policy, stranger, NOW).allowed


# ---- the property: never more than either input ---------------------------------------------

PRINCIPALS = ["root@h", "postgres@h", "app@h", "ro@h"]
NETS = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "192.0.2.0/24",
    "2001:db8::/32",
    "2001:db8:1::/48",
]


@st.composite
def decisions(draw: st.DrawFn) -> Decision:
    outcome = draw(st.sampled_from([Outcome.NEEDS_APPROVAL, Outcome.AUTO_APPROVED]))
    return _decision(
        outcome=outcome,
        policy_version=draw(st.sampled_from(["v1", "v2"])),
        duration=timedelta(seconds=draw(st.integers(1, 86400))),
        approvals_required=draw(st.integers(1, 3)) if outcome is Outcome.NEEDS_APPROVAL else 0,
        principals=tuple(
            draw(st.lists(st.sampled_from(PRINCIPALS), min_size=1, max_size=4, unique=True))
        ),
        extensions=tuple(
            draw(st.lists(st.sampled_from(sorted(EXTENSIONS)), max_size=5, unique=True))
        ),
        force_command=draw(st.sampled_from([None, None, "/bin/a", "/bin/b"])),
        source_address=tuple(draw(st.lists(st.sampled_from(NETS), max_size=3, unique=True))),
        pending_ttl=timedelta(seconds=draw(st.integers(60, 86400))),
        claim_window=timedelta(seconds=draw(st.integers(60, 86400))),
        approvers_may_shorten=draw(st.booleans()),
    )


def _allowed_by(sources: tuple[str, ...], net: str) -> bool:
    """Whether every address of ``net`` is allowed by ``sources`` (``()`` allows any)."""
    if not sources:
        return True
    n = ipaddress.ip_network(net)
    return any(
        n.version == s.version and n.subnet_of(s) for s in map(ipaddress.ip_network, sources)
    )  # type: ignore[arg-type]


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(decisions(), decisions())
def test_narrow_never_grants_more_than_either(stored: Decision, current: Decision) -> None:
    try:
        out = narrow(stored, current)
    except PolicyChanged:
        return
    for side in (stored, current):
        assert set(out.principals) <= set(side.principals)
        assert set(out.extensions) <= set(side.extensions)
        assert (
            out.duration is not None and side.duration is not None and out.duration <= side.duration
        )
        assert out.approvals_required >= side.approvals_required
        assert out.claim_window <= side.claim_window and out.pending_ttl <= side.pending_ttl  # type: ignore[operator]
        assert out.approvers_may_shorten <= side.approvers_may_shorten
        if side.force_command is not None:
            assert out.force_command == side.force_command
        # Not "any address" unless both were; every network left is allowed by both sides.
        assert bool(out.source_address) or not side.source_address
        assert all(_allowed_by(side.source_address, n) for n in out.source_address)
        if side.outcome is Outcome.NEEDS_APPROVAL:
            assert out.outcome is Outcome.NEEDS_APPROVAL
    assert out.principals  # never "any principal"


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(decisions(), decisions())
def test_narrow_refuses_only_when_nothing_is_left(stored: Decision, current: Decision) -> None:
    try:
        narrow(stored, current)
    except NoPrincipalsLeft:
        assert not set(stored.principals) & set(current.principals)
    except ForceCommandConflict:
        assert None not in (stored.force_command, current.force_command)
        assert stored.force_command != current.force_command
    except SourceAddressConflict:
        assert stored.source_address and current.source_address
        assert not any(_allowed_by(stored.source_address, n) for n in current.source_address)
        assert not any(_allowed_by(current.source_address, n) for n in stored.source_address)


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(decisions())
def test_narrowing_a_decision_with_itself_changes_nothing(d: Decision) -> None:
    assert narrowing(d, narrow(d, d)) == {}
