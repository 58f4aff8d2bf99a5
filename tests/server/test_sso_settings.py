"""The [sso] table of the server TOML: what it accepts, its defaults, and each refusal by key."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from server.config import InvalidConfig, resolve_config
from server.sso.settings import SsoSettings, parse_sso_settings

GOOD = """
[sso]
issuer = "https://login.example.com/"
client_id = "jit-ssh"
"""


def _resolve(tmp_path: Path, toml: str, env: dict[str, str] | None = None):
    path = tmp_path / "server.toml"
    path.write_text(toml, "utf-8")
    return resolve_config(path, env={"HOME": str(tmp_path), **(env or {})})


def test_no_table_no_sso(tmp_path: Path) -> None:
    assert _resolve(tmp_path, "max_clock_skew = 300\n").sso is None


def test_the_smallest_table_and_its_defaults(tmp_path: Path) -> None:
    sso = _resolve(tmp_path, GOOD).sso
    assert sso == SsoSettings(issuer="https://login.example.com/", client_id="jit-ssh")
    assert sso is not None
    assert sso.client_secret_file is None and sso.client_secret() is None
    assert sso.display_name == "single sign-on"
    assert sso.scopes == ("openid", "email", "profile")
    assert sso.username_claim == "preferred_username"
    assert sso.groups_claim == "groups"
    assert dict(sso.group_map) == {}
    assert sso.allowed_email_domains == ()
    assert sso.enrolment_lifetime == timedelta(hours=12)
    assert sso.password_login is True
    assert sso.break_glass_admins == ()
    assert sso.clock_skew == 60
    assert sso.http_timeout == 10.0
    assert sso.discovery_url == "https://login.example.com/.well-known/openid-configuration"
    assert not sso.email_required


def test_every_key(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    sso = _resolve(
        tmp_path,
        f"""
