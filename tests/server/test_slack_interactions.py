"""POST /slack/interactions: a click on the fake Slack's recorded button, signed as Slack
documents, approves; the deny modal denies with its reason; and every refusal (a stale or
future timestamp, a bad or missing signature, a replay, an unknown Slack user, self-approval,
a rule without chat approval, a TOTP rule, malformed payloads) changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import text

from server.slack.blocks import ACTION_APPROVE, ACTION_DENY, ACTION_OPEN
from server.slack.interactions import verify_signature
from tests.server.conftest import assert_problem, assert_unchanged, snapshot
from tests.server.slack_env import (  # noqa: F401
    BOB,
    CAROL,
    STRANGER,
    SlackEnv,
    app,
    env,
    fake,
)
from tests.slack_fake import (
    block_actions,
    click,
    fake_slack,
    form_body,
    post_signed,
    sign,
    submit_deny,
)


def _message(env: SlackEnv, target: str = "demo", who: Any = None) -> tuple[dict[str, Any], Any]:
    req = env.submit(who or env.alice, target)
    env.pump()
    return req, env.fake.posts()[-1]


def _forged(action_id: str, request_id: object, user: object = BOB, **extra: Any) -> dict[str, Any]:
    """A block_actions payload for a button the message does not have (signed all the same)."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user},
        "channel": {"id": "C00000100"},
        "trigger_id": "1.2.abc",
        "actions": [{"action_id": action_id, "value": request_id, "type": "button"}],
    }
    payload.update(extra)
    return payload


def _send(env: SlackEnv, payload: object, **kw: Any) -> Any:
    return post_signed(env.client, env.secret, form_body(payload), timestamp=env.ts(), **kw)


def _approvals(env: SlackEnv) -> list[tuple[str, str]]:
    engine = env.app.extensions["jit_ssh.engine"]
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text("SELECT decision, via FROM approvals"))]


def _refused(resp: Any, code: str) -> dict[str, Any]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.json
    assert body["ok"] is False and body["code"] == code, body
    return dict(body)


# ---- the signature ----------------------------------------------------------------------


def test_our_signatures_are_slack_sdks(env: SlackEnv) -> None:
    """The test's signing (as Slack documents it) is what slack-sdk's own verifier accepts,
    and the server accepts what slack-sdk's verifier computes."""
    body = form_body({"type": "block_actions"})
    ts = env.ts()
    verifier = SignatureVerifier(env.secret)
    assert verifier.is_valid(body, str(ts), sign(env.secret, ts, body))
    assert not verifier.is_valid(body, str(ts), sign("another-secret", ts, body))
    sdk = verifier.generate_signature(timestamp=str(ts), body=body)
    assert sdk == sign(env.secret, ts, body)
    assert verify_signature(env.secret, str(ts), sdk, body, env.clock()) == sdk


def test_a_click_on_approve_approves(env: SlackEnv) -> None:
    req, message = _message(env)
    resp = click(env.client, env.fake, env.secret, message, ACTION_APPROVE, BOB, timestamp=env.ts())
    assert resp.status_code == 200 and resp.json == {"ok": True, "state": "approved"}, resp.json
    assert env.state(req["id"]) == "approved"
    assert _approvals(env) == [("approve", "chat")]
    [approval] = [e for e in env.events(0) if e["type"] == "request.approval"]
    assert approval["actor"] == "bob" and approval["data"]["via"] == "chat"
    assert approval["data"]["comment"] == "approved in Slack"
    # bob is told, and only bob.
    [told] = env.fake.of("chat.postEphemeral")
    assert told.args["user"] == BOB and told.args["channel"] == message.args["_channel"]


def test_a_person_matched_by_verified_email_approves(env: SlackEnv) -> None:
    req, message = _message(env)
    resp = click(
        env.client, env.fake, env.secret, message, ACTION_APPROVE, CAROL, timestamp=env.ts()
    )
    assert resp.json["ok"] is True, resp.json
    assert env.state(req["id"]) == "approved"
    [info] = env.fake.of("users.info")
    assert info.args["user"] == CAROL


