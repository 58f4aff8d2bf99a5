"""Migration 0005 (request states and approval decisions held to their enums) on
SQLite and PostgreSQL: existing rows keep their values, other values are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError

from server.db import make_engine
from server.migrate import downgrade, upgrade
from server.models import AccessRequest, Approval, ApprovalDecision, Base, RequestState, User

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
# A decision as rows written before Decision.to_record stored it (no claim window yet).
OLD_DECISION = json.dumps(
    {
        "outcome": "needs_approval",
        "allowed": True,
        "reasons": ["rule 'prod' matches"],
        "rule": "prod",
        "policy_version": "v1",
        "duration_seconds": 3600,
        "approvals_required": 1,
        "principals": ["deploy"],
    }
)


def _rows(conn: Connection) -> None:
    conn.execute(insert(User.__table__).values(id=1, name="alice", created_at=NOW))
    conn.execute(insert(User.__table__).values(id=2, name="bob", created_at=NOW))
    for i, state in enumerate(RequestState):
        conn.execute(
            text(
                "INSERT INTO requests (id, requester_id, target, reason, requested_seconds, "
                "granted_seconds, state, policy_version, decision, approvals_required, "
                "auto_approved, break_glass, created_at, pending_until) VALUES (:id, 1, 'prod', '', "
                "3600, 3600, :state, 'v1', :decision, 1, false, false, :now, :until)"
            ),
            {
                "id": f"r{i}",
                "state": state.value,
                "decision": OLD_DECISION,
                "now": NOW,
                "until": NOW + timedelta(hours=1),
            },
        )
    for i, decision in enumerate(ApprovalDecision):
        conn.execute(
            text(
                "INSERT INTO approvals (request_id, approver_id, decision, comment, created_at) "
                "VALUES (:r, 2, :d, '', :now)"
            ),
            {"r": f"r{i}", "d": decision.value, "now": NOW},
        )


def _diffs(conn: Connection) -> list[object]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return [
        d
        for d in compare_metadata(ctx, Base.metadata)
        if any(t in repr(d) for t in ("'requests'", "'approvals'", "ck_"))
    ]


def test_0005_keeps_values_and_refuses_others(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine, "0004")
        with engine.begin() as conn:
            _rows(conn)
        upgrade(engine)
        with engine.connect() as conn:
            states = {r.state for r in conn.execute(select(AccessRequest.state))}
            decisions = {r.decision for r in conn.execute(select(Approval.decision))}
            stored = conn.execute(select(AccessRequest).where(AccessRequest.id == "r0")).one()
            assert _diffs(conn) == []
        # Read back as the enums, every value kept.
        assert states == set(RequestState)
        assert decisions == set(ApprovalDecision)
        assert all(isinstance(s, RequestState) for s in states)
        # An old row's decision still reads (a key it lacks takes its default).
        assert json.loads(stored.decision)["principals"] == ["deploy"]

        for sql in (
            "UPDATE requests SET state = 'lost' WHERE id = 'r0'",
            "UPDATE approvals SET decision = 'maybe' WHERE request_id = 'r0'",
        ):
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(text(sql))

        downgrade(engine, "0004")
        with engine.begin() as conn:
            conn.execute(text("UPDATE requests SET state = 'lost' WHERE id = 'r0'"))
            conn.execute(text("UPDATE requests SET state = 'pending' WHERE id = 'r0'"))
        upgrade(engine)
        with engine.connect() as conn:
            assert _diffs(conn) == []
    finally:
        engine.dispose()


def test_an_old_rows_decision_reads_as_a_value() -> None:
    req = AccessRequest(id="r0", target="prod", decision=OLD_DECISION)
    d = req.stored_decision(requester="alice")
    assert (
        d.principals == ("deploy",) and d.claim_window is None and d.duration == timedelta(hours=1)
    )
    assert d.requester == "alice" and d.target == "prod"
