"""The Slack app's done-when, on a real app (SQLite and PostgreSQL) with the real outbox worker
functions: a request is posted to the fake Slack, approved by a click on the fake's recorded
button (a correctly signed interaction to our endpoint), the channel message is updated in place
(chat.update, the same ts) on the approval, the issuance and the revocation, and the requester's
direct messages record approved, issued, expiring and revoked.

Needs the outbox (``server.outbox.deliver_due``, ``tick``, ``Deps.outbox``) wired with the Slack
sinks from ``[slack]``.
"""

from __future__ import annotations

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
