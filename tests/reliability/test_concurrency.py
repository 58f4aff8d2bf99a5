"""Concurrent approvals and fetches, on SQLite and PostgreSQL.

Fifty threads, each with its own test client (and so its own database
connection and transaction), start together on a barrier. Whatever the
interleaving, the row locks must give: one approval that counts, one
certificate per request, every caller of the same key the same certificate,
and an audit chain that verifies with a ``certificate.issued`` event for
every certificate row.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from ca import audit as chain
from tests.server.conftest import (  # noqa: F401 - fixtures
    Caller,
    Clock,
    admin,
    app,
    clock,
    database_url,
    make_user,
    user_key_line,
)

N = 50
DEMO = {"target": "demo", "duration": "5m", "reason": "concurrency"}
PROD = {"target": "prod-db", "duration": "30m", "reason": "INC-7 concurrency"}


def together(n: int, work: Callable[[int], Any], timeout: float = 60) -> list[Any]:
    """Run ``work(i)`` for i in range(n) in n threads released at once; results in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "threads did not finish"
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    return results


def _caller_for(app: Any, caller: Caller) -> Caller:
    """The same user on a client of its own (a test client per thread)."""
    return Caller(caller.name, caller.key, app.test_client(), caller.clock)


def _outcomes(responses: list[Any]) -> Counter[tuple[int, str | None]]:
    return Counter(
        (r.status_code, None if r.status_code < 400 else r.json.get("code")) for r in responses
    )


def _rows(app: Any, sql: str, **params: Any) -> list[Any]:
    with app.extensions["jit_ssh.engine"].connect() as c:
        return list(c.execute(text(sql), params))


def _assert_audit_consistent(app: Any) -> list[chain.AuditEvent]:
    """The exported chain verifies, and every certificate row has its certificate.issued event."""
    ext = app.extensions["jit_ssh"]
    events, checkpoints = chain.parse_export(list(ext.export_audit(0)))
    result = chain.verify_chain(events, checkpoints, [ext.audit_public_key])
    assert result.ok, result
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    issued = Counter(e.data["serial"] for e in events if e.type == "certificate.issued")
    serials = {str(r[0]) for r in _rows(app, "SELECT serial FROM certificates")}
    assert set(issued) == serials
    assert all(n == 1 for n in issued.values()), issued
    return events


def _approvers(make_user: Any, n: int) -> list[Caller]:
    return [
        make_user(f"approver{i:02d}", ("approvers",), ("requester", "approver")) for i in range(n)
    ]


def test_concurrent_approvals_by_different_approvers(app: Any, make_user: Any) -> None:
    """approvals_required=1: exactly one approval wins; the rest find the request decided."""
    alice = make_user("alice", ("engineers",))
    approvers = [_caller_for(app, a) for a in _approvers(make_user, N)]
    rid = alice.post("/v1/requests", DEMO).json["id"]

    responses = together(
        N, lambda i: approvers[i].post(f"/v1/requests/{rid}/approve", {"comment": f"#{i}"})
    )
    assert _outcomes(responses) == Counter({(200, None): 1, (409, "invalid_state"): N - 1})
    (winner,) = [r for r in responses if r.status_code == 200]
    assert winner.json["state"] == "approved"

    final = alice.get(f"/v1/requests/{rid}").json
    assert final["state"] == "approved" and len(final["approvals"]) == 1
    assert _rows(app, "SELECT count(*) FROM approvals WHERE request_id = :r", r=rid)[0][0] == 1
    events = _assert_audit_consistent(app)
    assert sum(e.type == "request.approved" and e.request_id == rid for e in events) == 1


def test_concurrent_approvals_by_the_same_approver(app: Any, make_user: Any) -> None:
    """Two approvals required: one approver clicking 50 times is counted once."""
    alice = make_user("alice", ("engineers",))
    bob = make_user("bob", ("approvers",), ("requester", "approver"))
    carol = make_user("carol", ("approvers",), ("requester", "approver"))
    rid = alice.post("/v1/requests", PROD).json["id"]
    bobs = [_caller_for(app, bob) for _ in range(N)]

    responses = together(N, lambda i: bobs[i].post(f"/v1/requests/{rid}/approve", {}))
    assert _outcomes(responses) == Counter({(200, None): 1, (409, "already_decided"): N - 1})
    state = alice.get(f"/v1/requests/{rid}").json
    assert state["state"] == "pending" and [a["approver"] for a in state["approvals"]] == ["bob"]
    # The second approver is still needed, and enough.
    assert carol.post(f"/v1/requests/{rid}/approve", {}).json["state"] == "approved"
    _assert_audit_consistent(app)


