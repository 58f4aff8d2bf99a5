"""Extensions (``jit-ssh extend``): a request linked to a running access, decided by the
current policy with the rule's ``extension_allowance``, whose certificate replaces the
access's one (same key) and revokes the old serial in the same transaction.
On SQLite and PostgreSQL (the ``database_url`` fixture)."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ca import parse_certificate
from ca.krl import parse_krl
from server.models import AuditEvent, Certificate, Revocation
from tests.web.conftest import PASSWORD, Browser

from .conftest import Caller, Clock, assert_problem, assert_unchanged, snapshot, user_key_line

POLICY = """
[targets.demo]
principals = ["jit-demo@demo"]
login_users = ["jit-demo"]

[targets.prod-db]
principals = ["root@prod-db"]
login_users = ["root"]

[[rules]]
name = "demo-access"
targets = ["demo"]
groups = ["engineers", "oncall"]
max_duration = "1h"
default_duration = "15m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = false
extension_allowance = "30m"
warn_before = "2m"

[rules.auto_approve]
groups = ["oncall"]
max_duration = "15m"

[[rules]]
name = "prod"
targets = ["prod-db"]
groups = ["engineers"]
max_duration = "2h"
default_duration = "30m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = true
reason_pattern = 'INC-\\d+'
"""


@pytest.fixture
def service(app: Any) -> Any:
    svc = app.extensions["jit_ssh"].service
    svc.policy.path.write_text(POLICY)
    svc.policy.reload()
    return svc


@pytest.fixture
def carol(make_user: Any, admin: Any, service: Any) -> Caller:
    """A requester who is also an approver (so "never your own" is what refuses her)."""
    c = make_user("carol", ("approvers", "engineers"), ("requester", "approver"))
    admin.set_password("carol", PASSWORD)
    return c


@pytest.fixture
def bob(make_user: Any, admin: Any, service: Any) -> Caller:
    b = make_user("bob", ("approvers",), ("requester", "approver"))
    admin.set_password("bob", PASSWORD)
    return b


def _running(requester: Caller, approver: Caller, duration: str = "30m") -> tuple[str, str, Any]:
    """An issued demo access for ``requester``: (request id, its public key line, the answer)."""
    r = requester.post("/v1/requests", {"target": "demo", "duration": duration, "reason": "work"})
    assert r.status_code == 201, r.json
    if r.json["state"] == "pending":
        a = approver.post(f"/v1/requests/{r.json['id']}/approve", {})
        assert a.status_code == 200 and a.json["state"] == "approved", a.json
    key = user_key_line()
    c = requester.post(f"/v1/requests/{r.json['id']}/certificate", {"public_key": key})
    assert c.status_code == 200, c.json
    return r.json["id"], key, c.json


def _extend(caller: Caller, of: str, duration: str, **extra: Any) -> Any:
    return caller.post(
        "/v1/requests", {"extends": of, "duration": duration, "reason": "more time", **extra}
    )


def _revoked_in_krl(service: Any, serial: int) -> bool:
    data, _ = service.krl()
    return any(s.revokes_serial(serial) for s in parse_krl(data).cert_sections)


def _events(service: Any, type_: str) -> list[AuditEvent]:
    with service.sessions() as s:
        return list(
            s.execute(
                select(AuditEvent).where(AuditEvent.type == type_).order_by(AuditEvent.id)
            ).scalars()
        )


def _data(ev: AuditEvent) -> dict[str, Any]:
    d = ev.data
    return json.loads(d) if isinstance(d, str) else d


# ---- the happy path ------------------------------------------------------------------------


def test_an_extension_replaces_the_certificate_and_the_old_serial_is_in_the_krl(
    app: Any, service: Any, carol: Caller, bob: Caller
) -> None:
    first, key, old = _running(carol, bob)
    old_cert = parse_certificate(old["certificate"])
    # 20 minutes is over the rule's 15 m auto-approval, within its 30 m extension allowance.
    ext = _extend(carol, first, "20m")
    assert ext.status_code == 201, ext.json
    assert ext.json["state"] == "approved" and ext.json["auto_approved"] is True
    assert ext.json["target"] == "demo"
    assert ext.json["extends"] == first
    assert ext.json["extension"] == {
        "of": first,
        "added_seconds": 1200,
        "extensions_seconds": 1200,
        "total_seconds": 3000,
    }
    assert ext.json["warn_before_seconds"] == 120
    # Another key is refused, and changes nothing: the access keeps its key.
    before = snapshot(app)
    other = carol.post(
        f"/v1/requests/{ext.json['id']}/certificate", {"public_key": user_key_line()}
    )
    assert "keeps the access's key" in assert_problem(other, 409, "key_mismatch")["detail"]
    assert_unchanged(before, snapshot(app))
    assert not _revoked_in_krl(service, old_cert.serial)

    new = carol.post(f"/v1/requests/{ext.json['id']}/certificate", {"public_key": key})
    assert new.status_code == 200, new.json
    assert new.json["replaces_serial"] == str(old_cert.serial)
    cert = parse_certificate(new.json["certificate"])
    assert cert.serial != old_cert.serial
    assert cert.public_key.fingerprint == old_cert.public_key.fingerprint
    # It runs on from the old certificate's end.
    assert cert.valid_before == old_cert.valid_before + timedelta(minutes=20)
    assert cert.key_id.startswith(f"jit-ssh:req={ext.json['id']}:")
    # The old serial is revoked, the new one is not.
    assert _revoked_in_krl(service, old_cert.serial)
    assert not _revoked_in_krl(service, cert.serial)
    original = carol.get(f"/v1/requests/{first}").json
    assert original["state"] == "revoked" and original["certificate"]["revoked"] is True
    assert carol.get(f"/v1/requests/{ext.json['id']}").json["state"] == "issued"
    revoked = _events(service, "certificate.revoked")
    assert len(revoked) == 1 and revoked[0].request_id == first
    assert _data(revoked[0]) == {
        "serial": str(old_cert.serial),
        "reason": f"replaced by extension {ext.json['id']}",
        "key_id": old_cert.key_id,
        "replaced_by": ext.json["id"],
    }
    created = [e for e in _events(service, "request.created") if e.request_id == ext.json["id"]]
    assert _data(created[0])["extends"] == first
    approved = [e for e in _events(service, "request.approved") if e.request_id == ext.json["id"]]
    assert _data(approved[0])["extension_allowance"] == {
        "allowance_seconds": 1800,
        "extensions_seconds": 1200,
    }

    # A repeat fetch: the same certificate, and nothing revoked twice.
    again = carol.post(f"/v1/requests/{ext.json['id']}/certificate", {"public_key": key})
    assert again.status_code == 200
    assert again.json["certificate"] == new.json["certificate"]
    assert again.json["reissued"] is True and again.json["replaces_serial"] == str(old_cert.serial)
    assert len(_events(service, "certificate.revoked")) == 1
    with service.sessions() as s:
        assert list(s.execute(select(Revocation.serial)).scalars()) == [old_cert.serial]


def test_the_old_serial_is_revoked_in_the_issuing_transaction(
    service: Any, carol: Caller, bob: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the revocation's audit row cannot be written, no certificate is issued either."""
    first, key, old = _running(carol, bob)
    ext = _extend(carol, first, "20m").json
    writer = type(service.audit)
    record = writer.record

    def failing(self: Any, s: Any, **kw: Any) -> Any:
        if kw.get("type") == "certificate.revoked":
            raise RuntimeError("the audit write failed")
        return record(self, s, **kw)

    monkeypatch.setattr(writer, "record", failing)
    failed = carol.post(f"/v1/requests/{ext['id']}/certificate", {"public_key": key})
    assert failed.status_code == 500 and "BEGIN" not in failed.get_data(as_text=True)
    monkeypatch.undo()
    with service.sessions() as s:
        assert s.scalar(select(Certificate).where(Certificate.request_id == ext["id"])) is None
        assert list(s.execute(select(Revocation)).scalars()) == []
    assert carol.get(f"/v1/requests/{ext['id']}").json["state"] == "approved"
    assert carol.get(f"/v1/requests/{first}").json["state"] == "issued"
    # And once the audit log works again, the fetch issues and revokes together.
    new = carol.post(f"/v1/requests/{ext['id']}/certificate", {"public_key": key})
    assert new.status_code == 200
    assert _revoked_in_krl(service, parse_certificate(old["certificate"]).serial)


