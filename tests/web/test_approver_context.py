"""The context an approver decides with (issue 12, point 7): on a request's page the
requester's valid access to that target and their recent requests; "Decided by me";
who decided and why in My requests; a confirmation before a revoke; the deadline of a
pending request said as "Lapses unanswered in". On SQLite and PostgreSQL."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from server.web import views

from .conftest import Browser, csrf_token
from .test_pages import _counts, _fetch_cert, _flash, _state, _submit


def _approve(b: Browser, request_id: str, comment: str = "") -> None:
    page = f"/requests/{request_id}"
    resp = b.post(f"{page}/approve", {"comment": comment}, page=page)
    assert resp.status_code == 303, _flash(b.text(resp), "error")


def _deny(b: Browser, request_id: str, reason: str) -> None:
    page = f"/requests/{request_id}"
    resp = b.post(f"{page}/deny", {"reason": reason}, page=page)
    assert resp.status_code == 303, _flash(b.text(resp), "error")


def _issued(b: Browser, caller: Any, target: str = "demo", reason: str = "INC-1: x") -> Any:
    """A request of ``caller``'s, approved by ``b``'s approver and fetched: (request, cert)."""
    req = _submit(caller, target, "30m", reason)
    _approve(b, req["id"])
    return req, _fetch_cert(caller, req["id"])


def _section(body: str, css_class: str) -> str:
    m = re.search(rf'<section class="panel {css_class}".*?</section>', body, re.S)
    assert m, f"no section {css_class}"
    return m.group(0)


@contextmanager
def _statements(app: Any) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block."""
    seen: list[str] = []
    engine = app.extensions["jit_ssh.engine"]

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


# --------------------------------------------------------------------------- the request page


def test_the_request_page_says_the_requester_already_holds_access_to_that_target(
    app: Any, bob_web: Browser, requester: Any, approver2: Any, browser: Any
) -> None:
    first, cert = _issued(bob_web, requester, "demo", "INC-1: first")
    # Access to another target (two approvals): not access to demo.
    prod = _submit(requester, "prod-db", "30m", "INC-2: another target")
    _approve(bob_web, prod["id"])
    carol = browser("carol")
    carol.login()
    _approve(carol, prod["id"])
    _fetch_cert(requester, prod["id"])
    again = _submit(requester, "demo", "30m", "INC-3: again")
    body = bob_web.text(bob_web.get(f"/requests/{again['id']}"))
    context = _section(body, "context")
    assert "alice already holds valid access to" in context
    until = re.search(r"until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)", context)
    assert until and cert["valid_before"][:16].replace("T", " ") in until.group(1)
    assert f'href="/requests/{first["id"]}"' in context.split("</ul>")[0]
    # Only that target's: the prod-db certificate is not access to demo.
    assert context.count("left)</span>, from") == 1

    # Revoked: no longer valid access.
    assert (
        bob_web.post(
            f"/certificates/{cert['serial']}/revoke", {"confirm": "y"}, page="/active"
        ).status_code
        == 303
    )
    context = _section(bob_web.text(bob_web.get(f"/requests/{again['id']}")), "context")
    assert "already holds" not in context and "No other valid access to" in context


def test_expired_access_is_not_valid_access(
    app: Any, bob_web: Browser, requester: Any, clock: Any
) -> None:
    _issued(bob_web, requester, "demo")
    app.extensions["jit_ssh.web"].idle_timeout = timedelta(hours=3)
    clock.advance(minutes=31)
    later = _submit(requester, "demo", "30m", "INC-4: later")
    context = _section(bob_web.text(bob_web.get(f"/requests/{later['id']}")), "context")
    assert "already holds" not in context and "No other valid access to" in context


def test_the_page_s_own_certificate_is_not_other_access(
    app: Any, bob_web: Browser, requester: Any
) -> None:
    req, _cert = _issued(bob_web, requester, "demo")
    context = _section(bob_web.text(bob_web.get(f"/requests/{req['id']}")), "context")
    assert "already holds" not in context


