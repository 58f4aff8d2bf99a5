"""The Flask app factory. Nothing here runs at import time."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import policies
from ca import JitSshError
from ca.audit import generate_audit_key, load_audit_key, save_audit_key
from ca.keyring import Keyring, init_keyring

from . import audit
from .auth import authenticate, report_failure
from .config import InvalidConfig, ServerConfig
from .db import is_sqlite, make_engine, make_session_factory, transaction
from .errors import AuthFailed, DatabaseUnavailable
from .keystore import LiveKeyring, RecordedState, check_and_record
from .migrate import upgrade
from .models import AccessRequest, AuthFailureCount, Certificate, Revocation
from .notify import Notifier
from .offline import flush_pending
from .proxy import TrustedProxies, parse_networks
from .services import PolicyHolder, Service
from .web.setup import set_security_headers

__all__ = ["create_app", "bootstrap", "JitSsh"]

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


@dataclass
class JitSsh:
    """What the views reach through ``current_app.extensions['jit_ssh']``."""

    config: ServerConfig
    service: Service
    keyring: Keyring | LiveKeyring
    audit_public_key: Any
    clock: Callable[[], datetime]
    latency: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return self.config.base_url or "http://127.0.0.1:8022"

    def authenticate(self, req: Any) -> Any:
        body = req.get_data(cache=True)

        def failed(err: AuthFailed, claimed: str | None) -> None:
            # Counted, and audited once per kind and time window (see record_failure).
            report_failure(
                self.service.sessions,
                now=self.clock(),
                code=err.code,
                claimed_user=claimed,
                data={"path": req.path[:200], "remote": (req.remote_addr or "")[:64]},
                signing_key=self.service.audit_key,
                checkpoint_every=self.service.checkpoint_every,
            )

        return authenticate(
            self.service.sessions,
            method=req.method,
            path=req.path,
            query=req.query_string.decode("latin-1"),
            body=body,
            headers=req.headers,
            now=self.clock(),
            max_clock_skew=self.config.max_clock_skew,
            on_failure=failed,
        )

    def export_audit(self, since: int) -> Iterator[str]:
        now = self.clock()
        with transaction(self.service.sessions) as s:
            # Sign the head first, so the export's tail is covered by a checkpoint.
            audit.checkpoint(s, self.service.audit_key, now)
        with transaction(self.service.sessions) as s:
            lines = list(audit.export(s, since))
        return iter(lines)

    def observe(self, endpoint: str, seconds: float) -> None:
        with self._lock:
            bucket = self.latency.setdefault(endpoint, [0, 0.0] + [0] * len(_BUCKETS))
            bucket[0] += 1
            bucket[1] += seconds
            for i, b in enumerate(_BUCKETS):
                if seconds <= b:
                    bucket[2 + i] += 1


_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    field: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"urn:jit-ssh:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if field:
        body["field"] = field
    if extra:
        body.update(extra)
    import json

    return Response(json.dumps(body), status=status, mimetype="application/problem+json")


def _init_web(app: Flask, config: ServerConfig) -> None:
    """The approver's pages: cookie sessions and CSRF tokens for them, none for the signed /v1 API."""
    from flask_wtf.csrf import CSRFProtect

    from .api import api
    from .web import SessionInterface, WebSettings, load_or_create_secret_key, web

    app.secret_key = load_or_create_secret_key(config)
    app.session_interface = SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="jit_ssh_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Secure when the configured URL is https; SessionInterface adds it for any https request.
        SESSION_COOKIE_SECURE=config.base_url.lower().startswith("https://"),
        # The server-side session has its own idle timeout; the token lives as long as the page.
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.extensions["jit_ssh.web"] = WebSettings()
    csrf = CSRFProtect(app)
    csrf.exempt(api)
    app.register_blueprint(web)


