"""``jit-ssh serve``, ``db``, ``admin`` and ``audit``: commands run on the CA server itself.

They import the server package lazily: the engineer's client never loads it. Only ``serve``
loads the web app (Flask); ``admin`` and ``audit`` work through the admin context
(:mod:`client.commands._admin`, :mod:`server.context`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from client.errors import EXIT_FAILED

from ._admin import (
    DEFAULT_BIND,
    AdminHandle,
    config_option,
    server_config,
    warn_unnamed_groups,
    with_admin,
)

__all__ = ["serve", "db", "admin", "audit"]


@click.command()
@config_option
@click.option("--bind", default=DEFAULT_BIND, show_default=True, help="Address to listen on.")
@click.option(
    "--workers", type=int, default=2, show_default=True, help="gunicorn worker processes."
)
@click.option("--threads", type=int, default=4, show_default=True, help="Threads per worker.")
@click.pass_context
def serve(
    ctx: click.Context, config_path: str | None, bind: str, workers: int, threads: int
) -> None:
    """Run the CA service under gunicorn.

    On first start with no configuration it creates, in the data directory, a
    SQLite database, a CA key, an audit signing key and the demo policy.
    """
    import logging

    from gunicorn.app.base import BaseApplication

    from server.app import create_app
    from server.context import bootstrap
    from server.db import is_sqlite, make_engine
    from server.migrate import upgrade

    logging.basicConfig(level=os.environ.get("JIT_SSH_LOG_LEVEL", "INFO"), format="%(message)s")
    # Alembic narrates every migration step at INFO; the schema version is all that matters here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = server_config(ctx, config_path)
    from client.clock import utcnow

    # Once, before forking: workers must not race to create keys. With `bootstrap = false`
    # (replicas fed by configuration management) a missing file is an error, not a new key.
    if cfg.bootstrap:
        bootstrap(cfg, now=utcnow(), say=lambda m: click.echo(m, err=True))
    engine = make_engine(cfg.resolved_database_url)
    if is_sqlite(engine):
        upgrade(engine)
    engine.dispose()
    from dataclasses import replace

    cfg = replace(cfg, bootstrap=False, base_url=cfg.base_url or f"http://{bind}")
    # Once, before forking, as every worker will: a replica whose keys differ from the
    # database's refuses here with one clear line (not a worker that fails to boot), and
    # certificates `ca sign --no-record` left pending are recorded.
    checked = create_app(cfg, say=lambda m: click.echo(m, err=True))
    checked.extensions["jit_ssh.engine"].dispose()
    recorded = checked.extensions["jit_ssh"].keyring.state
    click.echo(
        f"jit-ssh serving on http://{bind} (data: {cfg.data_dir}, database: {cfg.resolved_database_url.split('@')[-1]})",
        err=True,
    )

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread" if threads > 1 else "sync")
            self.cfg.set("accesslog", None)
            # gunicorn believes X-Forwarded-Proto from these peers (by default: loopback):
            # the same proxies as the app's own resolution (server.proxy), no others.
            self.cfg.set("forwarded_allow_ips", ",".join(cfg.trusted_proxies))
            self.cfg.set("timeout", 60)
            self.cfg.set("graceful_timeout", 10)

        def load(self) -> Any:
            # Checked above; each worker then follows the database's key states on its own.
            return create_app(cfg, recorded_keys=recorded, worker=True)

    _App().run()


@click.group()
def db() -> None:
    """Database schema management."""


@db.command("upgrade")
@config_option
@click.pass_context
def db_upgrade(ctx: click.Context, config_path: str | None) -> None:
    """Apply the Alembic migrations (done automatically on start for SQLite)."""
    from server.db import make_engine
    from server.migrate import upgrade

    cfg = server_config(ctx, config_path)
    engine = make_engine(cfg.resolved_database_url)
    before = _schema_revision(engine)
    upgrade(engine)
    after = _schema_revision(engine)
    if before is None:
        click.echo(f"the database was empty: created the schema at revision {after}")
    elif before != after:
        click.echo(f"upgraded the database schema from revision {before} to {after}")
    else:
        click.echo(f"database schema is up to date (revision {after})")


def _schema_revision(engine: Any) -> str | None:
    """The Alembic revision the database is at, or None for a database without the schema."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        revision: str | None = MigrationContext.configure(conn).get_current_revision()
    return revision


