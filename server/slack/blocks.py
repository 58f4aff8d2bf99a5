"""Block Kit for a request's channel message and the requester's direct messages.

The channel message is rendered from the request as the database holds it NOW, every time
(a retry, or an update that overtakes another, shows the current state, never an event's
stale copy). While the request is pending it carries Approve and Deny buttons, when the
rule lets approvers decide from chat, or else one link button to the request's web page;
once decided, no decision button remains.

Everything people typed (the reason, a denial's reason) and every name is escaped for
Slack's mrkdwn (``&``, ``<``, ``>``), so a reason cannot make a link, a mention or a
``<!channel>``; and every text is cut to Slack's limits, so Slack never refuses the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ca.durations import format_duration
from server.models import AccessRequest, ApprovalDecision, RequestState

__all__ = [
    "ACTION_APPROVE",
    "ACTION_DENY",
    "ACTION_OPEN",
    "DENY_CALLBACK",
    "DECIDE_BLOCK",
    "REASON_BLOCK",
    "REASON_INPUT",
    "escape",
    "request_message",
    "deny_modal",
    "dm_blocks",
    "request_url",
    "fmt_time",
]

ACTION_APPROVE = "jit_ssh.approve"
ACTION_DENY = "jit_ssh.deny"
#: The link button: Slack still sends an interaction for it, which is acknowledged and ignored.
ACTION_OPEN = "jit_ssh.open"
DECIDE_BLOCK = "jit_ssh.decide"
DENY_CALLBACK = "jit_ssh.deny"
REASON_BLOCK = "reason"
REASON_INPUT = "reason"

# Slack's limits (Block Kit reference): a header's text, a section's text, a field, a
# button's text, a message's fallback text (Slack truncates at 40,000; keep it short).
_MAX_HEADER = 150
_MAX_SECTION = 3000
_MAX_FIELD = 2000
_MAX_BUTTON = 75
_MAX_FALLBACK = 3000
#: A reason shown in the message: the rest is on the web page.
_MAX_REASON_SHOWN = 1500


def escape(text: str) -> str:
    """``text`` for Slack's mrkdwn: the three characters Slack asks apps to escape. Without it
    ``<https://evil|INC-1234>`` in a reason is a link, and ``<!channel>`` pings everyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str, limit: int = _MAX_SECTION) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": _cut(text, limit)}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _cut(text, limit), "emoji": False}


def fmt_time(t: datetime | None) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M UTC")


def request_url(base_url: str, request_id: str) -> str:
    """The request's web page (the API's ``approval_url``)."""
    return f"{base_url.rstrip('/')}/requests/{request_id}"


def _approvers(req: AccessRequest, decision: ApprovalDecision) -> list[str]:
    return [a.approver.name for a in req.approvals if a.decision == decision]


def _state_line(req: AccessRequest) -> str:
    """What became of the request, in one line of mrkdwn (names and reasons escaped)."""
    state = req.state
    approved_by = ", ".join(escape(n) for n in _approvers(req, ApprovalDecision.APPROVE))
    cert = req.certificate
    revocation = cert.revocation if cert is not None else None
    if state == RequestState.PENDING:
        return f":hourglass: *Pending* (until {fmt_time(req.pending_until)})"
    if state == RequestState.APPROVED:
        who = f"by {approved_by}" if approved_by else "automatically"
        return (
            f":white_check_mark: *Approved* {who}, for {format_duration(req.granted_seconds)}: "
            f"to be fetched until {fmt_time(req.claim_until)}"
        )
    if state == RequestState.DENIED:
        denied_by = ", ".join(escape(n) for n in _approvers(req, ApprovalDecision.DENY))
        reason = escape(_cut(req.deny_reason or "", _MAX_REASON_SHOWN))
        # No approver denied it: the current policy refused it in flight (deny_reason says so).
        return f":no_entry: *Denied* by {denied_by or 'the policy'}: {reason}"
    if state == RequestState.ISSUED and cert is not None:
        return (
            f":key: *Certificate issued*: serial {cert.serial}, "
            f"valid until {fmt_time(cert.valid_before)}"
        )
    if state == RequestState.REVOKED:
        if revocation is not None:
            reason = f" ({escape(_cut(revocation.reason, 200))})" if revocation.reason else ""
            return (
                f":octagonal_sign: *Revoked* by {escape(revocation.revoked_by)} "
                f"at {fmt_time(revocation.revoked_at)}{reason}"
            )
        return ":octagonal_sign: *Revoked*"
    if state == RequestState.EXPIRED:
        why = f": {escape(_cut(req.deny_reason, 300))}" if req.deny_reason else ""
        return f":clock3: *Expired*{why}"
    if state == RequestState.CANCELLED:
        return ":heavy_minus_sign: *Cancelled* by the requester"
    if state == RequestState.ENDED:
        return ":checkered_flag: *Ended*"
    return f"*{escape(str(state))}*"