def create_app(
    config: ServerConfig,
    *,
    clock: Callable[[], datetime] | None = None,
    say: Callable[[str], None] | None = None,
    recorded_keys: RecordedState | None = None,
) -> Flask:
    """The app. ``recorded_keys``: the key states a caller has just checked
    against the database for this data directory (``serve``, once before
    forking): the workers then start without touching the database, as a
    worker must boot even while the database is out of reach."""
    clock = clock or _utcnow
    if config.bootstrap:
        bootstrap(config, now=clock(), say=say or log.warning)
    engine = make_engine(config.resolved_database_url)
    if is_sqlite(engine):
        upgrade(engine)
    sessions = make_session_factory(engine)
    audit.install_log_hook(sessions)

    passphrase = None
    if config.ca_passphrase_file:
        passphrase = config.ca_passphrase_file.read_bytes().rstrip(b"\r\n")
    elif os.environ.get("JIT_SSH_CA_PASSPHRASE"):
        passphrase = os.environ["JIT_SSH_CA_PASSPHRASE"].encode()
    audit_key = load_audit_key(config.audit_key_path)
    # The database says which keys every replica holds and which CA key signs:
    # refuse to start with other ones (server/keystore.py).
    recorded = recorded_keys or check_and_record(
        sessions,
        config.data_dir,
        audit_key,
        now=clock(),
        checkpoint_every=config.audit_checkpoint_every,
        say=say or log.warning,
    )
    keyring = LiveKeyring(sessions, config.data_dir, recorded, passphrase=passphrase)

    def on_reload(new: policies.Policy, old: policies.Policy | None) -> None:
        with transaction(sessions) as s:
            audit.record(
                s,
                type="policy.reloaded",
                now=clock(),
                data={
                    "path": str(config.resolved_policy_path),
                    "version": new.version,
                    "previous": old.version if old else None,
                },
                signing_key=audit_key,
                checkpoint_every=config.audit_checkpoint_every,
            )

    holder = PolicyHolder(config.resolved_policy_path, on_reload=on_reload)
    notifier = (
        Notifier(config.webhook_url, base_url=config.base_url or "http://127.0.0.1:8022")
        if config.webhook_url
        else None
    )
    service = Service(
        sessions=sessions,
        keyring=keyring,
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
        flush_pending(service, config.data_dir, say=say or log.warning)

    app = Flask("jit_ssh")
    # The client's address, scheme and host, believing X-Forwarded-* from trusted proxies only.
    try:
        proxies = parse_networks(config.trusted_proxies)
    except ValueError as e:
        raise InvalidConfig(str(e), field="trusted_proxies") from None
    app.wsgi_app = TrustedProxies(app.wsgi_app, proxies)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    ext = JitSsh(
        config=config,
        service=service,
        keyring=keyring,
        audit_public_key=audit_key.public_key(),
        clock=clock,
    )
    app.extensions["jit_ssh"] = ext
    app.extensions["jit_ssh.engine"] = engine

    from .api import api

    app.register_blueprint(api)
    _init_web(app, config)

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()
        keyring.maybe_refresh()  # a `ca promote` on another machine reaches this replica

    @app.after_request
    def _headers(resp: Response) -> Response:
        t0 = getattr(g, "t0", None)
        if t0 is not None:
            ext.observe(
                request.url_rule.rule if request.url_rule else "unknown", time.perf_counter() - t0
            )
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Cache-Control", "no-store")
        return set_security_headers(resp)

    @app.errorhandler(JitSshError)
    def _jit_error(e: JitSshError) -> Response:
        decision = getattr(e, "decision", None)
        extra = {"reasons": list(decision.reasons)} if decision is not None else None
        return _problem(e.http_status, e.code, type(e).__name__, str(e), e.field, extra)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e: RequestEntityTooLarge) -> Response:
        return _problem(
            413,
            "body_too_large",
            "BodyTooLarge",
            f"the body is larger than {config.max_body_bytes} bytes",
        )

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}.get(
            e.code or 500, "http_error"
        )
        return _problem(e.code or 500, code, e.name, e.description or e.name)

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def _db_down(e: Exception) -> Response:
        log.error("database error: %s", str(e).splitlines()[0][:300])
        return _problem(
            503,
            DatabaseUnavailable.code,
            "DatabaseUnavailable",
            "the database is unavailable; nothing was changed, try again",
        )

    @app.errorhandler(Exception)
    def _bug(e: Exception) -> Response:
        log.exception("unhandled error")
        return _problem(
            500, "internal_error", "InternalError", "an internal error occurred; it was logged"
        )

    @app.get("/healthz")
    def healthz() -> Any:
        try:
            with engine.connect() as c:
                c.execute(text("SELECT 1"))
        except Exception as e:
            return _problem(
                503,
                DatabaseUnavailable.code,
                "DatabaseUnavailable",
                f"database check failed: {type(e).__name__}",
            )
        return {
            "status": "ok",
            "policy_version": holder.get().version,
            "ca": keyring.signing_key.fingerprint,
        }

    @app.get("/metrics")
    def metrics() -> Any:
        lines = []
        with transaction(sessions) as s:
            lines.append("# HELP jit_ssh_requests Access requests by state.")
            lines.append("# TYPE jit_ssh_requests gauge")
            for state, n in s.execute(
                select(AccessRequest.state, func.count()).group_by(AccessRequest.state)
            ):
                lines.append(f'jit_ssh_requests{{state="{state}"}} {n}')
            lines.append("# HELP jit_ssh_certificates_issued_total Certificates issued.")
            lines.append("# TYPE jit_ssh_certificates_issued_total counter")
            lines.append(
                f"jit_ssh_certificates_issued_total {s.scalar(select(func.count()).select_from(Certificate))}"
            )
            lines.append("# HELP jit_ssh_revocations_total Certificates revoked.")
            lines.append("# TYPE jit_ssh_revocations_total counter")
            lines.append(
                f"jit_ssh_revocations_total {s.scalar(select(func.count()).select_from(Revocation))}"
            )
            lines.append("# HELP jit_ssh_auth_failures_total Failed API authentications.")
            lines.append("# TYPE jit_ssh_auth_failures_total counter")
            n = s.scalar(
                select(func.coalesce(func.sum(AuthFailureCount.count), 0)).where(
                    AuthFailureCount.code != ""
                )
            )
            lines.append(f"jit_ssh_auth_failures_total {n}")
        lines.append("# HELP jit_ssh_http_request_duration_seconds Request latency (this worker).")
        lines.append("# TYPE jit_ssh_http_request_duration_seconds histogram")
        with ext._lock:
            for endpoint, b in sorted(ext.latency.items()):
                lbl = endpoint.replace('"', "")
                for i, le in enumerate(_BUCKETS):
                    lines.append(
                        f'jit_ssh_http_request_duration_seconds_bucket{{endpoint="{lbl}",le="{le}"}} {b[2 + i]}'
                    )
                lines.append(
                    f'jit_ssh_http_request_duration_seconds_bucket{{endpoint="{lbl}",le="+Inf"}} {b[0]}'
                )
                lines.append(
                    f'jit_ssh_http_request_duration_seconds_sum{{endpoint="{lbl}"}} {b[1]:.6f}'
                )
                lines.append(
                    f'jit_ssh_http_request_duration_seconds_count{{endpoint="{lbl}"}} {b[0]}'
                )
        return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")

    return app
