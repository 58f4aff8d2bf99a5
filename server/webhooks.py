"""Signed JSON webhooks: one :class:`~server.outbox.Sink` per ``[[webhooks]]`` table.

Each delivery is one POST of a JSON body::

    {"id": "<idempotency key>", "event": "request.created", "at": "...", "actor": "alice",
     "request_id": "...", "data": {...the audit event's data...},
     "request": {"target", "requester", "state", "rule", "url"} | null,
     "text": "a Slack-compatible one-line summary"}

with the headers ``Idempotency-Key``, ``X-Jit-Ssh-Event``, ``X-Jit-Ssh-Timestamp`` (unix
seconds) and ``X-Jit-Ssh-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``
(absent only for the old unsigned ``webhook_url``). docs/notifications.md has the
receiver's verification recipe.

2xx is delivered; 429, 5xx, a timeout or a connection error is retried (the outbox's
backoff, or the 429's ``Retry-After``); a redirect or any other status is permanent
(the message is dead). Redirects are never followed: the signed body goes to the
configured URL or nowhere.

Values people typed (a reason, a comment) are data in the JSON, never interpreted; in
``text`` they are escaped for Slack's mrkdwn (``&``, ``<``, ``>``), so a reason such as
``<https://evil|approve here>`` cannot put a link of the requester's choosing in front of
the approvers of a Slack incoming webhook.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from ca import format_duration
from server.config import InvalidConfig, WebhookSettings, check_webhook_url
from server.db import transaction
from server.models import AccessRequest
from server.outbox import Delivery, DeliveryFailed

__all__ = ["WebhookSink", "sign", "webhook_sinks", "load_secret"]


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``v1=`` and the hex HMAC-SHA256 of ``"<ts>.<body>"``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def load_secret(settings: WebhookSettings) -> bytes | None:
    """The webhook's secret: its environment variable (read at load), else its file's
    first line. None only for the old unsigned ``webhook_url``."""
    if settings.secret:
        return settings.secret.encode()
    if settings.secret_file is None:
        return None
    try:
        lines = settings.secret_file.read_text("utf-8").strip().splitlines()
        text = lines[0].strip() if lines else ""
    except OSError as e:
        raise InvalidConfig(
            f"webhook {settings.name!r}: secret_file {settings.secret_file}: {e.strerror or e}",
            field="webhooks",
        ) from None
    if not text:
        raise InvalidConfig(
            f"webhook {settings.name!r}: secret_file {settings.secret_file} is empty",
            field="webhooks",
        )
    return text.encode()


class WebhookSink:
    """POST each wanted event to one URL, signed with that webhook's secret."""

    def __init__(
        self,
        settings: WebhookSettings,
        secret: bytes | None,
        *,
        sessions: sessionmaker[Session] | None,
        base_url: str,
        now: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.sink_name
        self._secret = secret
        self._sessions = sessions
        self._base_url = base_url.rstrip("/")
        self._now = now
        self._client = httpx.Client(
            timeout=settings.timeout, follow_redirects=False, transport=transport
        )

    def wants(self, event_type: str) -> bool:
        return self.settings.wants(event_type)

    def body(self, delivery: Delivery) -> bytes:
        ev = delivery.event
        request = self._request_summary(ev.get("request_id"))
        message = {
            "id": delivery.key,
            "event": ev["type"],
            "at": ev["at"],
            "actor": ev.get("actor"),
            "request_id": ev.get("request_id"),
            "data": ev.get("data") or {},
            "request": request,
            "text": summary_text(ev, request),
        }
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def headers(self, delivery: Delivery, body: bytes) -> dict[str, str]:
        ts = int(self._now())
        h = {
            "Content-Type": "application/json",
            "Idempotency-Key": delivery.key,
            "X-Jit-Ssh-Event": str(delivery.event["type"]),
            "X-Jit-Ssh-Timestamp": str(ts),
        }
        if self._secret is not None:
            h["X-Jit-Ssh-Signature"] = sign(self._secret, ts, body)
        return h

    def deliver(self, delivery: Delivery) -> None:
        body = self.body(delivery)
        try:
            r = self._client.post(
                self.settings.url, content=body, headers=self.headers(delivery, body)
            )
        except httpx.TimeoutException as e:
            raise DeliveryFailed(f"timed out: {type(e).__name__}") from None
        except httpx.InvalidURL as e:
            raise DeliveryFailed(f"invalid URL: {e}", permanent=True) from None
        except httpx.HTTPError as e:
            raise DeliveryFailed(f"{type(e).__name__}: {e}") from None
        status = r.status_code
        if 200 <= status < 300:
            return
        if status == 429:
            raise DeliveryFailed("429 Too Many Requests", retry_after=_retry_after(r))
        if status >= 500:
            raise DeliveryFailed(f"HTTP {status}")
        if 300 <= status < 400:
            raise DeliveryFailed(
                f"HTTP {status}: redirect to {r.headers.get('Location', '?')!r} not followed",
                permanent=True,
            )
        raise DeliveryFailed(f"HTTP {status}", permanent=True)

    def _request_summary(self, request_id: object) -> dict[str, object] | None:
        if not isinstance(request_id, str) or self._sessions is None:
            return None
        with transaction(self._sessions) as s:
            req = s.get(AccessRequest, request_id)
            if req is None:
                return None
            return {
                "target": req.target,
                "requester": req.requester.name,
                "state": str(req.state),
                "rule": req.rule,
                "url": f"{self._base_url}/requests/{req.id}",
            }

    def close(self) -> None:
        self._client.close()


def _retry_after(r: httpx.Response) -> float | None:
    value = r.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date, or nonsense: the backoff decides
    return seconds if 0 <= seconds <= 86400 else None


def webhook_sinks(
    webhooks: tuple[WebhookSettings, ...],
    *,
    sessions: sessionmaker[Session] | None,
    base_url: str,
    transport: httpx.BaseTransport | None = None,
) -> list[WebhookSink]:
    """The sinks of ``webhooks``; each URL checked again (a configuration built in code
    skipped the loader), each secret read."""
    for w in webhooks:
        check_webhook_url(w.url, f"webhook {w.name!r}: url")
    return [
        WebhookSink(w, load_secret(w), sessions=sessions, base_url=base_url, transport=transport)
        for w in webhooks
    ]


# ---- the Slack-compatible "text" ------------------------------------------------------------

_TEMPLATES = {
    "request.created": "{requester} requests {target} for {duration}: {reason} <{url}|review>",
    "request.approval": "{actor} approved request {request_id} <{url}|details>",
    "request.approved": "Request {request_id} approved by {by} <{url}|details>",
    "request.denied": "Request {request_id} denied by {actor}: {reason} <{url}|details>",
    "request.cancelled": "Request {request_id} cancelled by {actor} <{url}|details>",
    "request.expired": "Request {request_id} expired ({was}) <{url}|details>",
    "request.ended": "Access of request {request_id} ended <{url}|details>",
    "request.refused": "Request {request_id} refused by the current policy <{url}|details>",
    "certificate.issued": "Certificate {serial} issued to {requester} for request {request_id} <{url}|details>",
    "certificate.revoked": "Certificate {serial} revoked: {reason} <{url}|details>",
    "certificate.expiring": "Certificate {serial} for {target} expires in {left} <{url}|details>",
}


def mrkdwn(value: object) -> str:
    """A value as Slack shows it, with its three control characters escaped."""
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    text = "" if value is None else str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def summary_text(ev: Mapping[str, Any], request: Mapping[str, object] | None) -> str:
    """One line for a chat webhook. Every value is escaped except the link the server
    itself makes (the request's page); the templates are fixed, never the typed text."""
    data = ev.get("data") or {}
    fields: dict[str, str] = {}
    for k, v in {**(request or {}), **data}.items():
        fields[k] = mrkdwn(v)
    fields["actor"] = mrkdwn(ev.get("actor") or "jit-ssh")
    fields["request_id"] = mrkdwn(ev.get("request_id"))
    fields.setdefault("requester", fields["actor"])
    seconds = data.get("duration_seconds")
    fields["duration"] = format_duration(seconds) if isinstance(seconds, int) else ""
    left = data.get("seconds_left")
    fields["left"] = format_duration(left) if isinstance(left, int) and left > 0 else "moments"
    url = request["url"] if request else ""
    template = _TEMPLATES.get(str(ev.get("type")), "{event} {request_id}")
    fields["event"] = mrkdwn(ev.get("type"))
    text = template.format_map(_Blank(fields, url=str(url).replace(">", "%3E").replace("|", "%7C")))
    if not url:
        text = text.replace(" <|details>", "").replace(" <|review>", "")
    return text


class _Blank(dict[str, str]):
    def __init__(self, fields: dict[str, str], *, url: str) -> None:
        super().__init__(fields)
        self["url"] = url

    def __missing__(self, key: str) -> str:
        return ""
