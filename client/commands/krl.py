"""``jit-ssh krl``: build and inspect OpenSSH key revocation lists (PROTOCOL.krl)."""

from __future__ import annotations

from pathlib import Path

import click

from client.clock import utcnow
from client.files import write_atomic

from ._common import data_dir_option, get_data_dir

__all__ = ["krl"]

_MAX_KRL = 64 * 1024 * 1024


@click.group()
def krl() -> None:
    """Build and inspect OpenSSH key revocation lists."""


def _serial_spec(text: str) -> int | tuple[int, int]:
    from ca import InvalidSerial

    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            a, b = int(lo, 0), int(hi, 0)
            if a > b:
                raise InvalidSerial(f"--serial {text}: the range goes backwards", field="serial")
            return (a, b)
        return int(text, 0)
    except ValueError:
        raise InvalidSerial(
            f"--serial {text!r} is not a serial N or a range A-B", field="serial"
        ) from None


@krl.command("build")
@data_dir_option
@click.option(
    "--serial", "serials", multiple=True, help="Serial N or range A-B to revoke (repeatable)."
)
@click.option("--key-id", "key_ids", multiple=True, help="Key ID to revoke (repeatable).")
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A public key file to revoke outright, certificates or not (repeatable). For hosts that install "
    "KRLs by hand only: `host sync-krl` refuses KRLs that revoke plain keys.",
)
@click.option("--comment", default="", help="Comment stored in the KRL.")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the KRL."
)
@click.pass_context
def krl_build(
    ctx: click.Context,
    serials: tuple[str, ...],
    key_ids: tuple[str, ...],
    key_files: tuple[str, ...],
    comment: str,
    out: str,
) -> None:
    """Write a KRL revoking certificates of the data directory's CA keys.

    Serials and key IDs are revoked for every trusted CA key (so revocation
    holds across a key rotation). With nothing to revoke, the KRL is valid
    and empty: what a host needs before it sets RevokedKeys. The version is
    the build time in microseconds, the server's scheme, so hosts compare both.
    """
    from ca import parse_public_key
    from ca.keyring import load_keyring, next_krl_version
    from ca.krl import build_krl, parse_krl

    data_dir = get_data_dir(ctx)
    ring = load_keyring(data_dir, private=False)
    keys = [
        parse_public_key(Path(f).read_text("ascii", "replace"), field=f).blob for f in key_files
    ]
    now = utcnow()
    data = build_krl(
        ca_keys=[k.public.blob for k in ring.keys],
        serials=[_serial_spec(s) for s in serials],
        key_ids=key_ids,
        public_keys=keys,
        version=next_krl_version(data_dir, now=now),
        now=now,
        comment=comment,
    )
    parsed = parse_krl(data)  # never write what we could not read back
    write_atomic(out, data, mode=0o644)
    click.echo(f"Wrote {out}: version {parsed.version}, {len(data)} bytes", err=True)


@krl.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def krl_inspect(file: str) -> None:
    """Validate the KRL in FILE and show what it revokes. Exit 1 if it is corrupt."""
    from ca.krl import parse_krl

    p = Path(file)
    if p.stat().st_size > _MAX_KRL:
        raise click.ClickException(f"{file} is larger than {_MAX_KRL // (1024 * 1024)} MiB")
    click.echo(parse_krl(p.read_bytes()).to_text().rstrip("\n"))
