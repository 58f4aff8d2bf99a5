"""The service end to end through its JSON API, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ca import parse_certificate, verify_certificate
from ca.krl import parse_krl

from .conftest import Caller, Clock, user_key_line


def _create(caller: Caller, **body: Any) -> Any:
    r = caller.post("/v1/requests", body)
    return r


def test_request_approve_fetch_revoke(app: Any, alice: Caller, bob: Caller, clock: Clock) -> None:
    r = _create(alice, target="demo", duration="30m", reason="look at replica lag")
    assert r.status_code == 201, r.json
    req = r.json
    assert req["state"] == "pending" and req["approvals_required"] == 1
    assert req["principals"] == ["jit-demo@demo"]
    assert req["approval_url"].endswith(f"/requests/{req['id']}")

    key = user_key_line()
    early = alice.post(f"/v1/requests/{req['id']}/certificate", {"public_key": key})
    assert early.status_code == 409 and early.json["code"] == "not_approved"

    ok = bob.post(f"/v1/requests/{req['id']}/approve", {"comment": "go"})
    assert ok.status_code == 200, ok.json
    assert ok.json["state"] == "approved"

    cert = alice.post(f"/v1/requests/{req['id']}/certificate", {"public_key": key})
    assert cert.status_code == 200, cert.json
    info = verify_certificate(
        cert.json["certificate"], list(app.extensions["jit_ssh"].keyring.keys)
    )
    assert info.duration == timedelta(minutes=30)
    assert info.principals == ("jit-demo@demo",)
    assert info.key_id == f"jit-ssh:req={req['id']}:user=alice:by=bob"
    assert str(info.serial) == cert.json["serial"]

    again = alice.post(f"/v1/requests/{req['id']}/certificate", {"public_key": key})
    assert again.status_code == 200 and again.json["certificate"] == cert.json["certificate"]
    assert again.json["reissued"] is True
    other = alice.post(f"/v1/requests/{req['id']}/certificate", {"public_key": user_key_line()})
    assert other.status_code == 409 and other.json["code"] == "key_mismatch"

    state = alice.get(f"/v1/requests/{req['id']}").json
    assert state["state"] == "issued" and state["certificate"]["serial"] == cert.json["serial"]

    krl0 = app.test_client().get("/v1/krl")
    assert krl0.status_code == 200 and krl0.headers["ETag"]
    assert not parse_krl(krl0.data).cert_sections

    rv = alice.post(f"/v1/certificates/{cert.json['serial']}/revoke", {"reason": "done"})
    assert rv.status_code == 200, rv.json
    krl1 = app.test_client().get("/v1/krl")
    assert krl1.headers["ETag"] != krl0.headers["ETag"]
    parsed = parse_krl(krl1.data)
    assert parsed.is_revoked(info.serial, info.key_id, info.ca_public_key.blob)
    # The version rises with the revocation (it comes from the database, not a clock).
    assert parsed.version > parse_krl(krl0.data).version
    same = app.test_client().get("/v1/krl", headers={"If-None-Match": krl1.headers["ETag"]})
    assert same.status_code == 304
    assert alice.get(f"/v1/requests/{req['id']}").json["state"] == "revoked"


def test_auto_approved_oncall(app: Any, oncall: Caller) -> None:
    r = _create(oncall, target="demo", duration="10m")
    assert r.status_code == 201 and r.json["state"] == "approved" and r.json["auto_approved"]
    cert = oncall.post(f"/v1/requests/{r.json['id']}/certificate", {"public_key": user_key_line()})
    assert cert.status_code == 200
    assert parse_certificate(cert.json["certificate"]).duration == timedelta(minutes=10)
    too_long = _create(oncall, target="demo", duration="2h")
    assert too_long.status_code == 403 and too_long.json["code"] == "policy_denied"
    assert "1h" in too_long.json["detail"]


def test_requester_never_approves_own_request(app: Any, carol: Caller) -> None:
    r = _create(carol, target="demo", duration="5m")
    assert r.status_code == 201
    self_ok = carol.post(f"/v1/requests/{r.json['id']}/approve", {})
    assert self_ok.status_code == 403 and self_ok.json["code"] == "self_approval"
    assert carol.get(f"/v1/requests/{r.json['id']}").json["state"] == "pending"


def test_two_distinct_approvers_and_shortening(
    app: Any, alice: Caller, bob: Caller, carol: Caller
) -> None:
    r = _create(alice, target="prod-db", duration="1h", reason="INC-42 disk full")
    assert r.status_code == 201, r.json
    rid = r.json["id"]
    assert bob.post(f"/v1/requests/{rid}/approve", {"duration": "20m"}).json["state"] == "pending"
    twice = bob.post(f"/v1/requests/{rid}/approve", {})
    assert twice.status_code == 409 and twice.json["code"] == "already_decided"
    done = carol.post(f"/v1/requests/{rid}/approve", {"comment": "ok"})
    assert done.json["state"] == "approved" and done.json["duration_seconds"] == 20 * 60
    cert = alice.post(f"/v1/requests/{rid}/certificate", {"public_key": user_key_line()}).json
    info = parse_certificate(cert["certificate"])
    assert info.duration == timedelta(minutes=20)
    assert info.force_command == "/usr/bin/uptime" and info.source_address == "10.0.0.0/8"
    assert set(info.principals) == {"root@prod-db", "postgres@prod-db"}
    assert info.key_id.endswith(":by=bob,carol")


def test_deny_needs_reason_and_ends_request(app: Any, alice: Caller, bob: Caller) -> None:
    rid = _create(alice, target="demo", duration="5m").json["id"]
    no_reason = bob.post(f"/v1/requests/{rid}/deny", {})
    assert no_reason.status_code == 400 and no_reason.json["field"] == "reason"
    d = bob.post(f"/v1/requests/{rid}/deny", {"reason": "not during the freeze"})
    assert d.json["state"] == "denied" and d.json["deny_reason"] == "not during the freeze"
    late = alice.post(f"/v1/requests/{rid}/certificate", {"public_key": user_key_line()})
    assert late.status_code == 409


def test_pending_request_expires(app: Any, alice: Caller, bob: Caller, clock: Clock) -> None:
    rid = _create(alice, target="prod-db", duration="10m", reason="INC-1").json["id"]
    clock.advance(minutes=11)
    assert alice.get(f"/v1/requests/{rid}").json["state"] == "expired"
    late = bob.post(f"/v1/requests/{rid}/approve", {})
    assert late.status_code in (409, 410)


def test_approved_request_must_be_claimed(
    app: Any, alice: Caller, bob: Caller, clock: Clock
) -> None:
    rid = _create(alice, target="demo", duration="5m").json["id"]
    bob.post(f"/v1/requests/{rid}/approve", {})
    clock.advance(minutes=16)
    r = alice.post(f"/v1/requests/{rid}/certificate", {"public_key": user_key_line()})
    assert r.status_code == 410 and r.json["code"] == "request_expired"


def test_cancel(app: Any, alice: Caller, bob: Caller) -> None:
    rid = _create(alice, target="demo", duration="5m").json["id"]
    assert bob.post(f"/v1/requests/{rid}/cancel", {}).status_code == 403
    assert alice.post(f"/v1/requests/{rid}/cancel", {}).json["state"] == "cancelled"
    assert bob.post(f"/v1/requests/{rid}/approve", {}).status_code == 409


def test_lists(app: Any, alice: Caller, bob: Caller, oncall: Caller) -> None:
    a = _create(alice, target="demo", duration="5m").json["id"]
    _create(oncall, target="demo", duration="5m")
    mine = alice.get("/v1/requests", query="mine=1").json["requests"]
    assert [r["id"] for r in mine] == [a]
    pending = bob.get("/v1/requests", query="pending_for_me=1").json["requests"]
    assert [r["id"] for r in pending] == [a]
    # Others' pending requests (and their reasons) are for approvers only.
    refused = alice.get("/v1/requests", query="pending_for_me=1")
    assert refused.status_code == 403 and refused.json["code"] == "not_eligible"


def test_public_endpoints(app: Any) -> None:
    c = app.test_client()
    ca_pub = c.get("/v1/ca.pub")
    assert ca_pub.status_code == 200 and ca_pub.data.decode().startswith("ssh-ed25519 ")
    t = c.get("/v1/targets").json
    names = {x["name"]: x for x in t["targets"]}
    assert set(names["prod-db"]["login_users"]) == {"root", "postgres"}
    assert c.get("/healthz").json["status"] == "ok"
    assert c.get("/v1/openapi.json").json["openapi"].startswith("3.")
    m = c.get("/metrics").data.decode()
    assert "jit_ssh_certificates_issued_total" in m


def test_audit_export_verifies_and_detects_tampering(
    app: Any, alice: Caller, bob: Caller, root: Caller, tmp_path: Any
) -> None:
    from sqlalchemy import text

    from ca import audit as chain

    rid = _create(alice, target="demo", duration="5m").json["id"]
    bob.post(f"/v1/requests/{rid}/approve", {})
    alice.post(f"/v1/requests/{rid}/certificate", {"public_key": user_key_line()})
    assert alice.get("/v1/audit").status_code == 403
    r = root.get("/v1/audit")
    assert r.status_code == 200
    lines = r.data.decode().splitlines()
    events, cps = chain.parse_export(lines)
    types = [e.type for e in events]
    assert "certificate.issued" in types and "request.approved" in types
    pub = app.extensions["jit_ssh"].audit_public_key
    assert chain.verify_chain(events, cps, [pub]).ok

    engine = app.extensions["jit_ssh.engine"]
    issued = next(e for e in events if e.type == "certificate.issued")
    with engine.begin() as c:
        c.execute(
            text(
                "UPDATE audit_events SET data = replace(data, 'jit-demo@demo', 'root@demo') WHERE id = :i"
            ),
            {"i": issued.id},
        )
    again = root.get("/v1/audit")
    ev2, cp2 = chain.parse_export(again.data.decode().splitlines())
    result = chain.verify_chain(ev2, cp2, [pub])
    assert not result.ok and result.problem.event_id == issued.id
