"""Failed authentications cannot flood the audit chain, nor write under a user's name (issue 10).

Anyone can send a call that fails authentication, claiming any user. Each one
is a JSON line in the server log (for a SIEM) and is counted; the hash chain
gets one ``auth.failed`` event per claimed user and reason per time window,
with the claimed name in ``data.claimed_user`` and no actor.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from sqlalchemy import text

from ca import request_signing as rs

from .conftest import Caller, Clock, snapshot

BAD_SIGNATURE = base64.b64encode(b"SSHSIG" + bytes(200)).decode()


def _events(app: Any) -> list[tuple[Any, ...]]:
    return snapshot(app)["events"]


def _failure_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "jit_ssh.auth.failed"]


def test_two_hundred_bad_signatures_add_one_event_and_none_under_the_users_name(
    app: Any, alice: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = _events(app)
    for _ in range(200):
        r = alice.get("/v1/whoami", headers={rs.HEADER_SIGNATURE: BAD_SIGNATURE})
        assert r.status_code == 401 and r.json["code"] == "bad_signature"
    added = _events(app)[len(before) :]
    # 200 calls inside one five-minute window: one event (two if the window turned meanwhile).
    assert 1 <= len(added) <= 2, [e[1] for e in added]
    assert all(actor != "alice" for _, _, actor, _ in _events(app))
    for _, type_, actor, data in added:
        body = json.loads(data)
        assert (type_, actor, body["claimed_user"], body["code"]) == (
            "auth.failed",
            None,
            "alice",
            "bad_signature",
        )
    # Every failure is still a log line for the SIEM, and counted.
    lines = _failure_lines(caplog)
    assert len(lines) == 200
    assert {(x["claimed_user"], x["code"]) for x in lines} == {("alice", "bad_signature")}
    with app.extensions["jit_ssh.engine"].connect() as c:
        counted = c.execute(
            text("SELECT sum(count) FROM auth_failures WHERE claimed_user = 'alice'")
        ).scalar_one()
    assert counted == 200
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "jit_ssh_auth_failures_total 200\n" in metrics


def test_many_claimed_names_stay_within_the_cap(app: Any, alice: Caller, clock: Clock) -> None:
    """Claiming a new name each time does not grow the chain without bound either."""
    from server.auth import MAX_FAILURE_EVENTS

    clock.freeze()
    before = _events(app)
    for i in range(MAX_FAILURE_EVENTS + 30):
        alice.get("/v1/whoami", user=f"user{i}", headers={rs.HEADER_SIGNATURE: BAD_SIGNATURE})
    # Names that are no account are counted together: one event, and one counter row.
    assert len(_events(app)) - len(before) == 1
    with app.extensions["jit_ssh.engine"].connect() as c:
        names = {row[0] for row in c.execute(text("SELECT claimed_user FROM auth_failures"))}
    assert names <= {"", "alice"}, names
    # So they cannot use up the window's events: a failure for a real account is still audited.
    alice.get("/v1/whoami", headers={rs.HEADER_SIGNATURE: BAD_SIGNATURE})
    assert json.loads(_events(app)[-1][3])["claimed_user"] == "alice"
    # A later window is reported again.
    clock.advance(minutes=5)
    alice.get("/v1/whoami", headers={rs.HEADER_SIGNATURE: BAD_SIGNATURE})
    last = _events(app)[-1]
    assert (
        last[1] == "auth.failed"
        and last[2] is None
        and json.loads(last[3])["claimed_user"] == "alice"
    )


def test_a_failure_is_logged_even_when_it_cannot_be_counted(
    app: Any, alice: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with app.extensions["jit_ssh.engine"].begin() as c:
        c.execute(text("DROP TABLE auth_failures"))
    r = alice.get("/v1/whoami", headers={rs.HEADER_SIGNATURE: BAD_SIGNATURE})
    assert r.status_code == 401 and r.json["code"] == "bad_signature"
    assert [x["claimed_user"] for x in _failure_lines(caplog)] == ["alice"]


def test_migration_0004_matches_the_model_and_downgrades(database_url: str) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    from server.db import make_engine
    from server.migrate import alembic_config, upgrade
    from server.models import Base

    def diffs(conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return [d for d in compare_metadata(ctx, Base.metadata) if "auth_failures" in repr(d)]

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            assert "auth_failures" in inspect(conn).get_table_names()
            assert diffs(conn) == []
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004-1")
        with engine.connect() as conn:
            assert "auth_failures" not in inspect(conn).get_table_names()
        upgrade(engine)
        with engine.connect() as conn:
            assert diffs(conn) == []
    finally:
        engine.dispose()