def test_ssh_keygen_finds_the_old_certificate_revoked(
    service: Any, carol: Caller, bob: Caller, ssh_keygen: str, tmp_path: Path
) -> None:
    first, key, old = _running(carol, bob)
    ext = _extend(carol, first, "20m").json
    new = carol.post(f"/v1/requests/{ext['id']}/certificate", {"public_key": key}).json
    krl = tmp_path / "krl"
    krl.write_bytes(service.krl()[0])
    (tmp_path / "old-cert.pub").write_text(old["certificate"] + "\n")
    (tmp_path / "new-cert.pub").write_text(new["certificate"] + "\n")
    q = [ssh_keygen, "-Q", "-f", str(krl)]
    assert subprocess.run([*q, str(tmp_path / "old-cert.pub")], capture_output=True).returncode == 1
    assert subprocess.run([*q, str(tmp_path / "new-cert.pub")], capture_output=True).returncode == 0


def test_an_expired_certificate_is_extended_from_now(
    service: Any, carol: Caller, bob: Caller, clock: Clock
) -> None:
    """Filed while the access runs; fetched after it ran out: from now, not from the past."""
    first, key, old = _running(carol, bob, "5m")
    ext = _extend(carol, first, "20m").json
    clock.advance(minutes=6)
    new = carol.post(f"/v1/requests/{ext['id']}/certificate", {"public_key": key})
    assert new.status_code == 200, new.json
    cert = parse_certificate(new.json["certificate"])
    now = clock()
    assert abs((cert.valid_before - (now + timedelta(minutes=20))).total_seconds()) <= 2


