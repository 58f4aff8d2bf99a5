"""The single sign-on API (``/v1/sso``): the CLI's loopback and device flows end to end
through the real app, database and signatures, with only the provider faked
(tests/server/sso_fakes.py; the real provider: tests/integration/test_sso_cli.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Clock, build_app
from tests.server.sso_fakes import (  # noqa: F401 (fixtures)
    BASE_URL,
    REDIRECT_URI,
    FakeProvider,
    KeyHolder,
    app,
    claims_for,
    continue_cli,
    events,
    fake,
    loopback_query,
    make_app,
    sso_app,
    utc,
)


@pytest.fixture
def holder(app: Any, clock: Clock) -> KeyHolder:
    return KeyHolder(app.test_client(), clock)


def _loopback_sign_in(
    app: Any, fake: FakeProvider, holder: KeyHolder, claims: dict[str, Any], port: int = 53682
) -> dict[str, str]:
    """start (loopback) -> the confirmation page -> the provider -> /sso/callback, in one
    browser: the loopback redirect's query."""
    r = holder.start_loopback(port)
    assert r.status_code == 200, r.json
    browser = app.test_client()
    back = fake.sign_in(continue_cli(browser, r.json["authorize_url"]), claims)
    cb = browser.get("/sso/callback", query_string=back)
    assert cb.status_code == 303, cb.data
    q = loopback_query(cb.headers["Location"])
    assert q["flow"] == r.json["flow"]
    assert cb.headers["Location"].startswith(f"http://127.0.0.1:{port}/callback?")
    return q


# --------------------------------------------------------------------------- GET /v1/sso


def test_info_says_what_the_cli_needs(app: Any) -> None:
    r = app.test_client().get("/v1/sso")
    assert r.status_code == 200
    assert r.json == {
        "enabled": True,
        "display_name": "Okta",
        "device_flow": True,
        "enrolment_lifetime_seconds": 43200,
    }


def test_without_sso_the_info_says_so_and_start_is_404(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    app = build_app(tmp_path, database_url, clock)
    try:
        assert app.test_client().get("/v1/sso").json == {"enabled": False}
        r = KeyHolder(app.test_client(), clock).start_loopback()
        assert r.status_code == 404
        assert r.json["code"] == "sso_not_configured"
    finally:
        app.extensions["jit_ssh.engine"].dispose()


# --------------------------------------------------------------------------- loopback


def test_the_loopback_flow_enrols_the_key_for_the_lifetime(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    clock.freeze()
    r = holder.start_loopback()
    # The browser opens this server's confirmation page first, then the provider's.
    assert r.json["authorize_url"].startswith(f"{BASE_URL}/sso/cli/")
    assert r.json["flow"] not in r.json["authorize_url"]
    assert utc(r.json["expires_at"]) == clock() + timedelta(minutes=10)
    browser = app.test_client()
    url = continue_cli(browser, r.json["authorize_url"])
    assert url.startswith("https://idp.example.test/authorize?")
    assert "code_challenge_method=S256" in url
    (auth,) = fake.authorizations.values()
    assert auth.redirect_uri == REDIRECT_URI
    assert auth.state == r.json["flow"]

    q = _loopback_sign_in_after(browser, fake, url, claims_for("alice", ["engineers"]))
    # Nothing is enrolled before finish.
    assert holder.get("/v1/whoami", user="alice").json["code"] == "unknown_key"

    done = holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})
    assert done.status_code == 200, done.json
    assert done.json == {
        "user": "alice",
        "groups": ["engineers"],
        "groups_source": "sso",
        "fingerprint": holder.fingerprint,
        "expires_at": (clock() + timedelta(hours=12)).isoformat().replace("+00:00", "Z"),
    }
    # The redirect URI of the token request is the one of the authorize request.
    assert fake.exchanged[-1][1] == REDIRECT_URI

    who = holder.get("/v1/whoami", user="alice")
    assert who.status_code == 200, who.json
    assert who.json["groups"] == ["engineers"]
    assert who.json["groups_source"] == "sso"
    assert who.json["enrolment_expires_at"] == done.json["expires_at"]
    assert who.json["roles"] == ["requester"]  # as `admin user add` gives; never approver

    (enrolled,) = events(app, "key.enrolled")
    assert enrolled["fingerprint"] == holder.fingerprint
    assert enrolled["source"] == "sso"
    assert enrolled["groups"] == ["engineers"]
    assert enrolled["expires_at"] == done.json["expires_at"]
    (signed_in,) = events(app, "sso.signed_in")
    assert signed_in["kind"] == "cli" and signed_in["user"] == "alice"
    assert signed_in["groups"] == ["engineers"]


