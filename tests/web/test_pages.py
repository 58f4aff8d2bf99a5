"""The pages: the pending list, a request's page with Approve and Deny, Active
access with Revoke, My requests; who may see and do what; escaping; errors."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from markupsafe import escape
from sqlalchemy import text

from ca.keys import public_key_from_crypto
from ca.krl import parse_krl

from .conftest import Browser, csrf_token

XSS = "INC-666 <script>alert('x')</script><img src=x onerror=alert(1)>&amp; \"quoted\" 'single'"


def _submit(
    caller: Any, target: str = "demo", duration: str = "30m", reason: str = "INC-1: test"
) -> dict[str, Any]:
    resp = caller.post("/v1/requests", {"target": target, "duration": duration, "reason": reason})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def _state(app: Any, request_id: str) -> tuple[str, int]:
    with app.extensions["jit_ssh.engine"].connect() as c:
        return tuple(
            c.execute(
                text("SELECT state, granted_seconds FROM requests WHERE id = :i"), {"i": request_id}
            ).one()
        )


def _counts(app: Any) -> tuple[int, ...]:
    with app.extensions["jit_ssh.engine"].connect() as c:
        return tuple(
            c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("approvals", "certificates", "revocations")
        )


def _key_line() -> str:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return public_key_from_crypto(ed25519.Ed25519PrivateKey.generate().public_key()).openssh


def _fetch_cert(caller: Any, request_id: str) -> dict[str, Any]:
    resp = caller.post(f"/v1/requests/{request_id}/certificate", {"public_key": _key_line()})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def _flash(body: str, kind: str) -> list[str]:
    return [
        html.unescape(m)
        for m in re.findall(rf'class="flash flash-{kind}"[^>]*>(.*?)</p>', body, re.S)
    ]


# --------------------------------------------------------------------------- the pending list


def test_pending_list_shows_what_an_approver_needs(
    app: Any, bob_web: Browser, requester: Any, approver2: Any
) -> None:
    one = _submit(requester, "prod-db", "45m", "INC-42: replica lag on db-3")
    two = _submit(approver2, "demo", "10m", "INC-43: look at the demo host")
    body = bob_web.text(bob_web.get("/"))
    assert "Pending for me" in body
    for needle in (
        one["id"],
        two["id"],
        "alice",
        "carol",
        "prod-db",
        "root@prod-db",
        "postgres@prod-db",
        "jit-demo@demo",
        "45m",
        "10m",
        "INC-42: replica lag on db-3",
        "0/2",
        "0/1",
        "Lapses unanswered in",
        "Asked",
        "just now",
        "9 min",
    ):
        assert needle in body, needle


def test_the_pending_list_leaves_out_what_i_cannot_decide(
    app: Any, web_user: Any, browser: Any, requester: Any, approver2: Any
) -> None:
    web_user("bob", ("approvers",), ("requester", "approver"))
    outsider = web_user("olaf", ("other-approvers",), ("requester", "approver"))
    mine = _submit(approver2, "demo")
    theirs = _submit(requester, "demo")
    carol = browser("carol")
    carol.login()
    body = carol.text(carol.get("/"))
    assert theirs["id"] in body and mine["id"] not in body
    olaf = browser(outsider.name)
    olaf.login()
    assert "Nothing is waiting for your approval" in olaf.text(olaf.get("/"))


def test_a_requester_lands_on_my_requests(app: Any, requester: Any, browser: Any) -> None:
    req = _submit(requester, "demo", "20m", "INC-7: mine")
    b = browser("alice")
    b.login()
    resp = b.get("/")
    assert resp.status_code == 302 and resp.headers["Location"] == "/mine"
    body = b.text(b.get("/mine"))
    assert req["id"] in body and "INC-7: mine" in body and "20m" in body and "pending" in body
    assert "Pending for me" not in body


# --------------------------------------------------------------------------- a request's page


def test_request_page_shows_rule_audit_trail_and_the_forms(
    app: Any, bob_web: Browser, requester: Any
) -> None:
    req = _submit(requester, "prod-db", "1h", "INC-9: vacuum")
    body = bob_web.text(bob_web.get(f"/requests/{req['id']}"))
    for needle in (
        "alice",
        "prod-db",
        "root@prod-db",
        "1h asked",
        "INC-9: vacuum",
        "0/2",
        "Lapses unanswered in",
        "prod-two-approvals",
        "2 approvals from",
        "approvers",
        "/usr/bin/uptime",
        "10.0.0.0/8",
        "Audit trail",
        "Requested",
        "by alice",
        "Approve",
        "Deny",
    ):
        assert needle in body, needle
    assert (
        f'action="/requests/{req["id"]}/approve"' in body
        and f'action="/requests/{req["id"]}/deny"' in body
    )
    # Shorter grants to choose from, never a longer one.
    options = re.findall(r'<option value="(\d*)"', body)
    assert options[0] == "" and all(int(o) < 3600 for o in options[1:]) and "1800" in options


def test_approve_then_the_requester_gets_the_certificate(
    app: Any, bob_web: Browser, requester: Any
) -> None:
    req = _submit(requester, "demo", "30m", "INC-10")
    page = f"/requests/{req['id']}"
    resp = bob_web.post(
        f"{page}/approve", {"comment": "go ahead\r\nbut be careful", "duration": ""}, page=page
    )
    assert resp.status_code == 303 and resp.headers["Location"] == page
    body = bob_web.text(bob_web.get(page))
    assert "Approved: alice can now get a certificate for demo (30m)." in _flash(body, "ok")
    assert _state(app, req["id"]) == ("approved", 1800)
    cert = _fetch_cert(requester, req["id"])
    assert "by=bob" in cert["key_id"]
    body = bob_web.text(bob_web.get(page))
    assert (
        "Certificate issued" in body
        and str(cert["serial"]) in body
        and "go ahead\nbut be careful" in html.unescape(body)
    )


def test_approve_for_less_time(app: Any, bob_web: Browser, requester: Any) -> None:
    req = _submit(requester, "demo", "30m")
    page = f"/requests/{req['id']}"
    assert bob_web.post(f"{page}/approve", {"duration": "600"}, page=page).status_code == 303
    assert _state(app, req["id"]) == ("approved", 600)
    assert "granted" in bob_web.text(bob_web.get(page))


def test_a_forged_longer_grant_is_refused(app: Any, bob_web: Browser, requester: Any) -> None:
    req = _submit(requester, "demo", "30m")
    page = f"/requests/{req['id']}"
    for value in ("7200", "2h", "soon", "-5", "0"):
        resp = bob_web.post(f"{page}/approve", {"duration": value}, page=page)
        assert resp.status_code in (400, 403), (
            value,
            resp.status_code,
            _flash(bob_web.text(resp), "error"),
        )
        assert _flash(bob_web.text(resp), "error"), value
    assert _state(app, req["id"]) == ("pending", 1800)


def test_two_approvals(
    app: Any, bob_web: Browser, approver2: Any, requester: Any, browser: Any
) -> None:
    req = _submit(requester, "prod-db", "30m", "INC-11")
    page = f"/requests/{req['id']}"
    bob_web.post(f"{page}/approve", {}, page=page)
    assert "Your approval is recorded: 1 of 2." in _flash(bob_web.text(bob_web.get(page)), "ok")
    # Bob cannot approve twice: no form, and the POST is refused.
    body = bob_web.text(bob_web.get(page))
    assert "approve-button" not in body and "You have already decided on this request." in body
    again = bob_web.post(f"{page}/approve", {}, page=page)
    assert again.status_code == 409
    carol = browser("carol")
    carol.login()
    carol.post(f"{page}/approve", {"comment": "second"}, page=page)
    assert _state(app, req["id"])[0] == "approved"


def test_deny_needs_a_reason_and_the_requester_sees_it(
    app: Any, bob_web: Browser, requester: Any
) -> None:
    req = _submit(requester, "demo", "30m")
    page = f"/requests/{req['id']}"
    for empty in ("", "   \r\n  "):
        resp = bob_web.post(f"{page}/deny", {"reason": empty}, page=page)
        assert resp.status_code == 400
        assert "A reason is required to deny a request." in _flash(bob_web.text(resp), "error")
    assert _state(app, req["id"])[0] == "pending"
    resp = bob_web.post(
        f"{page}/deny", {"reason": "Use the replica.\r\nAsk again if it is not enough."}, page=page
    )
    assert resp.status_code == 303
    assert _state(app, req["id"])[0] == "denied"
    api = requester.get(f"/v1/requests/{req['id']}").get_json()
    assert api["deny_reason"] == "Use the replica.\nAsk again if it is not enough."
    body = bob_web.text(bob_web.get(page))
    assert "Denied because" in body and "Use the replica." in body


def test_no_approve_button_on_my_own_request_and_the_post_is_refused(
    app: Any, approver2: Any, browser: Any
) -> None:
    req = _submit(approver2, "prod-db", "30m", "INC-12: my own")
    page = f"/requests/{req['id']}"
    carol = browser("carol")
    carol.login()
    body = carol.text(carol.get(page))
    assert "approve-button" not in body and "deny-button" not in body and "/approve" not in body
    assert "This is your own request: another approver must decide." in body
    before = _counts(app)
    for action, data in (("approve", {}), ("deny", {"reason": "no"})):
        resp = carol.post(f"{page}/{action}", data, page=page)
        assert resp.status_code == 403
        assert "requesters can never approve or deny their own request" in _flash(
            carol.text(resp), "error"
        )
    assert _state(app, req["id"])[0] == "pending" and _counts(app) == before


def test_only_approvers_the_policy_names_may_decide(
    app: Any, web_user: Any, browser: Any, requester: Any
) -> None:
    web_user("olaf", ("other-approvers",), ("requester", "approver"))
    web_user("rita", ("approvers",), ("requester",))  # in the group, but without the approver role
    req = _submit(requester, "demo")
    page = f"/requests/{req['id']}"
    olaf = browser("olaf")
    olaf.login()
    body = olaf.text(olaf.get(page))
    assert (
        "approve-button" not in body
        and "is not an approver for rule 'demo-access'" in html.unescape(body)
    )
    assert olaf.post(f"{page}/approve", {}, page=page).status_code == 403
    # Without the approver role the request is not even visible.
    rita = browser("rita")
    rita.login()
    assert rita.get(page).status_code == 404
    assert rita.post(f"{page}/approve", {}, page="/mine").status_code in (403, 404)
    assert _state(app, req["id"])[0] == "pending"


def test_a_requester_cannot_see_someone_elses_request(
    app: Any, web_user: Any, browser: Any, requester: Any
) -> None:
    web_user("eve", ("engineers",))
    req = _submit(requester, "demo")
    eve = browser("eve")
    eve.login()
    resp = eve.get(f"/requests/{req['id']}")
    assert resp.status_code == 404 and resp.mimetype == "text/html"
    assert eve.post(f"/requests/{req['id']}/approve", {}, page="/mine").status_code == 404


def test_user_text_is_escaped_everywhere(app: Any, bob_web: Browser, requester: Any) -> None:
    req = _submit(requester, "demo", "30m", XSS)
    page = f"/requests/{req['id']}"
    bob_web.post(f"{page}/approve", {"comment": "<b>ok</b><script>alert(2)</script>"}, page=page)
    alice = Browser(app, "alice")
    alice.login()
    for b, path in ((bob_web, page), (bob_web, "/active"), (alice, "/mine"), (alice, page)):
        body = b.text(b.get(path))
        assert (
            "<script>alert" not in body and "<img src=x" not in body and "<b>ok</b>" not in body
        ), path
    body = bob_web.text(bob_web.get(page))
    assert str(escape(XSS)) in body
    assert "&lt;b&gt;ok&lt;/b&gt;" in body


def test_escaped_in_the_pending_list(bob_web: Browser, requester: Any) -> None:
    _submit(requester, "demo", "30m", XSS)
    body = bob_web.text(bob_web.get("/"))
    assert "&lt;script&gt;alert(" in body and "<script>alert" not in body


def test_unknown_request_and_service_errors_are_pages_not_500s(
    app: Any, bob_web: Browser, requester: Any, clock: Any
) -> None:
    resp = bob_web.get("/requests/doesnotexist")
    assert (
        resp.status_code == 404
        and resp.mimetype == "text/html"
        and "Not found" in bob_web.text(resp)
    )
    resp = bob_web.get("/requests/" + "x" * 300)
    assert resp.status_code == 404 and resp.mimetype == "text/html"
    req = _submit(requester, "demo")
    page = f"/requests/{req['id']}"
    app.extensions["jit_ssh.web"].idle_timeout = timedelta(hours=3)
    clock.advance(hours=2)
    resp = bob_web.post(f"{page}/approve", {}, page=page)
    assert resp.status_code == 410
    assert "expired" in " ".join(_flash(bob_web.text(resp), "error"))
    resp = bob_web.post(f"{page}/deny", {"reason": "late\x00"}, page=page)
    assert resp.status_code in (400, 409, 410) and resp.mimetype == "text/html"
    resp = bob_web.post("/certificates/123/revoke", {"confirm": "yes"}, page="/active")
    assert resp.status_code == 303
    assert "no certificate with serial 123" in " ".join(
        _flash(bob_web.text(bob_web.get("/active")), "error")
    )


def test_control_characters_in_a_comment_are_a_message(
    app: Any, bob_web: Browser, requester: Any
) -> None:
    req = _submit(requester, "demo")
    page = f"/requests/{req['id']}"
    resp = bob_web.post(f"{page}/approve", {"comment": "bell\x07"}, page=page)
    assert resp.status_code == 400
    assert "comment holds control characters" in _flash(bob_web.text(resp), "error")


def test_cancel_my_own_request(app: Any, requester: Any, browser: Any) -> None:
    req = _submit(requester, "demo")
    page = f"/requests/{req['id']}"
    b = browser("alice")
    b.login()
    assert "Cancel this request" in b.text(b.get(page))
    assert b.post(f"{page}/cancel", {}, page=page).status_code == 303
    assert _state(app, req["id"])[0] == "cancelled"


def test_not_logged_in_posts_go_to_login_and_change_nothing(
    app: Any, requester: Any, browser: Any
) -> None:
    req = _submit(requester, "demo")
    anon = browser()
    resp = anon.post(f"/requests/{req['id']}/approve", {}, page="/login")
    assert resp.status_code == 303 and resp.headers["Location"].startswith("/login")
    assert _state(app, req["id"])[0] == "pending"


# --------------------------------------------------------------------------- active access and revoke


def test_active_access_and_revoke_puts_the_serial_in_the_krl(
    app: Any, bob_web: Browser, requester: Any, oncall: Any
) -> None:
    req = _submit(requester, "demo", "30m", "INC-20")
    page = f"/requests/{req['id']}"
    bob_web.post(f"{page}/approve", {}, page=page)
    cert = _fetch_cert(requester, req["id"])
    other = _submit(oncall, "demo", "5m", "auto")  # auto-approved
    other_cert = _fetch_cert(oncall, other["id"])
    body = bob_web.text(bob_web.get("/active"))
    assert str(cert["serial"]) in body and str(other_cert["serial"]) in body and "left" in body
    assert "INC-20" in body and "jit-demo@demo" in body

    resp = bob_web.post(
        f"/certificates/{cert['serial']}/revoke",
        {"reason": "drill over", "next": "/active", "confirm": "yes"},
        page="/active",
    )
    assert resp.status_code == 303 and resp.headers["Location"] == "/active"
    body = bob_web.text(bob_web.get("/active"))
    assert f"Certificate {cert['serial']} revoked." in " ".join(_flash(body, "ok"))
    # Gone from the list (only the message still names it); the other one stays.
    assert f"/certificates/{cert['serial']}/revoke" not in body
    assert f"/certificates/{other_cert['serial']}/revoke" in body
    krl = parse_krl(bob_web.get("/v1/krl").data)
    serial = int(cert["serial"])
    assert any(lo <= serial <= hi for s in krl.cert_sections for lo, hi in s.serial_ranges)
    assert _state(app, req["id"])[0] == "revoked"
    events = [
        r
        for r in _rows(
            app, "SELECT actor, data FROM audit_events WHERE type = 'certificate.revoked'"
        )
    ]
    assert events and events[0][0] == "bob" and json.loads(events[0][1])["reason"] == "drill over"


def test_a_requester_sees_and_revokes_only_their_own(
    app: Any, requester: Any, oncall: Any, bob_web: Browser, browser: Any
) -> None:
    req = _submit(requester, "demo", "30m")
    page = f"/requests/{req['id']}"
    bob_web.post(f"{page}/approve", {}, page=page)
    mine = _fetch_cert(requester, req["id"])
    other = _fetch_cert(oncall, _submit(oncall, "demo", "5m")["id"])
    alice = browser("alice")
    alice.login()
    body = alice.text(alice.get("/active"))
    assert str(mine["serial"]) in body and str(other["serial"]) not in body
    alice.post(f"/certificates/{other['serial']}/revoke", {"confirm": "yes"}, page="/active")
    assert "only the requester, an approver or an admin" in " ".join(
        _flash(alice.text(alice.get("/active")), "error")
    )
    alice.post(
        f"/certificates/{mine['serial']}/revoke", {"next": page, "confirm": "yes"}, page="/active"
    )
    assert _state(app, req["id"])[0] == "revoked"


def test_revoke_redirects_only_locally(bob_web: Browser) -> None:
    resp = bob_web.post(
        "/certificates/1/revoke",
        {"next": "https://evil.example/", "confirm": "yes"},
        page="/active",
    )
    assert resp.headers["Location"] == "/"


def _rows(app: Any, sql: str) -> list[Any]:
    with app.extensions["jit_ssh.engine"].connect() as c:
        return list(c.execute(text(sql)))


def test_csrf_token_is_on_every_form(app: Any, bob_web: Browser, requester: Any) -> None:
    req = _submit(requester, "demo")
    for path in ("/", "/active", "/mine", f"/requests/{req['id']}", "/login"):
        body = bob_web.text(bob_web.get(path, follow_redirects=True))
        forms = re.findall(r"<form\b.*?</form>", body, re.S)
        assert forms, path
        for form in forms:
            if 'method="post"' in form:
                assert csrf_token(form), (path, form[:200])


@pytest.mark.parametrize("action", ["approve", "deny", "cancel"])
def test_decisions_without_the_token_change_nothing(
    app: Any, bob_web: Browser, requester: Any, action: str
) -> None:
    req = _submit(requester, "demo")
    before = _counts(app)
    resp = bob_web.post(f"/requests/{req['id']}/{action}", {"reason": "x"}, token=False)
    assert resp.status_code == 400 and "This form was not accepted" in bob_web.text(resp)
    assert _state(app, req["id"])[0] == "pending" and _counts(app) == before


@pytest.mark.parametrize(
    "ch", ["\u202e", "\u2066", "\u200b", "\ufeff"], ids=lambda c: f"U+{ord(c):04X}"
)
def test_invisible_characters_in_the_forms_are_a_message_and_change_nothing(
    app: Any, bob_web: Browser, requester: Any, ch: str
) -> None:
    """The pages' texts go through the service's one check: a bidi override or a zero-width
    character could make a reason read otherwise than it does."""
    req = _submit(requester, "demo")
    page = f"/requests/{req['id']}"
    for action, field in (("approve", "comment"), ("deny", "reason")):
        resp = bob_web.post(f"{page}/{action}", {field: f"ok {ch}evom"}, page=page)
        assert resp.status_code == 400, action
        assert f"{field} holds invisible formatting characters (U+{ord(ch):04X})" in " ".join(
            _flash(bob_web.text(resp), "error")
        )
    assert _state(app, req["id"])[0] == "pending"
    assert _counts(app) == (0, 0, 0)
