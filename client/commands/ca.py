"""``jit-ssh ca``: create, show and (offline, break-glass) use the CA keys."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import data_dir_option, get_data_dir, read_passphrase, utcnow, write_file

if TYPE_CHECKING:
    from ca import IssuedCertificate

__all__ = ["ca"]


@click.group()
def ca() -> None:
    """Create, show and use the CA keys in the data directory."""


@ca.command("init")
@data_dir_option
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
@click.option("--rotate", is_flag=True, help="Add a new signing key although one exists (key rotation).")
@click.pass_context
def ca_init(ctx: click.Context, key_type: str, bits: int | None, passphrase_file: str | None, rotate: bool) -> None:
    """Create a CA key in the data directory.

    With --rotate, a key is added next to the existing ones: every key stays
    trusted (`jit-ssh ca show`), and the newest signs.
    """
    from ca.keyring import ca_dir, init_keyring

    data_dir = get_data_dir(ctx)
    existing = [p for p in ca_dir(data_dir).glob("ca-*.pub")] if ca_dir(data_dir).is_dir() else []
    if existing and not rotate:
        raise click.ClickException(
            f"{ca_dir(data_dir)} already holds a CA key; use --rotate to add a new signing key"
        )
    if bits is not None and key_type != "rsa":
        raise click.BadParameter("--bits applies to --type rsa only", param_hint="--bits")
    key = init_keyring(data_dir, now=utcnow(), key_type=key_type, bits=bits, passphrase=read_passphrase(passphrase_file))
    click.echo(f"Created CA key {key.path}")
    click.echo(f"  {key.public.key_type} {key.fingerprint}")
    click.echo("Hosts trust it with: jit-ssh ca show > trusted_user_ca_keys  (see jit-ssh host setup)")


@ca.command("show")
@data_dir_option
@click.option("--fingerprints/--no-fingerprints", default=True, help="Print fingerprints as # comments.")
@click.pass_context
def ca_show(ctx: click.Context, fingerprints: bool) -> None:
    """Print the trusted CA public keys (a TrustedUserCAKeys file) and their fingerprints.

    The output is a valid TrustedUserCAKeys file as it is: fingerprints are
    written as comments. The last key is the one that signs.
    """
    from ca.keyring import load_keyring

    ring = load_keyring(get_data_dir(ctx), private=False)
    for i, key in enumerate(ring.keys):
        if fingerprints:
            role = "signing" if i == len(ring.keys) - 1 else "trusted"
            click.echo(f"# {key.fingerprint} ({role})")
        click.echo(key.public.openssh)


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
@click.argument("pubkey_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--principal", "-n", "principals", multiple=True, required=True, help="A principal (repeat for more).")
@click.option("--for", "duration", required=True, help="Validity, e.g. 90s, 15m, 1h30m, 2h (max 24h).")
@click.option("--key-id", required=True, help="Key ID written into the certificate (and into sshd's log lines).")
@click.option("--reason", required=True, help="Why this break-glass certificate is needed (recorded).")
@click.option("--serial", type=str, help="Serial (default: random 63-bit).")
@click.option("--force-command", help="Critical option force-command.")
@click.option("--source-address", help="Critical option source-address: comma-separated CIDRs.")
@click.option(
    "--extension",
    "extensions",
    multiple=True,
    help="Extension (repeatable; default permit-pty). E.g. permit-port-forwarding.",
)
@click.option("--backdate", default="0s", show_default=True, help="Clock-skew allowance, at most a tenth of --for.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the certificate here instead of stdout.")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False), help="The CA key's passphrase.")
@click.option(
    "--no-db",
    is_flag=True,
    help="Do not record in the service's database (only issuances.jsonl): for when the database is down.",
)
@click.pass_context
def ca_sign(
    ctx: click.Context,
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
    no_db: bool,
) -> None:
    """Sign PUBKEY_FILE offline (break-glass): print the certificate, or write it to --out.

    The window is exactly --for long. Every signing is appended to
    issuances.jsonl in the data directory with its reason and, when the
    service's database exists (or $JIT_SSH_DATABASE_URL is set), recorded
    there with its audit event before the certificate is shown.
    """
    from ca import DEFAULT_EXTENSIONS, InvalidSerial, issue_certificate, parse_duration, parse_public_key
    from ca.keyring import load_keyring

    if not reason.strip():
        raise click.BadParameter("a reason is required", param_hint="--reason")
    data_dir = get_data_dir(ctx)
    user_key = parse_public_key(_read_text_file(pubkey_file, "a public key"), field=f"public key {pubkey_file}")
    serial_no: int | None = None
    if serial is not None:
        try:
            serial_no = int(serial, 0)
        except ValueError:
            raise InvalidSerial(f"--serial {serial!r} is not a number", field="serial") from None
    ring = load_keyring(data_dir, passphrase=read_passphrase(passphrase_file))
    bd = parse_duration(backdate, field="--backdate") if backdate.strip() not in ("0", "0s") else timedelta(0)
    now = utcnow()
    cert = issue_certificate(
        ring.signing_key,
        user_key,
        principals=principals,
        duration=parse_duration(duration, field="--for"),
        key_id=key_id,
        now=now,
        backdate=bd,
        serial=serial_no,
        extensions=extensions or DEFAULT_EXTENSIONS,
        force_command=force_command,
        source_address=source_address,
    )
    _record_offline_issuance(data_dir, cert, reason=reason, now=now, backdate=bd)
    if not no_db:
        _record_in_database(data_dir, cert, reason=reason, backdate=bd)
    if out:
        write_file(out, cert.openssh + "\n", mode=0o644)
        click.echo(
            f"Wrote {out}: serial {cert.serial}, valid {cert.valid_after:%Y-%m-%dT%H:%M:%SZ} to "
            f"{cert.valid_before:%Y-%m-%dT%H:%M:%SZ}",
            err=True,
        )
    else:
        click.echo(cert.openssh)


def _record_in_database(data_dir: Path, cert: IssuedCertificate, *, reason: str, backdate: timedelta) -> None:
    """Certificate row + audit event, committed before the certificate is shown (if there is a database)."""
    if not (data_dir / "jit-ssh.sqlite3").exists() and not os.environ.get("JIT_SSH_DATABASE_URL"):
        return
    from dataclasses import replace

    from server.app import create_app
    from server.config import load_config
    from server.offline import record_offline_issuance

    env = dict(os.environ, JIT_SSH_DATA_DIR=str(data_dir))
    app = create_app(replace(load_config(None, env), bootstrap=False), say=lambda m: None)
    by = os.environ.get("SUDO_USER") or os.environ.get("USER") or "ca-sign"
    record_offline_issuance(app.extensions["jit_ssh"].service, cert, reason=reason, by=f"ca-sign:{by}", backdate=backdate)


def _record_offline_issuance(
    data_dir: Path, cert: IssuedCertificate, *, reason: str, now: datetime, backdate: timedelta
) -> None:
    """Append the break-glass issuance to ``issuances.jsonl`` before the certificate is shown.

    The service keeps its audit log in its database; this file is what an
    offline signing leaves behind, so it is never silent.
    """
    entry = {
        "event": "certificate.issued.offline",
        "at": now.isoformat(),
        "serial": cert.serial,
        "key_id": cert.key_id,
        "principals": list(cert.principals),
        "valid_after": cert.valid_after.isoformat(),
        "valid_before": cert.valid_before.isoformat(),
        "backdate_seconds": int(backdate.total_seconds()),
        "public_key_fingerprint": cert.public_key.fingerprint,
        "ca_fingerprint": cert.ca_public_key.fingerprint,
        "critical_options": dict(cert.critical_options),
        "extensions": list(cert.extensions),
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