def _loopback_sign_in_after(
    browser: Any, fake: FakeProvider, url: str, claims: dict[str, Any]
) -> dict[str, str]:
    cb = browser.get("/sso/callback", query_string=fake.sign_in(url, claims))
    assert cb.status_code == 303, cb.data
    return loopback_query(cb.headers["Location"])


def test_the_finish_code_is_single_use(app: Any, fake: FakeProvider, holder: KeyHolder) -> None:
    q = _loopback_sign_in(app, fake, holder, claims_for("alice"))
    assert holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]}).status_code == 200
    again = holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})
    assert again.status_code == 400
    assert again.json["code"] == "sso_flow_unknown"
    assert len(events(app, "key.enrolled")) == 1


def test_finish_needs_the_key_that_started_the_flow(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    q = _loopback_sign_in(app, fake, holder, claims_for("alice"))
    thief = KeyHolder(app.test_client(), clock)
    stolen = thief.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})
    assert stolen.status_code == 400
    assert stolen.json["code"] == "sso_flow_unknown"
    assert events(app, "key.enrolled") == []
    # The owner still can.
    assert holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]}).status_code == 200


def test_finish_with_a_wrong_code_enrols_nothing(
    app: Any, fake: FakeProvider, holder: KeyHolder
) -> None:
    q = _loopback_sign_in(app, fake, holder, claims_for("alice"))
    wrong = holder.post("/v1/sso/finish", {"flow": q["flow"], "code": "A" * 43})
    assert wrong.status_code == 400 and wrong.json["code"] == "sso_flow_unknown"
    malformed = holder.post("/v1/sso/finish", {"flow": q["flow"], "code": "x"})
    assert malformed.status_code == 400 and malformed.json["code"] == "sso_flow_unknown"
    assert events(app, "key.enrolled") == []
    assert holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]}).status_code == 200


def test_start_must_be_signed_by_the_key_in_the_body(
    app: Any, holder: KeyHolder, clock: Clock
) -> None:
    other = KeyHolder(app.test_client(), clock)
    r = holder.post(
        "/v1/sso/start",
        {"public_key": other.public_openssh, "mode": "loopback", "loopback_port": 50000},
    )
    assert r.status_code == 401
    assert r.json["code"] == "bad_signature"
    assert r.json["field"] == "public_key"


def test_start_refuses_a_bad_signature_a_named_user_and_a_replay(
    app: Any, holder: KeyHolder
) -> None:
    body = {"public_key": holder.public_openssh, "mode": "loopback", "loopback_port": 50000}
    # Signed as a user instead of "-": refused, the key need not be (and is not) anyone's.
    from ca import request_signing as rs

    named = holder.post("/v1/sso/start", body, user="alice")
    assert named.status_code == 401
    assert (named.json["code"], named.json["field"]) == ("auth_failed", rs.HEADER_USER)
    # A replayed nonce.
    nonce = "n" * 24
    assert holder.post("/v1/sso/start", body, nonce=nonce).status_code == 200
    replay = holder.post("/v1/sso/start", body, nonce=nonce)
    assert replay.status_code == 401 and replay.json["code"] == "replayed_nonce"
    # No signature at all.
    unsigned = app.test_client().post("/v1/sso/start", json=body)
    assert unsigned.status_code == 401


