"""Migration 0002 (web sessions, login throttle, TOTP replay guard) on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from server.db import make_engine
from server.migrate import alembic_config, upgrade
from server.models import Base

MINE = {"web_sessions", "login_throttle"}


def _diffs_about_mine(conn: Any) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    out = []
    for diff in compare_metadata(ctx, Base.metadata):
        flat = diff if isinstance(diff, tuple) else diff[0]
        text = repr(flat)
        if any(t in text for t in MINE) or "totp_last_step" in text:
            out.append(diff)
    return out


def test_upgrade_matches_the_models_and_downgrades(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert MINE <= tables
            assert "totp_last_step" in {c["name"] for c in inspect(conn).get_columns("users")}
            assert _diffs_about_mine(conn) == []

        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        with engine.connect() as conn:
            assert not MINE & set(inspect(conn).get_table_names())
            assert "totp_last_step" not in {c["name"] for c in inspect(conn).get_columns("users")}
        upgrade(engine)
        with engine.connect() as conn:
            assert _diffs_about_mine(conn) == []
    finally:
        engine.dispose()