# ---- the allowance, and approvers ----------------------------------------------------------


def test_the_allowance_auto_approves_up_to_its_total_then_approvers_decide_again(
    app: Any, service: Any, carol: Caller, bob: Caller
) -> None:
    first, key, _ = _running(carol, bob)
    e1 = _extend(carol, first, "20m").json
    assert e1["state"] == "approved"
    carol.post(f"/v1/requests/{e1['id']}/certificate", {"public_key": key})
    e2 = _extend(carol, e1["id"], "10m").json
    # 20 m + 10 m: exactly the 30 m allowance.
    assert e2["state"] == "approved" and e2["extension"]["extensions_seconds"] == 1800
    carol.post(f"/v1/requests/{e2['id']}/certificate", {"public_key": key})
    e3 = _extend(carol, e2["id"], "5m").json
    # 35 m is over it: the rule's approvers again.
    assert e3["state"] == "pending" and e3["auto_approved"] is False
    assert e3["extension"] == {
        "of": e2["id"],
        "added_seconds": 300,
        "extensions_seconds": 2100,
        "total_seconds": 1800 + 2100,
    }
    assert any("extension allowance" in r for r in e3["decision"]["reasons"])

    # Approvers see it is an extension, and the whole access it makes.
    pending = bob.get("/v1/requests", query="pending_for_me=1").json["requests"]
    assert [p["extends"] for p in pending] == [e2["id"]]
    b = Browser(app, "bob")
    assert b.login().status_code == 303
    listing = b.text(b.get("/"))
    assert f'Extension of <a href="/requests/{e2["id"]}"><code>{e2["id"]}</code></a>' in listing
    assert "adds 5m, 1h5m in all" in listing
    page = b.text(b.get(f"/requests/{e3['id']}"))
    assert f"request <code>{e2['id']}</code>" in page and "1h5m in all" in page

    # Never one's own: carol is an approver of the rule, and still may not approve it.
    assert_problem(carol.post(f"/v1/requests/{e3['id']}/approve", {}), 403, "self_approval")
    assert bob.post(f"/v1/requests/{e3['id']}/approve", {}).json["state"] == "approved"
    new = carol.post(f"/v1/requests/{e3['id']}/certificate", {"public_key": key})
    assert new.status_code == 200, new.json
    assert carol.get(f"/v1/requests/{e2['id']}").json["state"] == "revoked"