[sso]
issuer = "https://login.example.com/oauth2/default"
client_id = "0oa1b2c3"
client_secret_file = "{secret}"
display_name = "Okta"
scopes = ["email", "groups", "email"]
username_claim = "email"
groups_claim = ""
group_map = {{ "okta-sre" = "sre", "Okta Admins" = "admins" }}
allowed_email_domains = ["Example.com", "example.org"]
enrolment_lifetime = "8h"
password_login = false
break_glass_admins = ["root-admin"]
clock_skew = 0
http_timeout = 2.5
""",
    ).sso
    assert sso is not None
    assert sso.scopes == ("openid", "email", "groups")
    assert sso.client_secret() == "s3cr3t-value"
    assert sso.groups_claim == ""
    assert dict(sso.group_map) == {"okta-sre": "sre", "Okta Admins": "admins"}
    assert sso.allowed_email_domains == ("example.com", "example.org")
    assert sso.enrolment_lifetime == timedelta(hours=8)
    assert sso.password_login is False
    assert sso.break_glass_admins == ("root-admin",)
    assert sso.clock_skew == 0 and sso.http_timeout == 2.5
    assert sso.email_required
    assert sso.discovery_url == (
        "https://login.example.com/oauth2/default/.well-known/openid-configuration"
    )


def test_the_secret_is_never_in_the_repr(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("do-not-print-me")
    sso = SsoSettings("https://login.example.com", "x", client_secret_file=secret)
    assert sso.client_secret() == "do-not-print-me"
    assert "do-not-print-me" not in repr(sso) and "do-not-print-me" not in str(vars(sso))


def test_the_secret_file_is_read_at_use(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    sso = SsoSettings("https://login.example.com", "x", client_secret_file=secret)
    with pytest.raises(InvalidConfig, match="cannot be read") as e:
        sso.client_secret()
    assert e.value.field == "sso.client_secret_file"
    secret.write_text("one\n")
    assert sso.client_secret() == "one"
    secret.write_text("two")
    assert sso.client_secret() == "two"
    secret.write_text("  \n")
    with pytest.raises(InvalidConfig, match="empty"):
        sso.client_secret()


def test_the_environment_names_the_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "from-env"
    secret.write_text("env-secret")
    sso = _resolve(
        tmp_path,
        GOOD + 'client_secret_file = "/nonexistent"\n',
        env={"JIT_SSH_SSO_CLIENT_SECRET_FILE": str(secret)},
    ).sso
    assert sso is not None and sso.client_secret_file == secret
    assert sso.client_secret() == "env-secret"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_readable_secret_file_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    sso = SsoSettings("https://login.example.com", "x", client_secret_file=secret)
    assert sso.client_secret_mode_problem() is None
    secret.chmod(0o644)
    assert "0644" in (sso.client_secret_mode_problem() or "")


def test_the_redirect_uri() -> None:
    sso = SsoSettings("https://login.example.com", "x")
    assert sso.redirect_uri("https://jit.example.com") == "https://jit.example.com/sso/callback"
    assert sso.redirect_uri("https://jit.example.com/") == "https://jit.example.com/sso/callback"
    assert sso.redirect_uri("https://ex.com/jit/") == "https://ex.com/jit/sso/callback"
    for bad in ("", "jit.example.com", "https://jit.example.com/?a=1", "ftp://x", "https://"):
        with pytest.raises(InvalidConfig, match="base_url"):
            sso.redirect_uri(bad)


@pytest.mark.parametrize(
    "issuer",
    ["http://127.0.0.1:8080", "http://localhost:3000/", "http://[::1]:9000/realms/x"],
)
def test_a_loopback_issuer_may_be_http(issuer: str) -> None:
    assert SsoSettings(issuer, "x").issuer == issuer


@pytest.mark.parametrize(
    ("line", "key", "why"),
    [
        ('issuer = "http://login.example.com/"', "issuer", "must use https"),
        ('issuer = "http://127.0.0.2.example.com/"', "issuer", "must use https"),
        ('issuer = "login.example.com"', "issuer", "https:// URL"),
        ('issuer = ""', "issuer", "issuer URL"),
        ("issuer = 5", "issuer", "issuer URL"),
        ('issuer = "https://login.example.com/?tenant=1"', "issuer", "query or fragment"),
        ('issuer = "https://login.example.com/#x"', "issuer", "query or fragment"),
        ('issuer = "https://u:p@login.example.com/"', "issuer", "user name or password"),
        ('issuer = "https://login.example.com:99999/"', "issuer", "not a URL"),
        ('issuer = "https://login.example.com/ x"', "issuer", "not a URL"),
        ('client_id = ""', "client_id", "not valid"),
        ('client_id = "a b"', "client_id", "not valid"),
        ("client_id = 7", "client_id", "must be a string"),
        ('client_secret_file = ""', "client_secret_file", "path of a file"),
        ("client_secret_file = 1", "client_secret_file", "path of a file"),
        ('display_name = ""', "display_name", "non-empty"),
        ('display_name = "a\\nb"', "display_name", "printable"),
        ('scopes = "openid email"', "scopes", "must be a list"),
        ('scopes = ["open id"]', "scopes", "not valid"),
        ("scopes = [1]", "scopes", "must be a string"),
        ('username_claim = ""', "username_claim", "not valid"),
        ("username_claim = []", "username_claim", "must be a string"),
        ('groups_claim = "a b"', "groups_claim", "not valid"),
        ("groups_claim = false", "groups_claim", "must be a string"),
        ('group_map = ["sre"]', "group_map", "must be a table"),
        ('group_map = { "okta-sre" = "sre team" }', "group_map", "not a jit-ssh group name"),
        ('group_map = { "okta-sre" = "-sre" }', "group_map", "not a jit-ssh group name"),
        ('group_map = { "okta-sre" = 1 }', "group_map", "not a jit-ssh group name"),
        ('allowed_email_domains = "example.com"', "allowed_email_domains", "list of domains"),
        ('allowed_email_domains = ["@example.com"]', "allowed_email_domains", "not a domain"),
        ('allowed_email_domains = ["*.example.com"]', "allowed_email_domains", "not a domain"),
        ('allowed_email_domains = ["localhost"]', "allowed_email_domains", "not a domain"),
        ("allowed_email_domains = [1]", "allowed_email_domains", "not a string"),
        ('enrolment_lifetime = "12"', "enrolment_lifetime", "give a unit"),
        ('enrolment_lifetime = "1m"', "enrolment_lifetime", "between 5m and 31d"),
        ('enrolment_lifetime = "40d"', "enrolment_lifetime", "between 5m and 31d"),
        ("enrolment_lifetime = 3600", "enrolment_lifetime", "must be a string"),
        ('password_login = "no"', "password_login", "true or false"),
        ('break_glass_admins = "root"', "break_glass_admins", "list of jit-ssh user names"),
        ('break_glass_admins = ["-root"]', "break_glass_admins", "not a jit-ssh user name"),
        ('break_glass_admins = ["root admin"]', "break_glass_admins", "not a jit-ssh user name"),
        ("clock_skew = 301", "clock_skew", "between 0 and 300"),
        ("clock_skew = -1", "clock_skew", "between 0 and 300"),
        ('clock_skew = "60"', "clock_skew", "whole number"),
        ("clock_skew = true", "clock_skew", "whole number"),
        ("http_timeout = 0", "http_timeout", "more than 0"),
        ("http_timeout = 121", "http_timeout", "at most 120"),
        ('http_timeout = "10"', "http_timeout", "number of seconds"),
        ('colour = "blue"', "colour", "unknown setting 'colour'"),
    ],
)
def test_each_refusal_names_its_key(tmp_path: Path, line: str, key: str, why: str) -> None:
    lines = GOOD.strip().split("\n")
    name = line.split(" = ")[0]
    lines = [x for x in lines if not x.startswith(name + " ")] + [line]
    with pytest.raises(InvalidConfig, match=why) as e:
        _resolve(tmp_path, "\n".join(lines) + "\n")
    assert e.value.field == f"sso.{key}"
    assert str(tmp_path / "server.toml") in str(e.value)
    assert f"[sso] {key}" in str(e.value) or key in str(e.value)


@pytest.mark.parametrize("key", ["issuer", "client_id"])
def test_required_keys(tmp_path: Path, key: str) -> None:
    lines = [x for x in GOOD.strip().split("\n") if not x.startswith(key)]
    with pytest.raises(InvalidConfig, match=f"{key} is required") as e:
        _resolve(tmp_path, "\n".join(lines) + "\n")
    assert e.value.field == f"sso.{key}"


def test_sso_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match=r"\[sso\] must be a table"):
        _resolve(tmp_path, 'sso = "yes"\n')
    with pytest.raises(InvalidConfig, match="must be a table"):
        parse_sso_settings(["issuer"])


def test_the_constructor_checks_as_the_parser_does() -> None:
    with pytest.raises(InvalidConfig, match="must use https"):
        SsoSettings("http://login.example.com", "x")
    with pytest.raises(InvalidConfig, match="between 0 and 300"):
        SsoSettings("https://login.example.com", "x", clock_skew=1000)


def test_names_agree_with_the_admin_commands() -> None:
    from server import admin
    from server.sso import settings

    assert settings._USER_NAME.pattern == admin._NAME.pattern
    assert settings._GROUP_NAME.pattern == admin._GROUP.pattern