def request_message(req: AccessRequest, *, chat_approval: bool, base_url: str) -> dict[str, Any]:
    """The channel message for ``req`` as it stands: ``{"text": ..., "blocks": [...]}``,
    the arguments of chat.postMessage and chat.update. ``chat_approval``: the rule lets
    approvers decide from chat (the current policy's rule)."""
    requester = req.requester.name
    approved = len(_approvers(req, ApprovalDecision.APPROVE))
    duration = format_duration(timedelta(seconds=req.requested_seconds))
    if req.granted_seconds != req.requested_seconds and req.state != RequestState.PENDING:
        duration += f" (granted {format_duration(req.granted_seconds)})"
    url = request_url(base_url, req.id)
    fields = [
        _mrkdwn(f"*Requester*\n{escape(requester)}", _MAX_FIELD),
        _mrkdwn(f"*Target*\n{escape(req.target)}", _MAX_FIELD),
        _mrkdwn(f"*Duration*\n{duration}", _MAX_FIELD),
        _mrkdwn(f"*Rule*\n{escape(req.rule or '(none)')}", _MAX_FIELD),
        _mrkdwn(f"*Approvals*\n{approved} of {req.approvals_required}", _MAX_FIELD),
    ]
    if req.break_glass:
        fields.append(_mrkdwn("*Break-glass*\nyes", _MAX_FIELD))
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": _plain(f"Access request {req.id}: {requester} → {req.target}", _MAX_HEADER),
        },
        {"type": "section", "fields": fields},
        {
            "type": "section",
            "text": _mrkdwn(
                f"*Reason*\n{escape(_cut(req.reason, _MAX_REASON_SHOWN)) or '(none given)'}"
            ),
        },
    ]
    if req.extends_id:
        blocks.append(
            {"type": "context", "elements": [_mrkdwn(f"Extends {escape(req.extends_id)}")]}
        )
    blocks.append({"type": "section", "text": _mrkdwn(_state_line(req))})
    if req.state == RequestState.PENDING:
        if chat_approval:
            elements: Sequence[dict[str, Any]] = [
                {
                    "type": "button",
                    "action_id": ACTION_APPROVE,
                    "text": _plain("Approve", _MAX_BUTTON),
                    "style": "primary",
                    "value": req.id,
                },
                {
                    "type": "button",
                    "action_id": ACTION_DENY,
                    "text": _plain("Deny", _MAX_BUTTON),
                    "style": "danger",
                    "value": req.id,
                },
            ]
        else:
            elements = [
                {
                    "type": "button",
                    "action_id": ACTION_OPEN,
                    "text": _plain("Review in jit-ssh", _MAX_BUTTON),
                    "url": url,
                    "value": req.id,
                }
            ]
        blocks.append({"type": "actions", "block_id": DECIDE_BLOCK, "elements": list(elements)})
    else:
        blocks.append({"type": "context", "elements": [_mrkdwn(f"<{url}|Open in jit-ssh>")]})
    text = (
        f"Access request {req.id} by {escape(requester)} for {escape(req.target)} "
        f"({duration}): {_state_line(req)}"
    )
    return {"text": _cut(text, _MAX_FALLBACK), "blocks": blocks}


def deny_modal(request_id: str, channel: str | None) -> dict[str, Any]:
    """The modal that asks a denial's reason (views.open). ``private_metadata`` carries the
    request id and the channel the button was in, for the submission's answer."""
    import json

    return {
        "type": "modal",
        "callback_id": DENY_CALLBACK,
        "private_metadata": json.dumps({"request_id": request_id, "channel": channel}),
        "title": _plain("Deny the request", 24),
        "submit": _plain("Deny", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": _plain(f"Why is request {request_id} denied?", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "min_length": 1,
                    "max_length": 1000,
                },
            }
        ],
    }


def dm_blocks(text: str) -> list[dict[str, Any]]:
    """A direct message's blocks: one section of (already escaped) mrkdwn."""
    return [{"type": "section", "text": _mrkdwn(text)}]