def test_the_web_page_escapes_and_links_an_extension(
    app: Any, service: Any, carol: Caller, bob: Caller
) -> None:
    first, key, _ = _running(carol, bob)
    r = carol.post("/v1/requests", {"extends": first, "duration": "45m", "reason": "<b>x</b>"})
    assert r.json["state"] == "pending"
    b = Browser(app, "bob")
    assert b.login().status_code == 303
    page = b.text(b.get(f"/requests/{r.json['id']}"))
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "Extension of" in page and "1h15m in all" in page


# ---- refusals ------------------------------------------------------------------------------


def test_someone_elses_access_is_not_found(
    app: Any, service: Any, carol: Caller, bob: Caller, make_user: Any
) -> None:
    first, _, _ = _running(carol, bob)
    dave = make_user("dave", ("engineers",))
    before = snapshot(app)
    theirs = assert_problem(_extend(dave, first, "10m"), 404, "not_found")
    missing = assert_problem(_extend(dave, "0123456789abcdef", "10m"), 404, "not_found")
    assert theirs["field"] == missing["field"] == "extends"
    assert first not in theirs["detail"] or "0123456789abcdef" in missing["detail"]
    assert_problem(_extend(dave, "not an id!", "10m"), 404, "not_found")
    assert_unchanged(before, snapshot(app))


def test_a_request_without_a_running_certificate_is_not_extendable(
    app: Any, service: Any, carol: Caller, bob: Caller
) -> None:
    pending = carol.post("/v1/requests", {"target": "demo", "duration": "30m"}).json
    before = snapshot(app)
    p = assert_problem(_extend(carol, pending["id"], "10m"), 409, "not_extendable")
    assert "pending" in p["detail"]
    assert_unchanged(before, snapshot(app))
    bob.post(f"/v1/requests/{pending['id']}/approve", {})
    before = snapshot(app)
    p = assert_problem(_extend(carol, pending["id"], "10m"), 409, "not_extendable")
    assert "approved" in p["detail"]
    assert_unchanged(before, snapshot(app))


def test_an_expired_access_is_not_extendable(
    app: Any, service: Any, carol: Caller, bob: Caller, clock: Clock
) -> None:
    first, _, _ = _running(carol, bob, "5m")
    clock.advance(minutes=5, seconds=1)
    before = snapshot(app)
    p = assert_problem(_extend(carol, first, "10m"), 409, "not_extendable")
    assert "expired" in p["detail"] and "jit-ssh login" in p["detail"]
    assert_unchanged(
        {**before, "states": snapshot(app)["states"]},
        snapshot(app),
        allowed_events=("request.ended",),
    )


def test_a_revoked_access_is_not_extendable(
    app: Any, service: Any, carol: Caller, bob: Caller
) -> None:
    first, _, issued = _running(carol, bob)
    carol.post(f"/v1/certificates/{issued['serial']}/revoke", {"reason": "done"})
    before = snapshot(app)
    p = assert_problem(_extend(carol, first, "10m"), 409, "not_extendable")
    assert "revoked" in p["detail"]
    assert_unchanged(before, snapshot(app))


