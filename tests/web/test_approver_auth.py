"""A rule's ``approver_auth`` in the web form (issue 14): "totp" needs an approval made in a
web session that gave a TOTP code, "fresh_sso" one signed in by single sign-on within the
last 15 minutes. The web's Approve and Deny pass the session's sign-in to the service, the
request page says what the rule needs and, when this session lacks it, says so beside the
(disabled) buttons with a link to sign in again; a forged POST is refused with the message
on the page (403), and a signed API call, which proves neither, is refused too.

The provider is the fake of tests/server/sso_fakes.py; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import text

from server import totp as totp_mod
from server.admin import Admin
from tests.server import conftest as server_conftest
from tests.server.conftest import Caller, Clock, build_app
from tests.server.sso_fakes import ISSUER, FakeProvider, claims_for, events, make_app

from .conftest import PASSWORD, Browser
from .test_pages import _flash, _state, _submit

TOTP_NEEDS = "This rule needs approvals signed in with a TOTP code."
SSO_NEEDS = "This rule needs approvals signed in by single sign-on within the last 15 minutes."

_RULES = """
[targets.vault]
principals = ["root@vault"]
login_users = ["root"]

[targets.ledger]
principals = ["root@ledger"]
login_users = ["root"]

[[rules]]
name = "vault-totp"
targets = ["vault"]
groups = ["engineers"]
max_duration = "1h"
default_duration = "15m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = false
pending_ttl = "2h"
claim_window = "15m"
approver_auth = "totp"

[[rules]]
name = "ledger-fresh-sso"
targets = ["ledger"]
groups = ["engineers"]
max_duration = "1h"
default_duration = "15m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = false
pending_ttl = "2h"
claim_window = "15m"
approver_auth = "fresh_sso"
"""


@pytest.fixture(autouse=True)
def _policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service tests' policy and two rules that ask for a sign-in."""
    monkeypatch.setattr(server_conftest, "TEST_POLICY", server_conftest.TEST_POLICY + _RULES)


