"""A fake Slack Web API on 127.0.0.1, and a "click" that Slack would send for one of its buttons.

slack-sdk's real ``WebClient`` is pointed at it (``[slack] api_url``): the fake speaks the
request and response shapes Slack documents for the methods jit-ssh calls (chat.postMessage,
chat.update, chat.delete, chat.postEphemeral, conversations.open, users.info,
users.lookupByEmail, views.open), checks the bearer token, and records every call with its
parsed arguments (blocks included). ``fail(method, error, status=..., headers=...)`` makes the
next call of a method answer an error (``ratelimited`` with a 429 and Retry-After...).

:func:`click` builds the ``block_actions`` payload Slack sends when a person presses a button
of a message the fake recorded, and posts it to the app signed as Slack documents
(``v0=`` HMAC-SHA256 of ``v0:timestamp:body`` with the signing secret).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = [
    "FakeSlack",
    "Call",
    "SlackPerson",
    "fake_slack",
    "sign",
    "click",
    "submit_deny",
    "post_signed",
]


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None


@dataclass
class SlackPerson:
    id: str
    email: str | None = None
    email_confirmed: bool = True
    deleted: bool = False


@dataclass
class FakeSlack:
    token: str
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    people: dict[str, SlackPerson] = field(default_factory=dict)
    #: method -> queued (error, status, headers) answers, one per call.
    failures: dict[str, list[tuple[str, int, dict[str, str]]]] = field(default_factory=dict)
    #: channel name ("#access") -> id.
    channel_ids: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def add_person(self, slack_id: str, email: str | None, **kw: Any) -> SlackPerson:
        p = SlackPerson(slack_id, email, **kw)
        self.people[slack_id] = p
        return p

    def fail(
        self, method: str, error: str, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.failures.setdefault(method, []).append((error, status, headers or {}))

    def of(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def posts(self) -> list[Call]:
        """The messages posted to channels (answered ok; not direct messages)."""
        return [
            c
            for c in self.of("chat.postMessage")
            if "_ts" in c.args and not str(c.args["_channel"]).startswith("D")
        ]

    def dms_to(self, slack_id: str) -> list[str]:
        """The texts of the direct messages posted to ``slack_id`` (via conversations.open)."""
        channel = f"D{slack_id[1:]}"
        return [
            c.args["text"] for c in self.of("chat.postMessage") if c.args.get("channel") == channel
        ]

    # ---- the methods ---------------------------------------------------------------------

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method in ("chat.postMessage", "chat.update"):
            channel = args.get("channel")
            if not isinstance(channel, str) or not channel:
                return {"ok": False, "error": "channel_not_found"}
            if not args.get("text") and not args.get("blocks"):
                return {"ok": False, "error": "no_text"}
            blocks = args.get("blocks")
            if blocks is not None and not isinstance(blocks, list):
                return {"ok": False, "error": "invalid_blocks"}
            cid = (
                self.channel_ids.setdefault(channel, f"C{len(self.channel_ids) + 100:08d}")
                if channel.startswith("#")
                else channel
            )
            if method == "chat.update":
                ts = args.get("ts")
                posted = [
                    c
                    for c in self.calls
                    if c.method == "chat.postMessage"
                    and c.args.get("_ts") == ts
                    and c.args.get("_channel") == cid
                ]
                if not posted:
                    return {"ok": False, "error": "message_not_found"}
                return {"ok": True, "channel": cid, "ts": ts, "text": args.get("text")}
            ts = f"1700000000.{next(self._ts):06d}"
            args["_ts"], args["_channel"] = ts, cid
            return {
                "ok": True,
                "channel": cid,
                "ts": ts,
                "message": {"text": args.get("text"), "blocks": blocks},
            }
        if method == "chat.delete":
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts")}
        if method == "chat.postEphemeral":
            if not args.get("user") or not args.get("channel"):
                return {"ok": False, "error": "invalid_arguments"}
            return {"ok": True, "message_ts": "1700000000.999999"}
        if method == "conversations.open":
            users = str(args.get("users", ""))
            if users not in self.people:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "channel": {"id": f"D{users[1:]}"}}
        if method == "users.info":
            p = self.people.get(str(args.get("user")))
            if p is None:
                return {"ok": False, "error": "user_not_found"}
            user: dict[str, Any] = {
                "id": p.id,
                "deleted": p.deleted,
                "is_bot": False,
                "is_email_confirmed": p.email_confirmed,
                "profile": {"real_name": p.id},
            }
            if p.email:
                user["profile"]["email"] = p.email
            return {"ok": True, "user": user}
        if method == "users.lookupByEmail":
            email = str(args.get("email", "")).lower()
            for p in self.people.values():
                if p.email and p.email.lower() == email and p.email_confirmed:
                    return {"ok": True, "user": {"id": p.id, "deleted": p.deleted, "is_bot": False}}
            return {"ok": False, "error": "users_not_found"}
        if method == "views.open":
            if not args.get("trigger_id") or not isinstance(args.get("view"), dict):
                return {"ok": False, "error": "invalid_arguments"}
            return {"ok": True, "view": {"id": "V0000000001", **args["view"]}}
        return {"ok": False, "error": "unknown_method"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        if not parts.path.startswith("/api/"):
            self._reply(404, {"ok": False, "error": "not_found"})
            return
        method = parts.path.removeprefix("/api/")
        args: dict[str, Any] = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        if raw and "json" in ctype:
            args.update(json.loads(raw))
        elif raw:
            args.update({k: v[0] for k, v in parse_qs(raw.decode()).items()})
        for k in ("blocks", "view"):
            # Form-encoded calls carry JSON arguments as strings (Slack accepts both).
            if isinstance(args.get(k), str):
                args[k] = json.loads(args[k])
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        with fake.lock:
            fake.calls.append(Call(method, args, token))
            if token != fake.token:
                self._reply(200, {"ok": False, "error": "invalid_auth"})
                return
            queued = fake.failures.get(method)
            if queued:
                error, status, headers = queued.pop(0)
                self._reply(status, {"ok": False, "error": error}, headers)
                return
            body = fake.answer(method, args)
        self._reply(200, body)

    do_POST = _handle
    do_GET = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeSlack


@contextmanager
def fake_slack(token: str | None = None) -> Iterator[FakeSlack]:
    """A running fake on 127.0.0.1 (a free port), stopped at the end."""
    fake = FakeSlack(token=token or "xoxb-test-" + secrets.token_hex(12))
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---- Slack's side of an interaction -------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """X-Slack-Signature as Slack documents it."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def _verifier(secret: str, at: int) -> Any:
    from slack_sdk.signature import Clock, SignatureVerifier

    class _At(Clock):
        def now(self) -> float:
            return float(at)

    return SignatureVerifier(secret, clock=_At())


