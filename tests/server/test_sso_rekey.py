"""A removed key stays removed: signing in never enrols it again (issue 13, review finding A).

A key an admin removed (``admin user remove-key``), or whose single sign-on enrolment an admin
revoked (``admin user enrolments --revoke`` / ``--all``: a stolen laptop), is refused at
``POST /v1/sso/start`` with ``409 key_revoked``, before the provider is asked; and again at the
finish (or the device poll) when the removal came while the sign-in was under way. Either way
nothing changes: the key's row stays as the admin left it, and no ``key.enrolled`` is written.
An enrolment that merely ended (not removed) is renewed by signing in again, as always.

Through the real app; only the provider is faked (tests/server/sso_fakes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from server.admin import Admin
from server.db import transaction
from server.models import SshKey, SsoFlow
from tests.server.conftest import Clock
from tests.server.sso_fakes import (  # noqa: F401 (fixtures)
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


def _admin(app: Any) -> Admin:
    return Admin(app.extensions["jit_ssh"].service)


def _row(app: Any, fingerprint: str) -> tuple[object, ...]:
    """Everything of the key's row a sign-in could change."""
    with transaction(app.extensions["jit_ssh"].service.sessions) as s:
        k = s.execute(select(SshKey).where(SshKey.fingerprint == fingerprint)).scalar_one()
        return (
            k.user_id,
            str(k.source),
            k.removed_at,
            k.created_at,
            k.expires_at,
            k.groups,
            k.public_key,
        )


def _flows(app: Any) -> int:
    with transaction(app.extensions["jit_ssh"].service.sessions) as s:
        return int(s.scalar(select(func.count()).select_from(SsoFlow)) or 0)


def _callback(app: Any, fake: FakeProvider, started: Any, claims: dict[str, Any]) -> dict[str, str]:
    """The person signs in at the provider; the browser follows the server's redirect back
    to the loopback listener: its query (flow and finish code)."""
    browser = app.test_client()
    back = fake.sign_in(continue_cli(browser, started.json["authorize_url"]), claims)
    cb = browser.get("/sso/callback", query_string=back)
    assert cb.status_code == 303, cb.data[:300]
    return loopback_query(cb.headers["Location"])


def _enrol(app: Any, fake: FakeProvider, holder: KeyHolder, claims: dict[str, Any]) -> Any:
    started = holder.start_loopback(40000)
    assert started.status_code == 200, started.json
    q = _callback(app, fake, started, claims)
    assert "code" in q, q
    return holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})


def _removed_by_admin(app: Any, fake: FakeProvider, holder: KeyHolder) -> None:
    _admin(app).add_user("alice", ssh_keys=[holder.public_openssh])
    _admin(app).remove_key("alice", holder.fingerprint)


def _enrolment_revoked(app: Any, fake: FakeProvider, holder: KeyHolder) -> None:
    assert _enrol(app, fake, holder, claims_for("alice")).status_code == 200
    _admin(app).revoke_enrolments("alice", [holder.fingerprint])


def _all_enrolments_revoked(app: Any, fake: FakeProvider, holder: KeyHolder) -> None:
    assert _enrol(app, fake, holder, claims_for("alice")).status_code == 200
    _admin(app).revoke_enrolments("alice", None)


REMOVALS: dict[str, Callable[[Any, FakeProvider, KeyHolder], None]] = {
    "removed-by-admin": _removed_by_admin,
    "enrolment-revoked": _enrolment_revoked,
    "all-enrolments-revoked": _all_enrolments_revoked,
}


def _refused(r: Any, holder: KeyHolder) -> None:
    assert r.status_code == 409, (r.status_code, r.json)
    assert r.json["code"] == "key_revoked"
    assert r.json["field"] == "public_key"
    assert holder.fingerprint in r.json["detail"]


# --------------------------------------------------------------------------- refused at the start


@pytest.mark.parametrize("removal", sorted(REMOVALS))
@pytest.mark.parametrize("mode", ["loopback", "device"])
def test_a_removed_key_is_refused_at_the_start_before_the_provider_is_asked(
    app: Any, fake: FakeProvider, clock: Clock, removal: str, mode: str
) -> None:
    holder = KeyHolder(app.test_client(), clock)
    REMOVALS[removal](app, fake, holder)
    before = _row(app, holder.fingerprint)
    enrolled = len(events(app, "key.enrolled"))
    flows, authorizations = _flows(app), len(fake.authorizations)

    r = holder.start_loopback(40000) if mode == "loopback" else holder.start_device()

    _refused(r, holder)
    assert _row(app, holder.fingerprint) == before
    assert len(events(app, "key.enrolled")) == enrolled
    # No flow, and the provider was not asked (no authorization URL, no device code).
    assert _flows(app) == flows
    assert len(fake.authorizations) == authorizations and fake.devices == {}
    assert holder.get("/v1/whoami", user="alice").status_code == 401
    refused = events(app, "sso.refused")
    assert refused and refused[-1]["code"] == "key_revoked"


