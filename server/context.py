"""The service without the web: engine, sessions, audit log, keyring and services, from a config.

``jit-ssh admin ...``, ``jit-ssh audit ...`` and the ``ca`` commands that write
rows (``ca sign``, ``ca add-key``, ``ca promote``, ``ca retire``, ``ca list``)
work straight on the database. They need what the app needs (the same
database, the same audit chain, the same key checks) but no Flask: so
:func:`open_context` opens the graph :func:`server.deps.build_deps` builds
(the one the app factory wraps), importing neither Flask nor Werkzeug.

Construction order (``build_deps``):

1. first start only (``config.bootstrap``): :func:`bootstrap` creates the data
   directory, the CA key, the audit key and the demo policy;
2. the engine, its migrations (SQLite), the session factory, the audit log
   hook (every event is also one JSON line in the log);
3. the audit writer, and the key check: the data directory's keys must be the
   ones the database recorded (:func:`server.keystore.check_and_record`);
4. the outbox and its sinks (webhooks), the keyring, the policy holder, the :class:`Service`
   (no delivery worker: a one-shot command starts none);
5. certificates ``ca sign --no-record`` left pending are recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .audit import AuditWriter
from .config import ServerConfig
from .deps import Deps, bootstrap, build_deps
from .keystore import LiveKeyring, RecordedState
from .services import Service

__all__ = ["AdminContext", "AuditWriter", "bootstrap", "open_context"]


@dataclass
class AdminContext:
    """What an admin command works with; :meth:`close` when done."""

    config: ServerConfig
    engine: Engine
    sessions: sessionmaker[Session]
    audit: AuditWriter
    keyring: LiveKeyring
    service: Service
    clock: Callable[[], datetime]
    _deps: Deps

    @property
    def audit_public_key(self) -> ed25519.Ed25519PublicKey:
        return self.audit.public_key

    @property
    def deps(self) -> Deps:
        """The whole graph (the outbox's worker runs on it)."""
        return self._deps

    def export_audit(self, since: int) -> Iterator[str]:
        return self._deps.export_audit(since)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> AdminContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_context(
    config: ServerConfig,
    *,
    clock: Callable[[], datetime] | None = None,
    say: Callable[[str], None] | None = None,
    recorded_keys: RecordedState | None = None,
) -> AdminContext:
    """The dependency graph of ``config`` (:func:`server.deps.build_deps`, which see for
    ``recorded_keys``), as an admin command's context."""
    d = build_deps(config, clock=clock, say=say, recorded_keys=recorded_keys)
    return AdminContext(
        config=d.config,
        engine=d.engine,
        sessions=d.service.sessions,
        audit=d.audit,
        keyring=d.keyring,
        service=d.service,
        clock=d.clock,
        _deps=d,
    )