@pytest.fixture
def app(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[Any]:
    """The app with single sign-on (passwords allowed too), its provider the strict fake."""
    app, fake = make_app(tmp_path, database_url, clock)
    app.extensions["jit_ssh.fake_provider"] = fake
    yield app
    app.extensions["jit_ssh.engine"].dispose()


@pytest.fixture
def fake(app: Any) -> FakeProvider:
    provider = app.extensions["jit_ssh.fake_provider"]
    assert isinstance(provider, FakeProvider)
    return provider


def _enable_totp(app: Any, name: str) -> str:
    secret = totp_mod.set_totp(app.extensions["jit_ssh"].service, name)
    assert secret is not None
    return secret


def _totp_login(b: Browser, secret: str, clock: Clock) -> None:
    assert b.login().headers["Location"] == "/login/code"
    r = b.post("/login/code", {"code": totp_mod.totp(secret, clock())}, page="/login/code")
    assert r.status_code == 303, b.text(r)


def _sso_sign_in(b: Browser, fake: FakeProvider, name: str, *, again: bool = False) -> None:
    query = {"next": "/mine", **({"again": "1"} if again else {})}
    start = b.get("/sso/login", query_string=query)
    assert start.status_code == 303 and start.headers["Location"].startswith(ISSUER), b.text(start)
    back = b.get(
        "/sso/callback",
        query_string=fake.sign_in(start.headers["Location"], claims_for(name, ["approvers"])),
    )
    assert back.status_code == 303, b.text(back)


def _page(b: Browser, request_id: str) -> str:
    r = b.get(f"/requests/{request_id}")
    assert r.status_code == 200, r.status_code
    return html.unescape(b.text(r))


def _buttons_disabled(body: str) -> list[bool]:
    return [
        "disabled" in tag
        for tag in re.findall(r'<button type="submit" class="(?:approve|deny)-button"[^>]*>', body)
    ]


def _approve(b: Browser, request_id: str) -> Any:
    page = f"/requests/{request_id}"
    return b.post(f"{page}/approve", {"comment": ""}, page=page)


def _deny(b: Browser, request_id: str) -> Any:
    page = f"/requests/{request_id}"
    return b.post(f"{page}/deny", {"reason": "not now"}, page=page)


def _approvals(app: Any, request_id: str) -> list[tuple[str, str | None]]:
    with app.extensions["jit_ssh.engine"].connect() as c:
        return [
            tuple(r)
            for r in c.execute(
                text("SELECT decision, via FROM approvals WHERE request_id = :i"), {"i": request_id}
            )
        ]


def _sessions(app: Any) -> list[tuple[str | None, bool]]:
    with app.extensions["jit_ssh.engine"].connect() as c:
        return [tuple(r) for r in c.execute(text("SELECT via, totp_used FROM web_sessions"))]


# ----------------------------------------------------------------------------------- totp


def test_totp_rule_refuses_a_session_without_a_code_and_says_so_before_the_buttons(
    app: Any, approver: Any, requester: Any, browser: Any
) -> None:
    req = _submit(requester, "vault", "15m", "INC-7: rotate")
    b = browser("bob")
    assert b.login().status_code == 303
    assert _sessions(app) == [("password", False)]
    body = _page(b, req["id"])
    assert body.count(TOTP_NEEDS) == 2  # in the rule's list, and beside the buttons
    assert "Your account has no TOTP code set up" in body
    assert "jit-ssh admin user totp bob" in body
    assert 'href="/login?next=/requests/' + req["id"] + '&again=1"' in body
    assert _buttons_disabled(body) == [True, True]
    # A forged POST all the same: refused with the service's message, nothing recorded.
    for send in (_approve, _deny):
        r = send(b, req["id"])
        assert r.status_code == 403, b.text(r)
        (message,) = _flash(b.text(r), "error")
        assert "needs approvals made in the web form, signed in with a TOTP code" in message
    assert _state(app, req["id"])[0] == "pending"
    assert _approvals(app, req["id"]) == []


def test_totp_rule_accepts_a_session_that_gave_a_code(
    app: Any, approver: Any, requester: Any, browser: Any, clock: Clock
) -> None:
    secret = _enable_totp(app, "bob")
    req = _submit(requester, "vault", "15m", "INC-7: rotate")
    b = browser("bob")
    _totp_login(b, secret, clock)
    assert _sessions(app) == [("password", True)]
    body = _page(b, req["id"])
    assert f"{TOTP_NEEDS} Your session qualifies." in body
    assert "sign in again" not in body.lower()
    assert _buttons_disabled(body) == [False, False]
    r = _approve(b, req["id"])
    assert r.status_code == 303, _flash(b.text(r), "error")
    assert _state(app, req["id"])[0] == "approved"
    assert _approvals(app, req["id"]) == [("approve", "web")]
    (approval,) = events(app, "request.approval")
    assert approval["via"] == "web"


def test_totp_rule_accepts_a_deny_from_a_session_that_gave_a_code(
    app: Any, approver: Any, requester: Any, browser: Any, clock: Clock
) -> None:
    secret = _enable_totp(app, "bob")
    req = _submit(requester, "vault", "15m", "INC-7: rotate")
    b = browser("bob")
    _totp_login(b, secret, clock)
    r = _deny(b, req["id"])
    assert r.status_code == 303, _flash(b.text(r), "error")
    assert _state(app, req["id"])[0] == "denied"


def test_an_sso_sign_in_with_the_code_satisfies_a_totp_rule(
    app: Any, approver: Any, requester: Any, browser: Any, fake: FakeProvider, clock: Clock
) -> None:
    secret = _enable_totp(app, "bob")
    req = _submit(requester, "vault", "15m", "INC-7: rotate")
    b = browser("bob")
    start = b.get("/sso/login", query_string={"next": f"/requests/{req['id']}"})
    back = b.get(
        "/sso/callback",
        query_string=fake.sign_in(start.headers["Location"], claims_for("bob", ["approvers"])),
    )
    assert back.headers["Location"] == "/login/code"
    r = b.post("/login/code", {"code": totp_mod.totp(secret, clock())}, page="/login/code")
    assert r.status_code == 303
    assert _sessions(app) == [("sso", True)]
    assert _approve(b, req["id"]).status_code == 303
    assert _state(app, req["id"])[0] == "approved"


# ------------------------------------------------------------------------------ fresh_sso


def test_fresh_sso_rule_accepts_a_single_sign_on_within_15_minutes(
    app: Any, approver: Any, requester: Any, browser: Any, fake: FakeProvider, clock: Clock
) -> None:
    req = _submit(requester, "ledger", "15m", "INC-8: books")
    b = browser("bob")
    _sso_sign_in(b, fake, "bob")
    assert _sessions(app) == [("sso", False)]
    clock.advance(minutes=14)
    body = _page(b, req["id"])
    assert f"{SSO_NEEDS} Your session qualifies." in body
    assert _buttons_disabled(body) == [False, False]
    r = _approve(b, req["id"])
    assert r.status_code == 303, _flash(b.text(r), "error")
    assert _state(app, req["id"])[0] == "approved"
    assert _approvals(app, req["id"]) == [("approve", "web")]


def test_fresh_sso_rule_refuses_an_older_sign_in_and_links_to_signing_in_again(
    app: Any, approver: Any, requester: Any, browser: Any, fake: FakeProvider, clock: Clock
) -> None:
    req = _submit(requester, "ledger", "15m", "INC-8: books")
    b = browser("bob")
    _sso_sign_in(b, fake, "bob")
    clock.advance(minutes=16)
    body = _page(b, req["id"])
    assert "You signed in by single sign-on 16 minutes ago: sign in again" in body
    link = f'href="/sso/login?next=/requests/{req["id"]}&again=1"'
    assert link in body
    assert _buttons_disabled(body) == [True, True]
    r = _approve(b, req["id"])
    assert r.status_code == 403
    (message,) = _flash(b.text(r), "error")
    assert "within 15 minutes of signing in by single sign-on" in message
    assert _approvals(app, req["id"]) == []
    # The link signs this browser in anew, though it is signed in: the old session ends.
    start = b.get("/sso/login", query_string={"next": f"/requests/{req['id']}", "again": "1"})
    assert start.status_code == 303 and start.headers["Location"].startswith(ISSUER)
    back = b.get(
        "/sso/callback",
        query_string=fake.sign_in(start.headers["Location"], claims_for("bob", ["approvers"])),
    )
    assert back.headers["Location"] == f"/requests/{req['id']}"
    assert _sessions(app) == [("sso", False)]
    assert "Your session qualifies." in _page(b, req["id"])
    assert _approve(b, req["id"]).status_code == 303
    assert _state(app, req["id"])[0] == "approved"


def test_fresh_sso_rule_refuses_a_password_session(
    app: Any, approver: Any, requester: Any, browser: Any
) -> None:
    req = _submit(requester, "ledger", "15m", "INC-8: books")
    b = browser("bob")
    assert b.login().status_code == 303
    body = _page(b, req["id"])
    assert "This session was not signed in by single sign-on" in body
    assert f'href="/sso/login?next=/requests/{req["id"]}&amp;again=1"' in b.text(
        b.get(f"/requests/{req['id']}")
    )
    for send in (_approve, _deny):
        r = send(b, req["id"])
        assert r.status_code == 403
        (message,) = _flash(b.text(r), "error")
        assert "signing in by single sign-on" in message
    assert _state(app, req["id"])[0] == "pending"


def test_signed_in_the_sign_in_again_page_asks_again_and_replaces_the_session(
    app: Any, approver: Any, browser: Any
) -> None:
    b = browser("bob")
    assert b.login().status_code == 303
    # Signed in, /login goes on; with again=1 it asks again, and the new login ends the old session.
    assert b.get("/login?next=/mine").status_code == 302
    page = b.get("/login?next=/mine&again=1")
    assert page.status_code == 200 and "Sign in again" in b.text(page)
    assert 'href="/sso/login?next=/mine&amp;again=1"' in b.text(page)
    r = b.post(
        "/login",
        {"username": "bob", "password": PASSWORD, "next": "/mine"},
        page="/login?next=/mine&again=1",
    )
    assert r.status_code == 303
    assert len(_sessions(app)) == 1
    assert [e["actor"] for e in events(app, "web.logout")] == ["bob"]


# ----------------------------------------------------------------------------------- API


@pytest.mark.parametrize("target", ["vault", "ledger"])
def test_an_api_approval_proves_no_sign_in(
    app: Any, approver: Any, requester: Any, target: str
) -> None:
    req = _submit(requester, target, "15m", "INC-9: api")
    for path, body in (("approve", {"comment": ""}), ("deny", {"reason": "no"})):
        r = approver.post(f"/v1/requests/{req['id']}/{path}", body)
        assert r.status_code == 403, r.get_json()
        assert r.get_json()["code"] == "approver_auth_required"
    assert _state(app, req["id"])[0] == "pending"
    assert _approvals(app, req["id"]) == []


# ------------------------------------------------------------------------- without SSO


def test_without_single_sign_on_a_fresh_sso_rule_says_nobody_can_approve_here(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    plain = build_app(tmp_path, database_url, clock)
    try:
        admin = Admin(plain.extensions["jit_ssh"].service)
        plain.extensions["jit_ssh.web"].sleep = lambda seconds: None
        key = ed25519.Ed25519PrivateKey.generate()
        alice = Caller(name="alice", key=key, client=plain.test_client(), clock=clock)
        admin.add_user(
            "alice", groups=["engineers"], roles=["requester"], ssh_keys=[alice.public_openssh]
        )
        admin.add_user("bob", groups=["approvers"], roles=["requester", "approver"])
        admin.set_password("bob", PASSWORD)
        req = _submit(alice, "ledger", "15m", "INC-8: books")
        b = Browser(plain, "bob")
        assert b.login().status_code == 303
        body = _page(b, req["id"])
        assert SSO_NEEDS in body and "This server has no single sign-on configured" in body
        assert "/sso/login" not in body and "again=1" not in body
        assert _buttons_disabled(body) == [True, True]
        # The totp rule's link is the login page (no single sign-on to go to).
        other = _submit(alice, "vault", "15m", "INC-7: rotate")
        assert f"/login?next=/requests/{other['id']}&again=1" in _page(b, other["id"])
    finally:
        plain.extensions["jit_ssh.engine"].dispose()


def test_a_session_from_before_the_columns_counts_as_a_password_one(
    app: Any, approver: Any, requester: Any, browser: Any, fake: FakeProvider
) -> None:
    req = _submit(requester, "ledger", "15m", "INC-8: books")
    b = browser("bob")
    _sso_sign_in(b, fake, "bob")
    with app.extensions["jit_ssh.engine"].begin() as c:
        c.execute(text("UPDATE web_sessions SET via = NULL"))
    assert "This session was not signed in by single sign-on" in _page(b, req["id"])
    assert _approve(b, req["id"]).status_code == 403
    assert _approvals(app, req["id"]) == []