@pytest.mark.parametrize("port", [0, 80, 1023, 65536, -1, "53682", True, None, 1.5])
def test_start_refuses_a_loopback_port_outside_1024_65535(holder: KeyHolder, port: Any) -> None:
    r = holder.post(
        "/v1/sso/start",
        {"public_key": holder.public_openssh, "mode": "loopback", "loopback_port": port},
    )
    assert r.status_code == 400
    assert r.json["code"] == "sso_redirect_refused"
    assert r.json["field"] == "loopback_port"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "loopback", "loopback_port": 50000}, "public_key"),
        (
            {"public_key": "ssh-ed25519 AAAA", "mode": "loopback", "loopback_port": 50000},
            "public_key",
        ),
        ({"mode": "sideways"}, "mode"),
        ({}, "mode"),
        ({"mode": "device", "loopback_port": 50000}, "loopback_port"),
    ],
)
def test_start_refuses_bad_bodies(holder: KeyHolder, body: dict[str, Any], field: str) -> None:
    if "public_key" not in body and body.get("mode") in ("device",):
        body = {**body, "public_key": holder.public_openssh}
    r = holder.post("/v1/sso/start", body)
    assert 400 <= r.status_code < 500, r.json
    assert r.json["field"] == field, r.json


def test_a_replayed_callback_state_changes_nothing(
    app: Any, fake: FakeProvider, holder: KeyHolder
) -> None:
    r = holder.start_loopback()
    browser = app.test_client()
    back = fake.sign_in(continue_cli(browser, r.json["authorize_url"]), claims_for("alice"))
    assert browser.get("/sso/callback", query_string=back).status_code == 303
    before = len(events(app, "sso.signed_in"))
    again = app.test_client().get("/sso/callback", query_string=back)
    assert again.status_code == 400
    assert b"no longer valid" in again.data
    assert len(events(app, "sso.signed_in")) == before
    assert len(fake.exchanged) == 1  # the provider was not asked again
    (refused,) = events(app, "sso.refused")
    assert refused["code"] == "sso_flow_unknown"


def test_a_provider_refusal_goes_back_to_the_loopback_as_its_code(
    app: Any, fake: FakeProvider, holder: KeyHolder
) -> None:
    r = holder.start_loopback(40000)
    browser = app.test_client()
    back = fake.sign_in(continue_cli(browser, r.json["authorize_url"]), claims_for("alice"))
    back["code"] = "made-up"  # the provider refuses it
    cb = browser.get("/sso/callback", query_string=back)
    assert cb.status_code == 303
    q = loopback_query(cb.headers["Location"])
    assert q == {"flow": r.json["flow"], "error": "sso_token_invalid"}
    assert events(app, "sso.signed_in") == []
    assert events(app, "sso.refused")[0]["code"] == "sso_token_invalid"


def test_an_error_answer_from_the_provider_is_denied(
    app: Any, fake: FakeProvider, holder: KeyHolder
) -> None:
    r = holder.start_loopback(40000)
    state = r.json["flow"]
    browser = app.test_client()
    continue_cli(browser, r.json["authorize_url"])
    cb = browser.get("/sso/callback", query_string={"state": state, "error": "access_denied"})
    q = loopback_query(cb.headers["Location"])
    assert q == {"flow": state, "error": "sso_denied"}
    assert fake.exchanged == []


def test_a_flow_older_than_ten_minutes_is_expired(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    r = holder.start_loopback()
    browser = app.test_client()
    back = fake.sign_in(continue_cli(browser, r.json["authorize_url"]), claims_for("alice"))
    clock.advance(minutes=10, seconds=1)
    cb = browser.get("/sso/callback", query_string=back)
    assert loopback_query(cb.headers["Location"])["error"] == "sso_flow_expired"
    assert fake.exchanged == []


def test_finish_after_ten_minutes_is_expired(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    q = _loopback_sign_in(app, fake, holder, claims_for("alice"))
    clock.advance(minutes=10, seconds=1)
    r = holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})
    assert r.status_code == 410 and r.json["code"] == "sso_flow_expired"
    assert events(app, "key.enrolled") == []


