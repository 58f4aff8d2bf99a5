"""The server's dependency graph, built once, without Flask.

:func:`build_deps` makes everything a request needs (the database engine and
sessions, the CA keyring, the policy source, the audit signing key, the
service) from a :class:`ServerConfig`; :func:`server.app.create_app` wraps it
in a Flask app, and a command-line tool can build the same graph without one.
Views reach it in one way only: :func:`deps`.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import Engine

import policies
from ca.audit import generate_audit_key, load_audit_key, save_audit_key
from ca.keyring import init_keyring
from server import audit
from server.config import ServerConfig
from server.db import is_sqlite, make_engine, make_session_factory, transaction
from server.keystore import LiveKeyring, RecordedState, check_and_record
from server.metrics import Metrics
from server.migrate import upgrade
from server.offline import flush_pending
from server.outbox import Backoff, Outbox, OutboxWorker, Sink
from server.services import PolicyHolder, Service
from server.slack.sinks import make_sinks as make_slack_sinks
from server.webhooks import webhook_sinks

if TYPE_CHECKING:
    from server.outbox import Sink
    from server.services.sso import OidcProviderLike, SsoService

__all__ = [
    "Deps",
    "build_deps",
    "bootstrap",
    "deps",
    "DEFAULT_BASE_URL",
    "SsoHolder",
    "start_outbox_worker",
]

log = logging.getLogger("jit_ssh.server")

#: The URL approval links point at when the configuration names none.
DEFAULT_BASE_URL = "http://127.0.0.1:8022"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class SsoHolder:
    """The OpenID provider client, built on first use from ``config.sso`` (its discovery
    document and keys are fetched, and cached, by the provider object itself). Unit
    tests may put a provider of their own in ``provider``."""

    provider: OidcProviderLike | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Deps:
    """What the views (and tools) use: one typed object, built by :func:`build_deps`."""

    config: ServerConfig
    service: Service
    keyring: LiveKeyring
    engine: Engine
    audit: audit.AuditWriter
    clock: Callable[[], datetime]
    #: The transactional outbox (its sinks: the webhooks, and Slack when configured).
    outbox: Outbox
    metrics: Metrics = field(default_factory=Metrics)
    sso_holder: SsoHolder = field(default_factory=SsoHolder)

    def sso(self) -> SsoService:
        """The single sign-on flows; :class:`~server.errors.SsoNotConfigured` without ``[sso]``."""
        from server.errors import SsoNotConfigured
        from server.services.sso import SsoService

        settings = self.config.sso
        if settings is None:
            raise SsoNotConfigured(
                "single sign-on is not configured on this server (no [sso] table)", field="sso"
            )
        holder = self.sso_holder
        with holder.lock:
            if holder.provider is None:
                from server.sso.oidc import OidcProvider

                holder.provider = OidcProvider(settings, None)
            provider = holder.provider
        return SsoService(self.service, settings, provider, base_url=self.base_url)

    @property
    def audit_public_key(self) -> ed25519.Ed25519PublicKey:
        return self.audit.public_key

    @property
    def base_url(self) -> str:
        return self.config.base_url or DEFAULT_BASE_URL

    def export_audit(self, since: int) -> Iterator[str]:
        now = self.clock()
        with transaction(self.service.sessions) as s:
            # Sign the head first, so the export's tail is covered by a checkpoint.
            self.audit.checkpoint(s, now)
        with transaction(self.service.sessions) as s:
            lines = list(audit.export(s, since))
        return iter(lines)


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


def _ca_passphrase(config: ServerConfig) -> bytes | None:
    if config.ca_passphrase_file:
        return config.ca_passphrase_file.read_bytes().rstrip(b"\r\n")
    if os.environ.get("JIT_SSH_CA_PASSPHRASE"):
        return os.environ["JIT_SSH_CA_PASSPHRASE"].encode()
    return None


def build_deps(
    config: ServerConfig,
    *,
    clock: Callable[[], datetime] | None = None,
    say: Callable[[str], None] | None = None,
    recorded_keys: RecordedState | None = None,
) -> Deps:
    """Everything the server runs on, from ``config``. ``recorded_keys``: the key
    states a caller has just checked against the database for this data
    directory (``serve``, once before forking): the workers then start without
    touching the database, as a worker must boot even while the database is out
    of reach."""
    clock = clock or _utcnow
    say = say or log.warning
    if config.bootstrap:
        bootstrap(config, now=clock(), say=say)
    engine = make_engine(config.resolved_database_url)
    if is_sqlite(engine):
        upgrade(engine)
    sessions = make_session_factory(engine)
    audit.install_log_hook(sessions)

    base_url = config.base_url or DEFAULT_BASE_URL
    holder = PolicyHolder(config.resolved_policy_path)
    sinks: list[Sink] = [
        *webhook_sinks(config.all_webhooks, sessions=sessions, base_url=base_url),
        *make_slack_sinks(
            config.slack, sessions=sessions, policy=holder, clock=clock, base_url=base_url
        ),
    ]
    n = config.notifications
    outbox = Outbox(
        sessions,
        sinks,
        clock,
        max_attempts=n.max_attempts,
        backoff=Backoff(n.backoff_base.total_seconds(), n.backoff_max.total_seconds()),
        lease=n.lease,
        keep_delivered=n.keep_delivered,
    )
    writer = audit.AuditWriter(
        load_audit_key(config.audit_key_path),
        checkpoint_every=config.audit_checkpoint_every,
        outbox=outbox,
    )
    # The database says which keys every replica holds and which CA key signs:
    # refuse to start with other ones (server/keystore.py).
    recorded = recorded_keys or check_and_record(
        sessions,
        config.data_dir,
        writer,
        now=clock(),
        say=say,
    )
    keyring = LiveKeyring(sessions, config.data_dir, recorded, passphrase=_ca_passphrase(config))

    service = Service(
        sessions=sessions,
        keyring=keyring,
        policy=holder,
        audit=writer,
        clock=clock,
        backdate_seconds=config.backdate_seconds,
        krl_clock_skew=config.krl_clock_skew,
    )
    # Each version the holder loads is recorded once across workers and replicas.
    holder.on_change = service.record_policy_version

    # Break-glass certificates `ca sign --no-record` could not record at the time.
    if recorded_keys is None:
        flush_pending(service, config.data_dir, say=say)

    return Deps(
        config=config,
        service=service,
        keyring=keyring,
        engine=engine,
        audit=writer,
        clock=clock,
        outbox=outbox,
    )


def start_outbox_worker(d: Deps, *, interval: float = 1.0) -> OutboxWorker | None:
    """Start the delivery worker thread of this server process, unless
    ``[notifications] worker = false`` (then `jit-ssh admin outbox work` delivers)."""
    if not d.config.notifications.worker:
        return None
    worker = OutboxWorker(d, interval=interval).start()
    atexit.register(worker.stop, 5.0)
    return worker


def deps() -> Deps:
    """The current app's dependencies (inside a request or an app context)."""
    from flask import current_app

    d = current_app.extensions["jit_ssh"]
    assert isinstance(d, Deps)
    return d