def test_deny_opens_a_modal_and_its_submission_denies(env: SlackEnv) -> None:
    req, message = _message(env)
    before = snapshot(env.app)
    resp = click(env.client, env.fake, env.secret, message, ACTION_DENY, BOB, timestamp=env.ts())
    assert resp.status_code == 200 and resp.json["ok"] is True
    [opened] = env.fake.of("views.open")
    assert opened.args["view"]["type"] == "modal"
    assert opened.args["trigger_id"]
    assert_unchanged(before, snapshot(env.app))  # nothing decided before the reason

    blank = submit_deny(env.client, env.fake, env.secret, BOB, "   ", timestamp=env.ts())
    assert blank.status_code == 200 and blank.json["response_action"] == "errors"
    assert env.state(req["id"]) == "pending"

    done = submit_deny(
        env.client, env.fake, env.secret, BOB, "not during the freeze", timestamp=env.ts()
    )
    assert done.status_code == 200 and done.get_data() == b""  # closes the modal
    assert env.state(req["id"]) == "denied"
    assert _approvals(env) == [("deny", "chat")]
    [denied] = [e for e in env.events(0) if e["type"] == "request.denied"]
    assert denied["data"] == {"reason": "not during the freeze", "via": "chat"}


def test_the_link_button_is_acknowledged_and_changes_nothing(env: SlackEnv) -> None:
    req, message = _message(env, "prod-db")
    before = snapshot(env.app)
    resp = click(env.client, env.fake, env.secret, message, ACTION_OPEN, BOB, timestamp=env.ts())
    assert resp.status_code == 200 and resp.json == {"ok": True}
    assert_unchanged(before, snapshot(env.app))


@pytest.mark.parametrize(
    "headers, code",
    [
        ({"X-Slack-Request-Timestamp": "OLD"}, "slack_timestamp_stale"),
        ({"X-Slack-Request-Timestamp": "FUTURE"}, "slack_timestamp_stale"),
        ({"X-Slack-Request-Timestamp": "12.5"}, "slack_timestamp_stale"),
        ({"X-Slack-Request-Timestamp": None}, "slack_signature_invalid"),
        ({"X-Slack-Signature": None}, "slack_signature_invalid"),
        ({"X-Slack-Signature": "v0=" + "0" * 64}, "slack_signature_invalid"),
        ({"X-Slack-Signature": "v1=abc"}, "slack_signature_invalid"),
        ({"X-Slack-Signature": "v0=ŝ"}, "slack_signature_invalid"),
    ],
)
def test_unsigned_or_stale_callbacks_are_refused(
    env: SlackEnv, headers: dict[str, str | None], code: str
) -> None:
    req, message = _message(env)
    body = form_body(block_actions(env.fake, message, ACTION_APPROVE, BOB))
    ts = env.ts()
    given = dict(headers)
    if given.get("X-Slack-Request-Timestamp") == "OLD":
        ts -= 301
    if given.get("X-Slack-Request-Timestamp") == "FUTURE":
        ts += 301
    if given.get("X-Slack-Request-Timestamp") in ("OLD", "FUTURE"):
        # Signed correctly, at a time too far from the server's clock.
        given = {}
    before = snapshot(env.app)
    resp = post_signed(env.client, env.secret, body, timestamp=ts, headers=given)
    assert_problem(resp, 401, code)
    # Not even the refusal is recorded: nobody proved to be Slack.
    assert_unchanged(before, snapshot(env.app))
    assert env.state(req["id"]) == "pending"
    assert env.fake.of("users.info") == [] and env.fake.of("chat.postEphemeral") == []


def test_a_signature_with_another_secret_is_refused(env: SlackEnv) -> None:
    _, message = _message(env)
    body = form_body(block_actions(env.fake, message, ACTION_APPROVE, BOB))
    ts = env.ts()
    before = snapshot(env.app)
    resp = post_signed(
        env.client, env.secret, body, timestamp=ts, signature=sign("guess", ts, body)
    )
    assert_problem(resp, 401, "slack_signature_invalid")
    assert_unchanged(before, snapshot(env.app))