def test_the_request_page_lists_the_requester_s_last_ten_requests(
    app: Any, bob_web: Browser, requester: Any, approver2: Any
) -> None:
    ids = [_submit(requester, "demo", "30m", f"INC-{n}: try {n}")["id"] for n in range(12)]
    _approve(bob_web, ids[9], "fine")
    _deny(bob_web, ids[10], "Use the replica.")
    carols = _submit(approver2, "demo", "30m", "INC-99: carol's own")
    current = ids[11]
    body = bob_web.text(bob_web.get(f"/requests/{current}"))
    context = _section(body, "context")
    rows = re.findall(r"<tr>.*?</tr>", context.split("<tbody>")[1], re.S)
    listed = [re.search(r'href="/requests/([^"]+)"', r).group(1) for r in rows]  # type: ignore[union-attr]
    # Newest first, ten of them, not the page's own request, nobody else's.
    assert listed == list(reversed(ids[1:11]))
    assert carols["id"] not in context
    by_id = dict(zip(listed, rows, strict=True))
    assert "badge-denied" in by_id[ids[10]] and "denied by <strong>bob</strong>" in by_id[ids[10]]
    assert "badge-approved" in by_id[ids[9]] and "approved by <strong>bob</strong>" in by_id[ids[9]]
    assert "badge-pending" in by_id[ids[8]] and "—" in by_id[ids[8]]
    assert "just now" in by_id[ids[8]] and ">demo<" in by_id[ids[8]]


def test_a_lapsed_request_shows_as_expired_in_the_recent_list(
    app: Any, bob_web: Browser, requester: Any, clock: Any
) -> None:
    old = _submit(requester, "prod-db", "30m", "INC-5: old")
    app.extensions["jit_ssh.web"].idle_timeout = timedelta(hours=3)
    clock.advance(minutes=11)  # past the prod-db rule's 10 minute pending_ttl
    new = _submit(requester, "prod-db", "30m", "INC-6: new")
    context = _section(bob_web.text(bob_web.get(f"/requests/{new['id']}")), "context")
    row = next(r for r in re.findall(r"<tr>.*?</tr>", context, re.S) if old["id"] in r)
    assert "badge-expired" in row and "badge-pending" not in row


def test_the_context_costs_the_same_queries_for_two_or_ten_requests(
    app: Any, bob_web: Browser, requester: Any, approver2: Any, web_user: Any, browser: Any
) -> None:
    """No query per listed request: the statements for a page whose requester has two
    earlier requests (each decided) and one whose requester has ten are as many."""
    dave = web_user("dave", ("engineers",))

    def page_statements(caller: Any, earlier: int) -> int:
        for n in range(earlier):
            req, _cert = _issued(bob_web, caller, "demo", f"INC-{n}")
        last = _submit(caller, "demo", "30m", "INC-100: now")
        bob_web.get(f"/requests/{last['id']}")  # warm: the first read may refresh states
        with _statements(app) as seen:
            resp = bob_web.get(f"/requests/{last['id']}")
        assert resp.status_code == 200
        assert bob_web.text(resp).count('<td data-label="Request">') == earlier
        return len(seen)

    assert page_statements(dave, 2) == page_statements(requester, 10)


def test_a_requester_sees_the_context_of_their_own_request_only(
    app: Any, bob_web: Browser, requester: Any, web_user: Any, browser: Any
) -> None:
    """The same rule as the page itself: alice sees her own history on her request; eve,
    who may not open alice's request, sees nothing of it."""
    first = _submit(requester, "demo", "30m", "INC-7: first")
    second = _submit(requester, "demo", "30m", "INC-8: second")
    alice = browser("alice")
    alice.login()
    context = _section(alice.text(alice.get(f"/requests/{second['id']}")), "context")
    assert first["id"] in context
    web_user("eve", ("engineers",))
    eve = browser("eve")
    eve.login()
    resp = eve.get(f"/requests/{second['id']}")
    assert resp.status_code == 404 and first["id"] not in eve.text(resp)


