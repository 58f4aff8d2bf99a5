"""Engine and transactions.

Every state change runs in one transaction that first takes a lock:

* PostgreSQL: ``SELECT ... FOR UPDATE`` on the row being changed (and on the
  audit head, which orders the audit chain);
* SQLite: every transaction is ``BEGIN IMMEDIATE``, which takes the database's
  write lock up front. SQLite has one writer at a time anyway; taking the lock
  at BEGIN (instead of at the first write) means two transactions can never
  both read the old state and then both write: the second waits
  (busy_timeout) and then reads the first one's result.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["make_engine", "make_session_factory", "transaction", "is_sqlite", "CommitThenRaise"]


class CommitThenRaise(Exception):
    """Raise inside :func:`transaction` to commit what was done (e.g. an
    expiry, or the audit row of a refusal) and then raise ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def is_sqlite(engine_or_url: Any) -> bool:
    url = getattr(engine_or_url, "url", engine_or_url)
    return str(url).startswith("sqlite")


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own
            # implicit BEGIN is deferred, which is what we must avoid).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed issuance (certificate + audit row) survives power loss.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    session = factory()
    try:
        session.begin()
        try:
            yield session
        except CommitThenRaise as deferred:
            session.commit()
            raise deferred.error from None
        except BaseException:
            session.rollback()
            raise
        else:
            session.commit()
    finally:
        session.close()