def test_a_replay_is_refused(env: SlackEnv) -> None:
    req, message = _message(env, "prod-db")
    body = form_body(_forged(ACTION_OPEN, req["id"]))
    ts = env.ts()
    first = post_signed(env.client, env.secret, body, timestamp=ts)
    assert first.status_code == 200
    before = snapshot(env.app)
    again = post_signed(env.client, env.secret, body, timestamp=ts)
    assert_problem(again, 401, "slack_replayed")
    assert_unchanged(before, snapshot(env.app))
    # Still refused a minute later, while the timestamp is still acceptable.
    env.clock.advance(seconds=60)
    assert_problem(post_signed(env.client, env.secret, body, timestamp=ts), 401, "slack_replayed")


def test_replay_records_are_pruned_once_the_signature_is_too_old_anyway(env: SlackEnv) -> None:
    engine = env.app.extensions["jit_ssh.engine"]
    for _ in range(3):
        req, _m = _message(env, "prod-db")
        _send(env, _forged(ACTION_OPEN, req["id"]))
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM chat_replays")).scalar_one() == 3
    env.clock.advance(seconds=700)
    _send(env, _forged(ACTION_OPEN, req["id"]))
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM chat_replays")).scalar_one() == 1


# ---- signed, and refused ------------------------------------------------------------------


def _refused_changes_nothing(
    env: SlackEnv, resp_of: Any, code: str, request_id: str
) -> dict[str, Any]:
    before = snapshot(env.app)
    body = _refused(resp_of(), code)
    assert_unchanged(before, snapshot(env.app), allowed_events=("chat.refused",))
    [refusal] = [e for e in env.events(0) if e["type"] == "chat.refused"][-1:]
    assert refusal["data"]["code"] == code
    assert refusal["request_id"] == request_id
    assert env.state(request_id) == "pending"
    return body


def test_an_unknown_slack_user_is_refused(env: SlackEnv) -> None:
    req, message = _message(env)
    _refused_changes_nothing(
        env,
        lambda: click(
            env.client, env.fake, env.secret, message, ACTION_APPROVE, STRANGER, timestamp=env.ts()
        ),
        "slack_user_unknown",
        req["id"],
    )
    [told] = env.fake.of("chat.postEphemeral")
    assert told.args["user"] == STRANGER and "slack_user_unknown" in told.args["text"]
    [refusal] = [e for e in env.events(0) if e["type"] == "chat.refused"]
    assert refusal["data"]["slack_user"] == STRANGER and refusal["actor"] is None


def test_an_unconfirmed_slack_email_names_nobody(env: SlackEnv) -> None:
    env.fake.people[CAROL].email_confirmed = False
    req, message = _message(env)
    _refused_changes_nothing(
        env,
        lambda: click(
            env.client, env.fake, env.secret, message, ACTION_APPROVE, CAROL, timestamp=env.ts()
        ),
        "slack_user_unknown",
        req["id"],
    )


def test_slack_out_of_reach_for_users_info_is_a_refusal_not_a_500(env: SlackEnv) -> None:
    req, message = _message(env)
    env.fake.fail("users.info", "internal_error", status=500)
    _refused_changes_nothing(
        env,
        lambda: click(
            env.client, env.fake, env.secret, message, ACTION_APPROVE, CAROL, timestamp=env.ts()
        ),
        "slack_user_unknown",
        req["id"],
    )


def test_self_approval_from_chat_is_refused(env: SlackEnv) -> None:
    req, message = _message(env, who=env.carol)
    _refused_changes_nothing(
        env,
        lambda: click(
            env.client, env.fake, env.secret, message, ACTION_APPROVE, CAROL, timestamp=env.ts()
        ),
        "self_approval",
        req["id"],
    )
    # The deny button too: no modal for one's own request.
    _refused_changes_nothing(
        env,
        lambda: click(
            env.client, env.fake, env.secret, message, ACTION_DENY, CAROL, timestamp=env.ts()
        ),
        "self_approval",
        req["id"],
    )
    assert env.fake.of("views.open") == []