def test_a_pending_deadline_reads_lapses_unanswered_in(bob_web: Browser, requester: Any) -> None:
    req = _submit(requester, "demo", "30m", "INC-9")
    for path in ("/", f"/requests/{req['id']}"):
        body = bob_web.text(bob_web.get(path))
        assert "Lapses unanswered in" in body and "Expires in" not in body, path


# --------------------------------------------------------------------------- decided by me


def test_decided_by_me_lists_my_decisions_newest_first(
    app: Any, bob_web: Browser, requester: Any, approver2: Any, browser: Any
) -> None:
    approved, _cert = _issued(bob_web, requester, "demo", "INC-10: approve me")
    denied = _submit(requester, "demo", "30m", "INC-11: deny me")
    _deny(bob_web, denied["id"], "Not during the freeze.\r\nAsk on Monday.")
    carol = browser("carol")
    carol.login()
    not_mine = _submit(requester, "demo", "30m", "INC-12: carol decides")
    _approve(carol, not_mine["id"], "carol's comment")

    body = bob_web.text(bob_web.get("/decided"))
    assert 'aria-current="page">Decided by me<' in body
    cards = re.findall(r'<li class="card decision-.*?</li>', body, re.S)
    assert [re.search(r'href="/requests/([^"]+)"', c).group(1) for c in cards] == [  # type: ignore[union-attr]
        denied["id"],
        approved["id"],
    ]
    deny_card, approve_card = (html.unescape(c) for c in cards)
    assert "You denied" in deny_card and "badge-denied" in deny_card
    assert "Not during the freeze.\nAsk on Monday." in deny_card
    assert "alice" in deny_card and "demo" in deny_card and "INC-11: deny me" in deny_card
    assert "You approved" in approve_card and "badge-issued" in approve_card
    assert not_mine["id"] not in body and "carol's comment" not in body


def test_decided_by_me_shows_my_comment_and_the_final_state(
    app: Any, bob_web: Browser, requester: Any
) -> None:
    req = _submit(requester, "demo", "30m", "INC-13")
    _approve(bob_web, req["id"], "ok for the drill")
    card = re.search(
        r'<li class="card decision-approve.*?</li>', bob_web.text(bob_web.get("/decided")), re.S
    )
    assert card and "Your comment:</span> ok for the drill" in card.group(0)
    assert "badge-approved" in card.group(0)


def test_decided_by_me_is_paged(
    app: Any, bob_web: Browser, requester: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "DECIDED_PAGE", 2)
    ids = [_submit(requester, "demo", "30m", f"INC-{n}")["id"] for n in range(3)]
    for i in ids:
        _approve(bob_web, i)
    first = bob_web.text(bob_web.get("/decided"))
    assert ids[2] in first and ids[1] in first and ids[0] not in first
    assert 'href="/decided?page=2"' in first and "Newer" not in first
    second = bob_web.text(bob_web.get("/decided?page=2"))
    assert ids[0] in second and ids[2] not in second and 'href="/decided?page=1"' in second
    assert "Older" not in second
    assert "No more decisions." in bob_web.text(bob_web.get("/decided?page=9"))
    for bad in ("0", "-1", "x", "1.5", "9999999", "٣"):
        resp = bob_web.get("/decided", query_string={"page": bad})
        assert resp.status_code == 400 and resp.mimetype == "text/html", bad
        assert "page must be a whole number from 1." in bob_web.text(resp)


def test_only_approvers_have_a_decided_page(
    app: Any, bob_web: Browser, requester: Any, web_user: Any, browser: Any
) -> None:
    req = _submit(requester, "demo", "30m", "INC-14: secret plans")
    _approve(bob_web, req["id"])
    # In the approver group without the approver role: no link and no page.
    web_user("rita", ("approvers",), ("requester",))
    for name in ("alice", "rita"):
        b = browser(name)
        b.login()
        assert "Decided by me" not in b.text(b.get("/mine"))
        resp = b.get("/decided")
        assert resp.status_code == 403 and "INC-14" not in b.text(resp), name
    assert 'href="/decided"' in bob_web.text(bob_web.get("/"))
    anon = browser()
    resp = anon.get("/decided")
    assert resp.status_code == 303 and resp.headers["Location"].startswith("/login")


