"""The cheaper issuance path (Core statements, one auth query) keeps every rule.

* Several audit events in one transaction reuse the locked head and still chain;
  a savepoint rolled back after an event does not leave a stale head behind.
* The caller built from the auth query's rows carries groups and roles.
* A submitted, auto-approved request answers as if read back from the database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from ca import audit as chain
from server import audit
from server.db import transaction
from server.models import AccessRequest, AuditEvent, AuditHead, Certificate

from .conftest import user_key_line


def _chain_ok(app: Any) -> list[chain.AuditEvent]:
    ext = app.extensions["jit_ssh"]
    with transaction(ext.service.sessions) as s:
        rows = s.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars().all()
        events = [audit.event_from_row(r) for r in rows]
        head = s.execute(select(AuditHead.last_id, AuditHead.last_hash)).one()
    assert chain.verify_chain(events, [], None, allow_unsigned_tail=True).ok
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert (head[0], head[1]) == (events[-1].id, events[-1].hash)
    return events


def test_events_in_one_transaction_and_a_rolled_back_savepoint_chain(app: Any, clock: Any) -> None:
    ext = app.extensions["jit_ssh"]
    with transaction(ext.service.sessions) as s:
        audit.record(s, type="test.one", now=clock())
        audit.record(s, type="test.two", now=clock())
        nested = s.begin_nested()
        audit.record(s, type="test.undone", now=clock())
        nested.rollback()
        audit.record(s, type="test.three", now=clock())
    events = _chain_ok(app)
    types = [e.type for e in events]
    assert "test.undone" not in types
    assert types[-3:] == ["test.one", "test.two", "test.three"]
    # The next transaction reads the head afresh.
    with transaction(ext.service.sessions) as s:
        audit.record(s, type="test.four", now=clock())
    assert [e.type for e in _chain_ok(app)][-1] == "test.four"


def test_auto_approved_issuance_answers_and_records_as_before(app: Any, oncall: Any) -> None:
    r = oncall.post("/v1/requests", {"target": "demo", "duration": "5m"})
    assert r.status_code == 201, r.json
    body = r.json
    assert body["state"] == "approved" and body["requester"] == "olga"
    assert body["approvals"] == [] and body["certificate"] is None and body["deny_reason"] is None
    # What the response said is what the database holds.
    again = oncall.get(f"/v1/requests/{body['id']}")
    assert again.status_code == 200
    assert {k: v for k, v in again.json.items()} == body

    pub = user_key_line()
    c1 = oncall.post(f"/v1/requests/{body['id']}/certificate", {"public_key": pub})
    assert c1.status_code == 200 and c1.json["reissued"] is False
    c2 = oncall.post(f"/v1/requests/{body['id']}/certificate", {"public_key": pub})
    assert c2.status_code == 200 and c2.json["reissued"] is True
    assert (
        c2.json["serial"] == c1.json["serial"] and c2.json["certificate"] == c1.json["certificate"]
    )
    assert (
        c2.json["principals"] == c1.json["principals"]
        and c2.json["valid_before"] == c1.json["valid_before"]
    )
    other = oncall.post(f"/v1/requests/{body['id']}/certificate", {"public_key": user_key_line()})
    assert other.status_code == 409

    after = oncall.get(f"/v1/requests/{body['id']}").json
    assert after["state"] == "issued" and after["certificate"]["serial"] == c1.json["serial"]
    ext = app.extensions["jit_ssh"]
    with transaction(ext.service.sessions) as s:
        assert s.scalar(select(func.count()).select_from(Certificate)) == 1
        assert s.get(AccessRequest, body["id"]).state == "issued"
    types = [e.type for e in _chain_ok(app)]
    assert types.count("certificate.issued") == 1 and types.count("certificate.fetched_again") == 1


def test_caller_carries_groups_and_roles(bob: Any) -> None:
    r = bob.get("/v1/whoami")
    assert r.status_code == 200
    assert r.json == {
        "user": "bob",
        "groups": ["approvers"],
        "roles": ["approver", "requester"],
        "groups_source": "local",
    }
