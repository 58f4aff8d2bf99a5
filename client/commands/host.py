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

Then it checks, with ``sshd -T``, that sshd really uses those settings
(``_sshd_effective``); ``host check`` runs that check alone. Exit codes of both:
0 in effect, 1 not in effect (or ``sshd -t`` rejected the configuration), 4 could
not verify (no sshd, or ``sshd -T`` could not run: host keys unreadable, no
privilege separation directory).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import click

from client.clock import unix_time, utcnow
from client.errors import EXIT_KRL_OLDER, EXIT_KRL_REFUSED, EXIT_KRL_STALE, EXIT_OK, Failure
from client.files import write_atomic

from ._common import open_api

__all__ = ["host"]

DROPIN_NAME = "60-jit-ssh.conf"
_TARGET_LINE = re.compile(r"^# jit-ssh target: (\S+)$")
_MAX_DOWNLOAD = 16 * 1024 * 1024


@click.group()
def host() -> None:
    """Set up a host's sshd to trust the CA."""


def _check_server_url(url: str) -> str:
    """client.http's one URL check, reported as a bad --server value."""
    from client.http import InsecureServerURL, check_server_url

    try:
        return check_server_url(url)
    except InsecureServerURL as e:
        raise click.BadParameter(
            f"{e} (must be https://; plain http only to localhost)", param_hint="--server"
        ) from None


def _fetch(base: str, path: str, ca_bundle: str | None = None) -> bytes:
    with open_api(base, ca_bundle=ca_bundle) as api:
        data: bytes = api.get(path, signed=False, raw=True, max_bytes=_MAX_DOWNLOAD).content
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


def _connection_specs(
    _ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    from ._sshd_effective import check_connection_spec

    try:
        return tuple(check_connection_spec(v) for v in value)
    except ValueError as e:
        raise click.BadParameter(str(e), param=param) from None


def _verify_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--connection",
        "connections",
        multiple=True,
        callback=_connection_specs,
        metavar="SPEC",
        help="Also check the settings sshd applies to this connection, as sshd -T -C SPEC "
        "(e.g. user=root,host=10.0.0.5,addr=10.0.0.5), for a Match block (repeatable).",
    )(f)
    f = click.option(
        "--sshd-config",
        type=click.Path(exists=True, dir_okay=False),
        help="The sshd_config the host's sshd runs with  [default: SSHD_DIR/sshd_config]",
    )(f)
    return f


def _warn_missing_users(login_users: tuple[str, ...], where: str) -> None:
    """A login user without a local account: every certificate for it is refused.
    ``where`` says where the name came from, what to take it out of instead (``{user}``
    stands for the name)."""
    from ._sshd_effective import missing_users

    missing = missing_users(login_users)
    if not missing:
        return
    click.echo(
        f"warning: {'this login user does' if len(missing) == 1 else 'these login users do'} "
        f"not exist on this host, so no certificate can log in as "
        f"{'it' if len(missing) == 1 else 'them'}: {', '.join(missing)}",
        err=True,
    )
    for user in missing:
        click.echo(f"  fix: useradd -m {user}   (or {where.format(user=user)})", err=True)


def _verify(
    root: Path,
    main_config: Path,
    login_users: tuple[str, ...],
    connections: tuple[str, ...],
    *,
    again: str,
) -> None:
    """``sshd -T`` agrees with the drop-in, or NotInEffect / CouldNotVerify."""
    from ._sshd_effective import (
        CouldNotVerify,
        Expected,
        ca_signature_algorithms,
        find_sshd,
        verify,
    )

    dropin = root / "sshd_config.d" / DROPIN_NAME
    state = root / "jit-ssh"
    text = dropin.read_text("utf-8", "replace") if dropin.exists() else ""
    # What the drop-in itself says (host setup wrote it from this layout).
    trusted = _dropin_value(text, "TrustedUserCAKeys") or str(state / "trusted_user_ca_keys")
    expected = Expected(
        dropin=dropin,
        trusted_user_ca_keys=trusted,
        ca_signature_algorithms=ca_signature_algorithms(trusted),
        revoked_keys=_dropin_value(text, "RevokedKeys") or str(state / "revoked_keys.krl"),
        authorized_principals_file=_dropin_value(text, "AuthorizedPrincipalsFile")
        or f"{state / 'principals'}/%u",
    )
    sshd = find_sshd()
    if sshd is None:
        raise CouldNotVerify(
            "could not verify the settings sshd uses: no sshd here (looked on PATH, in /usr/sbin "
            "and /usr/local/sbin)\n  fix: install OpenSSH's server (Debian: apt-get install "
            f"openssh-server), then run: {again}"
        )
    checked = verify(
        sshd,
        main_config,
        expected,
        login_users=login_users,
        connections=connections,
        again=again,
    )
    click.echo(
        f"sshd -T -f {main_config}: sshd uses the jit-ssh settings "
        f"(TrustedUserCAKeys {expected.trusted_user_ca_keys}, RevokedKeys {expected.revoked_keys}, "
        f"AuthorizedPrincipalsFile {expected.authorized_principals_file}, PubkeyAuthentication yes) "
        f"for {_and(checked)}."
    )