def test_a_nonce_other_than_the_flows_is_refused(
    app: Any, fake: FakeProvider, holder: KeyHolder
) -> None:
    r = holder.start_loopback(40000)
    browser = app.test_client()
    back = fake.sign_in(
        continue_cli(browser, r.json["authorize_url"]), claims_for("alice", nonce="someone-elses")
    )
    q = loopback_query(browser.get("/sso/callback", query_string=back).headers["Location"])
    assert q["error"] == "sso_token_invalid"
    assert events(app, "sso.signed_in") == []


def test_a_cli_state_never_signs_a_browser_in(
    app: Any, fake: FakeProvider, holder: KeyHolder
) -> None:
    r = holder.start_loopback(40000)
    browser = app.test_client()
    back = fake.sign_in(continue_cli(browser, r.json["authorize_url"]), claims_for("alice"))
    cb = browser.get("/sso/callback", query_string=back)
    assert cb.headers["Location"].startswith("http://127.0.0.1:40000/")
    # The browser that carried it has no session.
    assert browser.get("/mine").status_code == 303


# --------------------------------------------------------------------------- device


def test_the_device_flow_polls_then_enrols(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    r = holder.start_device()
    assert r.status_code == 200, r.json
    assert r.json["user_code"] == "ABCD-EFGH"
    assert r.json["verification_uri"] == "https://idp.example.test/device"
    assert r.json["interval"] == 5
    flow = r.json["flow"]

    p = holder.post("/v1/sso/poll", {"flow": flow})
    assert p.json == {"status": "pending", "interval": 5}
    # Faster than the interval: not passed on to the provider.
    polls = fake.polls
    assert holder.post("/v1/sso/poll", {"flow": flow}).json["status"] == "slow_down"
    assert fake.polls == polls

    clock.advance(seconds=6)
    fake.device_answers.append("slow_down")
    assert holder.post("/v1/sso/poll", {"flow": flow}).json == {
        "status": "slow_down",
        "interval": 10,
    }
    clock.advance(seconds=11)
    fake.approve_device(claims_for("frank", ["engineers"]))
    done = holder.post("/v1/sso/poll", {"flow": flow})
    assert done.status_code == 200, done.json
    assert done.json["status"] == "done"
    assert done.json["user"] == "frank"
    assert done.json["groups"] == ["engineers"]
    assert done.json["fingerprint"] == holder.fingerprint
    assert holder.get("/v1/whoami", user="frank").status_code == 200
    (signed_in,) = events(app, "sso.signed_in")
    assert signed_in["kind"] == "device"
    # Done once: polling again finds no flow.
    clock.advance(seconds=11)
    again = holder.post("/v1/sso/poll", {"flow": flow})
    assert again.status_code == 400 and again.json["code"] == "sso_flow_unknown"


def test_a_device_flow_denied_at_the_provider_ends(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    flow = holder.start_device().json["flow"]
    fake.approve_device("denied")
    r = holder.post("/v1/sso/poll", {"flow": flow})
    assert r.status_code == 401 and r.json["code"] == "sso_token_invalid"
    clock.advance(seconds=6)
    after = holder.post("/v1/sso/poll", {"flow": flow})
    assert after.status_code == 400 and after.json["code"] == "sso_flow_unknown"


def test_a_device_flow_is_polled_only_by_its_key(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    flow = holder.start_device().json["flow"]
    fake.approve_device(claims_for("frank"))
    thief = KeyHolder(app.test_client(), clock)
    r = thief.post("/v1/sso/poll", {"flow": flow})
    assert r.status_code == 400 and r.json["code"] == "sso_flow_unknown"
    assert fake.polls == 0
    assert holder.post("/v1/sso/poll", {"flow": flow}).json["status"] == "done"


def test_a_device_flow_expires(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    flow = holder.start_device().json["flow"]
    clock.advance(minutes=10, seconds=1)
    r = holder.post("/v1/sso/poll", {"flow": flow})
    assert r.status_code == 410 and r.json["code"] == "sso_flow_expired"


def test_a_provider_out_of_reach_is_502_and_the_flow_survives(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    flow = holder.start_device().json["flow"]
    fake.down = True
    r = holder.post("/v1/sso/poll", {"flow": flow})
    assert r.status_code == 502 and r.json["code"] == "sso_provider_error"
    fake.down = False
    clock.advance(seconds=6)
    assert holder.post("/v1/sso/poll", {"flow": flow}).json["status"] == "pending"


# --------------------------------------------------------------------------- enrolments


def test_an_expired_enrolment_is_refused_then_renewed_by_signing_in_again(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    q = _loopback_sign_in(app, fake, holder, claims_for("alice", ["engineers"]))
    first = holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]}).json
    clock.advance(hours=12, seconds=1)
    r = holder.get("/v1/whoami", user="alice")
    assert r.status_code == 401
    assert r.json["code"] == "enrolment_expired"
    assert "jit-ssh sso login" in r.json["detail"]
    assert first["expires_at"] in r.json["detail"]
    # Any signed call, not only whoami.
    assert holder.get("/v1/requests", user="alice").json["code"] == "enrolment_expired"

    q = _loopback_sign_in(app, fake, holder, claims_for("alice", ["engineers"]))
    again = holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})
    assert again.status_code == 200
    assert utc(again.json["expires_at"]) > utc(first["expires_at"])
    assert holder.get("/v1/whoami", user="alice").status_code == 200
    assert len(events(app, "key.enrolled")) == 2


def test_a_group_removed_at_the_provider_is_gone_at_the_next_sign_in(
    app: Any, fake: FakeProvider, holder: KeyHolder
) -> None:
    q = _loopback_sign_in(app, fake, holder, claims_for("dave", ["approvers", "engineers"]))
    holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})
    assert holder.get("/v1/whoami", user="dave").json["groups"] == ["approvers", "engineers"]
    q = _loopback_sign_in(app, fake, holder, claims_for("dave", ["engineers"]))
    holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})
    assert holder.get("/v1/whoami", user="dave").json["groups"] == ["engineers"]
    changes = events(app, "user.groups_changed")
    assert changes[-1]["before"] == ["approvers", "engineers"]
    assert changes[-1]["after"] == ["engineers"]
    assert changes[-1]["source"] == "sso"


