"""ca.names: the strict checks every principal, login user, target, host and key id goes through,
and the policy loader refusing (with file:line) what could never be an account name or could read
as an option."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ca import InvalidKeyId, InvalidName, InvalidPrincipal, validate_principals
from ca.names import check_hostname, check_key_id, check_login_user, check_principal, check_target
from policies import InvalidPolicy, parse_policy

POLICY = """\
[targets.web]
principals = ["deploy@web"]
login_users = ["deploy"]

[[rules]]
name = "r"
targets = ["web"]
groups = ["eng"]
max_duration = "1h"
approver_groups = ["sre"]
"""


def _toml(value: str) -> str:
    """A TOML basic string holding ``value`` (escapes for control and format characters)."""
    return (
        '"'
        + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value)
        + '"'
    )


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("-oProxyCommand=x", "must not start with '-'"),
        ("root\n", "whitespace"),
        ("root@prod-db\n    ProxyCommand id", "whitespace"),
        ("a b", "whitespace"),
        ("root@host\u202e", "invisible format characters (U+202E)"),
        ("root@h%h", "'%'"),
        ('root"@web', "quotes"),
        ("#root", "comment"),
        ("root@web,x", "comma"),
        ("root@*", "wildcard"),
        ("!root", "negates"),
        ("a=b", "option from its value"),
        ("root@a@b", "at most one '@'"),
        ("Root@web", "upper case"),
        ("@web", "empty"),
        ("root@-web", "after '@'"),
        ("r\u00e9@web", "'é'"),
    ],
)
def test_policy_check_refuses_principals_ssh_would_misread(bad: str, fragment: str) -> None:
    text = POLICY.replace('principals = ["deploy@web"]', f"principals = [{_toml(bad)}]")
    with pytest.raises(InvalidPolicy) as info:
        parse_policy(text, source="p.toml")
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field) == ("p.toml", 2, "targets.web.principals[0]")
    assert fragment in problem.message, problem.message
    assert str(problem).startswith("p.toml:2: targets.web.principals[0]: principal ")
    # The CA refuses the same principal, with the same reason.
    with pytest.raises(InvalidPrincipal) as ca_info:
        validate_principals([bad])
    assert fragment in str(ca_info.value)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("-x", "must not start with '-'"),
        ("Root", "upper case"),
        ("root;id", "';'"),
        ("root\n", "whitespace"),
        ("1root", "start with a-z"),
        ("a" * 33, "at most 32"),
        ("ro$ot", "'$' may only end it"),
        ("r\u200bt", "invisible format"),
    ],
)
def test_policy_check_refuses_login_users_that_are_no_account_name(bad: str, fragment: str) -> None:
    text = POLICY.replace('login_users = ["deploy"]', f"login_users = [{_toml(bad)}]")
    with pytest.raises(InvalidPolicy) as info:
        parse_policy(text, source="p.toml")
    (problem,) = info.value.problems
    assert (problem.line, problem.field) == (3, "targets.web.login_users[0]")
    assert "is not a valid user name" in problem.message and fragment in problem.message, (
        problem.message
    )


@pytest.mark.parametrize("good", ["deploy", "_svc", "first.last", "a-b_c", "host$", "a" * 32])
def test_posix_account_names_pass(good: str) -> None:
    assert check_login_user(good) == good
    assert check_principal(f"{good}@web") == f"{good}@web"
    text = POLICY.replace('login_users = ["deploy"]', f'login_users = ["{good}"]')
    assert parse_policy(text).targets[0].login_users == (good,)


@pytest.mark.parametrize(
    "good",
    [
        "root@prod-db",
        "jit-demo@demo",
        "ops",
        "p0",
        "x" * 255,
        "deploy@web.eu-1",
        "svc_1@host.example.com",
    ],
)
def test_principals_that_pass(good: str) -> None:
    assert check_principal(good) == good


# Characters none of the names may hold: everything OpenSSH gives a meaning to.
_SPECIAL = st.sampled_from(
    list(" \t\n\r\x00\x1b\x7f\x85\u00a0\u2028\u202e\u200b\ufeff%\"'\\#,*?!=:/;~`|&<>()[]{}^")
)


@given(
    st.text(alphabet=st.characters(min_codepoint=0x61, max_codepoint=0x7A), max_size=10),
    _SPECIAL,
    st.text(alphabet=st.characters(min_codepoint=0x61, max_codepoint=0x7A), max_size=10),
)
def test_no_name_holds_a_character_openssh_reads(before: str, special: str, after: str) -> None:
    value = f"a{before}{special}{after}"
    for check, error in (
        (check_principal, InvalidPrincipal),
        (check_login_user, InvalidName),
        (check_target, InvalidName),
        (check_hostname, InvalidName),
    ):
        with pytest.raises(error):
            check(value)
    if not special.isprintable() or special == " ":
        with pytest.raises(InvalidKeyId):
            check_key_id(value)


@given(st.from_regex(r"\A-[A-Za-z0-9_.@-]{0,20}\Z"))
def test_nothing_starting_with_a_dash_passes(value: str) -> None:
    for check in (check_principal, check_login_user, check_target, check_hostname, check_key_id):
        with pytest.raises((InvalidPrincipal, InvalidName, InvalidKeyId)):
            check(value)


@pytest.mark.parametrize(
    "good", ["10.0.0.5", "::1", "2001:db8::1", "prod-db", "db1.example.com", "db1.example.com."]
)
def test_hostnames_that_pass(good: str) -> None:
    assert check_hostname(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "fe80::1%eth0",
        "[::1]",
        "-oProxyCommand=x",
        "a..b",
        "host-",
        "a b",
        "x" * 254,
        "h\u202eost",
        "evil.example/x",
    ],
)
def test_hostnames_refused(bad: str) -> None:
    with pytest.raises(InvalidName) as info:
        check_hostname(bad, field="--host")
    assert info.value.field == "--host" and info.value.code == "invalid_name"


def test_key_id_refusals_name_the_field() -> None:
    assert check_key_id("jit-ssh:req=1:user=a:by=b,c") == "jit-ssh:req=1:user=a:by=b,c"
    for bad in ("jit-ssh:req=1\nfake", "a b", "-x", "", "x" * 1025, "caf\u00e9"):
        with pytest.raises(InvalidKeyId) as info:
            check_key_id(bad, field="the server's key_id")
        assert info.value.field == "the server's key_id" and "the server's key_id" in str(
            info.value
        )


@pytest.mark.parametrize("bad", ["config", "web.pub", "web.json", "web-cert"])
def test_target_names_that_would_overwrite_the_clients_files_are_refused(bad: str) -> None:
    # The client keeps target T's access as T, T.pub, T-cert.pub and T.json beside one
    # ssh_config named "config": `jit-ssh login config` would write a key over it.
    text = POLICY.replace("[targets.web]", f"[targets.{_toml(bad)}]").replace(
        'targets = ["web"]', f"targets = [{_toml(bad)}]"
    )
    with pytest.raises(InvalidPolicy) as info:
        parse_policy(text, source="p.toml")
    assert any("reserved" in p.message for p in info.value.problems), info.value.problems
    with pytest.raises(InvalidName, match="reserved"):
        check_target(bad)


@pytest.mark.parametrize("good", ["web", "configs", "pub", "web.pub1", "cert", "a-certs"])
def test_target_names_near_the_reserved_ones_pass(good: str) -> None:
    assert check_target(good) == good