# --------------------------------------------------------------------------- my requests


def test_my_requests_say_who_approved_and_who_denied_and_why(
    app: Any, bob_web: Browser, requester: Any, browser: Any
) -> None:
    approved = _submit(requester, "demo", "30m", "INC-15: approve")
    _approve(bob_web, approved["id"])
    denied = _submit(requester, "demo", "30m", "INC-16: deny")
    _deny(bob_web, denied["id"], "Use the <b>replica</b>.")
    pending = _submit(requester, "demo", "30m", "INC-17: wait")
    alice = browser("alice")
    alice.login()
    body = alice.text(alice.get("/mine"))
    rows = {
        rid: row
        for row in re.findall(r"<tr>.*?</tr>", body.split("<tbody>")[1], re.S)
        for rid in (approved["id"], denied["id"], pending["id"])
        if f"/requests/{rid}" in row
    }
    assert "approved by <strong>bob</strong>" in rows[approved["id"]]
    assert "denied by <strong>bob</strong>" in rows[denied["id"]]
    assert "Denied because:</span> Use the &lt;b&gt;replica&lt;/b&gt;." in rows[denied["id"]]
    assert "approved by" not in rows[pending["id"]] and "denied by" not in rows[pending["id"]]


# --------------------------------------------------------------------------- revoke asks first


def test_revoke_asks_for_confirmation_first(app: Any, bob_web: Browser, requester: Any) -> None:
    req, cert = _issued(bob_web, requester, "demo", "INC-18")
    serial = cert["serial"]
    active = bob_web.text(bob_web.get("/active"))
    # Active access links to the confirmation; no revoke form posts from it directly.
    assert f'href="/certificates/{serial}/revoke?next=/active"' in active
    assert f'action="/certificates/{serial}/revoke"' not in active
    request_page = bob_web.text(bob_web.get(f"/requests/{req['id']}"))
    assert f"/certificates/{serial}/revoke?next=/requests/{req['id']}" in request_page
    assert f'action="/certificates/{serial}/revoke"' not in request_page

    page = f"/certificates/{serial}/revoke?next=/active"
    body = bob_web.text(bob_web.get(page))
    assert "Revoke this certificate?" in body
    for needle in (str(serial), "alice", "demo", "jit-demo@demo", "left)"):
        assert needle in body, needle
    form = re.search(r"<form.*?</form>", body.split("</header>")[1], re.S).group(0)  # type: ignore[union-attr]
    assert csrf_token(form)
    assert re.search(r'<input[^>]*name="confirm"[^>]*required', form)
    assert 'name="next" type="hidden" value="/active"' in form
    assert _state(app, req["id"])[0] == "issued" and _counts(app)[2] == 0

    resp = bob_web.post(
        f"/certificates/{serial}/revoke",
        {"reason": "done", "next": "/active", "confirm": "y"},
        page=page,
    )
    assert resp.status_code == 303 and resp.headers["Location"] == "/active"
    assert _state(app, req["id"])[0] == "revoked" and _counts(app)[2] == 1
    body = bob_web.text(bob_web.get(page))
    assert "Already revoked by bob" in body and "<form" not in body.split("</header>")[1]


@pytest.mark.parametrize("confirm", [None, "", "false"], ids=["absent", "empty", "false"])
def test_an_unconfirmed_revoke_is_refused_and_changes_nothing(
    app: Any, bob_web: Browser, requester: Any, confirm: str | None
) -> None:
    req, cert = _issued(bob_web, requester, "demo", "INC-19")
    page = f"/certificates/{cert['serial']}/revoke?next=/active"
    data = {"reason": "oops", "next": "/active"}
    if confirm is not None:
        data["confirm"] = confirm
    before = _counts(app)
    resp = bob_web.post(f"/certificates/{cert['serial']}/revoke", data, page=page)
    assert resp.status_code == 400 and resp.mimetype == "text/html"
    body = bob_web.text(resp)
    assert "Tick the box to confirm the revoke; nothing was revoked." in _flash(body, "error")
    # Asked again, with what was typed kept.
    assert "Revoke this certificate?" in body and 'value="oops"' in body
    assert _counts(app) == before and _state(app, req["id"])[0] == "issued"
    assert str(cert["serial"]) in bob_web.text(bob_web.get("/active"))