@click.group()
def admin() -> None:
    """Manage users, keys and passwords (directly on the database)."""


@admin.group("user")
def user() -> None:
    """Users, their groups, roles, SSH keys and web passwords."""


def _show(info: Any) -> None:
    state = "disabled" if info.disabled else "active"
    click.echo(
        f"{info.name} ({state}) groups={','.join(info.groups) or '-'} roles={','.join(info.roles) or '-'}"
        f" password={'yes' if info.has_password else 'no'}"
    )
    for k in info.keys:
        click.echo(f"  key {k}")


def _read_key(path: str) -> str:
    p = Path(path)
    if p.stat().st_size > 16 * 1024:
        raise click.ClickException(f"{path}: too large for a public key")
    return p.read_text("ascii", "replace")


def _password_from_stdin() -> str:
    data = sys.stdin.readline().rstrip("\r\n")
    if not data:
        raise click.ClickException("no password on standard input")
    return data


@user.command("add")
@with_admin()
@click.argument("name")
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="Group (repeatable), e.g. engineers, approvers, oncall.",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(["requester", "approver", "admin"]),
    help="Role (repeatable; default requester).",
)
@click.option(
    "--ssh-key",
    "ssh_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Public key file to enrol for API calls.",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read a web password from the first line of standard input.",
)
def user_add(
    admin_ctx: AdminHandle,
    name: str,
    groups: tuple[str, ...],
    roles: tuple[str, ...],
    ssh_keys: tuple[str, ...],
    password_stdin: bool,
) -> None:
    """Add user NAME."""
    from server.admin import Admin

    password = _password_from_stdin() if password_stdin else None
    info = Admin(admin_ctx.context.service).add_user(
        name,
        groups=groups,
        roles=roles,
        ssh_keys=[_read_key(k) for k in ssh_keys],
        password=password,
    )
    _show(info)
    warn_unnamed_groups(admin_ctx, groups)


@user.command("list")
@with_admin()
@click.option("--json", "as_json", is_flag=True)
def user_list(admin_ctx: AdminHandle, as_json: bool) -> None:
    """List users."""
    from dataclasses import asdict

    from server.admin import Admin

    users = Admin(admin_ctx.context.service).list_users()
    if as_json:
        click.echo(json.dumps([asdict(u) for u in users], indent=2))
        return
    for u in users:
        _show(u)


@user.command("disable")
@with_admin()
@click.argument("name")
@click.option("--enable", is_flag=True, help="Enable the user again instead.")
def user_disable(admin_ctx: AdminHandle, name: str, enable: bool) -> None:
    """Disable user NAME: their signed calls are refused from now on."""
    from server.admin import Admin

    _show(Admin(admin_ctx.context.service).set_disabled(name, not enable))


@user.command("enroll-key")
@with_admin()
@click.argument("name")
@click.argument("pubkey_file", type=click.Path(exists=True, dir_okay=False))
def user_enroll_key(admin_ctx: AdminHandle, name: str, pubkey_file: str) -> None:
    """Enrol the public key in PUBKEY_FILE for NAME's API calls."""
    from server.admin import Admin

    _show(Admin(admin_ctx.context.service).enroll_key(name, _read_key(pubkey_file)))


@user.command("remove-key")
@with_admin()
@click.argument("name")
@click.argument("fingerprint")
def user_remove_key(admin_ctx: AdminHandle, name: str, fingerprint: str) -> None:
    """Remove NAME's key with FINGERPRINT (SHA256:...)."""
    from server.admin import Admin

    _show(Admin(admin_ctx.context.service).remove_key(name, fingerprint))


