"""The Slack app's done-when, on a real app (SQLite and PostgreSQL) with the real outbox worker
functions: a request is posted to the fake Slack, approved by a click on the fake's recorded
button (a correctly signed interaction to our endpoint), the channel message is updated in place
(chat.update, the same ts) on the approval, the issuance and the revocation, and the requester's
direct messages record approved, issued, expiring and revoked.

Needs the outbox (``server.outbox.deliver_due``, ``tick``, ``Deps.outbox``) wired with the Slack
sinks from ``[slack]``.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from server.slack.blocks import ACTION_APPROVE
from tests.server.conftest import (  # noqa: F401
    admin,
    clock,
    database_url,
    make_user,
    user_key_line,
)
from tests.server.slack_env import ALICE, BOB, SlackEnv, app, env, fake  # noqa: F401
from tests.slack_fake import click

pytestmark = pytest.mark.integration


def _actions(call: object) -> list[str]:
    blocks = call.args["blocks"]  # type: ignore[attr-defined]
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def test_a_click_in_slack_approves_and_the_requester_hears_of_it(env: SlackEnv) -> None:
    # Imported here: the worker's functions land with the outbox (collection must not fail
    # before they do).
    from server.outbox import deliver_due, tick  # type: ignore[attr-defined]

    d = env.app.extensions["jit_ssh"]
    assert {"slack.channel", "slack.dm"} <= {s.name for s in d.outbox.sinks}

    req = env.submit(env.alice, "demo")
    assert deliver_due(d) >= 1
    [post] = env.fake.posts()
    assert post.args["channel"] == "#access"
    assert _actions(post) == ["jit_ssh.approve", "jit_ssh.deny"]
    channel, ts = post.args["_channel"], post.args["_ts"]

    # bob presses Approve on the message the fake Slack holds: Slack's signed callback.
    resp = click(env.client, env.fake, env.secret, post, ACTION_APPROVE, BOB, timestamp=env.ts())
    assert resp.status_code == 200 and resp.json["ok"] is True, resp.get_data(as_text=True)
    assert env.state(req["id"]) == "approved"

    deliver_due(d)
    update = env.fake.of("chat.update")[-1]
    assert (update.args["channel"], update.args["ts"]) == (channel, ts)
    assert _actions(update) == [] and "Approved" in update.args["text"]
    [approved] = env.fake.dms_to(ALICE)
    assert "approved by bob" in approved

    cert = env.alice.post(f"/v1/requests/{req['id']}/certificate", {"public_key": user_key_line()})
    assert cert.status_code == 200, cert.json
    deliver_due(d)
    assert f"serial {cert.json['serial']}" in env.fake.of("chat.update")[-1].args["text"]
    assert f"serial {cert.json['serial']}" in env.fake.dms_to(ALICE)[-1]

    # Inside the rule's warn_before (10m) of the certificate's end: the expiry warning, once.
    env.clock.advance(minutes=21)
    assert tick(d) >= 1
    deliver_due(d)
    warning = env.fake.dms_to(ALICE)[-1]
    assert "ends at" in warning and f"jit-ssh extend {req['id']}" in warning
    assert tick(d) == 0

    revoked = env.bob.post(f"/v1/certificates/{cert.json['serial']}/revoke", {"reason": "done"})
    assert revoked.status_code == 200, revoked.json
    deliver_due(d)
    assert "revoked by bob" in env.fake.dms_to(ALICE)[-1]
    final = env.fake.of("chat.update")[-1]
    assert (final.args["channel"], final.args["ts"]) == (channel, ts)
    assert "Revoked" in final.args["text"]
    # One channel message all along, and four DMs: approved, issued, expiring, revoked.
    assert len(env.fake.posts()) == 1
    assert len(env.fake.dms_to(ALICE)) == 4


class _OverHttp:
    """Our app on a real socket (werkzeug, 127.0.0.1): the click travels as Slack's does, an
    HTTP POST to the interactivity URL, not a call into Flask's test client."""

    def __init__(self, app: Any) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def post(self, path: str, *, data: bytes, headers: dict[str, str]) -> Any:
        r = httpx.post(self.url + path, content=data, headers=headers, timeout=10)

        class _Answer:
            status_code = r.status_code
            json = r.json()

            @staticmethod
            def get_data(as_text: bool = False) -> str:
                return r.text

        return _Answer()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


def test_the_click_reaches_our_endpoint_over_http_signed_as_slack_signs(env: SlackEnv) -> None:
    from server.outbox import deliver_due

    d = env.app.extensions["jit_ssh"]
    req = env.submit(env.alice, "demo")
    deliver_due(d)
    [post] = env.fake.posts()
    http = _OverHttp(env.app)
    try:
        # A forged click (wrong secret) over the same socket: refused, nothing changes.
        forged = click(
            http, env.fake, "not-the-secret", post, ACTION_APPROVE, BOB, timestamp=env.ts()
        )
        assert forged.status_code == 401 and forged.json["code"] == "slack_signature_invalid"
        assert env.state(req["id"]) == "pending"
        resp = click(http, env.fake, env.secret, post, ACTION_APPROVE, BOB, timestamp=env.ts())
        assert resp.status_code == 200 and resp.json["ok"] is True, resp.get_data(as_text=True)
    finally:
        http.close()
    assert env.state(req["id"]) == "approved"
    deliver_due(d)
    assert "approved by bob" in env.fake.dms_to(ALICE)[0]
