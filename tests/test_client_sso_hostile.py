"""The sign-in trusts nothing the server sends: each SSO answer checked field by field.

One function per kind of answer (:mod:`client.verify`): the /v1/sso info, the
loopback start, the device start, the poll, the finish. Each test names one
hostile value and the field that must be refused; the CLI tests check that a
refused answer opens nothing, prints no part of it raw, and writes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.errors import BadServerAnswer
from client.verify import (
    MAX_URL,
    check_browser_url,
    check_sso_device_start,
    check_sso_finish,
    check_sso_info,
    check_sso_poll,
    check_sso_start,
    check_whoami,
)

from .test_cli_sso import (  # noqa: F401 - fixtures
    EXIT_FAILED,
    Browser,
    Clock,
    FakeSso,
    Run,
    _iso,
    browser,
    clock,
    config_file,
    fake,
    home,
    jit,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
FP = "SHA256:" + "A" * 43
FLOW = "f" * 32


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    "url",
    [
        "https://login.example.com/oauth2/v1/authorize?client_id=jit-ssh&state=abc",
        "https://login.example.com:8443/authorize",
        "http://127.0.0.1:9000/authorize",
        "http://localhost/authorize",
        "http://[::1]:9000/authorize",
        "https://[2001:db8::1]/authorize",
    ],
)
def test_a_good_url_passes(url: str) -> None:
    assert check_browser_url(url, "authorize_url") == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "JavaScript://login.example.com/%0aalert(1)",
        "file:///etc/passwd",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "ftp://login.example.com/",
        "//login.example.com/authorize",
        "HTTPS://login.example.com/",
        "http://login.example.com/authorize",  # plain http, not loopback
        "http://127.0.0.1.evil.example/",
        "https://login.example.com@evil.example/",  # the host is evil.example
        "https://login.example.com:x@evil.example/",
        "https://evil.example\\@login.example.com/",  # browsers read '\' as '/'
        "https:///authorize",
        "https://-evil/",
        "https://login.example.com/authorize#fragment",
        "https://login.example.com/ authorize",
        "https://login.example.com/\tauthorize",
        "https://login.example.com/\nOpening https://other",
        "https://login.example.com/\x1b[2J",
        "https://login.example.com/\u202eexe.moc",
        "https://lоgin.example.com/",  # Cyrillic o
        'https://login.example.com/"onmouseover="x',
        "https://login.example.com:99999/",
        "https://" + "a" * MAX_URL,
        "",
        42,
        None,
        ["https://login.example.com/"],
        {"url": "https://login.example.com/"},
    ],
)
def test_a_hostile_url_is_refused(url: Any) -> None:
    with pytest.raises(BadServerAnswer) as e:
        check_browser_url(url, "authorize_url")
    assert e.value.field == "authorize_url"
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)


# --------------------------------------------------------------------------- the answers


def _start() -> dict[str, Any]:
    return {
        "flow": FLOW,
        "authorize_url": "https://login.example.com/authorize?state=" + FLOW,
        "expires_at": _iso(NOW + timedelta(minutes=10)),
    }


def _device() -> dict[str, Any]:
    return {
        "flow": FLOW,
        "user_code": "ABCD-EFGH",
        "verification_uri": "https://login.example.com/activate",
        "verification_uri_complete": "https://login.example.com/activate?user_code=ABCD-EFGH",
        "interval": 5,
        "expires_at": _iso(NOW + timedelta(minutes=10)),
    }


def _finish() -> dict[str, Any]:
    return {
        "user": "alice",
        "groups": ["engineers"],
        "groups_source": "sso",
        "fingerprint": FP,
        "expires_at": _iso(NOW + timedelta(hours=12)),
    }


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in changes.items():
        if v is _DROP:
            out.pop(k)
        else:
            out[k] = v
    return out


_DROP = object()


def test_good_answers_pass() -> None:
    start = check_sso_start(_start(), now=NOW)
    assert start.flow == FLOW and start.expires_at == NOW + timedelta(minutes=10)
    device = check_sso_device_start(_device(), now=NOW)
    assert device.user_code == "ABCD-EFGH" and device.interval == 5
    assert check_sso_device_start(_with(_device(), verification_uri_complete=None), now=NOW)
    done = check_sso_finish(_finish(), fingerprint=FP, now=NOW)
    assert done.user == "alice" and done.groups == ("engineers",)
    poll = check_sso_poll({"status": "slow_down", "interval": 10}, fingerprint=FP, now=NOW)
    assert poll.status == "slow_down" and poll.interval == 10
    assert check_sso_poll({"status": "done", **_finish()}, fingerprint=FP, now=NOW).enrolment
    info = check_sso_info({"enabled": True, "display_name": "Okta", "device_flow": True})
    assert info.display_name == "Okta" and info.device_flow
    assert not check_sso_info({"enabled": False}).enabled


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"flow": "../../etc"}, "flow"),
        ({"flow": "x" * 1000}, "flow"),
        ({"flow": 12345678901234567890}, "flow"),
        ({"flow": _DROP}, "flow"),
        ({"authorize_url": "javascript:alert(1)"}, "authorize_url"),
        ({"authorize_url": "file:///etc/passwd"}, "authorize_url"),
        ({"authorize_url": _DROP}, "authorize_url"),
        ({"expires_at": 1767225600}, "expires_at"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2026-12-02T12:10:00"}, "expires_at"),  # no time zone
        ({"expires_at": _iso(NOW - timedelta(seconds=1))}, "expires_at"),
        ({"expires_at": _iso(NOW + timedelta(days=2))}, "expires_at"),
    ],
)
def test_a_hostile_start_is_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(BadServerAnswer) as e:
        check_sso_start(_with(_start(), **changes), now=NOW)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"user_code": "ABCD EFGH"}, "user_code"),
        ({"user_code": "ABCD-EFGH\x1b[2J"}, "user_code"),
        ({"user_code": "A" * 1000}, "user_code"),
        ({"user_code": "-ABCD"}, "user_code"),
        ({"user_code": ""}, "user_code"),
        ({"user_code": 12345678}, "user_code"),
        ({"verification_uri": "javascript:alert(1)"}, "verification_uri"),
        ({"verification_uri": "http://login.example.com/activate"}, "verification_uri"),
        (
            {"verification_uri_complete": "https://evil.example/activate"},
            "verification_uri_complete",
        ),
        ({"verification_uri_complete": "data:,x"}, "verification_uri_complete"),
        ({"interval": 0}, "interval"),
        ({"interval": -5}, "interval"),
        ({"interval": 10**9}, "interval"),
        ({"interval": "5"}, "interval"),
        ({"interval": True}, "interval"),
        ({"interval": 5.5}, "interval"),
        ({"expires_at": None}, "expires_at"),
    ],
)
def test_a_hostile_device_start_is_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(BadServerAnswer) as e:
        check_sso_device_start(_with(_device(), **changes), now=NOW)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fingerprint": "SHA256:" + "B" * 43}, "fingerprint"),  # another key
        ({"fingerprint": "MD5:aa:bb"}, "fingerprint"),
        ({"fingerprint": _DROP}, "fingerprint"),
        ({"user": "alice\nuser = 'root'"}, "user"),
        ({"user": "-rf"}, "user"),
        ({"user": "../alice"}, "user"),
        ({"user": "a" * 65}, "user"),
        ({"user": ["alice"]}, "user"),
        ({"user": _DROP}, "user"),
        ({"groups": "engineers"}, "groups"),
        ({"groups": ["engineers", "bad group"]}, "groups"),
        ({"groups": ["g"] * 10_000}, "groups"),
        ({"groups_source": "provider"}, "groups_source"),
        ({"expires_at": _iso(NOW - timedelta(minutes=1))}, "expires_at"),
        ({"expires_at": 1}, "expires_at"),
    ],
)
def test_a_hostile_finish_is_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(BadServerAnswer) as e:
        check_sso_finish(_with(_finish(), **changes), fingerprint=FP, now=NOW)
    assert e.value.field == field
    # A done poll is the same answer, checked the same way.
    with pytest.raises(BadServerAnswer):
        check_sso_poll({"status": "done", **_with(_finish(), **changes)}, fingerprint=FP, now=NOW)


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"status": "approved"}, "status"),
        ({"status": None}, "status"),
        ({"status": "pending", "interval": 0}, "interval"),
        ({"status": "slow_down", "interval": "10"}, "interval"),
        ([], "the sign-in poll answer"),
        ("done", "the sign-in poll answer"),
    ],
)
def test_a_hostile_poll_is_refused(answer: Any, field: str) -> None:
    with pytest.raises(BadServerAnswer) as e:
        check_sso_poll(answer, fingerprint=FP, now=NOW)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"enabled": "yes"}, "enabled"),
        ({}, "enabled"),
        ({"enabled": True, "display_name": "Okta\x1b]0;pwned\x07"}, "display_name"),
        ({"enabled": True, "display_name": "Okta\nSigned in as root"}, "display_name"),
        ({"enabled": True, "display_name": "O" * 101}, "display_name"),
        ({"enabled": True, "display_name": "   "}, "display_name"),
        ({"enabled": True, "display_name": 7}, "display_name"),
        ({"enabled": True, "device_flow": "true"}, "device_flow"),
        ({"enabled": True, "enrolment_lifetime_seconds": -1}, "enrolment_lifetime_seconds"),
        ({"enabled": True, "enrolment_lifetime_seconds": 10**12}, "enrolment_lifetime_seconds"),
        (["enabled"], "the /v1/sso answer"),
    ],
)
def test_a_hostile_info_is_refused(answer: Any, field: str) -> None:
    with pytest.raises(BadServerAnswer) as e:
        check_sso_info(answer)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"user": "alice", "enrolment_expires_at": "soon"}, "enrolment_expires_at"),
        ({"user": "alice", "groups_source": "ldap"}, "groups_source"),
        ({"user": "alice\x1b[2J"}, "user"),
    ],
)
def test_a_hostile_whoami_is_refused(answer: Any, field: str) -> None:
    with pytest.raises(BadServerAnswer) as e:
        check_whoami(answer)
    assert e.value.field == field


# --------------------------------------------------------------------------- through the CLI


def _nothing_written(home: Path) -> None:
    assert not config_file(home).exists()


def test_a_javascript_authorize_url_is_never_opened_nor_printed(
    jit: Callable[..., Run], fake: FakeSso, browser: Browser, home: Path
) -> None:
    fake.callbacks = []
    fake.override["POST /v1/sso/start"] = _with(
        _start(), authorize_url="javascript:fetch(document.cookie)"
    ) | {"expires_at": _iso(datetime.now(UTC) + timedelta(minutes=10))}
    r = jit("sso", "login")
    assert r.code == EXIT_FAILED
    assert browser.opened == []
    assert "authorize_url must be an https:// URL, not a javascript: URL" in r.stderr
    assert "Opening" not in r.stderr and "document.cookie" not in r.stderr
    _nothing_written(home)


def test_an_authorize_url_with_escape_sequences_is_refused(
    jit: Callable[..., Run], fake: FakeSso, browser: Browser, home: Path
) -> None:
    fake.callbacks = []
    fake.override["POST /v1/sso/start"] = _with(
        _start(),
        authorize_url="https://login.example.com/\x1b]0;owned\x07",
        expires_at=_iso(datetime.now(UTC) + timedelta(minutes=10)),
    )
    r = jit("sso", "login")
    assert r.code == EXIT_FAILED and browser.opened == []
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr
    _nothing_written(home)


def test_a_finish_answer_naming_another_key_writes_nothing(
    jit: Callable[..., Run], fake: FakeSso, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fake.enrolment
    monkeypatch.setattr(fake, "enrolment", lambda **c: real(fingerprint="SHA256:" + "B" * 43))
    r = jit("sso", "login")
    assert r.code == EXIT_FAILED
    assert "the server enrolled SHA256:BBBB" in r.stderr and "not this key" in r.stderr
    _nothing_written(home)
    fake.join()
    assert "Sign-in failed" in fake.browser.pages[0][1]


def test_a_finish_answer_with_a_bad_user_name_writes_nothing(
    jit: Callable[..., Run], fake: FakeSso, home: Path
) -> None:
    fake.user = 'alice"\nserver = "https://evil.example'
    r = jit("sso", "login")
    assert r.code == EXIT_FAILED
    assert "is not a user name" in r.stderr
    _nothing_written(home)


def test_a_device_answer_with_a_hostile_code_shows_nothing(
    jit: Callable[..., Run], fake: FakeSso, home: Path, clock: Clock
) -> None:
    fake.override["POST /v1/sso/start"] = _with(
        _device(),
        user_code="ABCD\x1b[1A\x1b[2KSigned in as root",
        expires_at=_iso(datetime.now(UTC) + timedelta(minutes=10)),
    )
    r = jit("sso", "login", "--headless")
    assert r.code == EXIT_FAILED
    assert "To sign in" not in r.stderr and "\x1b" not in r.stderr
    assert "POST /v1/sso/poll" not in fake.paths()
    _nothing_written(home)


def test_a_poll_answer_of_the_wrong_kind_ends_the_sign_in(
    jit: Callable[..., Run], fake: FakeSso, home: Path, clock: Clock
) -> None:
    fake.polls = [httpx.Response(200, json={"status": "pending", "interval": "0"})]
    r = jit("sso", "login", "--headless")
    assert r.code == EXIT_FAILED
    assert "interval must be a whole number" in r.stderr
    assert clock.sleeps == [5]
    _nothing_written(home)


def test_a_huge_answer_is_not_read(jit: Callable[..., Run], fake: FakeSso, home: Path) -> None:
    fake.override["GET /v1/sso"] = httpx.Response(
        200, content=b'{"enabled": true, "display_name": "' + b"O" * (17 * 1024 * 1024) + b'"}'
    )
    r = jit("sso", "login")
    assert r.code == EXIT_FAILED
    assert "larger than" in r.stderr
    _nothing_written(home)