@user.command("enrolments")
@with_admin()
@click.argument("name")
@click.option(
    "--revoke",
    "revoke",
    metavar="FINGERPRINT",
    multiple=True,
    help="End this single sign-on enrolment (SHA256:...; repeatable).",
)
@click.option("--all", "revoke_all", is_flag=True, help="End every active SSO enrolment of NAME.")
@click.option("--json", "as_json", is_flag=True)
def user_enrolments(
    admin_ctx: AdminHandle, name: str, revoke: tuple[str, ...], revoke_all: bool, as_json: bool
) -> None:
    """List NAME's API keys and single sign-on enrolments; --revoke or --all ends them.

    An enrolment is made by `jit-ssh sso login` and ends by itself after the server's
    enrolment_lifetime; a revoked one is refused at once. With no usable key left, NAME's
    certificates are revoked and open requests cancelled, as when the last key is removed.
    """
    from server.admin import Admin

    if revoke and revoke_all:
        raise click.UsageError("give --revoke FINGERPRINT or --all, not both")
    a = Admin(admin_ctx.context.service)
    if revoke or revoke_all:
        ended = a.revoke_enrolments(name, list(revoke) if revoke else None)
        if not ended:
            click.echo(f"{name} has no active single sign-on enrolment")
        for e in ended:
            click.echo(f"revoked {e.fingerprint}")
        return
    rows = a.enrolments(name)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "fingerprint": e.fingerprint,
                        "key_type": e.key_type,
                        "source": e.source,
                        "created_at": _iso(e.created_at),
                        "expires_at": _iso(e.expires_at),
                        "groups": list(e.groups),
                        "state": e.state,
                    }
                    for e in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:
        click.echo(f"{name} has no keys")
        return
    click.echo(
        f"{'FINGERPRINT':<51} {'SOURCE':<6} {'CREATED':<20} {'EXPIRES':<20} {'STATE':<8} GROUPS"
    )
    for e in rows:
        click.echo(
            f"{e.fingerprint:<51} {e.source:<6} {_iso(e.created_at):<20} "
            f"{_iso(e.expires_at) or 'never':<20} {e.state:<8} {','.join(e.groups) or '-'}"
        )


def _iso(t: Any) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


@user.command("set-password")
@with_admin()
@click.argument("name")
@click.option(
    "--password-stdin", is_flag=True, required=True, help="Read the password from standard input."
)
def user_set_password(admin_ctx: AdminHandle, name: str, password_stdin: bool) -> None:
    """Set NAME's web password (argon2id)."""
    from server.admin import Admin

    Admin(admin_ctx.context.service).set_password(name, _password_from_stdin())
    click.echo(f"password set for {name}")


@user.command("totp")
@with_admin()
@click.argument("name")
@click.option("--disable", is_flag=True, help="Stop asking NAME for a code.")
def user_totp(admin_ctx: AdminHandle, name: str, disable: bool) -> None:
    """Ask NAME for a one-time code (TOTP) after the web password; prints a new secret.

    Give the secret, or the otpauth:// URI (as a QR code: qrencode -t ansiutf8
    'URI'), to NAME over a trusted channel for their authenticator app. Running
    it again replaces the secret. Either way NAME's web sessions end.
    """
    from server.totp import provisioning_uri, set_totp

    secret = set_totp(admin_ctx.context.service, name, enabled=not disable)
    if secret is None:
        click.echo(f"{name}'s web login no longer asks for a one-time code")
        return
    click.echo(f"{name}'s web login now asks for a one-time code after the password.")
    click.echo(f"secret: {secret}")
    click.echo(f"uri:    {provisioning_uri(secret, name)}")


