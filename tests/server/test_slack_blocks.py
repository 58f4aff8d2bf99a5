"""The channel message's Block Kit, rendered from a request as it stands: who, target, duration,
reason, rule and approvals; Approve/Deny only where the rule allows chat approval (a link to the
web page otherwise), none once decided; the state line; typed text escaped for mrkdwn; every
text within Slack's limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.models import (
    AccessRequest,
    Approval,
    ApprovalDecision,
    Certificate,
    RequestState,
    Revocation,
    User,
)
from server.slack.blocks import (
    ACTION_APPROVE,
    ACTION_DENY,
    ACTION_OPEN,
    escape,
    request_message,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
BASE = "https://jit.example.test"


def _req(state: RequestState = RequestState.PENDING, **kw: Any) -> AccessRequest:
    values: dict[str, Any] = dict(
        id="0123456789abcdef",
        target="demo",
        reason="INC-1234: replica lag",
        requested_seconds=1800,
        granted_seconds=1800,
        state=state,
        rule="demo-chat",
        approvals_required=2,
        break_glass=False,
        created_at=NOW,
        pending_until=NOW + timedelta(hours=1),
        claim_until=None,
        deny_reason=None,
        extends_id=None,
    )
    values.update(kw)
    req = AccessRequest(**values)
    req.requester = User(name="alice")
    req.approvals = []
    req.certificate = None
    return req


def _decide(req: AccessRequest, name: str, decision: ApprovalDecision) -> None:
    a = Approval(decision=decision, comment="", created_at=NOW)
    a.approver = User(name=name)
    req.approvals.append(a)


def _texts(value: object) -> list[str]:
    """Every "text" string anywhere in the blocks."""
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "text" and isinstance(v, str):
                out.append(v)
            else:
                out.extend(_texts(v))
    elif isinstance(value, list):
        for v in value:
            out.extend(_texts(v))
    return out


def _buttons(msg: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_a_pending_request_shows_who_what_why_and_the_buttons() -> None:
    req = _req()
    _decide(req, "carol", ApprovalDecision.APPROVE)
    msg = request_message(req, chat_approval=True, base_url=BASE)
    header = msg["blocks"][0]
    assert header["type"] == "header" and "0123456789abcdef" in header["text"]["text"]
    fields = [f["text"] for f in msg["blocks"][1]["fields"]]
    assert fields == [
        "*Requester*\nalice",
        "*Target*\ndemo",
        "*Duration*\n30m",
        "*Rule*\ndemo-chat",
        "*Approvals*\n1 of 2",
    ]
    assert "*Reason*\nINC-1234: replica lag" in _texts(msg["blocks"])
    assert any("*Pending*" in t for t in _texts(msg["blocks"]))
    approve, deny = _buttons(msg)
    assert (approve["action_id"], approve["style"], approve["value"]) == (
        ACTION_APPROVE,
        "primary",
        req.id,
    )
    assert (deny["action_id"], deny["style"], deny["value"]) == (ACTION_DENY, "danger", req.id)
    assert "alice" in msg["text"] and "demo" in msg["text"]


def test_without_chat_approval_only_a_link_to_the_web_page() -> None:
    msg = request_message(_req(), chat_approval=False, base_url=BASE + "/")
    [link] = _buttons(msg)
    assert link["action_id"] == ACTION_OPEN
    assert link["url"] == f"{BASE}/requests/0123456789abcdef"
    assert "style" not in link


def test_a_reason_cannot_make_a_link_or_a_mention() -> None:
    reason = "INC-1 <https://evil.example|see the runbook> & <!channel> <@U0ADMIN>"
    msg = request_message(_req(reason=reason), chat_approval=True, base_url=BASE)
    joined = "\n".join(_texts(msg["blocks"])) + msg["text"]
    assert (
        "<https://evil" not in joined and "<!channel>" not in joined and "<@U0ADMIN>" not in joined
    )
    assert (
        "INC-1 &lt;https://evil.example|see the runbook&gt; &amp; &lt;!channel&gt; &lt;@U0ADMIN&gt;"
        in joined
    )
    assert escape("a&b<c>d") == "a&amp;b&lt;c&gt;d"


def test_every_text_is_within_slacks_limits() -> None:
    req = _req(reason="<" * 1000, target="t" * 128, rule="r" * 128)
    req.requester = User(name="u" * 64)
    msg = request_message(req, chat_approval=True, base_url=BASE)
    assert len(msg["blocks"][0]["text"]["text"]) <= 150
    for block in msg["blocks"]:
        if block["type"] == "section":
            for f in block.get("fields", []):
                assert len(f["text"]) <= 2000
            if "text" in block:
                assert len(block["text"]["text"]) <= 3000
    for b in _buttons(msg):
        assert len(b["text"]["text"]) <= 75
    assert len(msg["text"]) <= 3000 and len(msg["blocks"]) <= 50


def test_an_extension_says_what_it_extends() -> None:
    msg = request_message(_req(extends_id="fedcba9876543210"), chat_approval=True, base_url=BASE)
    assert "Extends fedcba9876543210" in _texts(msg["blocks"])


def _cert(req: AccessRequest, revoked_by: str | None = None) -> Certificate:
    cert = Certificate(serial=4242, valid_before=NOW + timedelta(minutes=30), issued_at=NOW)
    cert.revocation = (
        Revocation(serial=4242, revoked_at=NOW, revoked_by=revoked_by, reason="done early")
        if revoked_by
        else None
    )
    req.certificate = cert
    return cert


@pytest.mark.parametrize(
    "state, expect",
    [
        (RequestState.APPROVED, ["*Approved* by bob", "for 30m", "until 2026-12-02 12:15 UTC"]),
        (RequestState.DENIED, ["*Denied* by bob: not now &lt;b&gt;"]),
        (RequestState.ISSUED, ["*Certificate issued*: serial 4242", "until 2026-12-02 12:30 UTC"]),
        (RequestState.REVOKED, ["*Revoked* by root-admin", "(done early)"]),
        (RequestState.EXPIRED, ["*Expired*"]),
        (RequestState.CANCELLED, ["*Cancelled*"]),
    ],
)
def test_once_decided_the_state_line_says_so_and_no_button_remains(
    state: RequestState, expect: list[str]
) -> None:
    req = _req(state, claim_until=NOW + timedelta(minutes=15))
    if state == RequestState.DENIED:
        req.deny_reason = "not now <b>"
        _decide(req, "bob", ApprovalDecision.DENY)
    else:
        _decide(req, "bob", ApprovalDecision.APPROVE)
    if state in (RequestState.ISSUED, RequestState.REVOKED):
        _cert(req, "root-admin" if state == RequestState.REVOKED else None)
    msg = request_message(req, chat_approval=True, base_url=BASE)
    assert _buttons(msg) == []
    line = next(t for t in _texts(msg["blocks"]) if t.startswith(":"))
    for part in expect:
        assert part in line, (part, line)
    assert f"<{BASE}/requests/{req.id}|Open in jit-ssh>" in _texts(msg["blocks"])
