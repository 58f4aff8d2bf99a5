"""Web sign-in with single sign-on: the login page's button, ``/sso/login`` and
``/sso/callback`` into an ordinary web session, ``password_login = false``, and the
groups a decision used on the request page. The provider is faked
(tests/server/sso_fakes.py); the browser through the real provider's pages is
tests/integration/test_sso_browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from server import totp as totp_mod
from tests.server.conftest import Clock
from tests.server.sso_fakes import ISSUER, FakeProvider, claims_for, events, make_app

from .conftest import Browser


def _sso_app(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str, clock: Clock
) -> Iterator[Any]:
    overrides = getattr(request, "param", {})
    app, fake = make_app(tmp_path, database_url, clock, **overrides)
    app.extensions["jit_ssh.fake_provider"] = fake
    yield app
    app.extensions["jit_ssh.engine"].dispose()


# The web fixtures (users, browsers) build on ``app``: here, an app with [sso].
app = pytest.fixture(_sso_app, name="app")

NO_PASSWORDS = {"password_login": False, "break_glass_admins": ("root-admin",)}


@pytest.fixture
def fake(app: Any) -> FakeProvider:
    provider = app.extensions["jit_ssh.fake_provider"]
    assert isinstance(provider, FakeProvider)
    return provider


def _sign_in(
    b: Browser, fake: FakeProvider, claims: dict[str, Any], next_url: str = "/mine"
) -> Any:
    """/sso/login -> the provider -> /sso/callback, in browser ``b``: the callback's answer."""
    start = b.get("/sso/login", query_string={"next": next_url})
    assert start.status_code == 303, b.text(start)
    url = start.headers["Location"]
    assert url.startswith(f"{ISSUER}/authorize?")
    return b.get("/sso/callback", query_string=fake.sign_in(url, claims))


# --------------------------------------------------------------------------- the login page


def test_the_login_page_offers_sign_in_with_the_provider(app: Any, browser: Any) -> None:
    html = browser().text(browser().get("/login?next=/active"))
    assert "Sign in with Okta" in html
    assert 'href="/sso/login?next=/active"' in html
    # password_login is on by default: the form is there too.
    assert 'type="password"' in html


@pytest.mark.parametrize("app", [NO_PASSWORDS], indirect=True)
def test_without_password_login_the_form_is_gone_and_a_password_is_refused(
    app: Any, browser: Any, web_user: Any
) -> None:
    web_user("bob", ("approvers",), ("requester", "approver"))
    b: Browser = browser("bob")
    html = b.text(b.get("/login"))
    assert "Sign in with Okta" in html
    assert 'type="password"' not in html
    # Refused on the server, not only hidden: a POSTed password is not even checked.
    r = b.login()
    assert r.status_code == 403
    assert "password_login_disabled" in b.text(r)
    assert b.get("/mine").status_code == 303
    assert events(app, "web.login") == []


@pytest.mark.parametrize("app", [NO_PASSWORDS], indirect=True)
def test_without_password_login_a_break_glass_admin_still_logs_in(
    app: Any, browser: Any, web_user: Any
) -> None:
    web_user("root-admin", (), ("admin",))
    b: Browser = browser("root-admin")
    assert 'type="password"' in b.text(b.get("/login?break_glass=1"))
    assert b.login(password="a wrong password!").status_code == 401
    r = b.login()
    assert r.status_code == 303, b.text(r)
    assert b.get("/mine").status_code == 200


# --------------------------------------------------------------------------- sign-in


def test_a_first_sign_in_creates_the_user_and_a_session(
    app: Any, fake: FakeProvider, browser: Any
) -> None:
    b: Browser = browser()
    start = b.get("/sso/login", query_string={"next": "/active"})
    # The browser is bound to its state by the session cookie: HttpOnly, SameSite=Lax.
    cookie = [c for c in start.headers.getlist("Set-Cookie") if c.startswith("jit_ssh_session=")]
    assert cookie and "HttpOnly" in cookie[0] and "SameSite=Lax" in cookie[0]
    back = b.get(
        "/sso/callback",
        query_string=fake.sign_in(start.headers["Location"], claims_for("carol", ["approvers"])),
    )
    assert back.status_code == 303, b.text(back)
    assert urlsplit(back.headers["Location"]).path == "/active"
    page = b.get("/active")
    assert page.status_code == 200
    assert '<span class="me">carol</span>' in b.text(page)

    (created,) = events(app, "user.created")
    assert created["user"] == "carol" and created["source"] == "sso"
    assert created["roles"] == ["requester"]
    (signed_in,) = events(app, "sso.signed_in")
    assert signed_in == {
        "actor": "carol",
        "user": "carol",
        "kind": "web",
        "issuer": ISSUER,
        "groups": ["approvers"],
    }
    (changed,) = events(app, "user.groups_changed")
    assert changed["before"] == [] and changed["after"] == ["approvers"]
    (login,) = events(app, "web.login")
    assert login["via"] == "sso"