def test_a_disabled_users_sso_enrolment_is_refused(
    app: Any, fake: FakeProvider, holder: KeyHolder
) -> None:
    from server.admin import Admin

    q = _loopback_sign_in(app, fake, holder, claims_for("alice"))
    holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})
    Admin(app.extensions["jit_ssh"].service).set_disabled("alice")
    assert holder.get("/v1/whoami", user="alice").json["code"] == "user_disabled"
    # Nor can a disabled user sign in again.
    r = holder.start_loopback(40000)
    browser = app.test_client()
    back = fake.sign_in(continue_cli(browser, r.json["authorize_url"]), claims_for("alice"))
    cb = browser.get("/sso/callback", query_string=back)
    assert loopback_query(cb.headers["Location"])["error"] == "user_disabled"


def test_a_request_records_the_groups_it_was_decided_with(
    app: Any, fake: FakeProvider, holder: KeyHolder, clock: Clock
) -> None:
    import json

    from tests.support import signed_headers

    q = _loopback_sign_in(app, fake, holder, claims_for("alice", ["oncall"]))
    holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})
    body = json.dumps({"target": "demo", "duration": "10m"}).encode()
    h = signed_headers(
        holder.key, "alice", "POST", "/v1/requests", body, ts=int(clock().timestamp())
    )
    r = app.test_client().post("/v1/requests", data=body, headers=h)
    assert r.status_code == 201, r.json
    assert r.json["groups_used"] == ["oncall"]
    assert r.json["groups_source"] == "sso"
    assert r.json["auto_approved"] is True
