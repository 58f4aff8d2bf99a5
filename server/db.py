"""Engine and transactions.

Every state change runs in one transaction that first takes a lock:

* PostgreSQL: ``SELECT ... FOR UPDATE`` on the row being changed (and on the
  audit head, which orders the audit chain);
* SQLite: every transaction is ``BEGIN IMMEDIATE``, which takes the database's
  write lock up front. SQLite has one writer at a time anyway; taking the lock
  at BEGIN (instead of at the first write) means two transactions can never
  both read the old state and then both write: the second waits
  (busy_timeout) and then reads the first one's result.

  Waiting is the weak spot: SQLite's busy handler polls, sleeping up to
  100 ms between tries, so under load a writer can sleep long after the
  lock was freed (p99 in the hundreds of ms). So writers first queue on
  :class:`_WriteLock`, a thread lock plus an ``flock`` on a file beside the
  database (shared by every process that opens it): a blocked ``flock``
  wakes the moment the holder releases it, and BEGIN IMMEDIATE then never
  meets a competitor.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["make_engine", "make_session_factory", "transaction", "is_sqlite", "CommitThenRaise"]

log = logging.getLogger("jit_ssh.db")


class CommitThenRaise(Exception):
    """Raise inside :func:`transaction` to commit what was done (e.g. an
    expiry, or the audit row of a refusal) and then raise ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = getattr(engine_or_url, "url", engine_or_url)
    return str(url).startswith("sqlite")


class _WriteLock:
    """Serialises SQLite write transactions across threads and processes, waking waiters at once."""

    def __init__(self, path: str) -> None:
        self._path = path
        # Re-entrant, so a transaction opened inside another on the same
        # thread (a bug, but not one that should hang) fails on SQLite's own
        # busy timeout instead of deadlocking here.
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._pid = 0

    def acquire(self) -> None:
        self._thread_lock.acquire()
        self._depth += 1
        if self._depth > 1:
            return
        try:
            if self._fd is None or self._pid != os.getpid():
                # One descriptor per process: flock locks belong to the open
                # file description, which a forked worker must not share.
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._depth -= 1
            self._thread_lock.release()
            raise

    def release(self) -> None:
        try:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


def _create_private(database: str) -> None:
    """Create the SQLite file (and its directory) readable by us alone, before SQLite does.

    The database holds password hashes, TOTP secrets and the audit log. SQLite
    would create the file with mode 0644 (less the umask), and it gives the
    ``-wal`` and ``-shm`` files beside it the mode of the main file: so a main
    file made 0600 here keeps all three private. (No umask juggling: the umask
    is per process, and other threads may be creating files meanwhile.)
    """
    path = os.path.abspath(database)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "%s is readable by others (mode %o): chmod 600 it (and its -wal and -shm files)",
                path,
                mode,
            )
        return
    os.close(fd)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        database = engine.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            _create_private(database)
        lock = _WriteLock(database + ".lock") if database and database != ":memory:" else None

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: DBAPIConnection, _record: object) -> None:
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
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        if lock is not None:
            _WRITE_LOCKS[engine] = lock

        return engine
    # A database that accepts connections but never answers must give a quick
    # 503, not a worker hung until gunicorn kills it: bound connecting, and
    # let the kernel give up on a peer that stopped acknowledging.
    connect_args: dict[str, object] = {}
    if url.startswith("postgresql"):
        connect_args = {
            "connect_timeout": 5,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 15000,
        }
    return create_engine(
        url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True, connect_args=connect_args
    )


# Engines are few and live as long as the app; a weak map keeps tests that
# build many apps from holding on to theirs.
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, _WriteLock] = weakref.WeakKeyDictionary()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    lock = _WRITE_LOCKS.get(factory.kw.get("bind"))  # type: ignore[arg-type]
    if lock is not None:
        lock.acquire()
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
        if lock is not None:
            lock.release()