def test_a_sign_in_links_an_existing_user_and_replaces_the_groups(
    app: Any, fake: FakeProvider, browser: Any, web_user: Any
) -> None:
    web_user("bob", ("legacy",), ("requester", "approver"))
    b: Browser = browser()
    back = _sign_in(b, fake, claims_for("bob", ["approvers"]), next_url="/")
    assert back.status_code == 303
    (linked,) = events(app, "user.sso_linked")
    assert linked["user"] == "bob" and linked["issuer"] == ISSUER
    (changed,) = events(app, "user.groups_changed")
    assert (changed["before"], changed["after"]) == (["legacy"], ["approvers"])
    assert changed["before_source"] == "local"
    # The approver role stays: the pending list is bob's home page.
    assert b.get("/").status_code == 200
    # The next sign-in changes nothing and records no change.
    _sign_in(browser(), fake, claims_for("bob", ["approvers"]))
    assert len(events(app, "user.groups_changed")) == 1
    assert len(events(app, "sso.signed_in")) == 2


def test_a_name_held_by_another_identity_is_refused(
    app: Any, fake: FakeProvider, browser: Any
) -> None:
    _sign_in(browser(), fake, claims_for("carol"))
    impostor = claims_for("carol", sub="someone-else")
    b: Browser = browser()
    r = _sign_in(b, fake, impostor)
    assert r.status_code == 401
    assert "another single sign-on identity" in b.text(r)
    assert b.get("/mine").status_code == 303
    (refused,) = events(app, "sso.refused")
    assert refused["code"] == "sso_bad_claim" and refused["field"] == "preferred_username"


def test_a_disabled_user_is_refused(
    app: Any, fake: FakeProvider, browser: Any, web_user: Any, admin: Any
) -> None:
    web_user("bob", ("approvers",))
    admin.set_disabled("bob")
    b: Browser = browser()
    r = _sign_in(b, fake, claims_for("bob"))
    assert r.status_code == 401
    assert b.get("/mine").status_code == 303
    assert events(app, "sso.signed_in") == []


@pytest.mark.parametrize(
    "next_url", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"]
)
def test_next_is_only_a_path_on_this_site(app: Any, browser: Any, next_url: str) -> None:
    b: Browser = browser()
    r = b.get("/sso/login", query_string={"next": next_url})
    assert r.status_code == 400
    assert "Location" not in r.headers
    assert events(app, "sso.refused")[0]["code"] == "sso_redirect_refused"


def test_a_callback_completes_only_in_the_browser_that_started_it(
    app: Any, fake: FakeProvider, browser: Any
) -> None:
    """Login CSRF: someone's own sign-in, handed to another browser, signs nobody in there."""
    mine: Browser = browser()
    start = mine.get("/sso/login", query_string={"next": "/mine"})
    back = fake.sign_in(start.headers["Location"], claims_for("mallory"))
    victim: Browser = browser()
    r = victim.get("/sso/callback", query_string=back)
    assert r.status_code == 400
    assert victim.get("/mine").status_code == 303
    assert fake.exchanged == []  # nothing was redeemed: the flow is still the starter's
    assert mine.get("/sso/callback", query_string=back).status_code == 303
    assert mine.get("/mine").status_code == 200


