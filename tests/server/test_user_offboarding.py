"""Disabling a user, or removing their last key, ends their access at once (issue 10).

In the same transaction as the change itself: every unexpired certificate of
theirs is revoked (so the KRL lists its serial) and every pending or approved
request is cancelled, each with an audit event that says why.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from ca.krl import parse_krl

from .conftest import Caller, new_events, snapshot, user_key_line

DEMO = {"target": "demo", "duration": "30m", "reason": "offboarding test"}


def _in_krl(app: Any, serial: int) -> bool:
    data, _ = app.extensions["jit_ssh"].service.krl()
    return any(section.revokes_serial(serial) for section in parse_krl(data).cert_sections)


def _states(app: Any, *ids: str) -> list[str]:
    with app.extensions["jit_ssh.engine"].connect() as c:
        return [
            c.execute(text("SELECT state FROM requests WHERE id = :i"), {"i": i}).scalar_one()
            for i in ids
        ]


def _access(alice: Caller, oncall: Caller, bob: Caller) -> dict[str, Any]:
    """olga (oncall) holds: an issued certificate, an approved request, a pending one (prod-db is not auto)."""
    issued = oncall.post("/v1/requests", {**DEMO, "duration": "10m"}).json["id"]
    cert = oncall.post(f"/v1/requests/{issued}/certificate", {"public_key": user_key_line()}).json
    approved = oncall.post("/v1/requests", {**DEMO, "duration": "10m"}).json["id"]
    pending = oncall.post("/v1/requests", {**DEMO, "duration": "45m"}).json[
        "id"
    ]  # above auto_approve's 15m
    assert _states(oncall.client.application, issued, approved, pending) == [
        "issued",
        "approved",
        "pending",
    ]
    # Someone else's access is left alone.
    other = alice.post("/v1/requests", DEMO).json["id"]
    return {
        "issued": issued,
        "serial": int(cert["serial"]),
        "approved": approved,
        "pending": pending,
        "other": other,
    }


def _check_ended(
    app: Any, before: dict[str, Any], held: dict[str, Any], why: str, first_type: str
) -> None:
    assert _states(app, held["issued"], held["approved"], held["pending"], held["other"]) == [
        "revoked",
        "cancelled",
        "cancelled",
        "pending",
    ]
    assert _in_krl(app, held["serial"])
    events = new_events(before, snapshot(app))
    types = [e[1] for e in events]
    assert types[0] == first_type
    assert sorted(types[1:]) == ["certificate.revoked", "request.cancelled", "request.cancelled"]
    for _, type_, actor, data in events[1:]:
        assert actor == "admin-cli" and json.loads(data)["reason"] == why, (type_, data)
    with app.extensions["jit_ssh.engine"].connect() as c:
        rev = c.execute(
            text("SELECT revoked_by, reason FROM revocations WHERE serial = :s"),
            {"s": held["serial"]},
        ).one()
    assert tuple(rev) == ("admin-cli", why)


def test_disabling_a_user_revokes_their_certificates_and_cancels_their_requests(
    app: Any, admin: Any, alice: Caller, oncall: Caller, bob: Caller
) -> None:
    held = _access(alice, oncall, bob)
    before = snapshot(app)
    info = admin.set_disabled("olga")
    assert info.disabled
    _check_ended(app, before, held, "user disabled", "user.disabled")
    # Enabling again gives nothing back.
    admin.set_disabled("olga", False)
    assert _states(app, held["issued"], held["approved"]) == ["revoked", "cancelled"]


def test_removing_the_last_key_ends_access_but_not_removing_another(
    app: Any, admin: Any, alice: Caller, oncall: Caller, bob: Caller
) -> None:
    second = user_key_line()
    admin.enroll_key("olga", second)
    held = _access(alice, oncall, bob)
    fingerprints = [
        k.split()[1]
        for k in admin.list_users()[[u.name for u in admin.list_users()].index("olga")].keys
    ]
    own = next(f for f in fingerprints if f != second_fingerprint(second))
    admin.remove_key("olga", second_fingerprint(second))
    # One key left: nothing ends.
    assert _states(app, held["issued"], held["approved"], held["pending"]) == [
        "issued",
        "approved",
        "pending",
    ]
    assert not _in_krl(app, held["serial"])
    before = snapshot(app)
    info = admin.remove_key("olga", own)
    assert info.keys == ()
    _check_ended(app, before, held, "last key removed", "user.key_removed")


def second_fingerprint(line: str) -> str:
    from ca import parse_public_key

    return parse_public_key(line).fingerprint


def test_nothing_ends_when_the_change_is_refused(
    app: Any, admin: Any, alice: Caller, oncall: Caller, bob: Caller
) -> None:
    import pytest

    from server.errors import NotFound

    held = _access(alice, oncall, bob)
    with pytest.raises(NotFound):
        admin.remove_key("olga", "SHA256:nope")
    assert _states(app, held["issued"], held["approved"], held["pending"]) == [
        "issued",
        "approved",
        "pending",
    ]