def test_concurrent_approvals_and_denials(app: Any, make_user: Any) -> None:
    """Half approve, half deny, at once: one decision wins and the request ends in exactly one state."""
    alice = make_user("alice", ("engineers",))
    approvers = [_caller_for(app, a) for a in _approvers(make_user, N)]
    rid = alice.post("/v1/requests", DEMO).json["id"]

    def decide(i: int) -> Any:
        if i % 2:
            return approvers[i].post(f"/v1/requests/{rid}/deny", {"reason": f"no #{i}"})
        return approvers[i].post(f"/v1/requests/{rid}/approve", {})

    responses = together(N, decide)
    outcomes = _outcomes(responses)
    assert outcomes[(200, None)] == 1 and outcomes[(409, "invalid_state")] == N - 1, outcomes
    final = alice.get(f"/v1/requests/{rid}").json
    (winner,) = [r for r in responses if r.status_code == 200]
    assert final["state"] == winner.json["state"] in ("approved", "denied")
    assert len(final["approvals"]) == 1
    _assert_audit_consistent(app)


@pytest.fixture
def approved(app: Any, make_user: Any) -> tuple[Caller, str]:
    alice = make_user("alice", ("engineers",))
    bob = make_user("bob", ("approvers",), ("requester", "approver"))
    rid = alice.post("/v1/requests", DEMO).json["id"]
    assert bob.post(f"/v1/requests/{rid}/approve", {}).json["state"] == "approved"
    return alice, rid


def test_concurrent_fetches_with_the_same_key(app: Any, approved: tuple[Caller, str]) -> None:
    alice, rid = approved
    key = user_key_line()
    callers = [_caller_for(app, alice) for _ in range(N)]

    responses = together(
        N, lambda i: callers[i].post(f"/v1/requests/{rid}/certificate", {"public_key": key})
    )
    assert _outcomes(responses) == Counter({(200, None): N})
    assert len({r.json["certificate"] for r in responses}) == 1
    assert len({r.json["serial"] for r in responses}) == 1
    assert sorted(r.json["reissued"] for r in responses) == [False] + [True] * (N - 1)
    assert _rows(app, "SELECT count(*) FROM certificates WHERE request_id = :r", r=rid)[0][0] == 1
    events = _assert_audit_consistent(app)
    types = Counter(e.type for e in events if e.request_id == rid)
    assert types["certificate.issued"] == 1 and types["certificate.fetched_again"] == N - 1


def test_concurrent_fetches_with_different_keys(app: Any, approved: tuple[Caller, str]) -> None:
    alice, rid = approved
    keys = [user_key_line() for _ in range(N)]
    callers = [_caller_for(app, alice) for _ in range(N)]

    responses = together(
        N, lambda i: callers[i].post(f"/v1/requests/{rid}/certificate", {"public_key": keys[i]})
    )
    assert _outcomes(responses) == Counter({(200, None): 1, (409, "key_mismatch"): N - 1})
    (winner,) = [i for i, r in enumerate(responses) if r.status_code == 200]
    from ca import parse_certificate, parse_public_key

    cert = parse_certificate(responses[winner].json["certificate"])
    assert cert.public_key.fingerprint == parse_public_key(keys[winner]).fingerprint
    rows = _rows(
        app, "SELECT public_key_fingerprint FROM certificates WHERE request_id = :r", r=rid
    )
    assert [r[0] for r in rows] == [parse_public_key(keys[winner]).fingerprint]
    _assert_audit_consistent(app)