def test_a_replayed_callback_is_refused_and_changes_nothing(
    app: Any, fake: FakeProvider, browser: Any
) -> None:
    b: Browser = browser()
    start = b.get("/sso/login")
    back = fake.sign_in(start.headers["Location"], claims_for("carol"))
    assert b.get("/sso/callback", query_string=back).status_code == 303
    again = b.get("/sso/callback", query_string=back)
    assert again.status_code == 400
    assert "no longer valid" in b.text(again)
    assert len(events(app, "sso.signed_in")) == 1
    assert len(fake.exchanged) == 1


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"state": "short", "code": "x"},
        {"state": "A" * 32, "code": "x"},
        {"state": "A" * 33, "code": "x"},
        {"state": "é" * 32, "code": "x"},
    ],
)
def test_a_made_up_callback_is_a_400(app: Any, browser: Any, query: dict[str, str]) -> None:
    b: Browser = browser()
    r = b.get("/sso/callback", query_string=query)
    assert r.status_code == 400
    assert b.get("/mine").status_code == 303


def test_a_provider_error_is_a_refusal_not_a_sign_in(
    app: Any, fake: FakeProvider, browser: Any
) -> None:
    b: Browser = browser()
    start = b.get("/sso/login")
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    r = b.get("/sso/callback", query_string={"state": state, "error": "access_denied"})
    assert r.status_code == 403
    assert "access_denied" in b.text(r)
    # The state is spent.
    back = {"state": state, "code": "x"}
    assert b.get("/sso/callback", query_string=back).status_code == 400


def test_another_issuer_in_the_response_is_refused(
    app: Any, fake: FakeProvider, browser: Any
) -> None:
    b: Browser = browser()
    start = b.get("/sso/login")
    back = fake.sign_in(start.headers["Location"], claims_for("carol"))
    back["iss"] = "https://other.example.test"
    r = b.get("/sso/callback", query_string=back)
    assert r.status_code == 401
    assert fake.exchanged == []


def test_a_user_with_totp_is_still_asked_for_the_code(
    app: Any, fake: FakeProvider, browser: Any, web_user: Any, clock: Clock
) -> None:
    web_user("bob", ("approvers",), ("requester", "approver"))
    secret = totp_mod.set_totp(app.extensions["jit_ssh"].service, "bob", enabled=True)
    assert secret is not None
    b: Browser = browser()
    r = _sign_in(b, fake, claims_for("bob", ["approvers"]), next_url="/active")
    assert r.status_code == 303
    assert urlsplit(r.headers["Location"]).path == "/login/code"
    assert b.get("/active").status_code == 303  # not signed in yet
    code = totp_mod.totp(secret, clock())
    done = b.post("/login/code", {"code": code}, page="/login/code")
    assert done.status_code == 303, b.text(done)
    assert urlsplit(done.headers["Location"]).path == "/active"
    assert b.get("/active").status_code == 200
    (login,) = events(app, "web.login")
    assert login["via"] == "sso" and login["totp"] is True


# --------------------------------------------------------------------------- the request page


def test_the_request_page_shows_the_groups_the_decision_used(
    app: Any, fake: FakeProvider, browser: Any, web_user: Any, make_user: Any
) -> None:
    approver = web_user("bob", ("approvers",), ("requester", "approver"))
    assert approver
    engineer = make_user("erin", ("engineers",))
    r = engineer.post("/v1/requests", {"target": "demo", "reason": "look"})
    assert r.status_code == 201, r.json
    assert (r.json["groups_used"], r.json["groups_source"]) == (["engineers"], "local")
    b: Browser = browser("bob")
    assert b.login().status_code == 303
    html = b.text(b.get(f"/requests/{r.json['id']}"))
    assert "engineers" in html and "from jit-ssh" in html

    # After a sign-in the groups are the provider's, and the page says so.
    _sign_in(browser(), fake, claims_for("erin", ["engineers", "oncall"]))
    r2 = engineer.post("/v1/requests", {"target": "demo", "reason": "again"})
    assert (r2.json["groups_used"], r2.json["groups_source"]) == (["engineers", "oncall"], "sso")
    html = b.text(b.get(f"/requests/{r2.json['id']}"))
    assert "engineers, oncall" in html and "from the provider claim" in html


def test_sso_login_on_a_server_without_sso_is_404(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    from tests.server.conftest import build_app

    plain = build_app(tmp_path, database_url, clock)
    try:
        r = plain.test_client().get("/sso/login")
        assert r.status_code == 404
        assert b"Sign in with" not in plain.test_client().get("/login").data
    finally:
        plain.extensions["jit_ssh.engine"].dispose()
