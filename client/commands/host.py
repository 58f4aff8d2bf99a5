"""``jit-ssh host``: make a host's own sshd trust the CA, with nothing calling home.

``host setup`` writes:

* ``sshd_config.d/60-jit-ssh.conf``: TrustedUserCAKeys, AuthorizedPrincipalsFile,
  RevokedKeys and LogLevel VERBOSE (so every login logs key ID and serial);
* ``jit-ssh/trusted_user_ca_keys``: the CA public keys;
* ``jit-ssh/principals/<login user>``: the principals each login user accepts,
  one block per target so several targets can share a host;
* ``jit-ssh/revoked_keys.krl``: a valid empty KRL, unless a valid one is
  already there. sshd refuses EVERY key when RevokedKeys names a missing or
  unreadable file, so this file must exist before the drop-in takes effect.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import click

from ._common import utcnow, write_file

__all__ = ["host"]

DROPIN_NAME = "60-jit-ssh.conf"
_LOGIN_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$")
_TARGET_LINE = re.compile(r"^# jit-ssh target: (\S+)$")
_MAX_DOWNLOAD = 16 * 1024 * 1024


@click.group()
def host() -> None:
    """Set up a host's sshd to trust the CA."""


def _check_server_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return url.rstrip("/")
    if parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1"):
        return url.rstrip("/")
    raise click.BadParameter("must be https:// (plain http only to localhost)", param_hint="--server")


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:  # noqa: S310 (scheme checked above)
            data: bytes = resp.read(_MAX_DOWNLOAD + 1)
    except OSError as e:
        raise click.ClickException(f"could not fetch {url}: {e}") from None
    if len(data) > _MAX_DOWNLOAD:
        raise click.ClickException(f"{url}: answer larger than {_MAX_DOWNLOAD} bytes")
    return data


def _merge_principals(existing: str, target: str, principals: tuple[str, ...]) -> str:
    """Replace this target's block in a principals file, keeping other targets' blocks."""
    blocks: dict[str, list[str]] = {}
    current: str | None = None
    for line in existing.splitlines():
        m = _TARGET_LINE.match(line.strip())
        if m:
            current = m.group(1)
            blocks.setdefault(current, [])
        elif current and line.strip() and not line.startswith("#"):
            blocks[current].append(line.strip())
    blocks[target] = list(principals)
    out = ["# Managed by jit-ssh host setup: one block per target."]
    for name in sorted(blocks):
        out.append(f"# jit-ssh target: {name}")
        out.extend(blocks[name])
    return "\n".join(out) + "\n"


def _find_sshd() -> str | None:
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if Path(p).exists()), None
    )


