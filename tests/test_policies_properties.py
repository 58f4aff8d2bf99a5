"""Property tests: durations, and random requests against random policies."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ca.durations import format_duration, parse_duration
from ca.errors import InvalidDuration
from policies import (
    AccessRequest,
    Approver,
    InvalidPolicy,
    Outcome,
    Policy,
    count_approvals,
    decide,
    may_approve,
    parse_policy,
)

UTC = UTC
USERS = ["u1", "u2", "u3", "u4"]
GROUPS = ["g1", "g2", "g3", "g4"]
TARGETS = ["t1", "t2", "t3"]
DAY = 86400

SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


# -- durations ----------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=10**9))
def test_format_then_parse_is_identity(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    text = format_duration(value)
    assert re.fullmatch(r"(\d+d)?(\d+h)?(\d+m)?(\d+s)?", text) and text
    assert parse_duration(text) == value


@given(st.integers(min_value=1, max_value=10**9))
def test_bare_numbers_are_seconds(seconds: int) -> None:
    assert parse_duration(str(seconds), bare_seconds=True) == timedelta(seconds=seconds)


@given(
    st.tuples(
        st.integers(0, 999), st.integers(0, 999), st.integers(0, 999), st.integers(0, 999)
    ).filter(lambda t: any(t))
)
def test_parse_then_format_is_canonical(parts: tuple[int, int, int, int]) -> None:
    text = "".join(f"{n}{u}" for n, u in zip(parts, "dhms", strict=False) if n)
    value = parse_duration(text)
    assert value.total_seconds() == parts[0] * DAY + parts[1] * 3600 + parts[2] * 60 + parts[3]
    assert parse_duration(format_duration(value)) == value
    assert format_duration(parse_duration(format_duration(value))) == format_duration(value)


@given(st.text(max_size=20))
def test_parse_duration_returns_whole_positive_seconds_or_raises_invalid_duration(
    text: str,
) -> None:
    try:
        value = parse_duration(text, field="max_duration")
    except InvalidDuration as e:
        assert e.field == "max_duration" and e.code == "invalid_duration"
        return
    assert value >= timedelta(seconds=1)
    assert value.microseconds == 0


@given(st.text(alphabet="0123456789dhms ", max_size=12))
def test_duration_text_in_a_policy_is_either_accepted_or_a_policy_error(text: str) -> None:
    doc = (
        '[targets.t]\nprincipals = ["p@t"]\n[[rules]]\nname = "r"\ntargets = ["t"]\n'
        f'groups = ["g"]\napprover_groups = ["a"]\nmax_duration = {json.dumps(text)}\n'
    )
    try:
        policy = parse_policy(doc)
    except InvalidPolicy as e:
        assert e.problems[0].line == 8 and e.problems[0].field == "rules[0].max_duration"
        return
    assert policy.rules[0].max_duration == parse_duration(text, bare_seconds=True)
    assert policy.rules[0].max_duration <= timedelta(hours=24)


# -- random policies ------------------------------------------------------------------


def _seconds(draw: Any, low: int, high: int) -> int:
    return draw(st.integers(min_value=low, max_value=high))


@st.composite
def policy_specs(draw: Any) -> dict[str, Any]:
    """A valid policy as plain data (what the TOML will hold)."""
    n_targets = draw(st.integers(1, len(TARGETS)))
    targets: dict[str, dict[str, Any]] = {}
    for name in TARGETS[:n_targets]:
        logins = draw(
            st.lists(
                st.sampled_from(["root", "deploy", "app"]), min_size=1, max_size=3, unique=True
            )
        )
        targets[name] = {
            "principals": [f"{login}@{name}" for login in logins],
            "login_users": logins,
        }
    rules = []
    for i in range(draw(st.integers(0, 4))):
        rule: dict[str, Any] = {
            "name": f"r{i}",
            "targets": draw(st.lists(st.sampled_from(sorted(targets)), min_size=1, unique=True)),
            "users": draw(st.lists(st.sampled_from(USERS), max_size=2, unique=True)),
            "groups": draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)),
        }
        if not rule["users"] and not rule["groups"]:
            rule["groups"] = [draw(st.sampled_from(GROUPS))]
        max_s = _seconds(draw, 1, DAY)
        rule["max_duration"] = format_duration(max_s)
        if draw(st.booleans()):
            rule["default_duration"] = format_duration(_seconds(draw, 1, max_s))
        if draw(st.sampled_from([False, False, False, True])):
            rule["break_glass"] = True
        else:
            approvals = draw(st.integers(1, 3))
            rule["approvals_required"] = approvals
            rule["approver_groups"] = draw(
                st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)
            )
            rule["approver_users"] = draw(
                st.lists(
                    st.sampled_from(USERS),
                    min_size=0 if rule["approver_groups"] else approvals,
                    max_size=4,
                    unique=True,
                )
            )
            rule["approvers_may_shorten"] = draw(st.booleans())
            if draw(st.booleans()):
                # Mostly people the rule itself names (others can never match the rule).
                auto: dict[str, Any] = {
                    "groups": draw(
                        st.lists(st.sampled_from(rule["groups"] or GROUPS), max_size=2, unique=True)
                    ),
                    "users": draw(
                        st.lists(st.sampled_from(rule["users"] or USERS), max_size=2, unique=True)
                    ),
                    "max_duration": format_duration(_seconds(draw, 1, max_s)),
                }
                if not auto["groups"] and not auto["users"]:
                    auto["users"] = [draw(st.sampled_from(USERS))]
                if draw(st.booleans()):
                    a, b = draw(st.integers(0, 23)), draw(st.integers(0, 23))
                    assume(a != b)
                    auto["hours"] = f"{a:02d}:00-{b:02d}:30"
                    auto["timezone"] = draw(
                        st.sampled_from(
                            ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
                        )
                    )
                if draw(st.booleans()):
                    auto["days"] = draw(
                        st.lists(
                            st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                            min_size=1,
                            unique=True,
                        )
                    )
                rule["auto_approve"] = auto
        if draw(st.booleans()):
            rule["reason_pattern"] = r"INC-\d+"
        elif not rule.get("break_glass"):
            rule["reason_required"] = draw(st.booleans())
        if draw(st.booleans()):
            rule["extensions"] = draw(
                st.lists(
                    st.sampled_from(["permit-pty", "permit-port-forwarding", "permit-user-rc"]),
                    unique=True,
                )
            )
        if draw(st.booleans()):
            rule["source_address"] = draw(
                st.lists(
                    st.sampled_from(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]),
                    min_size=1,
                    unique=True,
                )
            )
        rules.append(rule)
    return {"targets": targets, "rules": rules}


def _value(value: Any, rng: random.Random | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    items = list(value)
    if rng is not None:
        rng.shuffle(items)
        sep = rng.choice([", ", ",", ",\n    ", " , "])
        trailing = rng.choice(["", ","]) if items else ""
        return "[" + sep.join(json.dumps(v) for v in items) + trailing + "]"
    return "[" + ", ".join(json.dumps(v) for v in items) + "]"


def emit(spec: dict[str, Any], rng: random.Random | None = None) -> str:
    """TOML for ``spec``; with ``rng``, shuffled key and name order, comments and blank lines."""

    def keys(table: dict[str, Any]) -> list[str]:
        names = [k for k in table if not isinstance(table[k], dict)]
        if rng is not None:
            rng.shuffle(names)
        return names

    def noise() -> str:
        if rng is None:
            return ""
        return rng.choice(["", "\n", "# a comment\n", "   \n"])

    out = []
    target_names = list(spec["targets"])
    if rng is not None:
        rng.shuffle(target_names)
    for name in target_names:
        body = spec["targets"][name]
        out.append(noise() + f"[targets.{name}]" + (" # why not" if rng else "") + "\n")
        out += [f"{k} = {_value(body[k], rng)}\n" + noise() for k in keys(body)]
    for rule in spec["rules"]:
        out.append(noise() + "[[rules]]\n")
        out += [f"{k} = {_value(rule[k], rng)}\n" + noise() for k in keys(rule)]
        if "auto_approve" in rule:
            out.append("[rules.auto_approve]\n")
            out += [
                f"{k} = {_value(rule['auto_approve'][k], rng)}\n"
                for k in keys(rule["auto_approve"])
            ]
    return "".join(out)


durations = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=2 * DAY).map(lambda s: timedelta(seconds=s)),
    st.sampled_from([timedelta(seconds=1), timedelta(milliseconds=1500)]),
)
requests = st.builds(
    AccessRequest,
    requester=st.sampled_from([*USERS, "u5"]),
    requester_groups=st.frozensets(st.sampled_from(GROUPS)),
    target=st.sampled_from([*TARGETS, "tx"]),
    duration=durations,
    reason=st.sampled_from(["", "INC-12 disk full", "because", "  "]),
    break_glass=st.booleans(),
)


@st.composite
def policies_and_requests(draw: Any) -> tuple[dict[str, Any], AccessRequest]:
    """A random policy, and a request that is usually aimed at one of its rules."""
    spec = draw(policy_specs())
    # sampled_from and integers shrink toward their first value: make that the aimed case.
    if not spec["rules"] or not draw(st.sampled_from([True, True, True, False])):
        return spec, draw(requests)
    rule = draw(st.sampled_from(spec["rules"]))
    auto = rule.get("auto_approve", {})
    users = rule["users"] + auto.get("users", [])
    groups = rule["groups"] + auto.get("groups", [])
    by_name = users and draw(st.booleans())
    requester = draw(st.sampled_from(users)) if by_name else draw(st.sampled_from(["u5", *USERS]))
    my_groups: frozenset[str] = frozenset()
    if groups:
        my_groups = draw(st.frozensets(st.sampled_from(groups), min_size=0 if by_name else 1))
    my_groups |= draw(st.frozensets(st.sampled_from(GROUPS), max_size=1))
    cap = int(parse_duration(rule["max_duration"]).total_seconds())
    if auto and draw(st.booleans()):
        # Aim at the auto-approval: one of its people, within its cap.
        if auto["users"] and (not auto["groups"] or draw(st.booleans())):
            requester = draw(st.sampled_from(auto["users"]))
        else:
            my_groups |= {draw(st.sampled_from(auto["groups"]))}
        cap = int(parse_duration(auto["max_duration"]).total_seconds())
    duration = draw(
        st.one_of(
            st.integers(1, cap).map(lambda n: timedelta(seconds=n)),
            st.none(),
            st.integers(cap + 1, cap * 2).map(lambda n: timedelta(seconds=n)),
        )
    )
    aimed_glass = bool(rule.get("break_glass"))
    return spec, AccessRequest(
        requester=requester,
        requester_groups=my_groups,
        target=draw(st.sampled_from(rule["targets"])),
        duration=duration,
        reason=draw(st.sampled_from(["INC-12 disk full", "", "because"])),
        break_glass=draw(st.sampled_from([aimed_glass, aimed_glass, not aimed_glass])),
    )


moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def _first_match(spec: dict[str, Any], request: AccessRequest) -> dict[str, Any] | None:
    """An independent statement of the combination rule: the first rule naming both wins."""
    if request.target not in spec["targets"]:
        return None
    for rule in spec["rules"]:
        if (
            bool(rule.get("break_glass")) != request.break_glass
            or request.target not in rule["targets"]
        ):
            continue
        if request.requester in rule["users"] or set(rule["groups"]) & request.requester_groups:
            return rule
    return None


@settings(SETTINGS, max_examples=400)
@given(policies_and_requests(), moments)
def test_random_requests_against_random_policies(
    case: tuple[dict[str, Any], AccessRequest], now: datetime
) -> None:
    spec, request = case
    policy = parse_policy(emit(spec))
    decision = decide(policy, request, now)
    assert decision.reasons and decision.policy_version == policy.version

    if not decision.allowed:
        # A denied request never gets anything to put in a certificate.
        assert decision.principals == () and decision.extensions == ()
        assert decision.duration is None and decision.approvals_required == 0
        assert decision.force_command is None and decision.source_address == ()
        return

    expected = _first_match(spec, request)
    assert expected is not None and decision.rule == expected["name"]
    rule = policy.rule(expected["name"])
    assert rule is not None
    target = policy.target(request.target)
    assert target is not None
    assert decision.principals == target.principals  # from the target, never the request
    assert decision.duration is not None
    assert timedelta(seconds=1) <= decision.duration <= rule.max_duration
    if request.duration is not None:
        assert decision.duration == request.duration  # never shortened
    if rule.reason_required:
        assert request.reason.strip()
    if decision.auto_approved:
        auto = rule.auto_approve
        assert auto is not None
        assert decision.duration <= auto.max_duration  # an auto-approval never exceeds its cap
        assert request.requester in auto.users or request.requester_groups & auto.groups
        assert auto.window is None or auto.window.contains(now)
        assert decision.approvals_required == 0
    elif decision.break_glass:
        assert rule.break_glass and decision.flagged_for_review and decision.approvals_required == 0
    else:
        assert decision.outcome is Outcome.NEEDS_APPROVAL
        assert decision.approvals_required == rule.approvals_required >= 1


@SETTINGS
@given(
    policies_and_requests(),
    moments,
    st.lists(st.tuples(st.sampled_from([*USERS, "u5"]), st.frozensets(st.sampled_from(GROUPS)))),
)
def test_the_requester_never_counts_as_an_approver(
    case: tuple[dict[str, Any], AccessRequest],
    now: datetime,
    others: list[tuple[str, frozenset[str]]],
) -> None:
    spec, request = case
    policy = parse_policy(emit(spec))
    # The requester, in every group there is: still never an approver of their own request.
    me = Approver(request.requester, frozenset(GROUPS))
    assert not may_approve(policy, request, me, now).allowed
    approvers = [Approver(name, groups) for name, groups in others] + [me, me]
    count = count_approvals(policy, request, approvers, now)
    assert count <= len({name for name, _ in others} - {request.requester})
    assert count == count_approvals(
        policy, request, [a for a in approvers if a.name != request.requester], now
    )
    if not decide(policy, request, now).allowed:
        assert count == 0


@SETTINGS
@given(policy_specs(), st.randoms(use_true_random=False))
def test_version_survives_reformatting_but_not_a_changed_value(
    spec: dict[str, Any], rng: random.Random
) -> None:
    plain = parse_policy(emit(spec))
    noisy = parse_policy(emit(spec, rng))
    assert noisy == plain
    assert noisy.version == plain.version
    if spec["rules"]:
        spec["rules"][0]["max_duration"] = format_duration(
            parse_duration(spec["rules"][0]["max_duration"]) + timedelta(seconds=1)
        )
        spec["rules"][0].pop("auto_approve", None)
        spec["rules"][0].pop("default_duration", None)
        if parse_duration(spec["rules"][0]["max_duration"]) <= timedelta(hours=24):
            assert parse_policy(emit(spec)).version != plain.version


@SETTINGS
@given(policy_specs(), st.data())
def test_a_damaged_policy_is_a_policy_error_never_a_crash(
    spec: dict[str, Any], data: st.DataObject
) -> None:
    text = emit(spec)
    assume(text)
    at = data.draw(st.integers(0, len(text) - 1))
    junk = data.draw(st.text(alphabet="[]{}=\"',.# \nxyz0-", min_size=0, max_size=3))
    damaged = text[:at] + junk + text[at + data.draw(st.integers(0, 3)) :]
    try:
        result = parse_policy(damaged, source="d.toml")
    except InvalidPolicy as e:
        for problem in e.problems:
            assert problem.file == "d.toml"
            assert problem.line is None or 1 <= problem.line <= damaged.count("\n") + 1
        return
    assert isinstance(result, Policy)


@settings(deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_policy_or_a_policy_error(text: str) -> None:
    try:
        parse_policy(text)
    except InvalidPolicy:
        pass
