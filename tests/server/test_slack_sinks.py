"""The Slack sinks against the fake Slack Web API: a request's channel message is posted once and
updated in place (chat.update, same channel and ts) on every decision, issuance and revocation;
the requester's direct messages say approved, denied, issued, expiring and revoked; Slack's
errors become the right DeliveryFailed (retry after Retry-After, or permanent)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from server.outbox import Delivery, DeliveryFailed
from server.slack.blocks import ACTION_APPROVE, ACTION_DENY, ACTION_OPEN
from tests.server.conftest import user_key_line
from tests.server.slack_env import ALICE, SlackEnv, app, env, fake  # noqa: F401
from tests.slack_fake import find_button


def _actions(call: Any) -> list[str]:
    return [
        e["action_id"] for b in call.args["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]


def test_a_request_is_posted_once_then_updated_in_place(env: SlackEnv) -> None:
    req = env.submit(env.alice, "demo")
    assert env.pump() == ["request.created.slack.channel"]
    [post] = env.fake.posts()
    # The rule's slack_channel wins over the [slack] channel.
    assert post.args["channel"] == "#access"
    assert post.token == env.fake.token
    assert _actions(post) == [ACTION_APPROVE, ACTION_DENY]
    assert find_button(post, ACTION_APPROVE)["value"] == req["id"]

    resp = env.bob.post(f"/v1/requests/{req['id']}/approve", {})
    assert resp.status_code == 200, resp.json
    env.pump()
    updates = env.fake.of("chat.update")
    assert updates, "the message is updated on the decision"
    assert {(u.args["channel"], u.args["ts"]) for u in updates} == {
        (post.args["_channel"], post.args["_ts"])
    }
    last = updates[-1]
    assert _actions(last) == [], "no decision button once decided"
    assert "Approved" in last.args["text"] and "bob" in last.args["text"]
    # Still one message: every later event updated it.
    assert len(env.fake.posts()) == 1

    cert = env.alice.post(f"/v1/requests/{req['id']}/certificate", {"public_key": user_key_line()})
    assert cert.status_code == 200
    env.pump()
    assert f"serial {cert.json['serial']}" in env.fake.of("chat.update")[-1].args["text"]

    revoked = env.bob.post(f"/v1/certificates/{cert.json['serial']}/revoke", {"reason": "done"})
    assert revoked.status_code == 200, revoked.json
    env.pump()
    final = env.fake.of("chat.update")[-1]
    assert "Revoked" in final.args["text"] and "by bob" in final.args["text"]
    assert final.args["ts"] == post.args["_ts"]
    assert len(env.fake.posts()) == 1


def test_a_web_only_rule_gets_a_link_button(env: SlackEnv) -> None:
    req = env.submit(env.alice, "prod-db")
    env.pump()
    [post] = env.fake.posts()
    # No slack_channel on the rule: the [slack] channel.
    assert post.args["channel"] == "#general"
    assert _actions(post) == [ACTION_OPEN]
    assert find_button(post, ACTION_OPEN)["url"] == f"https://jit.example.test/requests/{req['id']}"


def test_a_later_event_without_a_message_posts_it_first(env: SlackEnv) -> None:
    req = env.submit(env.alice, "demo")
    env.cursor = env.events()[-1]["id"]  # request.created lost: never delivered
    env.bob.post(f"/v1/requests/{req['id']}/approve", {})
    env.pump()
    [post] = env.fake.posts()
    assert post.args["channel"] == "#access"
    assert "Approved" in post.args["text"]
    assert _actions(post) == []


def test_a_retried_created_event_updates_instead_of_posting_again(env: SlackEnv) -> None:
    env.submit(env.alice, "demo")
    [created] = [e for e in env.events(env.cursor) if e["type"] == "request.created"]
    delivery = Delivery(
        key=f"{created['id']}.slack.channel", sink="slack.channel", event=created, attempt=1
    )
    env.channel_sink.deliver(delivery)
    env.channel_sink.deliver(Delivery(**{**delivery.__dict__, "attempt": 2}))
    assert len(env.fake.posts()) == 1
    [update] = env.fake.of("chat.update")
    assert update.args["ts"] == env.fake.posts()[0].args["_ts"]


def test_the_requester_is_told_approved_issued_expiring_and_revoked(env: SlackEnv) -> None:
    req = env.submit(env.alice, "demo")
    env.pump()
    env.bob.post(f"/v1/requests/{req['id']}/approve", {})
    env.pump()
    [approved] = env.fake.dms_to(ALICE)
    assert "approved by bob" in approved and "Fetch the certificate until" in approved

    cert = env.alice.post(f"/v1/requests/{req['id']}/certificate", {"public_key": user_key_line()})
    env.pump()
    assert f"serial {cert.json['serial']}" in env.fake.dms_to(ALICE)[-1]

    # What the outbox's tick records inside the rule's warn_before.
    env.clock.advance(minutes=25)
    expiring = {
        "id": 10**6,
        "type": "certificate.expiring",
        "at": "",
        "actor": None,
        "request_id": req["id"],
        "data": {"serial": cert.json["serial"]},
    }
    env.dm_sink.deliver(Delivery(key="x.slack.dm", sink="slack.dm", event=expiring, attempt=1))
    warn = env.fake.dms_to(ALICE)[-1]
    assert "ends at" in warn and f"jit-ssh extend {req['id']} --for" in warn and "--reason" in warn

    env.bob.post(f"/v1/certificates/{cert.json['serial']}/revoke", {"reason": "INC closed"})
    env.pump()
    revoked = env.fake.dms_to(ALICE)[-1]
    assert "revoked by bob" in revoked and "INC closed" in revoked
    # The DMs went to the conversation conversations.open gave for alice's Slack id.
    assert {c.args["users"] for c in env.fake.of("conversations.open")} == {ALICE}
    # alice has no explicit mapping: her verified email found her.
    assert {c.args["email"] for c in env.fake.of("users.lookupByEmail")} == {"alice@example.com"}


def test_a_denial_tells_the_reason_escaped(env: SlackEnv) -> None:
    req = env.submit(env.alice, "demo")
    env.bob.post(f"/v1/requests/{req['id']}/deny", {"reason": "no <!channel> & <https://x|y>"})
    env.pump()
    [denied] = env.fake.dms_to(ALICE)
    assert "denied by bob" in denied
    assert "&lt;!channel&gt; &amp; &lt;https://x|y&gt;" in denied and "<!channel>" not in denied


def test_a_revocation_by_an_extension_is_not_told_as_revoked(env: SlackEnv) -> None:
    req = env.submit(env.alice, "demo")
    env.bob.post(f"/v1/requests/{req['id']}/approve", {})
    env.alice.post(f"/v1/requests/{req['id']}/certificate", {"public_key": user_key_line()})
    env.pump()
    before = len(env.fake.dms_to(ALICE))
    event = {
        "id": 10**6,
        "type": "certificate.revoked",
        "at": "",
        "actor": "alice",
        "request_id": req["id"],
        "data": {
            "serial": "1",
            "reason": "replaced by extension abc",
            "replaced_by": "abcdef0123456789",
        },
    }
    env.dm_sink.deliver(Delivery(key="y.slack.dm", sink="slack.dm", event=event, attempt=1))
    dms = env.fake.dms_to(ALICE)
    assert len(dms) == before + 1
    assert "extended" in dms[-1] and "revoked" not in dms[-1]


def test_no_slack_user_skips_the_dm_without_retrying(env: SlackEnv) -> None:
    env.set_email("alice", None)
    req = env.submit(env.alice, "demo")
    env.bob.post(f"/v1/requests/{req['id']}/approve", {})
    env.pump()  # returns: delivered as a no-op
    assert env.fake.dms_to(ALICE) == []
    assert env.fake.of("conversations.open") == []
    # An email Slack does not know: users_not_found, skipped too.
    env.set_email("alice", "nobody@example.com")
    env.bob.post(f"/v1/requests/{req['id']}/approve", {})
    env.pump()
    assert env.fake.of("conversations.open") == []


def _created(env: SlackEnv) -> Delivery:
    env.submit(env.alice, "demo")
    [ev] = [e for e in env.events(env.cursor) if e["type"] == "request.created"]
    return Delivery(key=f"{ev['id']}.slack.channel", sink="slack.channel", event=ev, attempt=1)


def test_ratelimited_is_retried_after_slacks_retry_after(env: SlackEnv) -> None:
    delivery = _created(env)
    env.fake.fail("chat.postMessage", "ratelimited", status=429, headers={"Retry-After": "17"})
    with pytest.raises(DeliveryFailed) as e:
        env.channel_sink.deliver(delivery)
    assert not e.value.permanent and e.value.retry_after == 17
    env.channel_sink.deliver(delivery)  # the retry posts
    assert len(env.fake.posts()) == 1


@pytest.mark.parametrize("error", ["invalid_auth", "channel_not_found", "not_in_channel"])
def test_token_and_channel_errors_are_permanent(env: SlackEnv, error: str) -> None:
    delivery = _created(env)
    env.fake.fail("chat.postMessage", error)
    with pytest.raises(DeliveryFailed) as e:
        env.channel_sink.deliver(delivery)
    assert e.value.permanent and error in str(e.value)
    assert env.fake.token not in str(e.value)


def test_a_server_error_or_no_network_is_retried(env: SlackEnv) -> None:
    delivery = _created(env)
    env.fake.fail("chat.postMessage", "internal_error", status=500)
    with pytest.raises(DeliveryFailed) as e:
        env.channel_sink.deliver(delivery)
    assert not e.value.permanent
    # Slack out of reach: nothing listens on the port any more.
    from dataclasses import replace

    from server.slack.sinks import SlackChannelSink

    sink = env.channel_sink
    gone = SlackChannelSink(
        replace(env.settings, api_url="http://127.0.0.1:9/api/", http_timeout=2),
        sessions=sink.sessions,
        policy=sink.policy,
        clock=sink.clock,
        base_url=sink.base_url,
    )
    with pytest.raises(DeliveryFailed) as e:
        gone.deliver(delivery)
    assert not e.value.permanent and "could not be reached" in str(e.value)


def test_a_bad_token_is_refused_by_slack_and_never_in_the_error(
    env: SlackEnv, tmp_path: Any
) -> None:
    from dataclasses import replace

    from server.slack.sinks import SlackChannelSink

    path = tmp_path / "other-token"
    path.write_text("xoxb-wrong-token\n")
    sink = env.channel_sink
    wrong = SlackChannelSink(
        replace(env.settings, bot_token_file=path),
        sessions=sink.sessions,
        policy=sink.policy,
        clock=sink.clock,
        base_url=sink.base_url,
    )
    with pytest.raises(DeliveryFailed) as e:
        wrong.deliver(_created(env))
    assert e.value.permanent and "invalid_auth" in str(e.value)
    assert "xoxb-wrong-token" not in str(e.value)
    assert env.fake.calls[-1].token == "xoxb-wrong-token"


def test_sinks_want_only_their_events(env: SlackEnv) -> None:
    ch, dm = env.channel_sink, env.dm_sink
    assert (ch.name, dm.name) == ("slack.channel", "slack.dm")
    assert ch.wants("request.created") and not dm.wants("request.created")
    assert dm.wants("certificate.expiring") and not ch.wants("certificate.expiring")
    assert not ch.wants("chat.refused") and not dm.wants("auth.failed")
    _ = timedelta
