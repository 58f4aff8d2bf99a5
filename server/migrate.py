"""Apply the Alembic migrations that ship in ``server/migrations``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

__all__ = ["upgrade", "downgrade", "alembic_config"]


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction, to migrate through.

    SQLite changes a table's constraints only by rebuilding it (Alembic's batch
    mode), and dropping the old copy of a table others refer to fails while
    foreign keys are enforced. So, as SQLite's documentation prescribes for
    such changes, enforcement is off during the migration (a pragma that only
    takes effect outside a transaction), the keys are checked before the
    commit, and enforcement is back on before the connection returns to the pool.
    """
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # On the driver's connection: SQLAlchemy's would BEGIN first.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # Replicas starting together must not both create the tables.
                    conn.execute(text("SELECT pg_advisory_xact_lock(7242012)"))
                yield conn
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        raise RuntimeError(f"migration left a broken foreign key: {tuple(broken)}")
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Safe to run from several processes at once."""
    cfg = alembic_config()
    with _migrating(engine) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (an operator's, or a test's, step back)."""
    cfg = alembic_config()
    with _migrating(engine) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