@user.command("set-groups")
@with_admin()
@click.argument("name")
@click.option("--group", "groups", multiple=True)
@click.option(
    "--role", "roles", multiple=True, type=click.Choice(["requester", "approver", "admin"])
)
def user_set_groups(
    admin_ctx: AdminHandle,
    name: str,
    groups: tuple[str, ...],
    roles: tuple[str, ...],
) -> None:
    """Replace NAME's groups (and roles, if given)."""
    from server.admin import Admin

    _show(Admin(admin_ctx.context.service).set_groups(name, groups, roles or None))
    warn_unnamed_groups(admin_ctx, groups)


@admin.command("expire")
@with_admin()
def admin_expire(admin_ctx: AdminHandle) -> None:
    """Expire pending and approved requests past their deadlines (a sweep; reads also do it)."""
    n = admin_ctx.context.service.expire_sweep()
    click.echo(f"{n} request(s) changed state")


# ---- the notification outbox ------------------------------------------------------------

_OUTBOX_STATES = ("pending", "dead", "delivered")


@admin.group("outbox", invoke_without_command=True)
@with_admin(create=False, lazy=True)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(_OUTBOX_STATES),
    help="Only messages in this state (repeatable; default: pending and dead).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def admin_outbox(
    ctx: click.Context, admin_ctx: AdminHandle, states: tuple[str, ...], as_json: bool
) -> None:
    """List the notifications not yet delivered: pending (with their next attempt) and dead
    (given up on; `jit-ssh admin outbox retry` puts them back). Exit 0 also when there are
    dead ones: the metric jit_ssh_outbox_messages{state="dead"} is what alerts."""
    if ctx.invoked_subcommand is not None:
        return
    outbox = admin_ctx.context.deps.outbox
    rows = outbox.messages(states or ("pending", "dead"))
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "key": m.key,
                        "sink": m.sink,
                        "event": m.event_type,
                        "request_id": m.request_id,
                        "state": str(m.state),
                        "attempts": m.attempts,
                        "next_attempt_at": _iso(m.next_attempt_at)
                        if str(m.state) == "pending"
                        else None,
                        "last_error": m.last_error,
                        "created_at": _iso(m.created_at),
                        "delivered_at": _iso(m.delivered_at),
                    }
                    for m in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:
        click.echo(f"no {' or '.join(states or ('pending', 'dead'))} notifications")
        return
    click.echo(
        f"{'KEY':<28} {'SINK':<20} {'EVENT':<22} {'STATE':<9} {'TRIES':>5} {'NEXT':<20} LAST ERROR"
    )
    for m in rows:
        nxt = _iso(m.next_attempt_at) if str(m.state) == "pending" else "-"
        error = (m.last_error or "-").replace("\n", " ")[:80]
        click.echo(
            f"{m.key:<28} {m.sink:<20} {m.event_type:<22} {str(m.state):<9} {m.attempts:>5} "
            f"{nxt:<20} {error}"
        )


@admin_outbox.command("retry")
@with_admin(create=False)
@click.argument("key", required=False)
@click.option("--dead", is_flag=True, help="Every dead message.")
def admin_outbox_retry(admin_ctx: AdminHandle, key: str | None, dead: bool) -> None:
    """Put the message KEY (or, with --dead, every dead one) back to pending, due now, its
    attempts counted afresh. A delivered message is not sent again."""
    from client.errors import NothingFound

    if bool(key) == dead:
        raise click.UsageError("give a KEY or --dead (not both)")
    n = admin_ctx.context.deps.outbox.retry(key, dead=dead)
    if key and n == 0:
        raise NothingFound(f"no pending or dead notification {key!r}")
    click.echo(f"{n} notification(s) due again")


