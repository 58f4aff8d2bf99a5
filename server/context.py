"""The service without the web: engine, sessions, audit log, keyring and services, from a config.

``jit-ssh admin ...``, ``jit-ssh audit ...`` and the ``ca`` commands that write
rows (``ca sign``, ``ca add-key``, ``ca promote``, ``ca retire``, ``ca list``)
work straight on the database. They need what the app needs (the same
database, the same audit chain, the same key checks) but no Flask: so
:func:`open_context` builds it, in ONE function, importing neither Flask nor
Werkzeug. The app factory builds the same objects.

Construction order (as ``create_app`` does it):

1. first start only (``config.bootstrap``): :func:`bootstrap` creates the data
   directory, the CA key, the audit key and the demo policy;
2. the engine, its migrations (SQLite), the session factory, the audit log
   hook (every event is also one JSON line in the log);
3. the audit key, and the key check: the data directory's keys must be the
   ones the database recorded (:func:`server.keystore.check_and_record`);
4. the keyring, the policy holder, the notifier, the :class:`Service`;
5. certificates ``ca sign --no-record`` left pending are recorded.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import policies
from ca.audit import generate_audit_key, load_audit_key, save_audit_key
from ca.keyring import init_keyring

from . import audit
from .config import ServerConfig
from .db import is_sqlite, make_engine, make_session_factory, transaction
from .keystore import LiveKeyring, RecordedState, check_and_record
from .migrate import upgrade
from .notify import Notifier
from .offline import flush_pending
from .services import PolicyHolder, Service

__all__ = ["AdminContext", "AuditWriter", "bootstrap", "open_context"]

log = logging.getLogger("jit_ssh.server")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def bootstrap(
    config: ServerConfig, *, now: datetime, say: Callable[[str], None] = log.warning
) -> None:
    """First start: create what is missing in the data directory, and say so."""
    d = config.data_dir
    if not d.exists():
        d.mkdir(parents=True, mode=0o700)
        say(f"created data directory {d}")
    if not (d / "ca").is_dir() or not any((d / "ca").glob("ca-*.pub")):
        key = init_keyring(d, now=now)
        say(f"created CA key {key.path} ({key.fingerprint})")
    if not config.audit_key_path.exists():
        config.audit_key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        save_audit_key(config.audit_key_path, generate_audit_key())
        say(f"created audit signing key {config.audit_key_path}")
    if config.policy_path is None and not config.resolved_policy_path.exists():
        shutil.copyfile(policies.demo_policy_path(), config.resolved_policy_path)
        say(
            f"created demo policy {config.resolved_policy_path} (edit it; `jit-ssh policy check` validates it)"
        )


@dataclass(frozen=True)
class AuditWriter:
    """The audit log: the signing key and the checkpoint interval held once, for every writer."""

    sessions: sessionmaker[Session]
    signing_key: Any
    checkpoint_every: int

    def record(
        self,
        s: Session,
        *,
        type: str,
        now: datetime,
        data: dict[str, Any],
        actor: str | None = None,
    ) -> None:
        """One event, in the caller's transaction."""
        audit.record(
            s,
            type=type,
            now=now,
            actor=actor,
            data=data,
            signing_key=self.signing_key,
            checkpoint_every=self.checkpoint_every,
        )

    def export(self, since: int, *, now: datetime) -> Iterator[str]:
        """The log as JSON lines after event ``since``, the head signed first (so the export's
        tail is covered by a checkpoint)."""
        with transaction(self.sessions) as s:
            audit.checkpoint(s, self.signing_key, now)
        with transaction(self.sessions) as s:
            lines = list(audit.export(s, since))
        return iter(lines)

    @property
    def public_key(self) -> Any:
        return self.signing_key.public_key()


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

    @property
    def audit_public_key(self) -> Any:
        return self.audit.public_key

    def export_audit(self, since: int) -> Iterator[str]:
        return self.audit.export(since, now=self.clock())

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> AdminContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _passphrase(config: ServerConfig) -> bytes | None:
    if config.ca_passphrase_file:
        return config.ca_passphrase_file.read_bytes().rstrip(b"\r\n")
    if os.environ.get("JIT_SSH_CA_PASSPHRASE"):
        return os.environ["JIT_SSH_CA_PASSPHRASE"].encode()
    return None


def open_context(
    config: ServerConfig,
    *,
    clock: Callable[[], datetime] | None = None,
    say: Callable[[str], None] | None = None,
    recorded_keys: RecordedState | None = None,
) -> AdminContext:
    """Build engine, sessions, audit writer, keyring and services from ``config`` (see the
    module docstring for the order). ``recorded_keys``: key states a caller has just checked
    against the database (``serve``, once before forking), so workers start without it."""
    clock = clock or _utcnow
    say = say or log.warning
    if config.bootstrap:
        bootstrap(config, now=clock(), say=say)
    engine = make_engine(config.resolved_database_url)
    if is_sqlite(engine):
        upgrade(engine)
    sessions = make_session_factory(engine)
    audit.install_log_hook(sessions)

    audit_key = load_audit_key(config.audit_key_path)
    writer = AuditWriter(sessions, audit_key, config.audit_checkpoint_every)
    # The database says which keys every replica holds and which CA key signs:
    # refuse to start with other ones (server/keystore.py).
    recorded = recorded_keys or check_and_record(
        sessions,
        config.data_dir,
        audit_key,
        now=clock(),
        checkpoint_every=config.audit_checkpoint_every,
        say=say,
    )
    keyring = LiveKeyring(sessions, config.data_dir, recorded, passphrase=_passphrase(config))

    def on_reload(new: policies.Policy, old: policies.Policy | None) -> None:
        with transaction(sessions) as s:
            writer.record(
                s,
                type="policy.reloaded",
                now=clock(),
                data={
                    "path": str(config.resolved_policy_path),
                    "version": new.version,
                    "previous": old.version if old else None,
                },
            )

    holder = PolicyHolder(config.resolved_policy_path, on_reload=on_reload)
    notifier = (
        Notifier(config.webhook_url, base_url=config.base_url or "http://127.0.0.1:8022")
        if config.webhook_url
        else None
    )
    service = Service(
        sessions=sessions,
        keyring=keyring,  # type: ignore[arg-type]  # a LiveKeyring offers what a Keyring does
        policy=holder,
        audit_key=audit_key,
        clock=clock,
        backdate_seconds=config.backdate_seconds,
        checkpoint_every=config.audit_checkpoint_every,
        krl_clock_skew=config.krl_clock_skew,
        notify=notifier.send if notifier else None,
    )

    # Break-glass certificates `ca sign --no-record` could not record at the time.
    if recorded_keys is None:
        flush_pending(service, config.data_dir, say=say)

    return AdminContext(
        config=config,
        engine=engine,
        sessions=sessions,
        audit=writer,
        keyring=keyring,
        service=service,
        clock=clock,
    )