@host.command("setup")
@click.option(
    "--ca-keys",
    type=click.Path(exists=True, dir_okay=False),
    help="A TrustedUserCAKeys file (jit-ssh ca show).",
)
@click.option("--server", help="Fetch the CA keys from the jit-ssh server at this URL instead.")
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False),
    help="CA bundle to verify the server's TLS certificate.",
)
@click.option(
    "--target", required=True, help="The policy target this host belongs to, e.g. prod-db."
)
@click.option(
    "--login-user",
    "login_users",
    multiple=True,
    help="Local account certificates may log in as (repeatable; default from the server's policy).",
)
@click.option(
    "--principal",
    "principals",
    multiple=True,
    help="Principal the login users accept, e.g. root@prod-db (repeatable).",
)
@click.option(
    "--sshd-dir",
    default="/etc/ssh",
    show_default=True,
    type=click.Path(file_okay=False),
    help="sshd's configuration directory.",
)
@_verify_options
@click.option("--dry-run", is_flag=True, help="Print what would be written, write nothing.")
def host_setup(
    ca_keys: str | None,
    server: str | None,
    ca_bundle: str | None,
    target: str,
    login_users: tuple[str, ...],
    principals: tuple[str, ...],
    sshd_dir: str,
    sshd_config: str | None,
    connections: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Configure this host's sshd to accept jit-ssh certificates for TARGET.

    Validates the result with `sshd -t`, and puts the previous drop-in back if
    sshd rejects it. Then checks with `sshd -T` that sshd really uses the
    drop-in's settings (see `jit-ssh host check`), and warns about login users
    that have no account here. Reload sshd afterwards (systemctl reload ssh).

    \b
    Exit codes:
      0  written, and sshd -T shows sshd uses it (or there is no sshd_config
         in SSHD_DIR to check against: said so on stderr);
      1  refused, sshd -t rejected it, or sshd does not use the settings
         (each wrong setting, its cause and the fix are printed);
      4  could not verify: no sshd, or sshd -T could not run.
    """
    from ca import load_public_keys, validate_principals
    from ca.krl import empty_krl, parse_krl

    if bool(ca_keys) == bool(server):
        raise click.UsageError("give exactly one of --ca-keys FILE or --server URL")
    from ca.errors import InvalidName
    from ca.names import check_login_user, check_target

    try:
        check_target(target, field="--target")
    except InvalidName as e:
        raise click.BadParameter(e.message, param_hint="--target") from None

    users_from = "leave out --login-user {user}"
    if server:
        base = _check_server_url(server)
        ca_text = _fetch(base, "/v1/ca.pub", ca_bundle).decode("ascii", "replace")
        if not principals or not login_users:
            from client.errors import BadServerAnswer
            from client.verify import check_target_list

            try:
                with open_api(base, ca_bundle=ca_bundle) as api:
                    known = check_target_list(api.get("/v1/targets", signed=False))
            except BadServerAnswer as e:
                raise click.ClickException(
                    f"{base}/v1/targets did not answer with a target list ({e})"
                ) from None
            if target not in known:
                raise click.ClickException(
                    f"the server's policy has no target {target!r} (known: {', '.join(sorted(known)) or 'none'})"
                )
            principals = principals or known[target].principals
            if not login_users:
                users_from = f"take {{user}} out of target {target}'s login_users in the policy"
            login_users = login_users or known[target].login_users
    else:
        ca_text = Path(ca_keys).read_text("ascii", "replace")  # type: ignore[arg-type]
    if not login_users:
        raise click.UsageError(
            "give the login users with --login-user (or use --server to take them from the policy)"
        )
    for user in login_users:
        try:
            check_login_user(user, field="login user")
        except InvalidName as e:
            raise click.BadParameter(e.message, param_hint="--login-user") from None
    if not principals:
        raise click.UsageError(
            "give the target's principals with --principal (e.g. --principal root@prod-db)"
        )
    princ = validate_principals(principals, field="--principal")
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
        except Exception:
            krl_ok = False
    if not krl_ok:
        # Version 0: this placeholder revokes nothing, so any KRL from the server
        # must supersede it. sync-krl refuses a KRL older than the one in place;
        # stamped with this host's clock, the placeholder would keep the
        # server's KRLs (and every revocation) out for as long as the host's
        # clock runs ahead of the server's.
        files.append((krl_path, empty_krl(version=0, now=utcnow()), 0o644))

    if dry_run:
        _warn_missing_users(login_users, users_from)
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
        write_atomic(path, data, mode=mode)
        click.echo(f"wrote {path}")

    _warn_missing_users(login_users, users_from)
    main_config = Path(sshd_config) if sshd_config else root / "sshd_config"
    if not main_config.exists():
        click.echo(
            f"not verified: there is no {main_config} for sshd to read these files with. "
            f"On the host, check with: jit-ssh host check --sshd-dir {root} --sshd-config FILE",
            err=True,
        )
        return
    again = _check_command(root, sshd_config)
    from ._sshd_effective import CouldNotVerify, find_sshd, run_sshd_test, trouble_fix

    sshd = find_sshd()
    if sshd is not None:
        result = run_sshd_test(sshd, main_config, "-t")
        if result.returncode != 0:
            if previous is None:
                dropin.unlink()
            else:
                write_atomic(dropin, previous, mode=0o644)
            said = result.stderr.strip() or f"exit status {result.returncode}"
            fix = trouble_fix(result.stderr)
            if fix:
                raise CouldNotVerify(
                    f"could not verify the configuration: sshd -t -f {main_config} failed, so the "
                    f"previous drop-in was put back:\n  {said}\n  fix: {fix}"
                )
            raise Failure(
                "sshd -t rejected the configuration; the previous drop-in was put back:\n"
                + "\n".join(f"  {line}" for line in said.splitlines())
            )
    _verify(root, main_config, login_users, connections, again=again)
    click.echo("Reload sshd to apply (e.g. systemctl reload ssh).")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _check_command(root: Path, sshd_config: str | None) -> str:
    cmd = "jit-ssh host check"
    if root != Path("/etc/ssh"):
        cmd += f" --sshd-dir {root}"
    if sshd_config:
        cmd += f" --sshd-config {Path(sshd_config)}"
    return cmd


@host.command("check")
@click.option(
    "--sshd-dir",
    default="/etc/ssh",
    show_default=True,
    type=click.Path(file_okay=False),
    help="sshd's configuration directory, as given to host setup.",
)
@click.option(
    "--login-user",
    "login_users",
    multiple=True,
    help="Local account certificates log in as (repeatable; default: each one host setup "
    "wrote a principals file for).",
)
@_verify_options
def host_check(
    sshd_dir: str,
    login_users: tuple[str, ...],
    sshd_config: str | None,
    connections: tuple[str, ...],
) -> None:
    """Check that this host's sshd really uses what host setup wrote.

    Runs `sshd -T -f SSHD_CONFIG` (the settings sshd runs with; `-C` for a
    connection as each login user, where a Match block may differ) and checks
    TrustedUserCAKeys, RevokedKeys and AuthorizedPrincipalsFile against the
    jit-ssh drop-in, and PubkeyAuthentication yes. Also checks that the CA keys
    and the KRL are in place, and warns about login users with no account here.
    It reads the configuration on disk: what sshd uses after its next reload.

    \b
    Exit codes:
      0  sshd uses the jit-ssh settings;
      1  it does not: each wrong setting, what sshd reports, the likely cause
         (the drop-in is not included, or an earlier setting wins) and the fix;
      4  could not verify: no sshd, or sshd -T failed (syntax error, host keys
         unreadable when not root, no /run/sshd).
    """
    from ca import JitSshError, load_public_keys
    from ca.krl import parse_krl

    root = Path(sshd_dir).absolute()
    dropin = root / "sshd_config.d" / DROPIN_NAME
    if not dropin.exists():
        raise Failure(
            f"there is no jit-ssh drop-in at {dropin}\n"
            "  fix: jit-ssh host setup --server URL --target TARGET"
            + (f" --sshd-dir {root}" if root != Path("/etc/ssh") else "")
        )
    text = dropin.read_text("utf-8", "replace")
    trusted = Path(
        _dropin_value(text, "TrustedUserCAKeys") or root / "jit-ssh" / "trusted_user_ca_keys"
    )
    krl = Path(_dropin_value(text, "RevokedKeys") or root / "jit-ssh" / "revoked_keys.krl")
    again = "jit-ssh host setup again"
    try:
        keys = load_public_keys(trusted.read_text("ascii"), field=str(trusted))
    except (OSError, UnicodeDecodeError, JitSshError) as e:
        raise Failure(
            f"cannot read the CA keys sshd is told to trust ({trusted}): {e}\n  fix: run {again}"
        ) from None
    if not keys:
        raise Failure(
            f"{trusted} holds no CA key: sshd would accept no certificate\n  fix: run {again}"
        )
    try:
        parse_krl(krl.read_bytes())
    except (OSError, JitSshError) as e:
        # sshd refuses EVERY key when RevokedKeys names a missing or unreadable file.
        raise Failure(
            f"the KRL at {krl} is missing or invalid ({e}): sshd refuses every key while it is\n"
            f"  fix: run {again} (it writes a valid empty KRL), then jit-ssh host sync-krl"
        ) from None
    given_users = bool(login_users)
    pdir = Path(
        _dropin_value(text, "AuthorizedPrincipalsFile") or f"{root}/jit-ssh/principals/%u"
    ).parent
    if not login_users:
        login_users = tuple(
            sorted(p.name for p in pdir.glob("*") if p.is_file() and not p.name.startswith("."))
        )
    _warn_missing_users(
        login_users,
        "leave out --login-user {user}"
        if given_users
        else f"take {{user}} out of the target's login_users, then delete {pdir}/{{user}}",
    )
    main_config = Path(sshd_config) if sshd_config else root / "sshd_config"
    if not main_config.exists():
        raise Failure(
            f"there is no {main_config}\n  fix: name the sshd_config sshd runs with: --sshd-config FILE"
        )
    _verify(root, main_config, login_users, connections, again=_check_command(root, sshd_config))


@host.command("sync-krl")
@click.option("--server", required=True, help="The jit-ssh server URL.")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="The RevokedKeys file sshd reads."
)
@click.option(
    "--max-age",
    default="1h",
    show_default=True,
    help="Exit non-zero when the installed KRL is older than this.",
)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False),
    help="CA bundle to verify the server's TLS certificate.",
)
@click.option("--timeout", type=float, default=15.0, show_default=True)
@click.option(
    "--trusted-ca-keys",
    type=click.Path(dir_okay=False),
    help="This host's TrustedUserCAKeys file: the KRL may revoke certificates of these CA keys only "
    "(default: the file the jit-ssh drop-in names beside RevokedKeys OUT, else trusted_user_ca_keys beside OUT).",
)
@click.option(
    "--max-clock-skew",
    default="5m",
    show_default=True,
    help="A KRL version (a revocation time) further ahead of this host's clock is refused as implausible.",
)
@click.option(
    "--accept-older",
    is_flag=True,
    help="Install the server's KRL even when it is older than the installed one, once you have checked "
    "why (a server database restored from backup). Logged as a warning.",
)
def sync_krl(
    server: str,
    out: str,
    max_age: str,
    ca_bundle: str | None,
    timeout: float,
    trusted_ca_keys: str | None,
    max_clock_skew: str,
    accept_older: bool,
) -> None:
    """Fetch the server's KRL and replace OUT atomically, if it is valid.

    Uses the ETag (nothing is downloaded when nothing changed), checks the
    KRL's SHA-256 and its whole structure, and installs only what jit-ssh
    itself emits: certificate sections for this host's trusted CA keys,
    revoking serials or key ids. A KRL that revokes plain keys, fingerprints,
    a CA key itself or every CA's certificates is refused, and so is a version
    from the future (beyond --max-clock-skew). It never installs a KRL older
    than the one in place, unless --accept-older. On any failure the last good
    KRL stays. Run it every minute from a systemd timer or cron.

    \b
    Exit codes:
      0  OUT is fresh (installed, or unchanged);
      4  OUT could not be refreshed for longer than --max-age, or is missing
         (a stale KRL may miss revocations);
      5  the server's KRL is older than the one in place, which is kept: was the
         server's database restored from an older backup? Check, then run again
         with --accept-older;
      6  the server's KRL was refused (it revokes what jit-ssh never revokes, or
         its version is implausible); the one in place is kept.
    """
    import hashlib
    import json

    from ca import InvalidKRL, UnacceptableKRL, parse_duration
    from ca.errors import JitSshError
    from ca.krl import MAX_KRL_SIZE, accept_krl, krl_version_plausible, parse_krl, restrict_krl
    from client.http import ApiError

    base = _check_server_url(server)
    limit = parse_duration(max_age, field="--max-age").total_seconds()
    skew = parse_duration(max_clock_skew, field="--max-clock-skew")
    target = Path(out)
    trusted = _trusted_ca_blobs(target, trusted_ca_keys)
    now = utcnow()
    state_path = target.with_name(target.name + ".state.json")
    try:
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
    except ValueError:
        state = {}
    current = None
    if target.exists():
        try:
            current = parse_krl(target.read_bytes())
        except Exception:
            current = None
    # Whether the installed KRL's version still means anything: one that lies
    # in the future (an older jit-ssh's huge counter, a KRL from a wrong clock)
    # would keep every later KRL out as "older", so it no longer counts.
    comparable = current is not None
    use_etag = current is not None
    if current is not None:
        if not krl_version_plausible(current.version, now=now, max_clock_skew=skew):
            comparable = use_etag = False
            click.echo(
                f"WARNING: the installed KRL at {target} has an implausible version "
                f"({_describe_version(current.version)}): it no longer counts as newer, "
                "and the server's KRL replaces it.",
                err=True,
            )
        try:
            accept_krl(target.read_bytes(), trusted_ca_keys=trusted, now=now, max_clock_skew=skew)
        except UnacceptableKRL as e:
            # Fetch in full: even an unchanged server KRL must replace this one.
            use_etag = False
            if e.field != "version":
                click.echo(
                    f"WARNING: the installed KRL at {target} is not one jit-ssh would write ({e}); "
                    "the server's KRL replaces it.",
                    err=True,
                )
    headers = {"User-Agent": "jit-ssh-sync-krl/1"}
    if state.get("etag") and use_etag:
        headers["If-None-Match"] = state["etag"]

    def stale_exit(reason: str) -> None:
        age = unix_time() - float(state.get("synced_at", 0))
        if current is None or age > limit:
            click.echo(
                f"WARNING: {reason}; the KRL at {target} is {'missing or corrupt' if current is None else f'{int(age)} s old'}"
                f" (limit {int(limit)} s): revocations may be missed",
                err=True,
            )
            raise click.exceptions.Exit(EXIT_KRL_STALE)
        click.echo(f"warning: {reason}; keeping the last good KRL ({int(age)} s old)", err=True)
        raise click.exceptions.Exit(EXIT_OK)

    try:
        # The CLI's one HTTP client: no redirect followed, TLS verified, at most MAX_KRL_SIZE read,
        # and any answer but 200 or 304 an error.
        with open_api(base, ca_bundle=ca_bundle, timeout=timeout, retries=1) as api:
            resp = api.get(
                "/v1/krl",
                signed=False,
                raw=True,
                headers=headers,
                also_ok=(304,),
                max_bytes=MAX_KRL_SIZE,
            )
    except ApiError as e:
        stale_exit(f"{base}/v1/krl answered HTTP {e.status}")
        return
    except JitSshError as e:
        stale_exit(f"could not fetch {base}/v1/krl: {e}")
        return
    if resp.status_code == 304:
        state["synced_at"] = unix_time()
        _write_state(state_path, state)
        click.echo(f"{target}: unchanged (version {current.version if current else '?'})")
        return
    if resp.status_code != 200:
        stale_exit(f"{base}/v1/krl answered HTTP {resp.status_code}")
        return
    data = resp.content
    want = resp.headers.get("X-KRL-SHA256")
    if len(data) > MAX_KRL_SIZE:
        stale_exit("the KRL is larger than OpenSSH can load")
    if want and hashlib.sha256(data).hexdigest() != want.lower():
        stale_exit("the KRL does not match its SHA-256 (cut short in transit?)")
    try:
        new = accept_krl(data, trusted_ca_keys=trusted, now=now, max_clock_skew=skew)
    except UnacceptableKRL as e:
        kept = f"version {current.version}" if current is not None else "missing or corrupt"
        click.echo(
            f"ERROR: {base}/v1/krl: {e}\nThe KRL at {target} is unchanged ({kept}).", err=True
        )
        raise click.exceptions.Exit(EXIT_KRL_REFUSED) from None
    except InvalidKRL as e:
        stale_exit(f"the server sent an invalid KRL ({e})")
        return
    if comparable and current is not None and new.version < current.version:
        if not accept_older:
            click.echo(
                f"ERROR: the server's KRL ({_describe_version(new.version)}) is older than the installed one "
                f"({_describe_version(current.version)}); keeping the installed KRL at {target}.\n"
                "Was the server's database restored from an older backup, or is this the wrong server? "
                "Revocations made after that backup may be lost on the server: check them and revoke again "
                "what is missing. The server's next revocation is newer again and installs by itself; "
                "to install the server's KRL now, run again with --accept-older.",
                err=True,
            )
            raise click.exceptions.Exit(EXIT_KRL_OLDER)
        click.echo(
            f"WARNING: --accept-older: installing the server's KRL ({_describe_version(new.version)}) over a newer "
            f"one ({_describe_version(current.version)}) at {target}; revocations only the replaced KRL held "
            "are no longer enforced here.",
            err=True,
        )
        state["accepted_older"] = {"from": current.version, "to": new.version, "at": unix_time()}
    # Only the sections for the CA keys this host trusts reach sshd: another
    # CA that sshd trusts through some other file must not be revocable by
    # whoever serves this KRL (ca.krl.restrict_krl).
    installed = restrict_krl(new, trusted_ca_keys=trusted)
    kept_krl = parse_krl(installed)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, installed, mode=0o644)
    state.update(
        {"etag": resp.headers.get("ETag"), "synced_at": unix_time(), "version": new.version}
    )
    _write_state(state_path, state)
    click.echo(f"{target}: installed KRL version {new.version} ({kept_krl.summary()})")
    untrusted = [s for s in new.cert_sections if s.ca_key not in trusted]
    if untrusted:
        click.echo(
            f"note: left out the KRL's sections for {len(untrusted)} CA key(s) this host does not "
            "trust (a new CA key being rolled out? run jit-ssh host setup again once it is published).",
            err=True,
        )


def _describe_version(version: int) -> str:
    from datetime import datetime

    from ca.krl import krl_version_time

    moment = krl_version_time(version)
    if moment is None:
        return f"version {version}, a time past the year 9999"
    if moment < datetime(2000, 1, 1, tzinfo=UTC):
        return f"version {version}, numbered by an older jit-ssh"
    return f"version {version}, newest revocation at {moment.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


def _dropin_value(text: str, keyword: str) -> str | None:
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and parts[0].lower() == keyword.lower():
            return parts[1].strip()
    return None


def _trusted_ca_keys_path(out: Path, explicit: str | None) -> Path:
    """This host's TrustedUserCAKeys file, as host setup laid it out (see the module docstring).

    Taken from the host, never from the server: the server's word on which CA
    keys to trust is what the KRL check must not depend on.
    """
    if explicit:
        return Path(explicit)
    out_abs = out.absolute()
    # host setup writes <sshd dir>/jit-ssh/revoked_keys.krl and the drop-in in
    # <sshd dir>/sshd_config.d; Debian's sshd_config includes /etc/ssh's.
    for sshd_dir in dict.fromkeys((out_abs.parent.parent, Path("/etc/ssh"))):
        dropin = sshd_dir / "sshd_config.d" / DROPIN_NAME
        try:
            text = dropin.read_text("utf-8", "replace")
        except OSError:
            continue
        revoked, trusted = (
            _dropin_value(text, "RevokedKeys"),
            _dropin_value(text, "TrustedUserCAKeys"),
        )
        if revoked and trusted and Path(revoked).absolute() == out_abs:
            return Path(trusted)
    beside = out_abs.with_name("trusted_user_ca_keys")
    if beside.exists():
        return beside
    raise click.UsageError(
        f"cannot find this host's trusted CA keys: no {DROPIN_NAME} names {out} as RevokedKeys and there is "
        f"no {beside}; name the TrustedUserCAKeys file with --trusted-ca-keys"
    )


def _trusted_ca_blobs(out: Path, explicit: str | None) -> list[bytes]:
    from ca import JitSshError, load_public_keys

    path = _trusted_ca_keys_path(out, explicit)
    try:
        keys = load_public_keys(path.read_text("ascii"), field=str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise click.ClickException(
            f"cannot read this host's trusted CA keys from {path}: {e}"
        ) from None
    except JitSshError as e:
        raise click.ClickException(f"{path} is not a TrustedUserCAKeys file: {e}") from None
    if not keys:
        raise click.ClickException(f"{path} holds no CA key: nothing to check the KRL against")
    return [k.blob for k in keys]


def _write_state(path: Path, state: dict) -> None:  # type: ignore[type-arg]
    import json

    write_atomic(path, json.dumps(state) + "\n", mode=0o644)
