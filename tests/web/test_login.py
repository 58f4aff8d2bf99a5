"""Logging in and out: passwords, the slow-down and the lockout, sessions and their
timeouts, TOTP, the redirect after login, CSRF, cookies and headers."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from server import totp as totp_mod

from .conftest import PASSWORD, Browser, csrf_token

FAILED = "Login failed: wrong user name, password or code."


def _rows(app: Any, sql: str, **params: Any) -> list[Any]:
    with app.extensions["jit_ssh.engine"].connect() as c:
        return list(c.execute(text(sql), params))


def _user(app: Any, name: str) -> Any:
    return _rows(
        app, "SELECT failed_logins, locked_until, totp_last_step FROM users WHERE name = :n", n=name
    )[0]


def _events(app: Any, type_: str) -> list[tuple[str | None, dict[str, Any]]]:
    return [
        (r[0], json.loads(r[1]))
        for r in _rows(
            app, "SELECT actor, data FROM audit_events WHERE type = :t ORDER BY id", t=type_
        )
    ]


def _session_cookie(resp: Any) -> str:
    cookies = [c for c in resp.headers.getlist("Set-Cookie") if c.startswith("jit_ssh_session=")]
    assert cookies, resp.headers
    return cookies[-1]


# --------------------------------------------------------------------------- passwords


def test_login_form_then_home_with_a_hardened_cookie(app: Any, approver: Any, browser: Any) -> None:
    b: Browser = browser("bob")
    page = b.get("/login")
    assert page.status_code == 200
    html = b.text(page)
    assert 'name="username"' in html and 'name="password"' in html and 'type="password"' in html
    assert csrf_token(html)

    resp = b.login()
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    cookie = _session_cookie(resp)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # The fixture's base_url is https://...: the cookie is Secure.
    assert "Secure" in cookie
    home = b.get("/")
    assert home.status_code == 200 and "Pending for me" in b.text(home)
    # The database holds a hash of the session id, never the id itself.
    (id_hash,) = _rows(app, "SELECT id_hash FROM web_sessions")[0]
    assert id_hash not in cookie


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cookie_is_secure_when_the_request_is_https(tmp_path: Path, database_url: str) -> None:
    from server.app import create_app
    from server.config import ServerConfig
    from tests.server.conftest import TEST_POLICY

    (tmp_path / "p.toml").write_text(TEST_POLICY)
    app = create_app(
        ServerConfig(
            data_dir=tmp_path / "d",
            database_url=database_url,
            policy_path=tmp_path / "p.toml",
            base_url="http://127.0.0.1:8022",
        ),
        say=lambda m: None,
    )
    try:
        plain = app.test_client().get("/login")
        assert "Secure" not in _session_cookie(plain)
        tls = app.test_client().get("/login", base_url="https://jit.example.test")
        assert "Secure" in _session_cookie(tls)
    finally:
        app.extensions["jit_ssh.engine"].dispose()


def test_every_failure_gets_the_same_answer(
    app: Any, approver: Any, make_user: Any, admin: Any, browser: Any, slept: list[float]
) -> None:
    make_user("nopass", ("approvers",), ("approver",))  # no web password
    make_user("gone", ("approvers",), ("approver",))
    admin.set_password("gone", PASSWORD)
    admin.set_disabled("gone")
    answers = []
    for name, password in (
        ("bob", "wrong password!"),
        ("nobody", PASSWORD),
        ("nopass", PASSWORD),
        ("gone", PASSWORD),
        ("bad name!", PASSWORD),
    ):
        resp = browser().login(name, password)
        assert resp.status_code == 401, (name, resp.status_code)
        body = Browser(app).text(resp)
        assert FAILED in body
        answers.append(body.replace(name, "NAME"))
    # Same page each time, but for the name echoed back into the form.
    assert len({a.split("<main>")[1].split('name="csrf_token"')[0] for a in answers}) == 1
    why = [d["why"] for _a, d in _events(app, "auth.failed")]
    assert why == ["wrong_password", "unknown_user", "no_password", "disabled", "malformed"]
    # No typed name that matches no account is kept in the audit log (it may be a password).
    assert all(
        actor in ("bob", "nopass", "gone", None) for actor, _d in _events(app, "auth.failed")
    )
    assert "nobody" not in json.dumps(_events(app, "auth.failed"))


def test_slower_answers_then_a_lockout_alike_for_known_and_unknown_names(
    app: Any, approver: Any, browser: Any, clock: Any, slept: list[float]
) -> None:
    settings = app.extensions["jit_ssh.web"]
    schedule = [settings.delay(n) for n in range(1, settings.lock_after + 1)]
    assert schedule == [0, 0, 0.5, 1, 2, 4, 4, 4, 4, 4]
    for name in ("bob", "nobody"):
        slept.clear()
        for _ in range(settings.lock_after):
            assert browser().login(name, "not the password").status_code == 401
        assert slept == schedule, name
        # Locked: even the right password gets the same answer, at the slowest pace.
        slept.clear()
        assert browser().login(name, PASSWORD).status_code == 401
        assert slept == [settings.max_delay]
    row = _user(app, "bob")
    assert row.failed_logins == settings.lock_after and row.locked_until is not None
    (throttle,) = _rows(app, "SELECT failed_logins, locked_until FROM login_throttle")
    assert throttle[0] == settings.lock_after and throttle[1] is not None

    clock.advance(minutes=16)
    slept.clear()
    assert browser().login("bob", PASSWORD).status_code == 303
    assert slept == []
    assert _user(app, "bob").failed_logins == 0


def test_a_success_clears_the_count_and_a_new_password_clears_a_lock(
    app: Any, approver: Any, admin: Any, browser: Any
) -> None:
    for _ in range(3):
        browser().login("bob", "wrong one")
    assert _user(app, "bob").failed_logins == 3
    assert browser().login("bob").status_code == 303
    assert _user(app, "bob").failed_logins == 0
    for _ in range(10):
        browser().login("bob", "wrong one")
    assert browser().login("bob").status_code == 401
    admin.set_password("bob", PASSWORD + "!")
    assert browser().login("bob", PASSWORD + "!").status_code == 303


def test_logins_and_logouts_are_audited(app: Any, bob_web: Browser) -> None:
    bob_web.post("/logout", page="/")
    assert [a for a, _d in _events(app, "web.login")] == ["bob"]
    assert [a for a, _d in _events(app, "web.logout")] == ["bob"]


# --------------------------------------------------------------------------- the redirect after login


@pytest.mark.parametrize(
    ("next_", "expected"),
    [
        ("/requests/abc123?x=1", "/requests/abc123?x=1"),
        ("/active", "/active"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("http:/evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
    ],
)
def test_login_redirects_only_to_a_local_path(
    approver: Any, browser: Any, next_: str, expected: str
) -> None:
    resp = browser("bob").login(next=next_)
    assert resp.status_code == 303
    assert resp.headers["Location"] == expected


def test_the_notification_link_goes_through_login_and_back(
    app: Any, approver: Any, requester: Any, browser: Any
) -> None:
    created = requester.post(
        "/v1/requests", {"target": "demo", "duration": "10m", "reason": "INC-1"}
    ).get_json()
    link = urlsplit(created["approval_url"])
    assert link.path == f"/requests/{created['id']}"
    b = browser("bob")
    first = b.get(link.path)
    assert first.status_code == 303
    login_url = urlsplit(first.headers["Location"])
    assert login_url.path == "/login" and parse_qs(login_url.query)["next"] == [link.path]
    form = b.get(first.headers["Location"])
    assert f'value="{link.path}"' in b.text(form)
    resp = b.login(next=link.path)
    assert resp.headers["Location"] == link.path
    page = b.get(link.path)
    assert page.status_code == 200 and created["id"] in b.text(page)


def test_a_logged_in_user_visiting_login_goes_on(bob_web: Browser) -> None:
    resp = bob_web.get("/login?next=/active")
    assert resp.status_code == 302 and resp.headers["Location"] == "/active"


# --------------------------------------------------------------------------- sessions


def test_idle_timeout(app: Any, bob_web: Browser, clock: Any) -> None:
    for _ in range(3):
        clock.advance(minutes=29)
        assert bob_web.get("/").status_code == 200
    clock.advance(minutes=31)
    resp = bob_web.get("/")
    assert resp.status_code == 303 and resp.headers["Location"].startswith("/login")
    assert "logged out after 30 minutes without activity" in bob_web.text(bob_web.get("/login"))
    assert _rows(app, "SELECT count(*) FROM web_sessions")[0][0] == 0


def test_sessions_end_after_max_age_even_when_active(
    app: Any, bob_web: Browser, clock: Any
) -> None:
    app.extensions["jit_ssh.web"].max_age = timedelta(hours=1)
    clock.advance(minutes=25)
    assert bob_web.get("/").status_code == 200
    clock.advance(minutes=25)
    assert bob_web.get("/").status_code == 200
    clock.advance(minutes=25)
    assert bob_web.get("/").status_code == 303


def test_logout_ends_the_session_on_the_server(app: Any, bob_web: Browser) -> None:
    cookie = bob_web.client.get_cookie("jit_ssh_session")
    assert cookie is not None
    resp = bob_web.post("/logout", page="/")
    assert resp.status_code == 303 and resp.headers["Location"] == "/login"
    assert bob_web.get("/").status_code == 303
    # The old cookie, replayed, is worth nothing: the server forgot the session.
    replay = Browser(app)
    replay.client.set_cookie("jit_ssh_session", cookie.value, domain="localhost")
    assert replay.get("/").status_code == 303


def test_logout_needs_a_post_with_the_token(bob_web: Browser) -> None:
    assert bob_web.get("/logout").status_code == 405
    assert bob_web.post("/logout", token=False).status_code == 400
    assert bob_web.get("/").status_code == 200


def test_a_new_password_or_disabling_ends_every_session(
    app: Any, approver: Any, admin: Any, browser: Any
) -> None:
    one, two = browser("bob"), browser("bob")
    one.login()
    two.login()
    admin.set_password("bob", PASSWORD + "2")
    assert one.get("/").status_code == 303 and two.get("/").status_code == 303
    one.login(password=PASSWORD + "2")
    assert one.get("/").status_code == 200
    admin.set_disabled("bob")
    assert one.get("/").status_code == 303


# --------------------------------------------------------------------------- TOTP


@pytest.mark.parametrize(
    ("unix", "code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_hotp_matches_rfc_6238_test_vectors(unix: int, code: str) -> None:
    # RFC 6238 appendix B, SHA-1, 8 digits, secret "12345678901234567890".
    assert totp_mod.hotp(b"12345678901234567890", unix // 30, digits=8) == code


def test_totp_verify_window_and_replay() -> None:
    secret = totp_mod.new_secret()
    now = datetime(2026, 11, 29, 12, 0, 10, tzinfo=UTC)
    step = totp_mod.time_step(now)
    assert totp_mod.verify(secret, totp_mod.totp(secret, now), now) == step
    earlier = totp_mod.totp(secret, now - timedelta(seconds=30))
    assert totp_mod.verify(secret, earlier, now) == step - 1
    assert totp_mod.verify(secret, totp_mod.totp(secret, now - timedelta(seconds=90)), now) is None
    assert totp_mod.verify(secret, totp_mod.totp(secret, now), now, last_step=step) is None
    assert totp_mod.verify(secret, earlier, now, last_step=step - 1) is None
    for junk in (None, "", "12345", "1234567", "abcdef", "１２３４５６"):
        assert totp_mod.verify(secret, junk, now) is None
    uri = totp_mod.provisioning_uri(secret, "bob")
    assert (
        uri.startswith("otpauth://totp/jit-ssh:bob?")
        and f"secret={secret}" in uri
        and "period=30" in uri
    )


def _wrong_code(secret: str, now: datetime) -> str:
    valid = {totp_mod.totp(secret, now + timedelta(seconds=d)) for d in (-60, -30, 0, 30, 60)}
    return next(c for c in ("000000", "111111", "222222") if c not in valid)


def _enable_totp(app: Any, name: str) -> str:
    secret = totp_mod.set_totp(app.extensions["jit_ssh"].service, name)
    assert secret is not None
    return secret


def test_totp_login(app: Any, approver: Any, browser: Any, clock: Any) -> None:
    secret = _enable_totp(app, "bob")
    b = browser("bob")
    resp = b.login(next="/active")
    assert resp.status_code == 303 and resp.headers["Location"] == "/login/code"
    assert b.get("/").status_code == 303, "not logged in before the code"
    assert (
        b.post(
            "/login/code", {"code": _wrong_code(secret, clock())}, page="/login/code"
        ).status_code
        == 401
    )
    resp = b.post("/login/code", {"code": totp_mod.totp(secret, clock())}, page="/login/code")
    assert resp.status_code == 303 and resp.headers["Location"] == "/active"
    assert b.get("/").status_code == 200
    assert [d["totp"] for _a, d in _events(app, "web.login")] == [True]
    assert [d["why"] for _a, d in _events(app, "auth.failed")] == ["wrong_code"]


def test_a_totp_code_is_accepted_once(app: Any, approver: Any, browser: Any, clock: Any) -> None:
    secret = _enable_totp(app, "bob")
    code = totp_mod.totp(secret, clock())
    first, second = browser("bob"), browser("bob")
    first.login()
    second.login()
    assert first.post("/login/code", {"code": code}, page="/login/code").status_code == 303
    assert second.post("/login/code", {"code": code}, page="/login/code").status_code == 401


def test_totp_guesses_count_towards_the_lockout(
    app: Any, approver: Any, browser: Any, clock: Any, slept: list[float]
) -> None:
    secret = _enable_totp(app, "bob")
    b = browser("bob")
    for _ in range(10):
        # A right password does not reset the count while the code is still wrong.
        assert b.login().status_code == 303
        assert (
            b.post(
                "/login/code", {"code": _wrong_code(secret, clock())}, page="/login/code"
            ).status_code
            == 401
        )
    assert b.login().status_code == 401
    b2 = browser("bob")
    clock.advance(minutes=16)
    b2.login()
    assert (
        b2.post(
            "/login/code", {"code": totp_mod.totp(secret, clock())}, page="/login/code"
        ).status_code
        == 303
    )


def test_the_code_step_expires(app: Any, approver: Any, browser: Any, clock: Any) -> None:
    secret = _enable_totp(app, "bob")
    b = browser("bob")
    b.login()
    clock.advance(minutes=6)
    resp = b.post("/login/code", {"code": totp_mod.totp(secret, clock())}, page="/login")
    assert resp.status_code == 303 and resp.headers["Location"] == "/login"


def test_turning_totp_on_ends_sessions_and_off_again(app: Any, approver: Any, browser: Any) -> None:
    b = browser("bob")
    b.login()
    _enable_totp(app, "bob")
    assert b.get("/").status_code == 303
    totp_mod.set_totp(app.extensions["jit_ssh"].service, "bob", enabled=False)
    assert b.login().headers["Location"] == "/"
    types = [
        r[0]
        for r in _rows(
            app, "SELECT type FROM audit_events WHERE type LIKE 'user.totp%' ORDER BY id"
        )
    ]
    assert types == ["user.totp_set", "user.totp_removed"]


# --------------------------------------------------------------------------- CSRF, headers, the key


def test_posts_without_a_valid_token_are_refused(app: Any, approver: Any, browser: Any) -> None:
    b = browser("bob")
    resp = b.login(csrf_token="")
    assert resp.status_code == 400
    assert resp.mimetype == "text/html" and "This form was not accepted" in b.text(resp)
    # A token from another browser's session is no good either.
    other = browser().token("/login")
    assert b.login(csrf_token=other).status_code == 400
    assert b.login().status_code == 303


def test_over_https_a_post_needs_a_same_origin_referer(approver: Any, browser: Any) -> None:
    # Flask-WTF checks the Referer of https POSTs: hence Referrer-Policy
    # same-origin (no-referrer would break every form).
    b = browser("bob", base_url="https://localhost")
    token = b.token("/login")
    data = {"username": "bob", "password": PASSWORD, "csrf_token": token}
    assert b.client.post("/login", data=data, base_url=b.base_url).status_code == 400
    evil = {"Referer": "https://evil.example/login"}
    assert b.client.post("/login", data=data, base_url=b.base_url, headers=evil).status_code == 400
    ok = b.client.post(
        "/login", data=data, base_url=b.base_url, headers={"Referer": "https://localhost/login"}
    )
    assert ok.status_code == 303


def test_the_signed_api_needs_no_csrf_token(alice: Any) -> None:
    assert alice.post("/v1/requests", {"target": "demo", "duration": "5m"}).status_code == 201


@pytest.mark.parametrize("path", ["/login", "/", "/requests/nope", "/no-such-page", "/v1/targets"])
def test_security_headers(bob_web: Browser, path: str) -> None:
    resp = bob_web.get(path)
    csp = resp.headers["Content-Security-Policy"]
    assert (
        "default-src 'none'" in csp
        and "frame-ancestors 'none'" in csp
        and "form-action 'self'" in csp
    )
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_have_no_scripts_and_the_stylesheet_is_served(bob_web: Browser) -> None:
    for path in ("/login", "/", "/active", "/mine"):
        assert "<script" not in bob_web.text(bob_web.get(path)).lower()
    css = bob_web.get("/web/static/style.css")
    assert css.status_code == 200 and css.mimetype == "text/css" and b"@media" in css.data


def test_the_secret_key_is_made_on_first_start_private_and_kept(app: Any, tmp_path: Path) -> None:
    from server.web import load_or_create_secret_key, secret_key_path

    cfg = app.extensions["jit_ssh"].config
    path = secret_key_path(cfg)
    assert path.parent == cfg.data_dir
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert app.secret_key == load_or_create_secret_key(cfg) == path.read_bytes().strip()
    assert len(app.secret_key) >= 64
    # Another data directory, another key: nothing is hard-coded.
    from dataclasses import replace

    other = load_or_create_secret_key(replace(cfg, data_dir=tmp_path / "elsewhere"))
    assert other != app.secret_key
    shared = tmp_path / "shared-key"
    assert (
        load_or_create_secret_key(replace(cfg, secret_key_file=shared))
        == shared.read_bytes().strip()
    )


def test_failed_logins_cannot_flood_the_audit_log_nor_write_under_the_users_name(
    app: Any, approver: Any, browser: Any, clock: Any, slept: list[float]
) -> None:
    """Anyone can fail a login naming bob: the chain gets one event per kind of failure and
    time window (the wrong password, the lockout, the attempts while locked), none with bob as actor."""
    app.extensions["jit_ssh.web"].lock_after = 3
    clock.freeze()
    for _ in range(12):
        assert browser().login("bob", "wrong password!").status_code == 401
    events = _events(app, "auth.failed")
    assert [(d["why"], d["locked"]) for _a, d in events] == [
        ("wrong_password", False),
        ("wrong_password", True),
        ("locked", True),
    ]
    assert all(actor is None and d["claimed_user"] == "bob" for actor, d in events)
    counted = _rows(app, "SELECT sum(count) FROM auth_failures WHERE claimed_user = 'bob'")[0][0]
    assert counted == 12