def test_a_replaced_access_is_not_extendable_again(
    app: Any, service: Any, carol: Caller, bob: Caller
) -> None:
    first, key, _ = _running(carol, bob)
    e1 = _extend(carol, first, "20m").json
    carol.post(f"/v1/requests/{e1['id']}/certificate", {"public_key": key})
    before = snapshot(app)
    p = assert_problem(_extend(carol, first, "5m"), 409, "not_extendable")
    assert f"replaced by extension {e1['id']}" in p["detail"]
    assert_unchanged(before, snapshot(app))


def test_one_open_extension_at_a_time(app: Any, service: Any, carol: Caller, bob: Caller) -> None:
    first, key, _ = _running(carol, bob)
    e1 = _extend(carol, first, "45m").json
    assert e1["state"] == "pending"
    before = snapshot(app)
    p = assert_problem(_extend(carol, first, "5m"), 409, "extension_pending")
    assert e1["id"] in p["detail"]
    assert_unchanged(before, snapshot(app))
    bob.post(f"/v1/requests/{e1['id']}/approve", {})
    # Approved and not fetched yet: still open.
    assert_problem(_extend(carol, first, "5m"), 409, "extension_pending")
    # Cancelled: no longer open.
    carol.post(f"/v1/requests/{e1['id']}/cancel")
    assert _extend(carol, first, "5m").status_code == 201


def test_an_extension_is_for_the_originals_target(
    app: Any, service: Any, carol: Caller, bob: Caller
) -> None:
    first, _, _ = _running(carol, bob)
    before = snapshot(app)
    p = assert_problem(_extend(carol, first, "10m", target="prod-db"), 400, "invalid_input")
    assert p["field"] == "target"
    assert_problem(_extend(carol, first, "10m", break_glass=True), 400, "invalid_input")
    assert_problem(carol.post("/v1/requests", {"extends": 7, "duration": "5m"}), 400)
    assert_unchanged(before, snapshot(app))
    same = _extend(carol, first, "10m", target="demo")
    assert same.status_code == 201 and same.json["target"] == "demo"


def test_the_current_policy_decides_an_extension(
    app: Any, service: Any, carol: Caller, bob: Caller
) -> None:
    first, _, _ = _running(carol, bob)
    before = snapshot(app)
    # The rule's maximum applies to the extension's own duration.
    p = assert_problem(_extend(carol, first, "2h"), 403, "policy_denied")
    assert "maximum" in p["detail"]
    assert_unchanged(before, snapshot(app), allowed_events=("request.refused",))
    refused = _events(service, "request.refused")[-1]
    assert _data(refused)["extends"] == first
    # The policy no longer lets carol request the target: refused, like any request.
    service.policy.path.write_text(
        POLICY.replace('groups = ["engineers", "oncall"]', 'groups = ["oncall"]')
    )
    service.policy.reload()
    assert_problem(_extend(carol, first, "10m"), 403, "policy_denied")


def test_the_warning_time_follows_the_rule(
    app: Any, service: Any, carol: Caller, bob: Caller
) -> None:
    first, _, _ = _running(carol, bob)
    assert carol.get(f"/v1/requests/{first}").json["warn_before_seconds"] == 120
    assert carol.get(f"/v1/requests/{first}").json["extension"] is None
    service.policy.path.write_text(POLICY.replace('warn_before = "2m"\n', ""))
    service.policy.reload()
    assert carol.get(f"/v1/requests/{first}").json["warn_before_seconds"] == 300


