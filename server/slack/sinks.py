"""The two Slack sinks of the outbox (:class:`server.outbox.Sink`).

* ``slack.channel``: a new request is posted to its rule's ``slack_channel`` (else the
  ``[slack]`` channel), and the message's channel and ts are kept (``slack_messages``);
  every later event of the request updates that message in place (chat.update), rendered
  from the database as it stands (:func:`server.slack.blocks.request_message`). A later
  event that finds no message yet posts it first; a ``request.created`` that finds one (a
  retry after a crash between the post and the outbox's commit) updates it instead.
* ``slack.dm``: the requester is told, in a direct message, that their request was approved
  (by whom, until when it may be fetched), denied (and why), issued, about to expire (and
  how to extend it), or revoked. The requester's Slack id comes from ``[slack] users`` (the
  explicit mapping), else from users.lookupByEmail with their verified email. No Slack id:
  the DM is skipped (logged), not retried.

Each sink reads the database in its own short transaction, then calls Slack outside it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from slack_sdk import WebClient
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

import policies
from ca.durations import format_duration
from server.config import InvalidConfig
from server.db import transaction
from server.models import AccessRequest, SlackMessage, User
from server.outbox import NOTIFYING, Delivery, DeliveryFailed, Sink

from .blocks import dm_blocks, escape, fmt_time, request_message, request_url
from .client import delivery_call, web_client
from .settings import SlackSettings

__all__ = [
    "SlackChannelSink",
    "SlackDmSink",
    "make_sinks",
    "CHANNEL_EVENTS",
    "DM_EVENTS",
]

log = logging.getLogger("jit_ssh.slack")

#: Every event that changes what a request's channel message shows: all that notify but the
#: expiry warning (a refusal in flight ends the request as denied).
CHANNEL_EVENTS = NOTIFYING - {"certificate.expiring"}
DM_EVENTS = frozenset(
    {
        "request.approved",
        "request.denied",
        "certificate.issued",
        "certificate.expiring",
        "certificate.revoked",
    }
)


class _Base:
    name = ""

    def __init__(
        self,
        settings: SlackSettings,
        *,
        sessions: sessionmaker[Session],
        policy: Any,
        clock: Any,
        base_url: str,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.policy = policy
        self.clock = clock
        self.base_url = base_url

    def _client(self) -> WebClient:
        try:
            return web_client(self.settings)
        except InvalidConfig as e:
            # The token's file is missing or empty: fixable without losing the message.
            raise DeliveryFailed(f"{self.name}: {e.message}") from None

    def _rule(self, policy: policies.Policy, name: str | None) -> policies.Rule | None:
        return policy.rule(name) if name else None

    @staticmethod
    def _request_id(delivery: Delivery) -> str | None:
        rid = delivery.event.get("request_id")
        return rid if isinstance(rid, str) and rid else None


class SlackChannelSink(_Base):
    """``slack.channel``: one message per request, updated in place."""

    name = "slack.channel"

    def wants(self, event_type: str) -> bool:
        return event_type in CHANNEL_EVENTS

    def deliver(self, delivery: Delivery) -> None:
        rid = self._request_id(delivery)
        if rid is None:
            return
        # The policy first: a reload records itself in a transaction of its own.
        policy = self.policy.get()
        with transaction(self.sessions) as s:
            req = s.get(AccessRequest, rid)
            if req is None:
                log.warning("slack.channel: no request %s; nothing to post", rid)
                return
            rule = self._rule(policy, req.rule)
            message = request_message(
                req, chat_approval=bool(rule and rule.chat_approval), base_url=self.base_url
            )
            row = s.get(SlackMessage, rid)
            posted = (row.channel, row.ts) if row is not None else None
            channel = (rule.slack_channel if rule is not None else None) or self.settings.channel
        client = self._client()
        if posted is not None:
            self._update(client, posted, message)
            return
        if channel is None:
            log.info(
                "slack.channel: request %s has no channel (no slack_channel, no [slack] channel)",
                rid,
            )
            return
        resp = delivery_call(
            "chat.postMessage",
            lambda: client.chat_postMessage(
                channel=channel, unfurl_links=False, unfurl_media=False, **message
            ),
        )
        where, ts = resp.get("channel"), resp.get("ts")
        if not isinstance(where, str) or not isinstance(ts, str):
            raise DeliveryFailed("chat.postMessage: Slack's answer has no channel and ts")
        try:
            with transaction(self.sessions) as s:
                s.add(SlackMessage(request_id=rid, channel=where, ts=ts, posted_at=self.clock()))
        except IntegrityError:
            # Another worker posted this request's message meanwhile (two of its events
            # delivered at once): keep theirs, remove ours, and bring theirs up to date.
            with transaction(self.sessions) as s:
                row = s.get(SlackMessage, rid)
                posted = (row.channel, row.ts) if row is not None else None
            delivery_call("chat.delete", lambda: client.chat_delete(channel=where, ts=ts))
            if posted is not None:
                self._update(client, posted, message)

    @staticmethod
    def _update(client: WebClient, posted: tuple[str, str], message: dict[str, Any]) -> None:
        channel, ts = posted
        delivery_call("chat.update", lambda: client.chat_update(channel=channel, ts=ts, **message))


class SlackDmSink(_Base):
    """``slack.dm``: the requester's direct messages."""

    name = "slack.dm"

    def wants(self, event_type: str) -> bool:
        return event_type in DM_EVENTS

    def deliver(self, delivery: Delivery) -> None:
        rid = self._request_id(delivery)
        if rid is None:
            return
        event = delivery.event
        data = event.get("data")
        data = data if isinstance(data, dict) else {}
        with transaction(self.sessions) as s:
            req = s.get(AccessRequest, rid)
            if req is None:
                return
            text = self._text(str(event.get("type")), event, data, req)
            requester: User = req.requester
            name, email = requester.name, requester.email
        if text is None:
            return
        client = self._client()
        slack_id = self._slack_id(client, name, email)
        if slack_id is None:
            log.info(
                "slack.dm: %s has no Slack user (no mapping, no verified email match); skipped",
                name,
            )
            return
        opened = delivery_call(
            "conversations.open", lambda: client.conversations_open(users=slack_id)
        )
        channel = (opened.get("channel") or {}).get("id")
        if not isinstance(channel, str):
            raise DeliveryFailed("conversations.open: Slack's answer has no channel id")
        delivery_call(
            "chat.postMessage",
            lambda: client.chat_postMessage(
                channel=channel, text=text, blocks=dm_blocks(text), unfurl_links=False
            ),
        )

    def _slack_id(self, client: WebClient, name: str, email: str | None) -> str | None:
        mapped = self.settings.slack_user_for(name)
        if mapped is not None:
            return mapped
        if not self.settings.match_email or not email:
            return None
        try:
            resp = delivery_call(
                "users.lookupByEmail", lambda: client.users_lookupByEmail(email=email)
            )
        except DeliveryFailed as e:
            if e.permanent:  # users_not_found among them: no such Slack user
                return None
            raise
        user = resp.get("user") or {}
        slack_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(slack_id, str) or user.get("deleted") or user.get("is_bot"):
            return None
        return slack_id

    def _text(
        self, kind: str, event: dict[str, object], data: dict[str, Any], req: AccessRequest
    ) -> str | None:
        what = f"request {req.id} for *{escape(req.target)}*"
        url = request_url(self.base_url, req.id)
        cert = req.certificate
        if kind == "request.approved":
            by = data.get("by")
            names = [str(n) for n in by] if isinstance(by, list) else []
            who = f"by {escape(', '.join(names))}" if names else "automatically"
            return (
                f":white_check_mark: Your {what} was approved {who}, for "
                f"{format_duration(req.granted_seconds)}. Fetch the certificate until "
                f"{fmt_time(req.claim_until)} (`jit-ssh login` picks it up)."
            )
        if kind == "request.denied":
            reason = data.get("reason") if isinstance(data.get("reason"), str) else req.deny_reason
            actor = event.get("actor")
            who = f" by {escape(str(actor))}" if isinstance(actor, str) else ""
            return f":no_entry: Your {what} was denied{who}: {escape(str(reason or ''))[:1500]}"
        if kind == "certificate.issued":
            if cert is None:
                return None
            return (
                f":key: Your certificate for {what} was issued: serial {cert.serial}, "
                f"valid until {fmt_time(cert.valid_before)}."
            )
        if kind == "certificate.expiring":
            if cert is None:
                return None
            now = self.clock()
            left = max(cert.valid_before - now, timedelta(0))
            left = timedelta(seconds=int(left.total_seconds()))
            return (
                f":hourglass_flowing_sand: Your access for {what} ends at "
                f"{fmt_time(cert.valid_before)} (in {format_duration(left) if left else 'moments'}). "
                f'To extend it: `jit-ssh extend {req.id} --for 30m --reason "..."`'
            )
        if kind == "certificate.revoked":
            replaced = data.get("replaced_by")
            if isinstance(replaced, str) and replaced:
                return (
                    f":arrows_counterclockwise: Your {what} was extended: "
                    f"request {escape(replaced)} replaces its certificate."
                )
            actor = event.get("actor")
            who = f" by {escape(str(actor))}" if isinstance(actor, str) else ""
            serial = data.get("serial") or (cert.serial if cert else "")
            reason = data.get("reason")
            why = f": {escape(reason[:500])}" if isinstance(reason, str) and reason else ""
            return f":octagonal_sign: Your certificate (serial {escape(str(serial))}) for {what} was revoked{who}{why}. <{url}|Details>"
        return None


def make_sinks(
    settings: SlackSettings | None,
    *,
    sessions: Any,
    policy: Any,
    clock: Any,
    base_url: str,
) -> list[Sink]:
    """The Slack sinks (none without a ``[slack]`` table), over the server's sessions,
    policy holder and clock."""
    if settings is None:
        return []
    kw = dict(sessions=sessions, policy=policy, clock=clock, base_url=base_url)
    sinks: Sequence[Sink] = (SlackChannelSink(settings, **kw), SlackDmSink(settings, **kw))
    return list(sinks)