def form_body(payload: object) -> bytes:
    """Slack's callback body: ``payload=<JSON>``, form-encoded."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return urlencode({"payload": text}).encode()


def post_signed(
    client: Any,
    secret: str,
    body: bytes,
    *,
    timestamp: int,
    signature: str | None = None,
    headers: dict[str, str | None] | None = None,
) -> Any:
    """POST ``body`` to /slack/interactions signed at ``timestamp`` (``signature`` overrides)."""
    h: dict[str, str] = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": signature or sign(secret, timestamp, body),
    }
    for k, v in (headers or {}).items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    return client.post("/slack/interactions", data=body, headers=h)


def find_button(call: Call, action_id: str) -> dict[str, Any]:
    for block in call.args.get("blocks") or []:
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                if element.get("action_id") == action_id:
                    return {**element, "block_id": block.get("block_id")}
    raise AssertionError(f"no button {action_id!r} in the message: {call.args.get('blocks')}")


def block_actions(
    fake: FakeSlack, message: Call, action_id: str, slack_user: str
) -> dict[str, Any]:
    """The payload Slack sends when ``slack_user`` presses ``action_id`` on ``message``."""
    button = find_button(message, action_id)
    channel = message.args.get("_channel") or message.args.get("channel")
    ts = message.args.get("_ts") or message.args.get("ts")
    return {
        "type": "block_actions",
        "user": {"id": slack_user, "username": slack_user.lower(), "team_id": "T0000TEST"},
        "api_app_id": "A0000TEST",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel},
        "trigger_id": f"{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}.{secrets.token_hex(8)}",
        "team": {"id": "T0000TEST", "domain": "test"},
        "channel": {"id": channel, "name": "access"},
        "message": {
            "ts": ts,
            "text": message.args.get("text"),
            "blocks": message.args.get("blocks"),
        },
        # Never called by jit-ssh: a forged payload could name any URL here.
        "response_url": "http://127.0.0.1:9/should-never-be-called",
        "actions": [
            {
                "action_id": button["action_id"],
                "block_id": button.get("block_id"),
                "text": button["text"],
                "value": button.get("value"),
                "style": button.get("style"),
                "type": "button",
                "action_ts": "1700000000.000001",
            }
        ],
    }


def click(
    client: Any,
    fake: FakeSlack,
    secret: str,
    message: Call,
    action_id: str,
    slack_user: str,
    *,
    timestamp: int,
) -> Any:
    """Press ``action_id`` on the recorded ``message`` as ``slack_user``: the signed callback."""
    body = form_body(block_actions(fake, message, action_id, slack_user))
    signature = sign(secret, timestamp, body)
    # Signed as slack-sdk's own verifier expects (at that moment).
    assert _verifier(secret, timestamp).is_valid(body, str(timestamp), signature)
    return post_signed(client, secret, body, timestamp=timestamp, signature=signature)


def view_submission(view: dict[str, Any], slack_user: str, reason: object) -> dict[str, Any]:
    """What Slack sends when ``slack_user`` submits the modal jit-ssh opened (``view``)."""
    return {
        "type": "view_submission",
        "user": {"id": slack_user, "team_id": "T0000TEST"},
        "team": {"id": "T0000TEST"},
        "trigger_id": "123.456.abcdef",
        "view": {
            "id": "V0000000001",
            "type": "modal",
            "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"],
            "state": {
                "values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
            },
        },
    }


def submit_deny(
    client: Any, fake: FakeSlack, secret: str, slack_user: str, reason: object, *, timestamp: int
) -> Any:
    """Submit the last modal the app opened (views.open) with ``reason``."""
    view = fake.of("views.open")[-1].args["view"]
    body = form_body(view_submission(view, slack_user, reason))
    return post_signed(client, secret, body, timestamp=timestamp)