def test_a_rule_without_chat_approval_refuses_a_forged_click(env: SlackEnv) -> None:
    req, _ = _message(env, "prod-db")
    for action in (ACTION_APPROVE, ACTION_DENY):
        _refused_changes_nothing(
            env, lambda a=action: _send(env, _forged(a, req["id"])), "chat_approval_off", req["id"]
        )
    assert env.fake.of("views.open") == []


def test_a_totp_rule_never_approves_from_chat(env: SlackEnv) -> None:
    req, message = _message(env, "vault")
    assert all(
        b["type"] != "actions" or b["elements"][0]["action_id"] == ACTION_OPEN
        for b in message.args["blocks"]
    )
    before = snapshot(env.app)
    # The policy loader refuses chat_approval with approver_auth = "totp", so the channel
    # check says chat_approval_off; either way no approval is made.
    _refused(_send(env, _forged(ACTION_APPROVE, req["id"])), "chat_approval_off")
    assert _approvals(env) == []
    assert_unchanged(before, snapshot(env.app), allowed_events=("chat.refused",))


def test_a_second_click_after_the_decision_is_refused(env: SlackEnv) -> None:
    req, message = _message(env)
    click(env.client, env.fake, env.secret, message, ACTION_APPROVE, BOB, timestamp=env.ts())
    before = snapshot(env.app)
    resp = click(
        env.client, env.fake, env.secret, message, ACTION_APPROVE, CAROL, timestamp=env.ts()
    )
    assert _refused(resp, "invalid_state")
    assert_unchanged(before, snapshot(env.app), allowed_events=("chat.refused",))


def test_the_response_url_is_never_called(env: SlackEnv) -> None:
    """A forged payload could name any URL as response_url: the server never posts to it."""
    with fake_slack() as elsewhere:
        req, message = _message(env)
        payload = block_actions(env.fake, message, ACTION_APPROVE, STRANGER)
        payload["response_url"] = elsewhere.api_url + "chat.postMessage"
        _refused(_send(env, payload), "slack_user_unknown")
        payload = block_actions(env.fake, message, ACTION_APPROVE, BOB)
        payload["response_url"] = elsewhere.api_url + "chat.postMessage"
        assert _send(env, payload).json["ok"] is True
        assert elsewhere.calls == []


@pytest.mark.parametrize(
    "payload, field",
    [
        ("not json", "payload"),
        ([1, 2], "payload"),
        ({"type": "shortcut", "user": {"id": BOB}}, "type"),
        ({**_forged(ACTION_APPROVE, "abc"), "user": {"id": 12}}, "user.id"),
        ({**_forged(ACTION_APPROVE, "abc"), "user": "UBOB00001"}, "user.id"),
        ({**_forged(ACTION_APPROVE, "abc"), "user": {"id": "bob; drop"}}, "user.id"),
        ({**_forged(ACTION_APPROVE, "abc"), "actions": {"action_id": ACTION_APPROVE}}, "actions"),
        ({**_forged(ACTION_APPROVE, "abc"), "actions": []}, "actions"),
        ({**_forged("jit_ssh.approve_all", "abc")}, "actions"),
        ({**_forged(ACTION_APPROVE, "abc"), "channel": {"id": ["C1"]}}, "channel.id"),
        ({**_forged(ACTION_DENY, "abc"), "trigger_id": "x" * 500}, "trigger_id"),
        (
            {
                "type": "view_submission",
                "user": {"id": BOB},
                "view": {"callback_id": "jit_ssh.deny", "private_metadata": "{"},
            },
            "view.private_metadata",
        ),
        (
            {"type": "view_submission", "user": {"id": BOB}, "view": {"callback_id": "other"}},
            "view.callback_id",
        ),
    ],
)
def test_malformed_signed_payloads_are_refused(env: SlackEnv, payload: object, field: str) -> None:
    before = snapshot(env.app)
    problem = assert_problem(_send(env, payload), 400, "invalid_input")
    assert problem["field"] == field, problem
    assert_unchanged(before, snapshot(env.app), allowed_events=("chat.refused",))
    assert env.fake.of("views.open") == [] and env.fake.of("users.info") == []