@host.command("setup")
@click.option("--ca-keys", type=click.Path(exists=True, dir_okay=False), help="A TrustedUserCAKeys file (jit-ssh ca show).")
@click.option("--server", help="Fetch the CA keys from the jit-ssh server at this URL instead.")
@click.option("--target", required=True, help="The policy target this host belongs to, e.g. prod-db.")
@click.option("--login-user", "login_users", multiple=True, required=True, help="Local account certificates may log in as (repeatable).")
@click.option("--principal", "principals", multiple=True, help="Principal the login users accept, e.g. root@prod-db (repeatable).")
@click.option("--sshd-dir", default="/etc/ssh", show_default=True, type=click.Path(file_okay=False), help="sshd's configuration directory.")
@click.option("--dry-run", is_flag=True, help="Print what would be written, write nothing.")
def host_setup(
    ca_keys: str | None,
    server: str | None,
    target: str,
    login_users: tuple[str, ...],
    principals: tuple[str, ...],
    sshd_dir: str,
    dry_run: bool,
) -> None:
    """Configure this host's sshd to accept jit-ssh certificates for TARGET.

    Validates the result with `sshd -t` when sshd is installed, and puts the
    previous drop-in back if sshd rejects the new one. Reload sshd afterwards
    (systemctl reload ssh).
    """
    from ca import load_public_keys, validate_principals
    from ca.krl import empty_krl, parse_krl

    if bool(ca_keys) == bool(server):
        raise click.UsageError("give exactly one of --ca-keys FILE or --server URL")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", target):
        raise click.BadParameter("letters, digits, '.', '_' and '-' only", param_hint="--target")
    for user in login_users:
        if not _LOGIN_USER.match(user):
            raise click.BadParameter(f"{user!r} is not a valid login name", param_hint="--login-user")
    if not principals:
        raise click.UsageError("give the target's principals with --principal (e.g. --principal root@prod-db)")
    princ = validate_principals(principals, field="--principal")

    if server:
        base = _check_server_url(server)
        ca_text = _fetch(base + "/v1/ca.pub").decode("ascii", "replace")
    else:
        ca_text = Path(ca_keys).read_text("ascii", "replace")  # type: ignore[arg-type]
    keys = load_public_keys(ca_text, field="CA keys")
    if not keys:
        raise click.ClickException("no CA public key found")

    root = Path(sshd_dir).absolute()
    state = root / "jit-ssh"
    dropin = root / "sshd_config.d" / DROPIN_NAME
    trusted = state / "trusted_user_ca_keys"
    krl_path = state / "revoked_keys.krl"
    pdir = state / "principals"

    files: list[tuple[Path, bytes, int]] = []
    dropin_text = (
        f"# Managed by jit-ssh host setup (target {target}). Do not edit by hand.\n"
        f"TrustedUserCAKeys {trusted}\n"
        f"AuthorizedPrincipalsFile {pdir}/%u\n"
        # sshd refuses every key if this file is missing: host setup writes
        # an empty valid KRL first and sync-krl only ever replaces it atomically.
        f"RevokedKeys {krl_path}\n"
        # VERBOSE logs the key ID and serial of each certificate login, which
        # is how an sshd log line maps back to its jit-ssh request.
        "LogLevel VERBOSE\n"
    )
    files.append((dropin, dropin_text.encode(), 0o644))
    files.append((trusted, "".join(k.openssh + "\n" for k in keys).encode(), 0o644))
    for user in login_users:
        path = pdir / user
        existing = path.read_text("utf-8", "replace") if path.exists() else ""
        files.append((path, _merge_principals(existing, target, princ).encode(), 0o644))
    krl_ok = False
    if krl_path.exists():
        try:
            parse_krl(krl_path.read_bytes())
            krl_ok = True
        except Exception:  # noqa: BLE001 - any unreadable KRL gets replaced
            krl_ok = False
    if not krl_ok:
        now = utcnow()
        files.append((krl_path, empty_krl(version=int(now.timestamp()), now=now), 0o644))

    if dry_run:
        for path, data, mode in files:
            click.echo(f"--- {path} (mode {mode:04o})")
            if path.suffix == ".krl":
                click.echo(f"<empty KRL, {len(data)} bytes>")
            else:
                click.echo(data.decode().rstrip("\n"))
        return

    previous = dropin.read_bytes() if dropin.exists() else None
    # The KRL and the files it names go first, the drop-in that points sshd at
    # them last, so a crash half-way never leaves sshd refusing every key.
    for path, data, mode in sorted(files, key=lambda f: f[0] == dropin):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        write_file(path, data, mode=mode)
        click.echo(f"wrote {path}")

    main_config = root / "sshd_config"
    sshd = _find_sshd()
    if sshd and main_config.exists():
        result = subprocess.run([sshd, "-t", "-f", str(main_config)], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            if previous is None:
                dropin.unlink()
            else:
                write_file(dropin, previous, mode=0o644)
            raise click.ClickException(
                "sshd -t rejected the configuration; the previous drop-in was put back:\n" + result.stderr.strip()
            )
        text = main_config.read_text("utf-8", "replace")
        if not re.search(r"^\s*Include\s+\S*sshd_config\.d", text, re.M | re.I):
            click.echo(
                f"warning: {main_config} does not Include sshd_config.d/*.conf; add at its top:\n"
                f"  Include {root}/sshd_config.d/*.conf",
                err=True,
            )
        click.echo("sshd -t: configuration OK. Reload sshd to apply (e.g. systemctl reload ssh).")
    else:
        click.echo("not validated with sshd -t (no sshd or no sshd_config here).", err=True)
