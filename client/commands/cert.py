"""``jit-ssh cert``: read certificates the way ``ssh-keygen -L`` does, and check who signed them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from client.clock import utcnow

from ._common import get_data_dir

__all__ = ["cert"]


@click.group()
def cert() -> None:
    """Inspect and verify OpenSSH certificates."""


@cert.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--ca-keys",
    type=click.Path(exists=True, dir_okay=False),
    help="Also verify the signature against these trusted CA keys (a TrustedUserCAKeys file).",
)
@click.option("--verify", is_flag=True, help="Verify against the data directory's CA keys.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_context
def cert_inspect(
    ctx: click.Context, file: str, ca_keys: str | None, verify: bool, as_json: bool
) -> None:
    """Show every field of the certificate in FILE (a *-cert.pub file).

    With --ca-keys or --verify, exit 1 unless a trusted CA key signed it.
    """
    from ca import load_public_keys, parse_certificate, verify_certificate

    text = sys.stdin.read(64 * 1024) if file == "-" else Path(file).read_text("ascii", "replace")
    trusted = None
    if ca_keys:
        trusted = load_public_keys(Path(ca_keys).read_text("ascii", "replace"), field=ca_keys)
    elif verify:
        from ca.keyring import load_keyring

        trusted = tuple(k.public for k in load_keyring(get_data_dir(ctx), private=False).keys)
    info = verify_certificate(text, trusted) if trusted is not None else parse_certificate(text)
    now = utcnow()
    if now < info.valid_after:
        state = "not yet valid"
    elif now >= info.valid_before:
        state = "expired"
    else:
        state = f"valid, {int((info.valid_before - now).total_seconds())} s left"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "serial": info.serial,
                    "key_id": info.key_id,
                    "type": info.cert_type,
                    "principals": list(info.principals),
                    "valid_after": info.valid_after.isoformat(),
                    "valid_before": info.valid_before.isoformat(),
                    "duration_seconds": int(info.duration.total_seconds()),
                    "critical_options": dict(info.critical_options),
                    "extensions": list(info.extensions),
                    "public_key_fingerprint": info.public_key.fingerprint,
                    "ca_fingerprint": info.ca_public_key.fingerprint,
                    "signature_algorithm": info.signature_algorithm,
                    "state": state.split(",")[0],
                    "verified": trusted is not None,
                },
                indent=2,
            )
        )
        return
    click.echo(f"{file}:")
    click.echo(info.to_text().rstrip("\n"))
    click.echo(f"        State: {state}")
    if trusted is not None:
        click.echo(f"        Verified: signed by trusted CA {info.ca_public_key.fingerprint}")
