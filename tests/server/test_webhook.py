"""The webhook: new requests, decisions and issuances reach a Slack-compatible endpoint.

A tiny HTTP server on 127.0.0.1 stands in for Slack. Each message is JSON
with a ``text`` that links to the request's approval page. A webhook that
answers 500, hangs or cannot be reached is retried and logged, and never
fails or delays the call that caused the notification.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import Caller, Clock, build_app, user_key_line

DEMO = {"target": "demo", "duration": "5m", "reason": "webhook test"}
BASE = "https://jit.example.test"


class Hook:
    """A webhook receiver: records each POST, answers with the next scripted status."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        self.statuses: list[int] = []  # answered in order; 200 once used up
        self.always: int | None = None
        # When set, every delivery blocks until the test opens the gate: a
        # webhook that hangs, without any wall-clock assumption.
        self.gate: threading.Event | None = None
        self.cond = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.cond:
                    hook.received.append(json.loads(body))
                    hook.content_types.append(self.headers.get("Content-Type", ""))
                    status = hook.always or (hook.statuses.pop(0) if hook.statuses else 200)
                    hook.cond.notify_all()
                if hook.gate is not None:
                    hook.gate.wait(30)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/jit"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < n and time.monotonic() < end:
                self.cond.wait(0.05)
            assert len(self.received) >= n, f"{len(self.received)} of {n} messages: {self.received}"
            return list(self.received)

    def events(self) -> list[str]:
        with self.cond:
            return [m["event"] for m in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def webhook_url(hook: Hook) -> str:
    return hook.url


@pytest.fixture
def app(tmp_path: Path, database_url: str, clock: Clock, webhook_url: str) -> Iterator[Any]:
    app = build_app(tmp_path, database_url, clock, webhook_url=webhook_url)
    # Retry quickly in tests; production backs off from 1 s.
    notifier(app).backoff = 0.05
    yield app
    notifier(app).close(0.1)
    app.extensions["jit_ssh.engine"].dispose()


def notifier(app: Any) -> Any:
    send = app.extensions["jit_ssh"].service.notify
    assert send is not None, "webhook_url set, but no notifier"
    return send.__self__


def _flow(alice: Caller, bob: Caller) -> tuple[str, str]:
    rid = alice.post("/v1/requests", DEMO).json["id"]
    assert bob.post(f"/v1/requests/{rid}/approve", {"comment": "go"}).json["state"] == "approved"
    r = alice.post(f"/v1/requests/{rid}/certificate", {"public_key": user_key_line()})
    assert r.status_code == 200, r.json
    return rid, r.json["serial"]


def test_request_approval_issuance_are_posted(
    app: Any, hook: Hook, alice: Caller, bob: Caller
) -> None:
    rid, serial = _flow(alice, bob)
    created, approved, issued = hook.wait_for(3)
    link = f"{BASE}/requests/{rid}"
    assert [m["event"] for m in (created, approved, issued)] == [
        "request.created",
        "request.approved",
        "certificate.issued",
    ]
    for m in (created, approved, issued):
        # Slack's link syntax: <url|label>.
        assert f"<{link}|" in m["text"], m
        assert m["request_id"] == rid and m["url"] == link
    assert set(hook.content_types) == {"application/json"}
    assert "alice" in created["text"] and "demo" in created["text"] and "5m" in created["text"]
    assert "webhook test" in created["text"] and created["state"] == "pending"
    assert "bob" in approved["text"]
    assert serial in issued["text"] and "alice" in issued["text"]


def test_denial_is_posted(app: Any, hook: Hook, alice: Caller, bob: Caller) -> None:
    rid = alice.post("/v1/requests", DEMO).json["id"]
    bob.post(f"/v1/requests/{rid}/deny", {"reason": "change freeze"})
    _, denied = hook.wait_for(2)
    assert denied["event"] == "request.denied"
    assert "change freeze" in denied["text"] and f"<{BASE}/requests/{rid}|" in denied["text"]


def test_auto_approved_request_is_posted(app: Any, hook: Hook, oncall: Caller) -> None:
    rid = oncall.post("/v1/requests", DEMO).json["id"]
    (created,) = hook.wait_for(1)
    assert created["state"] == "approved" and f"{BASE}/requests/{rid}" in created["text"]


def test_reason_cannot_inject_a_link(app: Any, hook: Hook, alice: Caller) -> None:
    """A requester's text is shown, escaped: the only link in the message is the approval page."""
    reason = "<https://evil.example/approve|Approve now> & <!channel>"
    alice.post("/v1/requests", {**DEMO, "reason": reason})
    (created,) = hook.wait_for(1)
    text = created["text"]
    assert "&lt;https://evil.example/approve|Approve now&gt; &amp; &lt;!channel&gt;" in text
    assert text.count("<") == 1 and text.count(">") == 1, text
    assert created["reason"] == reason  # the JSON field keeps what was typed


def test_failing_webhook_is_retried(app: Any, hook: Hook, alice: Caller, bob: Caller) -> None:
    hook.statuses = [500, 503]
    rid = alice.post("/v1/requests", DEMO).json["id"]
    received = hook.wait_for(3)
    assert [m["event"] for m in received] == ["request.created"] * 3
    assert received[0] == received[1] == received[2]
    assert notifier(app).flush(5)
    # The thread carries on with the next message.
    bob.post(f"/v1/requests/{rid}/approve", {})
    assert hook.wait_for(4)[-1]["event"] == "request.approved"


def test_webhook_that_always_fails_never_fails_the_issuance(
    app: Any, hook: Hook, alice: Caller, bob: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    hook.always = 500
    rid, serial = _flow(alice, bob)
    assert notifier(app).flush(10)
    n = notifier(app).retries
    assert (
        hook.events()
        == ["request.created"] * n + ["request.approved"] * n + ["certificate.issued"] * n
    )
    assert "gave up on certificate.issued" in caplog.text
    assert alice.get(f"/v1/requests/{rid}").json["certificate"]["serial"] == serial


def test_hanging_webhook_never_delays_the_issuance(
    app: Any, hook: Hook, alice: Caller, bob: Caller
) -> None:
    hook.gate = threading.Event()
    try:
        rid, serial = _flow(alice, bob)
        # The whole flow finished while the webhook still holds its first delivery.
        assert len(hook.wait_for(1)) == 1
        assert not hook.gate.is_set()
        assert alice.get(f"/v1/requests/{rid}").json["certificate"]["serial"] == serial
    finally:
        hook.gate.set()
    assert hook.wait_for(3)[-1]["event"] == "certificate.issued"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestUnreachable:
    @pytest.fixture
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{_closed_port()}/hook"

    def test_unreachable_webhook_never_fails_the_issuance(
        self, app: Any, alice: Caller, bob: Caller, caplog: pytest.LogCaptureFixture
    ) -> None:
        rid, serial = _flow(alice, bob)
        assert notifier(app).flush(10)
        assert "gave up on certificate.issued" in caplog.text
        assert notifier(app)._thread.is_alive()


class TestMalformedUrl:
    @pytest.fixture
    def webhook_url(self) -> str:
        return "http://[::1/hook"

    def test_malformed_url_is_logged_and_the_sender_survives(
        self, app: Any, alice: Caller, bob: Caller
    ) -> None:
        _flow(alice, bob)
        assert notifier(app).flush(10)
        assert notifier(app)._thread.is_alive()