@admin_outbox.command("work")
@with_admin(create=False)
@click.option("--once", is_flag=True, help="One pass (expiry events, then what is due), then exit.")
def admin_outbox_work(admin_ctx: AdminHandle, once: bool) -> None:
    """Deliver notifications: the worker `jit-ssh serve` runs in each process, standalone
    (for `[notifications] worker = false`). Runs until SIGTERM or SIGINT."""
    import logging
    import signal

    from server.outbox import OutboxWorker

    logging.basicConfig(level=os.environ.get("JIT_SSH_LOG_LEVEL", "INFO"), format="%(message)s")
    worker = OutboxWorker(admin_ctx.context.deps)
    if once:
        n = worker.run_once()
        click.echo(f"{n} notification(s) attempted")
        return

    def _stop(signum: int, frame: object) -> None:
        worker.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    click.echo("jit-ssh outbox worker running", err=True)
    worker.run()


@click.group()
def audit() -> None:
    """Export and verify the tamper-evident audit log."""


@audit.command("export")
@with_admin()
@click.option("--since", type=int, default=0, help="Only events after this id.")
def audit_export(admin_ctx: AdminHandle, since: int) -> None:
    """Write the audit log as JSON lines to standard output (with a fresh signed checkpoint)."""
    for line in admin_ctx.context.export_audit(since):
        click.echo(line.rstrip("\n"))


@audit.command("verify")
@with_admin(lazy=True)
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--pubkey",
    "pubkeys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="An audit public key (audit_ed25519.pub) to check the checkpoint signatures with;"
    " repeat it for every key the log was signed with (after a rotation).",
)
@click.option(
    "--partial",
    is_flag=True,
    help="FILE is an `export --since N`: do not expect it to start at event 1.",
)
def audit_verify(
    admin_ctx: AdminHandle, file: str | None, pubkeys: tuple[str, ...], partial: bool
) -> None:
    """Verify an export FILE offline (or, with no FILE, the server's database).

    Exit 0 when the chain and its checkpoints verify; exit 1 naming the first
    event that was edited, deleted, inserted or reordered, or a rewritten chain.
    Without --pubkey the checkpoint signatures are checked with this server's
    own audit key when there is one, else not at all (the output says which).
    """
    from ca import audit as chain

    first = None if partial else 1
    given = [
        key for pubkey in pubkeys for key in chain.load_audit_public_keys(Path(pubkey).read_text())
    ]
    keys: list[Any] | None = given
    checked = (
        f"checkpoint signatures checked against the {len(given)} audit key(s) given with --pubkey"
    )
    if file is None:
        context = admin_ctx.context
        if not pubkeys:
            keys = [context.audit_public_key]
            checked = (
                "checkpoint signatures checked against this server's own audit key only;"
                " give --pubkey with a copy kept elsewhere to rule out a rewritten log"
            )
        result = chain.verify_export_lines(
            list(context.export_audit(0)), keys, expect_first_id=first
        )
    else:
        if not pubkeys:
            default = Path(str(admin_ctx.config.audit_key_path) + ".pub")
            if default.exists():
                keys = chain.load_audit_public_keys(default.read_text())
                checked = (
                    f"checkpoint signatures checked against this server's own audit key ({default});"
                    " give --pubkey with a copy kept elsewhere to rule out a rewritten log"
                )
            else:
                keys = None
                checked = (
                    "signatures NOT checked: only the hash chain was (it catches an edited event,"
                    " not a rewritten log); give --pubkey AUDIT_KEY.pub to check them"
                )
        source: Any = sys.stdin.buffer if file == "-" else file
        result = chain.verify_export_file(source, keys, expect_first_id=first)
    if result.ok:
        click.echo(
            f"audit log OK: {result.events_checked} events, {result.checkpoints_checked} checkpoints, head {result.head_id}"
        )
        click.echo(checked)
        return
    p = result.problem
    assert p is not None  # a result that is not ok names its problem
    click.echo(f"audit log FAILED at event {p.event_id}: {p.kind}: {p.message}", err=True)
    raise click.exceptions.Exit(EXIT_FAILED)