def test_a_request_id_that_names_nothing_is_refused(env: SlackEnv) -> None:
    for rid in (12, "no/such", "0" * 16):
        before = snapshot(env.app)
        body = _send(env, _forged(ACTION_APPROVE, rid)).json
        assert body["ok"] is False and body["code"] == "not_found", body
        assert_unchanged(before, snapshot(env.app), allowed_events=("chat.refused",))


def test_a_body_larger_than_the_limit_is_refused(env: SlackEnv) -> None:
    payload = _forged(ACTION_APPROVE, "abc", padding="x" * 70_000)
    before = snapshot(env.app)
    assert_problem(_send(env, payload), 413, "body_too_large")
    assert_unchanged(before, snapshot(env.app))


def test_other_bodies_without_a_payload_field(env: SlackEnv) -> None:
    for body in (b"", b"payload=1&payload=2", b"\xff\xfe", b"other=1"):
        resp = post_signed(env.client, env.secret, body, timestamp=env.ts())
        assert_problem(resp, 400, "invalid_input")


def test_a_server_without_slack_answers_not_configured(tmp_path: Any, clock: Any) -> None:
    from tests.server.conftest import build_app

    plain = build_app(tmp_path, f"sqlite:///{tmp_path / 'plain.sqlite3'}", clock)
    try:
        resp = plain.test_client().post("/slack/interactions", data=b"payload=%7B%7D")
        assert_problem(resp, 404, "slack_not_configured")
    finally:
        plain.extensions["jit_ssh.engine"].dispose()


def test_the_endpoint_needs_no_csrf_token_but_only_post(env: SlackEnv) -> None:
    assert env.client.get("/slack/interactions").status_code == 405
    _ = json


# ---- from the attacker review: who clicked -----------------------------------------------------


def test_an_email_that_only_folds_to_a_users_is_nobody(env: SlackEnv, make_user: Any) -> None:
    """U+212A KELVIN SIGN lower-cases to "k": a Slack account confirmed as "\u212aim@..." (another
    mailbox) must not act as the jit-ssh user kim@..."""
    make_user("kim", ("approvers",), ("requester", "approver"))
    env.set_email("kim", "kim@example.com")
    env.fake.add_person("UEVIL0001", "\u212aim@example.com")
    req = env.submit(env.alice, "demo")
    _refused(_send(env, _forged(ACTION_APPROVE, req["id"], user="UEVIL0001")), "slack_user_unknown")
    assert env.state(req["id"]) == "pending" and _approvals(env) == []


def test_an_answer_that_does_not_say_the_email_is_confirmed_names_nobody(
    env: SlackEnv, monkeypatch: Any
) -> None:
    from tests.slack_fake import FakeSlack

    orig = FakeSlack.answer

    def answer(self: Any, method: str, args: dict[str, Any]) -> dict[str, Any]:
        out = orig(self, method, args)
        if method == "users.info" and isinstance(out.get("user"), dict):
            out["user"].pop("is_email_confirmed", None)
        return out

    monkeypatch.setattr(FakeSlack, "answer", answer)
    env.fake.add_person("UNOCONF01", "carol@example.com")
    req = env.submit(env.alice, "demo")
    _refused(_send(env, _forged(ACTION_APPROVE, req["id"], user="UNOCONF01")), "slack_user_unknown")
    assert env.state(req["id"]) == "pending"


def test_with_team_id_set_another_workspace_is_nobody(env: SlackEnv) -> None:
    import dataclasses

    d = env.app.extensions["jit_ssh"]
    settings = dataclasses.replace(d.config.slack, team_id="T0HOME001")
    object.__setattr__(d, "config", dataclasses.replace(d.config, slack=settings))
    req = env.submit(env.alice, "demo")
    other = _forged(ACTION_APPROVE, req["id"], user=CAROL, team={"id": "TEVILCORP"})
    _refused(_send(env, other), "slack_user_unknown")
    _refused(_send(env, _forged(ACTION_APPROVE, req["id"], user=CAROL)), "slack_user_unknown")
    assert env.state(req["id"]) == "pending"
    home = _forged(ACTION_APPROVE, req["id"], user=CAROL, team={"id": "T0HOME001"})
    assert _send(env, home).json["ok"] is True
    assert env.state(req["id"]) == "approved"