def test_concurrent_issuances_have_unique_serials(app: Any, make_user: Any) -> None:
    """Fifty auto-approved requests fetched at once: fifty certificates, fifty serials, fifty events."""
    olga = make_user("olga", ("oncall",))
    rids = [olga.post("/v1/requests", DEMO).json["id"] for _ in range(N)]
    callers = [_caller_for(app, olga) for _ in range(N)]

    responses = together(
        N,
        lambda i: callers[i].post(
            f"/v1/requests/{rids[i]}/certificate", {"public_key": user_key_line()}
        ),
    )
    assert _outcomes(responses) == Counter({(200, None): N})
    assert len({r.json["serial"] for r in responses}) == N
    events = _assert_audit_consistent(app)
    assert sum(e.type == "certificate.issued" for e in events) == N


def test_concurrent_revocations(app: Any, make_user: Any, approved: tuple[Caller, str]) -> None:
    """The requester and many approvers revoke at once: one revocation, recorded once."""
    alice, rid = approved
    serial = alice.post(f"/v1/requests/{rid}/certificate", {"public_key": user_key_line()}).json[
        "serial"
    ]
    approvers = [_caller_for(app, a) for a in _approvers(make_user, N - 1)] + [
        _caller_for(app, alice)
    ]

    responses = together(
        N, lambda i: approvers[i].post(f"/v1/certificates/{serial}/revoke", {"reason": f"#{i}"})
    )
    assert _outcomes(responses) == Counter({(200, None): N})
    assert len({(r.json["revoked_at"], r.json["revoked_by"]) for r in responses}) == 1
    assert _rows(app, "SELECT count(*) FROM revocations")[0][0] == 1
    events = _assert_audit_consistent(app)
    assert sum(e.type == "certificate.revoked" for e in events) == 1
    assert alice.get(f"/v1/requests/{rid}").json["state"] == "revoked"


def test_a_list_never_overwrites_a_concurrent_issuance(
    app: Any, approved: tuple[Caller, str], clock: Clock
) -> None:
    """A list that reads an approved request just past its claim window must not write
    "expired" over the issuance another transaction is committing (it locks, then re-reads)."""
    from server.db import transaction

    alice, rid = approved
    service = app.extensions["jit_ssh"].service
    clock.advance(minutes=16)
    listed: list[Any] = []
    with transaction(service.sessions) as s:
        # Another server's fetch, mid-transaction: it holds the row lock and has moved the state.
        s.execute(
            text(
                "SELECT id FROM requests WHERE id = :r" + ("" if _is_sqlite(app) else " FOR UPDATE")
            ),
            {"r": rid},
        )
        s.execute(text("UPDATE requests SET state = 'issued' WHERE id = :r"), {"r": rid})
        t = threading.Thread(
            target=lambda: listed.append(alice.get("/v1/requests", query="mine=1"))
        )
        t.start()
        time.sleep(0.5)  # the list is now waiting for the lock
    t.join(30)
    assert listed and listed[0].status_code == 200, listed
    assert _rows(app, "SELECT state FROM requests WHERE id = :r", r=rid)[0][0] == "issued"
    assert [r["state"] for r in listed[0].json["requests"]] == ["issued"]
    assert not [
        e
        for e in _rows(app, "SELECT type FROM audit_events WHERE request_id = :r", r=rid)
        if e[0] == "request.expired"
    ]


def _is_sqlite(app: Any) -> bool:
    return app.extensions["jit_ssh.engine"].dialect.name == "sqlite"


def test_concurrent_reads_record_one_expiry(app: Any, make_user: Any, clock: Clock) -> None:
    """Fifty readers discover the same deadline at once: one request.expired event."""
    alice = make_user("alice", ("engineers",))
    rid = alice.post("/v1/requests", DEMO).json["id"]
    clock.advance(hours=2)
    callers = [_caller_for(app, alice) for _ in range(N)]

    def read(i: int) -> Any:
        return (
            callers[i].get(f"/v1/requests/{rid}")
            if i % 2
            else callers[i].get("/v1/requests", query="mine=1")
        )

    responses = together(N, read)
    assert _outcomes(responses) == Counter({(200, None): N})
    events = _assert_audit_consistent(app)
    assert sum(e.type == "request.expired" and e.request_id == rid for e in events) == 1
    assert json.loads(json.dumps([e.type for e in events]))  # exported events are plain JSON
