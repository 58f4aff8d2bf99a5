"""The CLI's confirmation page (``/sso/cli/<token>``): the loopback start's ``authorize_url``
is this page, not the provider's; the person sees which key asks to be enrolled as them,
"Continue" (once, with the CSRF token) keeps the state in that browser, and the callback of
a cli flow completes only in that browser (login CSRF, issue 13). The provider is faked
(tests/server/sso_fakes.py); the real one: tests/integration/test_sso_cli.py."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from server.db import transaction
from server.models import SsoFlow
from tests.server.conftest import Clock
from tests.server.sso_fakes import (  # noqa: F401 (fixtures)
    BASE_URL,
    ISSUER,
    FakeProvider,
    KeyHolder,
    app,
    claims_for,
    cli_token,
    continue_cli,
    events,
    fake,
    loopback_query,
    make_app,
    sso_app,
)

from .conftest import csrf_token


@pytest.fixture
def mallory(app: Any, clock: Clock) -> KeyHolder:
    return KeyHolder(app.test_client(), clock)


def _path(authorize_url: str) -> str:
    return urlsplit(authorize_url).path


def _text(r: Any) -> str:
    return html.unescape(r.get_data(as_text=True))


def _flow_row(app: Any) -> SsoFlow:
    with transaction(app.extensions["jit_ssh"].service.sessions) as s:
        (row,) = s.execute(select(SsoFlow)).scalars()
        s.expunge(row)
        return row


# --------------------------------------------------------------------------- the finding


def test_a_cli_link_sent_to_a_victim_shows_whose_key_and_enrols_nothing_by_itself(
    app: Any, fake: FakeProvider, mallory: KeyHolder
) -> None:
    """Mallory starts a loopback flow with her key and port and sends the victim the URL.
    The victim's browser lands on a jit-ssh page naming the key, not at the provider: no
    sign-in happens without the victim pressing "Continue" after the warning."""
    r = mallory.start_loopback(45678)
    url = r.json["authorize_url"]
    assert url.startswith(f"{BASE_URL}/sso/cli/")
    victim = app.test_client()
    page = victim.get(_path(url))
    assert page.status_code == 200
    text = _text(page)
    assert "A jit-ssh client asks to enrol an SSH key as you" in text
    assert mallory.fingerprint in text
    assert "Continue only if you just ran" in text
    # Nothing was asked of the provider, nothing redirected to a loopback port.
    assert "Location" not in page.headers
    assert fake.authorizations == {}
    assert events(app, "sso.signed_in") == []


def test_a_provider_url_handed_to_another_browser_signs_nobody_in(
    app: Any, fake: FakeProvider, mallory: KeyHolder
) -> None:
    """Mallory continues in her own browser and sends the victim the provider's URL (or the
    victim's browser comes back with it otherwise): the callback refuses a browser that did
    not continue the flow, enrols nothing, redirects nowhere, and burns nothing."""
    r = mallory.start_loopback(45678)
    hers = app.test_client()
    provider_url = continue_cli(hers, r.json["authorize_url"])
    back = fake.sign_in(provider_url, claims_for("victim", ["sre"]))
    victim = app.test_client()
    cb = victim.get("/sso/callback", query_string=back)
    assert cb.status_code == 400
    assert "Location" not in cb.headers  # not to 127.0.0.1:45678
    assert "not continued from jit-ssh's confirmation page in this browser" in _text(cb)
    assert fake.exchanged == []  # the code was not redeemed
    assert events(app, "sso.signed_in") == []
    assert events(app, "sso.refused")[-1]["code"] == "sso_flow_unknown"
    # The flow is still its own browser's: a foreign browser did not burn it.
    assert _flow_row(app).used_at is None
    own = hers.get("/sso/callback", query_string=back)
    assert own.status_code == 303
    q = loopback_query(own.headers["Location"])
    assert q["flow"] == r.json["flow"] and "code" in q


def test_a_cli_state_never_continued_is_refused_at_the_callback(
    app: Any, fake: FakeProvider, mallory: KeyHolder
) -> None:
    """The CLI knows its flow id (the state): without the page's Continue no browser holds
    it, so a callback made up from it is refused and changes nothing."""
    r = mallory.start_loopback(45678)
    b = app.test_client()
    cb = b.get("/sso/callback", query_string={"state": r.json["flow"], "code": "c", "iss": ISSUER})
    assert cb.status_code == 400 and "Location" not in cb.headers
    assert fake.exchanged == []
    row = _flow_row(app)
    assert row.used_at is None and row.opened_at is None
    # The page still works for the person who started it.
    assert b.get(_path(r.json["authorize_url"])).status_code == 200


def test_a_web_flow_state_in_the_browser_does_not_complete_a_cli_flow(
    app: Any, fake: FakeProvider, mallory: KeyHolder
) -> None:
    r = mallory.start_loopback(45678)
    provider_url = continue_cli(app.test_client(), r.json["authorize_url"])
    back = fake.sign_in(provider_url, claims_for("victim"))
    victim = app.test_client()
    assert victim.get("/sso/login").status_code == 303  # her own (web) state in the cookie
    assert victim.get("/sso/callback", query_string=back).status_code == 400
    assert fake.exchanged == []


# --------------------------------------------------------------------------- the page


def test_the_page_names_the_key_the_address_the_time_and_the_provider(
    app: Any, mallory: KeyHolder, clock: Clock
) -> None:
    clock.freeze()
    r = mallory.start_loopback()
    page = app.test_client().get(_path(r.json["authorize_url"]))
    text = _text(page)
    assert mallory.fingerprint in text
    assert "laptop" in text  # the key's comment
    assert "127.0.0.1" in text  # the address that started the flow
    assert clock().strftime("%Y-%m-%d %H:%M:%S UTC") in text
    assert "Continue to sign in with Okta" in text
    assert "Continue only if you just ran <code>jit-ssh login</code> or " in page.get_data(
        as_text=True
    )
    assert "jit-ssh sso login" in text
    assert "Cancel" in text
    # The flow's state is nowhere on the page.
    assert r.json["flow"] not in text


def test_a_comment_with_markup_is_shown_as_text(app: Any, clock: Clock) -> None:
    from ca import public_key_from_crypto

    holder = KeyHolder(app.test_client(), clock)
    line = public_key_from_crypto(holder.key.public_key(), "<b>x</b>").openssh
    r = holder.post(
        "/v1/sso/start", {"public_key": line, "mode": "loopback", "loopback_port": 4444}
    )
    assert r.status_code == 200, r.json
    body = app.test_client().get(_path(r.json["authorize_url"])).get_data(as_text=True)
    assert "<b>x</b>" not in body and "&lt;b&gt;x&lt;/b&gt;" in body


def test_neither_the_link_nor_the_database_holds_the_state_in_clear(
    app: Any, mallory: KeyHolder
) -> None:
    r = mallory.start_loopback()
    token = cli_token(r.json["authorize_url"])
    assert token != r.json["flow"]
    row = _flow_row(app)
    for value in (row.id_hash, row.open_token_hash, row.open_state or ""):
        assert r.json["flow"] not in value and token not in value


# --------------------------------------------------------------------------- continue


def test_continue_binds_this_browser_and_goes_to_the_provider(
    app: Any, fake: FakeProvider, mallory: KeyHolder
) -> None:
    r = mallory.start_loopback(45678)
    b = app.test_client()
    provider_url = continue_cli(b, r.json["authorize_url"])
    q = {k: v[0] for k, v in parse_qs(urlsplit(provider_url).query).items()}
    assert q["state"] == r.json["flow"]
    assert q["code_challenge_method"] == "S256"
    assert q["redirect_uri"] == f"{BASE_URL}/sso/callback"
    row = _flow_row(app)
    assert row.opened_at is not None and row.used_at is None
    # The flow's own nonce and PKCE verifier: the fake provider holds the exchange to them.
    cb = b.get("/sso/callback", query_string=fake.sign_in(provider_url, claims_for("alice")))
    done = loopback_query(cb.headers["Location"])
    fin = mallory.post("/v1/sso/finish", {"flow": done["flow"], "code": done["code"]})
    assert fin.status_code == 200 and fin.json["user"] == "alice"


def test_a_second_browser_cannot_continue(app: Any, fake: FakeProvider, mallory: KeyHolder) -> None:
    """The link read off ``ps`` by someone else: whoever continues first has the flow; the
    other browser is told plainly, and gets no state."""
    r = mallory.start_loopback()
    path = _path(r.json["authorize_url"])
    first, second = app.test_client(), app.test_client()
    token = csrf_token(second.get(path).get_data(as_text=True))  # both had the page open
    continue_cli(first, r.json["authorize_url"])
    again = second.post(path, data={"csrf_token": token})
    assert again.status_code == 400
    assert "Location" not in again.headers
    assert "already used in another browser; run `jit-ssh login` again" in _text(again)
    assert len(fake.authorizations) == 1
    # And the page itself says so now, to anyone.
    assert "already used in another browser" in _text(second.get(path))


def test_continue_needs_the_csrf_token(app: Any, fake: FakeProvider, mallory: KeyHolder) -> None:
    r = mallory.start_loopback()
    b = app.test_client()
    refused = b.post(_path(r.json["authorize_url"]))
    assert refused.status_code == 400 and "Location" not in refused.headers
    assert _flow_row(app).opened_at is None
    assert fake.authorizations == {}
    continue_cli(b, r.json["authorize_url"])  # with the token it works


def test_a_get_never_continues(app: Any, fake: FakeProvider, mallory: KeyHolder) -> None:
    r = mallory.start_loopback()
    b = app.test_client()
    for _ in range(2):
        assert b.get(_path(r.json["authorize_url"])).status_code == 200
    assert _flow_row(app).opened_at is None and fake.authorizations == {}


# --------------------------------------------------------------------------- cancel


def test_cancel_ends_the_flow_and_enrols_nothing(
    app: Any, fake: FakeProvider, mallory: KeyHolder
) -> None:
    r = mallory.start_loopback()
    path = _path(r.json["authorize_url"])
    b = app.test_client()
    token = csrf_token(b.get(path).get_data(as_text=True))
    done = b.post(f"{path}/cancel", data={"csrf_token": token})
    assert done.status_code == 200
    assert "Nothing was enrolled" in _text(done)
    (refused,) = events(app, "sso.refused")
    assert (refused["code"], refused["field"]) == ("sso_denied", "cancel")
    # The link is dead: neither the page, nor Continue, nor a second cancel.
    assert b.get(path).status_code == 400
    assert b.post(path, data={"csrf_token": token}).status_code == 400
    assert b.post(f"{path}/cancel", data={"csrf_token": token}).status_code == 400
    assert fake.authorizations == {}
    row = _flow_row(app)
    assert row.used_at is not None and row.done_at is not None
    # A callback with the CLI's state finds the flow ended.
    cb = b.get("/sso/callback", query_string={"state": r.json["flow"], "code": "c"})
    assert cb.status_code == 400


def test_cancel_needs_the_csrf_token(app: Any, mallory: KeyHolder) -> None:
    r = mallory.start_loopback()
    path = _path(r.json["authorize_url"])
    assert app.test_client().post(f"{path}/cancel").status_code == 400
    assert _flow_row(app).used_at is None


# --------------------------------------------------------------------------- bad tokens


@pytest.mark.parametrize(
    "token",
    ["short", "A" * 43, "A" * 44, "A" * 42, "é" * 43, "%00" + "A" * 40, "A" * 42 + "."],
)
def test_a_made_up_token_is_a_clear_400(app: Any, mallory: KeyHolder, token: str) -> None:
    mallory.start_loopback()  # a real flow exists; the made-up token is not its
    b = app.test_client()
    page = b.get(f"/sso/cli/{token}")
    assert page.status_code == 400
    assert "not one this server gave out" in _text(page)
    csrf = csrf_token(b.get("/login").get_data(as_text=True))
    for path in (f"/sso/cli/{token}", f"/sso/cli/{token}/cancel"):
        r = b.post(path, data={"csrf_token": csrf})
        assert r.status_code == 400 and "Location" not in r.headers
    assert _flow_row(app).opened_at is None and _flow_row(app).used_at is None
    assert {e["code"] for e in events(app, "sso.refused")} == {"sso_flow_unknown"}


def test_the_device_flow_is_unchanged(app: Any, fake: FakeProvider, mallory: KeyHolder) -> None:
    # A device flow's start answer is the provider's (RFC 8628), unchanged.
    r = mallory.start_device()
    assert r.json["verification_uri"].startswith(f"{ISSUER}/")
    assert "authorize_url" not in r.json


def test_an_expired_link_is_a_410_and_changes_nothing(
    app: Any, mallory: KeyHolder, clock: Clock
) -> None:
    r = mallory.start_loopback()
    path = _path(r.json["authorize_url"])
    b = app.test_client()
    token = csrf_token(b.get(path).get_data(as_text=True))
    clock.advance(minutes=10, seconds=1)
    page = b.get(path)
    assert page.status_code == 410
    assert "expired" in _text(page)
    assert b.post(path, data={"csrf_token": token}).status_code == 410
    assert _flow_row(app).opened_at is None


def test_without_sso_the_page_is_404(tmp_path: Path, database_url: str, clock: Clock) -> None:
    from tests.server.conftest import build_app

    app = build_app(tmp_path, database_url, clock)
    try:
        assert app.test_client().get("/sso/cli/" + "A" * 43).status_code == 404
    finally:
        app.extensions["jit_ssh.engine"].dispose()


def test_the_pages_csp_lets_continue_end_at_the_provider_only(app: Any, mallory: KeyHolder) -> None:
    """Browsers apply ``form-action`` to the redirect a POST answers with: the confirmation
    page allows the provider's origin, and nothing else does."""
    r = mallory.start_loopback()
    page = app.test_client().get(_path(r.json["authorize_url"]))
    csp = page.headers["Content-Security-Policy"]
    assert f"form-action 'self' {ISSUER};" in csp
    assert "script-src" not in csp and "default-src 'none'" in csp
    login = app.test_client().get("/login")
    assert "form-action 'self';" in login.headers["Content-Security-Policy"]