def test_a_too_long_revoke_reason_is_refused_and_changes_nothing(
    app: Any, bob_web: Browser, requester: Any
) -> None:
    req, cert = _issued(bob_web, requester, "demo", "INC-23")
    page = f"/certificates/{cert['serial']}/revoke?next=/active"
    resp = bob_web.post(
        f"/certificates/{cert['serial']}/revoke",
        {"reason": "x" * 1001, "confirm": "y", "next": "/active"},
        page=page,
    )
    assert resp.status_code == 400 and "Revoke this certificate?" in bob_web.text(resp)
    assert "Field cannot be longer than 1000 characters." in _flash(bob_web.text(resp), "error")
    assert _counts(app)[2] == 0 and _state(app, req["id"])[0] == "issued"


def test_a_confirmed_revoke_without_the_csrf_token_changes_nothing(
    app: Any, bob_web: Browser, requester: Any
) -> None:
    req, cert = _issued(bob_web, requester, "demo", "INC-20")
    before = _counts(app)
    for token in (None, "forged"):
        data = {"confirm": "y", "next": "/active"}
        if token:
            data["csrf_token"] = token
        resp = bob_web.post(f"/certificates/{cert['serial']}/revoke", data, token=False)
        assert resp.status_code == 400 and "This form was not accepted" in bob_web.text(resp)
    assert _counts(app) == before and _state(app, req["id"])[0] == "issued"


def test_the_confirmation_shows_nothing_to_whom_may_not_revoke(
    app: Any, bob_web: Browser, requester: Any, oncall: Any, web_user: Any, browser: Any
) -> None:
    _req, cert = _issued(bob_web, requester, "demo", "INC-21: alice's")
    other = _fetch_cert(oncall, _submit(oncall, "demo", "5m")["id"])  # auto-approved
    web_user("eve", ("engineers",))
    eve = browser("eve")
    eve.login()
    alice = browser("alice")
    alice.login()
    for b, serial in ((eve, cert["serial"]), (alice, other["serial"])):
        resp = b.get(f"/certificates/{serial}/revoke")
        assert resp.status_code == 404 and resp.mimetype == "text/html"
        assert "INC-21" not in b.text(resp) and "jit-demo@demo" not in b.text(resp)
    # Her own, yes.
    assert alice.get(f"/certificates/{cert['serial']}/revoke").status_code == 200
    for bad in ("123", "0", "x" * 30, "9" * 25, "-1"):
        resp = bob_web.get(f"/certificates/{bad}/revoke")
        assert resp.status_code == 404 and resp.mimetype == "text/html", bad


def test_the_confirmation_back_link_stays_on_this_site(bob_web: Browser, requester: Any) -> None:
    _req, cert = _issued(bob_web, requester, "demo", "INC-22")
    body = bob_web.text(
        bob_web.get(f"/certificates/{cert['serial']}/revoke?next=https://evil.example/")
    )
    assert "evil.example" not in body


def test_the_approvals_by_approver_index_exists(app: Any) -> None:
    """Decided by me reads approvals by approver: an index serves it (migration 0007)."""
    engine = app.extensions["jit_ssh.engine"]
    with engine.connect() as c:
        if engine.dialect.name == "sqlite":
            names = {r[1] for r in c.execute(text("PRAGMA index_list('approvals')"))}
        else:
            names = set(
                c.execute(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'approvals'")
                ).scalars()
            )
    assert "ix_approvals_approver" in names