def test_the_review_reproductions_stay_refused(app: Any, fake: FakeProvider, clock: Clock) -> None:
    """The review's two probes, as a user would hit them: sign in again after the removal."""
    for removal in (_removed_by_admin, _enrolment_revoked):
        holder = KeyHolder(app.test_client(), clock)
        removal(app, fake, holder)
        _refused(holder.start_loopback(40000), holder)
        assert holder.get("/v1/whoami", user="alice").status_code == 401


# --------------------------------------------------------------------------- refused at the end


@pytest.mark.parametrize("removal", sorted(REMOVALS))
def test_a_key_removed_during_a_loopback_sign_in_is_refused_at_the_finish(
    app: Any, fake: FakeProvider, clock: Clock, removal: str
) -> None:
    holder = KeyHolder(app.test_client(), clock)
    if removal == "removed-by-admin":
        _admin(app).add_user("alice", ssh_keys=[holder.public_openssh])
    else:
        assert _enrol(app, fake, holder, claims_for("alice")).status_code == 200
    started = holder.start_loopback(40000)
    assert started.status_code == 200
    q = _callback(app, fake, started, claims_for("alice"))
    # The admin acts while the person is at the provider's page.
    if removal == "removed-by-admin":
        _admin(app).remove_key("alice", holder.fingerprint)
    else:
        _admin(app).revoke_enrolments(
            "alice", None if removal == "all-enrolments-revoked" else [holder.fingerprint]
        )
    before = _row(app, holder.fingerprint)
    enrolled = len(events(app, "key.enrolled"))

    r = holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]})

    _refused(r, holder)
    assert _row(app, holder.fingerprint) == before
    assert len(events(app, "key.enrolled")) == enrolled
    assert holder.get("/v1/whoami", user="alice").status_code == 401
    # Asking again changes nothing either.
    _refused(holder.post("/v1/sso/finish", {"flow": q["flow"], "code": q["code"]}), holder)
    assert _row(app, holder.fingerprint) == before


def test_a_key_removed_during_a_device_sign_in_is_refused_at_the_poll(
    app: Any, fake: FakeProvider, clock: Clock
) -> None:
    holder = KeyHolder(app.test_client(), clock)
    _admin(app).add_user("alice", ssh_keys=[holder.public_openssh])
    started = holder.start_device()
    assert started.status_code == 200
    _admin(app).remove_key("alice", holder.fingerprint)
    before = _row(app, holder.fingerprint)
    fake.approve_device(claims_for("alice", ["sre"]))
    clock.advance(seconds=6)

    r = holder.post("/v1/sso/poll", {"flow": started.json["flow"]})

    _refused(r, holder)
    assert _row(app, holder.fingerprint) == before
    assert events(app, "key.enrolled") == []
    # The sign-in's writes went with it: alice's groups are not the claim's.
    assert events(app, "user.groups_changed") == []
    assert events(app, "sso.signed_in") == []


def test_an_admin_key_removed_then_signed_in_is_not_made_an_sso_key(
    app: Any, fake: FakeProvider, clock: Clock
) -> None:
    holder = KeyHolder(app.test_client(), clock)
    _removed_by_admin(app, fake, holder)
    _refused(holder.start_loopback(40000), holder)
    _, source, removed_at, *_ = _row(app, holder.fingerprint)
    assert (source, removed_at is not None) == ("admin", True)
    assert [e.state for e in _admin(app).enrolments("alice")] == ["revoked"]


# --------------------------------------------------------------------------- ended, not removed


def test_an_ended_enrolment_is_renewed_by_signing_in_again(
    app: Any, fake: FakeProvider, clock: Clock
) -> None:
    holder = KeyHolder(app.test_client(), clock)
    first = _enrol(app, fake, holder, claims_for("alice", ["engineers"]))
    assert first.status_code == 200
    clock.advance(hours=13)  # past the 12 h enrolment
    ended = holder.get("/v1/whoami", user="alice")
    assert ended.status_code == 401 and ended.json["code"] == "enrolment_expired"

    again = _enrol(app, fake, holder, claims_for("alice", ["oncall"]))

    assert again.status_code == 200, again.json
    assert utc(again.json["expires_at"]) > utc(first.json["expires_at"])
    assert holder.get("/v1/whoami", user="alice").status_code == 200
    assert [e.groups for e in _admin(app).enrolments("alice")] == [("oncall",)]
    assert [e["fingerprint"] for e in events(app, "key.enrolled")] == [holder.fingerprint] * 2