def test_an_extension_of_an_access_revoked_meanwhile_is_not_issued(
    app: Any, service: Any, carol: Caller, bob: Caller
) -> None:
    """`done` while the extension waits: the extension cannot bring the access back."""
    first, key, issued = _running(carol, bob)
    ext = _extend(carol, first, "45m").json
    assert ext["state"] == "pending"
    carol.post(f"/v1/certificates/{issued['serial']}/revoke", {"reason": "done"})
    bob.post(f"/v1/requests/{ext['id']}/approve", {})
    before = snapshot(app)
    p = assert_problem(
        carol.post(f"/v1/requests/{ext['id']}/certificate", {"public_key": key}),
        409,
        "not_extendable",
    )
    assert "revoked" in p["detail"] and "jit-ssh login" in p["detail"]
    assert_unchanged(before, snapshot(app))


# ---- from the attacker review: auto-approval never chains past the allowance ------------------


def test_the_rules_auto_approve_never_chains_extensions_past_the_allowance(
    service: Any, make_user: Any, admin: Any, bob: Caller, clock: Clock
) -> None:
    """oncall is auto-approved for 15m; the rule's extension_allowance is 30m. Extensions are
    auto-approved while they add up to 30m; the third one (45m) waits for an approver, so no
    chain of auto-approvals makes one certificate longer than the rule lets anyone decide alone."""
    dave = make_user("dave", ("oncall",), ("requester",))
    first, key, _ = _running(dave, bob, "15m")
    at = first
    for _ in range(2):
        e = _extend(dave, at, "15m").json
        assert e["state"] == "approved" and e["auto_approved"] is True, e
        c = dave.post(f"/v1/requests/{e['id']}/certificate", {"public_key": key})
        assert c.status_code == 200, c.json
        at = e["id"]
    third = _extend(dave, at, "15m").json
    assert third["state"] == "pending" and third["approvals_required"] == 1, third
    assert any("extension allowance" in r for r in third["decision"]["reasons"])
    # An approver may still grant it (and sees the whole access: 15m + 45m).
    assert third["extension"]["total_seconds"] == 3600
    assert bob.post(f"/v1/requests/{third['id']}/approve", {}).json["state"] == "approved"


def test_without_an_allowance_the_rules_auto_approve_does_not_approve_an_extension(
    service: Any, make_user: Any, admin: Any, bob: Caller
) -> None:
    service.policy.path.write_text(POLICY.replace('extension_allowance = "30m"\n', ""))
    service.policy.reload()
    dave = make_user("dave", ("oncall",), ("requester",))
    first, _, _ = _running(dave, bob, "15m")
    e = _extend(dave, first, "15m").json
    assert e["state"] == "pending" and e["auto_approved"] is False, e


def test_an_extension_past_the_cas_24h_is_refused_when_filed(
    service: Any, carol: Caller, bob: Caller, clock: Clock, app: Any
) -> None:
    """Refused at once, with a stable code and nothing written, not approved and then
    stuck at the fetch."""
    first, key, _ = _running(carol, bob, "1h")
    at = first
    for _ in range(23):
        e = _extend(carol, at, "1h").json
        if e["state"] == "pending":
            bob.post(f"/v1/requests/{e['id']}/approve", {})
        assert (
            carol.post(f"/v1/requests/{e['id']}/certificate", {"public_key": key}).status_code
            == 200
        )
        at = e["id"]
    before = snapshot(app)
    p = assert_problem(_extend(carol, at, "1h"), 409, "not_extendable")
    assert "24h" in p["detail"] or "1d" in p["detail"]
    assert_unchanged(before, snapshot(app))


def test_the_issued_event_of_an_extension_names_what_it_replaces(
    service: Any, carol: Caller, bob: Caller
) -> None:
    first, key, answer = _running(carol, bob)
    e = _extend(carol, first, "10m").json
    bob.post(f"/v1/requests/{e['id']}/approve", {})
    assert carol.post(f"/v1/requests/{e['id']}/certificate", {"public_key": key}).status_code == 200
    issued = [ev for ev in _events(service, "certificate.issued") if ev.request_id == e["id"]]
    assert _data(issued[0])["extends"] == first
    assert _data(issued[0])["replaces_serial"] == str(answer["serial"])
