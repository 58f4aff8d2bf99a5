"""``POST /slack/interactions``: Slack's interactivity callbacks (button clicks, the deny modal).

Everything in the request is hostile until checked, in this order, before anything is parsed:

1. both ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` are present (else
   ``slack_signature_invalid``, 401);
2. the timestamp is an integer within five minutes of the server's clock, either way (else
   ``slack_timestamp_stale``, 401);
3. the signature is ``v0=`` and the hex HMAC-SHA256 of ``v0:<timestamp>:<raw body>`` under
   the signing secret, compared in constant time (else ``slack_signature_invalid``, 401);
4. the signature has not been seen before (its SHA-256 is kept in ``chat_replays`` for ten
   minutes, longer than it can be valid; else ``slack_replayed``, 401).

Only then is the ``payload`` form field parsed, each value by its own check. The Slack user is
mapped to a jit-ssh user by ``[slack] users``, else by the email Slack says the user confirmed,
matched to the one enabled user with that (SSO-verified) email (else ``slack_user_unknown``).
Approve calls the service with ``ApprovalContext(via="chat")``, which applies every policy check
(no self-approval, eligibility, the rule's ``chat_approval`` and ``approver_auth``); Deny opens a
modal for the reason, and its submission denies. A refusal is told to the clicking user with
chat.postEphemeral, recorded as ``chat.refused``, changes nothing, and is answered 200 with a
JSON error body (Slack shows a non-200 answer as a failure of the app). The payload's
``response_url`` is never used: it is a URL from the request, and posting to it would let a
forged payload make the server call any address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Response, request
from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ca.errors import JitSshError
from server.config import InvalidConfig
from server.db import transaction
from server.deps import Deps, deps
from server.errors import (
    AlreadyDecided,
    InvalidInput,
    InvalidState,
    NotEligible,
    SelfApproval,
    SlackNotConfigured,
    SlackReplayed,
    SlackSignatureInvalid,
    SlackTimestampStale,
    SlackUserUnknown,
)
from server.models import ChatReplay, RequestState, User
from server.services import NotDecidable
from server.services.requests import ApprovalContext, check_channel
from server.services.validation import MAX_REASON, check_request_id, check_text

from .blocks import (
    ACTION_APPROVE,
    ACTION_DENY,
    ACTION_OPEN,
    DENY_CALLBACK,
    REASON_BLOCK,
    REASON_INPUT,
    deny_modal,
)
from .client import web_client
from .settings import SLACK_USER_ID, SlackSettings

__all__ = [
    "slack_bp",
    "verify_signature",
    "MAX_AGE",
    "check_slack_user",
    "check_action",
    "check_trigger_id",
    "check_channel_id",
    "check_view_submission",
]

log = logging.getLogger("jit_ssh.slack")

slack_bp = Blueprint("slack", __name__)

#: Seconds a signed callback stays acceptable, either way of the server's clock (Slack's advice).
MAX_AGE = 300
CHAT = ApprovalContext(via="chat")
APPROVED_COMMENT = "approved in Slack"

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
# "12345.98765.abcd2358fdea": digits, digits, and hex (Slack's trigger ids).
_TRIGGER_ID = re.compile(r"[0-9]{1,20}\.[0-9]{1,20}\.[0-9A-Za-z]{1,64}")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,20}")
_ACTIONS = (ACTION_APPROVE, ACTION_DENY, ACTION_OPEN)
_KINDS = ("block_actions", "view_submission")
_MAX_METADATA = 3000
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")


# ---- the signature ----------------------------------------------------------------------


def verify_signature(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: datetime
) -> str:
    """The signature, if ``body`` was signed by Slack within :data:`MAX_AGE` seconds of ``now``
    (Slack's "Verifying requests from Slack": ``v0=`` HMAC-SHA256 of ``v0:ts:body``)."""
    if not timestamp or not signature:
        raise SlackSignatureInvalid(
            "X-Slack-Request-Timestamp and X-Slack-Signature are required",
            field="X-Slack-Signature",
        )
    if not _TIMESTAMP.fullmatch(timestamp) or abs(now.timestamp() - int(timestamp)) > MAX_AGE:
        raise SlackTimestampStale(
            f"X-Slack-Request-Timestamp must be within {MAX_AGE} s of the server's clock",
            field="X-Slack-Request-Timestamp",
        )
    expected = (
        "v0="
        + hmac.new(
            secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256
        ).hexdigest()
    )
    # Both sides as bytes: compare_digest refuses a str with non-ASCII characters.
    given = signature.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(expected.encode(), given) or not _SIGNATURE.fullmatch(signature):
        raise SlackSignatureInvalid(
            "X-Slack-Signature does not match the body", field="X-Slack-Signature"
        )
    return signature


def _remember(d: Deps, signature: str, now: datetime) -> None:
    """Refuse a signature seen before; keep this one for longer than it can be valid."""
    digest = hashlib.sha256(signature.encode()).hexdigest()
    replayed = SlackReplayed("this Slack callback was received already", field="X-Slack-Signature")
    try:
        with transaction(d.service.sessions) as s:
            s.query(ChatReplay).filter(ChatReplay.expires_at < now).delete(
                synchronize_session=False
            )
            if s.get(ChatReplay, digest) is not None:
                raise replayed
            s.add(ChatReplay(digest=digest, expires_at=now + timedelta(seconds=2 * MAX_AGE)))
    except IntegrityError:
        # The same callback twice at once: the other one's insert won.
        raise replayed from None


# ---- the payload's values, one check each --------------------------------------------------


def _bad(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, field=field)


def check_slack_user(value: object) -> str:
    """The payload's ``user.id``: a Slack user id."""
    user_id = value.get("id") if isinstance(value, dict) else None
    if not isinstance(user_id, str) or not SLACK_USER_ID.fullmatch(user_id):
        raise _bad("user.id must be a Slack user id", "user.id")
    return user_id


def check_action(value: object) -> tuple[str, str]:
    """The payload's ``actions``: exactly one of our buttons, and the request id it carries."""
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise _bad("actions must hold exactly one action", "actions")
    action = value[0]
    action_id = action.get("action_id")
    if not isinstance(action_id, str) or action_id not in _ACTIONS:
        raise _bad(f"actions[0].action_id must be one of {', '.join(_ACTIONS)}", "actions")
    return action_id, check_request_id(action.get("value"))


def check_trigger_id(value: object) -> str:
    """The payload's ``trigger_id`` (what views.open needs)."""
    if not isinstance(value, str) or not _TRIGGER_ID.fullmatch(value):
        raise _bad("trigger_id must be a Slack trigger id", "trigger_id")
    return value


def check_channel_id(value: object) -> str | None:
    """A channel id from the payload (``channel.id``, or the modal's metadata), or None."""
    if value is None:
        return None
    channel = value.get("id") if isinstance(value, dict) else value
    if not isinstance(channel, str) or not _CHANNEL_ID.fullmatch(channel):
        raise _bad("channel.id must be a Slack channel id", "channel.id")
    return channel


def check_view_submission(view: object) -> tuple[str, str | None, str]:
    """The deny modal's submission: its request id and channel (from the metadata we gave
    it) and the reason typed (THE check of a denial's reason: ``check_text``)."""
    if not isinstance(view, dict) or view.get("callback_id") != DENY_CALLBACK:
        raise _bad(f"view.callback_id must be {DENY_CALLBACK}", "view.callback_id")
    raw = view.get("private_metadata")
    if not isinstance(raw, str) or len(raw) > _MAX_METADATA:
        raise _bad("view.private_metadata must be a string", "view.private_metadata")
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise _bad("view.private_metadata is not ours", "view.private_metadata")
    request_id = check_request_id(meta.get("request_id"))
    channel = check_channel_id(meta.get("channel"))
    state = view.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    block = values.get(REASON_BLOCK) if isinstance(values, dict) else None
    element = block.get(REASON_INPUT) if isinstance(block, dict) else None
    reason = element.get("value") if isinstance(element, dict) else None
    if not isinstance(reason, str):
        raise _bad("the reason is missing", "reason")
    return request_id, channel, check_text(reason, "reason", MAX_REASON, required=True)


def _payload(body: bytes) -> dict[str, Any]:
    """The ``payload`` form field of ``body``, as a JSON object (only after the signature)."""
    try:
        form = parse_qs(
            body.decode("utf-8"), strict_parsing=True, max_num_fields=8, keep_blank_values=True
        )
    except (UnicodeDecodeError, ValueError):
        raise _bad("the body must be a form with one payload field", "payload") from None
    values = form.get("payload")
    if not values or len(values) != 1:
        raise _bad("the body must be a form with one payload field", "payload")
    try:
        payload = json.loads(values[0])
    except (ValueError, RecursionError):
        raise _bad("payload must be JSON", "payload") from None
    if not isinstance(payload, dict):
        raise _bad("payload must be a JSON object", "payload")
    if payload.get("type") not in _KINDS:
        raise _bad(f"payload.type must be one of {', '.join(_KINDS)}", "type")
    return payload


# ---- who clicked ---------------------------------------------------------------------------


def _unknown(slack_id: str, why: str) -> SlackUserUnknown:
    return SlackUserUnknown(f"Slack user {slack_id} {why}", field="user.id")


def _enabled_user(d: Deps, **where: Any) -> list[User]:
    with transaction(d.service.sessions) as s:
        q = select(User).where(User.disabled.is_(False))
        if "name" in where:
            q = q.where(User.name == where["name"])
        else:
            email = where["email"]
            q = q.where(User.email.is_not(None), func.lower(User.email) == email.lower())
            # The database's lower() may fold more than ASCII (PostgreSQL: the Kelvin sign
            # to "k"): only an exact ASCII match, folded here, names a user.
            return [
                u
                for u in s.execute(q.limit(10)).scalars()
                if u.email is not None and u.email.isascii() and u.email.lower() == email.lower()
            ][:2]
        return list(s.execute(q.limit(2)).scalars())


def check_team(settings: SlackSettings, team: object) -> None:
    """With ``[slack] team_id`` set, a callback must come from that workspace (its
    ``team.id``); another workspace's people (Slack Connect, a shared app) are nobody here."""
    if settings.team_id is None:
        return
    got = team.get("id") if isinstance(team, dict) else None
    if got != settings.team_id:
        raise SlackUserUnknown(
            "this Slack workspace is not the one jit-ssh is set up for ([slack] team_id)",
            field="team",
        )


def map_user(d: Deps, settings: SlackSettings, slack_id: str) -> User:
    """The enabled jit-ssh user ``slack_id`` is: the explicit mapping, else the email Slack
    says the user confirmed, matching exactly one user's (verified) email."""
    name = settings.users.get(slack_id)
    if name is not None:
        found = _enabled_user(d, name=name)
        if len(found) != 1:
            raise _unknown(slack_id, f"maps to {name!r}, which is no enabled jit-ssh user")
        return found[0]
    if not settings.match_email:
        raise _unknown(slack_id, "is not in [slack] users")
    try:
        info = web_client(settings).users_info(user=slack_id)
        user = info.get("user")
    except (SlackApiError, SlackClientError, OSError, ValueError, InvalidConfig) as e:
        log.warning("slack: users.info for %s failed (%s)", slack_id, type(e).__name__)
        raise _unknown(slack_id, "could not be looked up in Slack") from None
    if not isinstance(user, dict) or user.get("deleted") or user.get("is_bot"):
        raise _unknown(slack_id, "is not an active person in Slack")
    # Slack says whether the address was confirmed; an unconfirmed one names nobody.
    # Slack says whether the address was confirmed: an unconfirmed one, or an answer that
    # does not say, names nobody.
    if user.get("is_email_confirmed") is not True:
        raise _unknown(slack_id, "has no confirmed email in Slack")
    profile = user.get("profile")
    email = profile.get("email") if isinstance(profile, dict) else None
    # ASCII only: str.lower() folds some non-ASCII letters into ASCII ones (the Kelvin
    # sign into "k"), which would let another mailbox stand for a user's.
    if not isinstance(email, str) or not email.isascii() or not _EMAIL.fullmatch(email):
        raise _unknown(slack_id, "has no email in Slack (the app needs users:read.email)")
    found = _enabled_user(d, email=email)
    if len(found) != 1:
        raise _unknown(slack_id, "matches no single enabled jit-ssh user by verified email")
    return found[0]


# ---- answering -----------------------------------------------------------------------------


@dataclass
class _Click:
    slack_user: str
    channel: str | None
    request_id: str | None = None
    action: str = ""
    user: User | None = None


def _ephemeral(settings: SlackSettings, click: _Click, text: str) -> None:
    """Tell the clicking user only; failures are logged (the answer says it too)."""
    if click.channel is None:
        return
    try:
        web_client(settings).chat_postEphemeral(
            channel=click.channel, user=click.slack_user, text=text
        )
    except (SlackApiError, SlackClientError, OSError, ValueError, InvalidConfig) as e:
        log.warning("slack: chat.postEphemeral failed (%s)", type(e).__name__)


def _record_refusal(d: Deps, click: _Click, code: str, now: datetime) -> None:
    with transaction(d.service.sessions) as s:
        d.audit.record(
            s,
            type="chat.refused",
            now=now,
            actor=click.user.name if click.user is not None else None,
            request_id=click.request_id,
            data={"code": code, "slack_user": click.slack_user, "action": click.action},
        )


def _refuse(
    d: Deps, settings: SlackSettings, click: _Click, e: JitSshError, now: datetime, *, view: bool
) -> Response:
    _record_refusal(d, click, e.code, now)
    _ephemeral(settings, click, f":no_entry_sign: Not done ({e.code}): {e}")
    if view:
        # The modal shows the refusal under the reason field, and stays open.
        body: dict[str, object] = {
            "response_action": "errors",
            "errors": {REASON_BLOCK: f"{e.code}: {e}"[:150]},
        }
    else:
        body = {"ok": False, "code": e.code, "detail": str(e)}
    return Response(json.dumps(body), status=200, mimetype="application/json")


def _ok(body: dict[str, object] | None = None) -> Response:
    if body is None:
        return Response("", status=200)
    return Response(json.dumps(body), status=200, mimetype="application/json")


_WHY_NOT = {
    NotDecidable.OWN_REQUEST: SelfApproval,
    NotDecidable.NOT_PENDING: InvalidState,
    NotDecidable.NOT_APPROVER: NotEligible,
    NotDecidable.ALREADY_DECIDED: AlreadyDecided,
    NotDecidable.POLICY: NotEligible,
}


def _open_deny_modal(
    d: Deps, settings: SlackSettings, click: _Click, user: User, trigger_id: str
) -> Response:
    """Deny: the same checks the denial will make, said now, before a reason is typed."""
    assert click.request_id is not None
    policy = d.service.policy.get()
    req = d.service.get(user, click.request_id)
    may = d.service.may_decide(user, req)
    if not may.allowed:
        cls = _WHY_NOT.get(may.why_not or NotDecidable.POLICY, NotEligible)
        detail = (
            "; ".join(may.reasons) or f"{user.name!r} may not deny request {req.id} ({req.state})"
        )
        raise cls(detail, field="id")
    # As the denial will judge it: the rule it was filed under and the one deciding it now.
    current, _ = d.service.current_grant(req)
    check_channel(policy, (req.rule, current.rule), CHAT, d.service.now())
    try:
        web_client(settings).views_open(
            trigger_id=trigger_id, view=deny_modal(req.id, click.channel)
        )
    except (SlackApiError, SlackClientError, OSError, ValueError, InvalidConfig) as e:
        log.warning("slack: views.open failed (%s)", type(e).__name__)
        return _ok(
            {"ok": False, "code": "slack_unavailable", "detail": "Slack did not open the form"}
        )
    return _ok({"ok": True})


@slack_bp.post("/slack/interactions")
def interactions() -> Response:
    d = deps()
    settings = d.config.slack
    if settings is None:
        raise SlackNotConfigured("this server has no [slack] table", field="slack")
    now = d.clock()
    # The raw bytes, as signed (the app's MAX_CONTENT_LENGTH bounds them: 413 past it).
    body = request.get_data(cache=True)
    try:
        secret = settings.signing_secret()
    except InvalidConfig as e:
        log.error("slack: %s", e.message)
        raise SlackSignatureInvalid(
            "this server cannot check Slack's signature (no signing secret)",
            field="X-Slack-Signature",
        ) from None
    signature = verify_signature(
        secret,
        request.headers.get("X-Slack-Request-Timestamp"),
        request.headers.get("X-Slack-Signature"),
        body,
        now,
    )
    _remember(d, signature, now)

    # Signed by Slack from here on; still checked value by value.
    click = _Click(slack_user="", channel=None)
    view = False
    try:
        payload = _payload(body)
        click.slack_user = check_slack_user(payload.get("user"))
        check_team(settings, payload.get("team"))
        view = payload["type"] == "view_submission"
        if view:
            request_id, channel, reason = check_view_submission(payload.get("view"))
            click.request_id, click.channel, click.action = request_id, channel, "deny"
        else:
            click.channel = check_channel_id(payload.get("channel"))
            action_id, click.request_id = check_action(payload.get("actions"))
            click.action = action_id.removeprefix("jit_ssh.")
            if action_id == ACTION_OPEN:
                return _ok({"ok": True})  # the link button: the browser opens the page
        user = click.user = map_user(d, settings, click.slack_user)
        if view:
            req = d.service.deny(user, click.request_id, reason=reason, context=CHAT)
            _ephemeral(settings, click, f"You denied request {req.id}.")
            return _ok()
        if action_id == ACTION_DENY:
            trigger_id = check_trigger_id(payload.get("trigger_id"))
            return _open_deny_modal(d, settings, click, user, trigger_id)
        req = d.service.approve(user, click.request_id, comment=APPROVED_COMMENT, context=CHAT)
        done = "approved" if req.state == RequestState.APPROVED else "counted: one more approval"
        _ephemeral(settings, click, f"Request {req.id}: {done}.")
        return _ok({"ok": True, "state": str(req.state)})
    except InvalidInput as e:
        if view and e.field == "reason":
            # A blank reason: the modal says so and stays open.
            return _refuse(d, settings, click, e, now, view=True)
        # Malformed, though signed: the 400 problem, and the refusal is recorded.
        _record_refusal(d, click, e.code, now)
        raise
    except JitSshError as e:
        return _refuse(d, settings, click, e, now, view=view)
