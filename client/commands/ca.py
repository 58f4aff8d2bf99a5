"""``jit-ssh ca``: create, show and (offline, break-glass) use the CA keys."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from client.clock import utcnow
from client.files import write_atomic

from ._admin import AdminHandle, with_admin
from ._common import data_dir_option, read_passphrase

if TYPE_CHECKING:
    from ca import IssuedCertificate

__all__ = ["ca"]


@click.group()
def ca() -> None:
    """Create, show, rotate and use the CA keys in the data directory."""


def _by() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"


@ca.command("init")
@data_dir_option
@with_admin(create=False, lazy=True)
@click.option(
    "--type",
    "key_type",
    type=click.Choice(["ed25519", "ecdsa", "ecdsa-p384", "rsa"]),
    default="ed25519",
    show_default=True,
    help="CA key type (ecdsa is P-256; rsa is at least 3072 bits).",
)
@click.option("--bits", type=int, help="RSA key size (3072 to 8192; default 3072).")
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Encrypt the private key with the passphrase in this file (or $JIT_SSH_CA_PASSPHRASE).",
)
@click.option("--rotate", is_flag=True, hidden=True, help="Removed: see jit-ssh ca add-key.")
def ca_init(
    admin: AdminHandle,
    key_type: str,
    bits: int | None,
    passphrase_file: str | None,
    rotate: bool,
) -> None:
    """Create the first CA key in the data directory (it signs).

    To rotate, use `jit-ssh ca add-key`, then `ca promote`, then `ca retire`.
    """
    from ca.keyring import ca_dir, init_keyring

    data_dir = admin.config.data_dir
    if rotate:
        raise click.UsageError(
            "ca init --rotate is gone: it switched the signer at once, and hosts refused the new certificates. "
            "Rotate in stages: `jit-ssh ca add-key` (trusted and published, not signing), wait until every host "
            "trusts it, `jit-ssh ca promote FINGERPRINT` (it signs), later `jit-ssh ca retire OLD_FINGERPRINT`"
        )
    existing = [p for p in ca_dir(data_dir).glob("ca-*.pub")] if ca_dir(data_dir).is_dir() else []
    if existing:
        raise click.ClickException(
            f"{ca_dir(data_dir)} already holds a CA key; to rotate, use jit-ssh ca add-key (then ca promote)"
        )
    if bits is not None and key_type != "rsa":
        raise click.BadParameter("--bits applies to --type rsa only", param_hint="--bits")
    key = init_keyring(
        data_dir,
        now=utcnow(),
        key_type=key_type,
        bits=bits,
        passphrase=read_passphrase(passphrase_file),
    )
    click.echo(f"Created CA key {key.path}")
    click.echo(f"  {key.public.key_type} {key.fingerprint}")
    click.echo(
        "Hosts trust it with: jit-ssh ca show > trusted_user_ca_keys  (see jit-ssh host setup)"
    )


@ca.command("show")
@data_dir_option
@with_admin(create=False, lazy=True)
@click.option(
    "--fingerprints/--no-fingerprints", default=True, help="Print fingerprints as # comments."
)
def ca_show(admin: AdminHandle, fingerprints: bool) -> None:
    """Print the trusted CA public keys (a TrustedUserCAKeys file) and their fingerprints.

    The output is a valid TrustedUserCAKeys file as it is: fingerprints are
    written as comments, with each key's role (signing, or staged: trusted
    but not signing yet). Read from the data directory; `jit-ssh ca list`
    shows what the service's database says.
    """
    from ca.keyring import load_keyring

    ring = load_keyring(admin.config.data_dir, private=False)
    for key in ring.keys:
        if fingerprints:
            role = (
                "signing"
                if key.fingerprint == ring.signing_key.fingerprint
                else "staged: trusted, not signing"
            )
            click.echo(f"# {key.fingerprint} ({role})")
        click.echo(key.public.openssh)


_passphrase_option = click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False),
    help="The CA keys' passphrase (or $JIT_SSH_CA_PASSPHRASE, or the server's ca_passphrase_file).",
)


@ca.command("list")
@data_dir_option
@with_admin(create=False, lazy=True)
@click.option("--json", "as_json", is_flag=True)
def ca_list(admin: AdminHandle, as_json: bool) -> None:
    """List the CA keys the service's database records, with their state, and the audit key."""
    from ca.keyring import key_files
    from server.keystore import list_keys

    ext = admin.open()
    here = {pub.fingerprint for _, pub in key_files(ext.config.data_dir)}
    rows = [
        {
            "purpose": r.purpose,
            "fingerprint": r.fingerprint,
            "key_type": r.key_type,
            "state": r.state,
            "in_data_dir": r.fingerprint in here if r.purpose == "ca" else True,
            "changed_at": r.changed_at.isoformat(),
        }
        for r in list_keys(ext.service.sessions)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        where = "" if r["in_data_dir"] else "  (not in this data directory)"
        click.echo(f"{r['purpose']:5} {r['state']:8} {r['fingerprint']} {r['key_type']}{where}")


@ca.command("add-key")
@data_dir_option
@with_admin(create=False, lazy=True)
@click.option(
    "--type",
    "key_type",
    type=click.Choice(["ed25519", "ecdsa", "ecdsa-p384", "rsa"]),
    default="ed25519",
    show_default=True,
    help="CA key type.",
)
@click.option("--bits", type=int, help="RSA key size (3072 to 8192; default 3072).")
@_passphrase_option
def ca_add_key(
    admin: AdminHandle,
    key_type: str,
    bits: int | None,
    passphrase_file: str | None,
) -> None:
    """Rotation, step 1: add a CA key that is trusted and published, but does not sign.

    /v1/ca.pub and `host setup` hand it to hosts from now on. Copy the new
    files in ca/ to every replica's data directory, re-run `host setup` (or
    your configuration management) until every host trusts it, then
    `jit-ssh ca promote FINGERPRINT`.
    """
    from server.keystore import add_key

    if bits is not None and key_type != "rsa":
        raise click.BadParameter("--bits applies to --type rsa only", param_hint="--bits")
    ext = admin.open(passphrase_file=passphrase_file)
    key = add_key(
        ext.service,
        ext.keyring,
        now=utcnow(),
        by=f"ca:{_by()}",
        key_type=key_type,
        bits=bits,
        passphrase=read_passphrase(passphrase_file) or ext.keyring.passphrase,
    )
    click.echo(f"Added CA key {key.path} (staged: trusted and published, not signing)")
    click.echo(f"  {key.public.key_type} {key.fingerprint}")
    click.echo(
        f"Next: copy it to every replica's {key.path.parent if key.path else 'ca/'}, re-run "
        "`jit-ssh host setup` on every host (or your configuration management) until every host "
        f"trusts it, then: jit-ssh ca promote {key.fingerprint}"
    )


@ca.command("promote")
@data_dir_option
@with_admin(create=False, lazy=True)
@click.argument("fingerprint")
@_passphrase_option
def ca_promote(admin: AdminHandle, fingerprint: str, passphrase_file: str | None) -> None:
    """Rotation, step 2: the staged key FINGERPRINT signs from now on (the old one stays trusted)."""
    from server.keystore import promote_key

    ext = admin.open(passphrase_file=passphrase_file)
    state = promote_key(ext.service, ext.keyring, fingerprint, now=utcnow(), by=f"ca:{_by()}")
    click.echo(
        f"CA key {state.signer} signs from now on; the previous signer stays trusted until "
        "jit-ssh ca retire (after the longest certificate lifetime, at most 24 h)"
    )


@ca.command("retire")
@data_dir_option
@with_admin(create=False, lazy=True)
@click.argument("fingerprint")
def ca_retire(admin: AdminHandle, fingerprint: str) -> None:
    """Rotation, step 3: stop trusting and publishing FINGERPRINT (never the signer)."""
    from server.keystore import retire_key

    ext = admin.open()
    retire_key(ext.service, ext.keyring, fingerprint, now=utcnow(), by=f"ca:{_by()}")
    click.echo(
        f"CA key {fingerprint} is retired: no longer in /v1/ca.pub; re-run host setup so hosts drop it"
    )


def _read_text_file(path: str, what: str) -> str:
    if path == "-":
        return sys.stdin.read(64 * 1024)
    p = Path(path)
    if p.stat().st_size > 64 * 1024:
        raise click.ClickException(f"{path}: too large for {what}")
    try:
        return p.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise click.ClickException(f"{path}: {what} must be ASCII text") from None


@ca.command("sign")
@data_dir_option
@with_admin(create=False, lazy=True)
@click.argument("pubkey_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--principal",
    "-n",
    "principals",
    multiple=True,
    required=True,
    help="A principal (repeat for more).",
)
@click.option(
    "--for", "duration", required=True, help="Validity, e.g. 90s, 15m, 1h30m, 2h (max 24h)."
)
@click.option(
    "--key-id",
    required=True,
    help="Key ID written into the certificate (and into sshd's log lines).",
)
@click.option(
    "--reason", required=True, help="Why this break-glass certificate is needed (recorded)."
)
@click.option("--serial", type=str, help="Serial (default: random 63-bit).")
@click.option("--force-command", help="Critical option force-command.")
@click.option("--source-address", help="Critical option source-address: comma-separated CIDRs.")
@click.option(
    "--extension",
    "extensions",
    multiple=True,
    help="Extension (repeatable; default permit-pty). E.g. permit-port-forwarding.",
)
@click.option(
    "--backdate",
    default="0s",
    show_default=True,
    help="Clock-skew allowance, at most a tenth of --for.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Write the certificate here instead of stdout."
)
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False),
    help="The CA key's passphrase.",
)
@click.option(
    "--no-record",
    is_flag=True,
    help="Sign even when the database cannot record it now; it is recorded when the database next answers.",
)
@click.option("--no-db", "no_db", is_flag=True, hidden=True, help="Old name of --no-record.")
def ca_sign(
    admin: AdminHandle,
    pubkey_file: str,
    principals: tuple[str, ...],
    duration: str,
    key_id: str,
    reason: str,
    serial: str | None,
    force_command: str | None,
    source_address: str | None,
    extensions: tuple[str, ...],
    backdate: str,
    out: str | None,
    passphrase_file: str | None,
    no_record: bool,
    no_db: bool,
) -> None:
    """Sign PUBKEY_FILE offline (break-glass): print the certificate, or write it to --out.

    The window is exactly --for long. The certificate row and its audit event
    are committed in the service's database (found as `jit-ssh serve` finds
    it: --config / $JIT_SSH_CONFIG, $JIT_SSH_DATABASE_URL, else the data
    directory) before the certificate is shown; if that fails, nothing is
    shown and the exit status is non-zero. With --no-record the certificate
    is shown even so, and recorded as soon as possible: at once if the
    database answers, else from pending-records.jsonl in the data directory
    by the next `jit-ssh serve` or admin command. (--no-record covers a
    database that cannot be reached; a data directory whose keys differ from
    the database's is refused either way.) Every signing is also appended to
    issuances.jsonl in the data directory.
    """
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from sqlalchemy.exc import DBAPIError

    from ca import (
        DEFAULT_EXTENSIONS,
        CAKey,
        InvalidSerial,
        issue_certificate,
        parse_duration,
        parse_public_key,
    )
    from ca.keyring import load_keyring
    from server.errors import DatabaseUnavailable

    no_record = no_record or no_db
    if not reason.strip():
        raise click.BadParameter("a reason is required", param_hint="--reason")
    data_dir = admin.config.data_dir
    user_key = parse_public_key(
        _read_text_file(pubkey_file, "a public key"), field=f"public key {pubkey_file}"
    )
    serial_no: int | None = None
    if serial is not None:
        try:
            serial_no = int(serial, 0)
        except ValueError:
            raise InvalidSerial(f"--serial {serial!r} is not a number", field="serial") from None
    bd = (
        parse_duration(backdate, field="--backdate")
        if backdate.strip() not in ("0", "0s")
        else timedelta(0)
    )
    by = f"ca-sign:{_by()}"
    refusal = "nothing was signed; fix the database or its configuration, or sign with --no-record to record it later"

    window = parse_duration(duration, field="--for")
    sign_args: dict[str, Any] = dict(
        principals=principals,
        duration=window,
        key_id=key_id,
        backdate=bd,
        serial=serial_no,
        extensions=extensions or DEFAULT_EXTENSIONS,
        force_command=force_command,
        source_address=source_address,
    )
    # Bad input is refused before the database is opened, by the very function
    # that signs (with a throwaway key), and a missing CA says how to make one.
    issue_certificate(
        CAKey.from_private(ed25519.Ed25519PrivateKey.generate()),
        user_key,
        now=utcnow(),
        **sign_args,
    )
    load_keyring(data_dir, private=False)

    ext = None
    unrecorded: str | None = None
    try:
        ext = admin.open(passphrase_file=passphrase_file)
    except (DatabaseUnavailable, DBAPIError) as e:
        unrecorded = _first_line(e)
        if not no_record:
            raise DatabaseUnavailable(
                f"the certificate could not be recorded: {unrecorded}; {refusal}", field="database"
            ) from None
    if ext is not None:
        # The signer is the one the database names (every replica agrees on it).
        signer = ext.keyring.signing_key
        data_dir = ext.config.data_dir
    else:
        # The database is out of reach: this data directory's copy of the key states.
        signer = load_keyring(data_dir, passphrase=read_passphrase(passphrase_file)).signing_key
    now = utcnow()
    cert = issue_certificate(signer, user_key, now=now, **sign_args)
    if ext is not None:
        from server.offline import record_offline_issuance

        try:
            record_offline_issuance(
                ext.service, cert, reason=reason, by=by, backdate=bd, no_record=no_record
            )
        except DBAPIError as e:
            unrecorded = _first_line(e)
            if not no_record:
                raise DatabaseUnavailable(
                    f"the certificate could not be recorded: {unrecorded}; {refusal}",
                    field="database",
                ) from None
    if unrecorded is not None:
        from server.offline import write_pending

        path = write_pending(
            data_dir, cert, reason=reason, by=by, backdate=bd, signed_at=now, error=unrecorded
        )
        click.echo(
            f"warning: serial {cert.serial} is NOT in the database yet ({unrecorded}). It waits in {path}, "
            "and the next `jit-ssh serve` or admin command on this data directory records it in the audit log.",
            err=True,
        )
    _record_offline_issuance(data_dir, cert, reason=reason, now=now, backdate=bd)
    if out:
        write_atomic(out, cert.openssh + "\n", mode=0o644)
        click.echo(
            f"Wrote {out}: serial {cert.serial}, valid {cert.valid_after:%Y-%m-%dT%H:%M:%SZ} to "
            f"{cert.valid_before:%Y-%m-%dT%H:%M:%SZ}",
            err=True,
        )
    else:
        click.echo(cert.openssh)


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _record_offline_issuance(
    data_dir: Path, cert: IssuedCertificate, *, reason: str, now: datetime, backdate: timedelta
) -> None:
    """Append the break-glass issuance to ``issuances.jsonl`` before the certificate is shown.

    The service keeps its audit log in its database; this file is what an
    offline signing leaves behind, so it is never silent.
    """
    from server.offline import certificate_fields

    entry = {
        "event": "certificate.issued.offline",
        "at": now.isoformat(),
        **certificate_fields(cert, backdate=backdate),
        "reason": reason,
        "by": os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown",
    }
    path = data_dir / "issuances.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
