"""The engineer's local side of an access: key pair, certificate, agent, ssh_config.

One key and certificate per request (several accesses to one target live side by
side), under ``~/.ssh/jit-ssh/``, each named ``<target>+<request id>`` (``+`` is in
neither a target nor a request id, so the name splits one way only):

* ``<target>+<id>`` and ``<target>+<id>.pub``: a fresh Ed25519 key made for this
  access (0600);
* ``<target>+<id>-cert.pub``: its certificate;
* ``<target>+<id>.json``: request id, serial, window, login user, server, and how long
  before the end ``status`` and ``ssh`` warn (the rule's ``warn_before``; a record
  written before it was kept, or holding no plain number of seconds, gets 5 minutes);
* ``config``: an ssh_config to ``Include`` from ``~/.ssh/config``, with a
  ``Host <target>`` block pointing at the target's access with the most time
  left, and a ``Host <target>+<id>`` alias for each access.

Files of the older layout, one access per target (``<target>``,
``<target>-cert.pub``, ``<target>.json``), are moved to their request's names
the first time they are read, with a note; one that fails the checks below is
skipped with a warning, as before.

Nothing reaches ssh_config or ``ssh``'s argv unchecked: a certificate is
saved only once :func:`client.verify.verify_issued` passed it, and every
record read back from disk (it may be stale, from an older version, or
edited) is checked again by :func:`check_record`; one that fails is skipped
with a warning, never written into ssh_config nor used by ``jit-ssh ssh``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import unicodedata
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca.errors import InvalidName, JitSshError
from ca.names import check_login_user, check_principal, check_target

from .clock import utcnow
from .files import write_atomic
from .settings import keys_dir
from .verify import MAX_WARN_BEFORE_SECONDS, check_request_id, check_serial

__all__ = [
    "AccessRecord",
    "DEFAULT_WARN_BEFORE_SECONDS",
    "InvalidAccessRecord",
    "SSH_AUTH_OPTIONS",
    "access_name",
    "key_path_for",
    "check_record",
    "check_warn_before",
    "ssh_path",
    "new_key_pair",
    "save_access",
    "refresh_warn_before",
    "load_accesses",
    "best_access",
    "remove_access",
    "remove_expired",
    "agent_add",
    "agent_holds",
    "agent_remove",
    "write_ssh_config",
]

#: What every ssh to a jit-ssh access is given (``ssh -o`` and the ssh_config blocks alike):
#: the certificate or nothing. A refused certificate ends the connection with "Permission
#: denied (publickey)" instead of falling back to a password or keyboard-interactive prompt,
#: and no other key from the agent is offered in its place.
SSH_AUTH_OPTIONS: tuple[tuple[str, str], ...] = (
    ("IdentitiesOnly", "yes"),
    ("PreferredAuthentications", "publickey"),
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
)


#: The lead time of an expiry warning when the record does not say (the policy's default).
DEFAULT_WARN_BEFORE_SECONDS = 300


class InvalidAccessRecord(JitSshError):
    """A stored access record (``<target>+<id>.json``) that fails the checks of what may reach ssh."""

    code = "invalid_access_record"


@dataclass(frozen=True)
class AccessRecord:
    target: str
    request_id: str
    serial: str
    valid_after: str
    valid_before: str
    principals: list[str]
    login_user: str | None
    server: str
    key_path: str
    cert_path: str
    #: After ``jit-ssh extend``: the request the files are named after (the access's first),
    #: while ``request_id`` and ``serial`` are those of the certificate it now runs under.
    files_id: str | None = None

    @property
    def name_id(self) -> str:
        """The request id in this access's file names and ssh_config alias."""
        return self.files_id or self.request_id

    #: How long before ``valid_before`` the engineer is warned (the rule's ``warn_before``, as
    #: the server said when the certificate was fetched). A default: older records lack it.
    warn_before_seconds: int = DEFAULT_WARN_BEFORE_SECONDS

    def seconds_left(self, now: datetime) -> int:
        end = datetime.fromisoformat(self.valid_before.replace("Z", "+00:00"))
        return max(0, int((end - now).total_seconds()))

    @property
    def warn_at(self) -> datetime:
        """From when ``status`` and ``ssh`` warn that this access is about to expire."""
        end = datetime.fromisoformat(self.valid_before.replace("Z", "+00:00"))
        return end - timedelta(seconds=self.warn_before_seconds)

    def expiring(self, now: datetime) -> bool:
        """Whether the access is still valid at ``now`` but within its warning lead time."""
        return 0 < self.seconds_left(now) and now >= self.warn_at

    @property
    def alias(self) -> str:
        """This access's own ssh_config Host alias (and file name): ``<target>+<request id>``."""
        return access_name(self.target, self.name_id)


def access_name(target: str, request_id: str) -> str:
    """``<target>+<request id>``: the name of one access's files and of its ssh_config alias."""
    check_target(target, field="target")
    check_request_id(request_id, field="request_id")
    # A request id ending in "-cert" would name its public key "<t>+<id>-cert.pub",
    # the certificate file of request "<id minus -cert>".
    if request_id.endswith("-cert"):
        raise InvalidName(f"request id {request_id!r} may not end in '-cert'", field="request_id")
    return f"{target}+{request_id}"


def key_path_for(target: str, request_id: str, directory: Path | None = None) -> Path:
    """Where the private key of the access for ``request_id`` lives."""
    return (directory or keys_dir()) / access_name(target, request_id)


# Characters a path may hold as it is in ssh_config or an -o option: anything
# else gets the path double-quoted.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./@+:-]+")


def ssh_path(path: str | os.PathLike[str], *, quote: bool = True) -> str:
    """A local file path as ssh_config (and ``ssh -o``, ``ssh -i``) must be given it.

    ssh expands ``%`` tokens in IdentityFile and CertificateFile (so ``%`` is
    written ``%%``), ``${VAR}`` and a leading ``~``, and splits arguments at
    whitespace unless double-quoted; there is no escape for a quote or a
    control character, so a path holding one is refused.
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        raise InvalidName(f"path {text!r} must be absolute for ssh", field="path")
    bad = next(
        (
            c
            for c in text
            if c in '"\\$'
            or ord(c) < 0x20
            or ord(c) == 0x7F
            or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
        ),
        None,
    )
    if bad is not None:
        raise InvalidName(
            f"path {text!r} holds {bad!r}, which ssh cannot be given safely", field="path"
        )
    text = text.replace("%", "%%")
    if quote and not _PLAIN_PATH.fullmatch(text):
        return f'"{text}"'
    return text


def check_warn_before(value: object) -> int | None:
    """A record's ``warn_before_seconds`` if it is a whole number of seconds from 0 to 24 h,
    else None (the record was edited, or written by something else)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_WARN_BEFORE_SECONDS else None


def check_record(record: AccessRecord, directory: Path, *, legacy: bool = False) -> AccessRecord:
    """Check a stored record as if it had just come from the server; raise :class:`InvalidAccessRecord` if it fails.

    ``legacy``: a record of the older layout, whose files are named after the target alone.
    A ``warn_before_seconds`` that is not a plain number of seconds does not reach ssh: it is
    replaced by the default (:func:`_load` says so) rather than losing the access.
    """
    try:
        check_target(record.target, field="target")
        # The same checks as for the server's answer the record was made from.
        check_request_id(record.request_id, field="request_id")
        if record.files_id is not None:
            check_request_id(record.files_id, field="files_id")
        check_serial(record.serial)
        for name in ("valid_after", "valid_before"):
            value = getattr(record, name)
            if not isinstance(value, str) or len(value) > 40:
                raise InvalidName(f"{name} is not a time", field=name)
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        if not isinstance(record.principals, list) or not record.principals:
            raise InvalidName("principals must be a non-empty list", field="principals")
        for p in record.principals:
            check_principal(p)
        if record.login_user is not None:
            check_login_user(record.login_user)
        if not isinstance(record.server, str):
            raise InvalidName("server must be text", field="server")
        # The files are where this machine keeps them for that access, nowhere else.
        key = (
            directory / record.target
            if legacy
            else key_path_for(record.target, record.name_id, directory)
        )
        if record.key_path != str(key) or record.cert_path != f"{key}-cert.pub":
            raise InvalidName(f"key or certificate path is not {key}[-cert.pub]", field="key_path")
        ssh_path(key)
        ssh_path(record.cert_path)
    except JitSshError as e:
        raise InvalidAccessRecord(
            f"access record for {str(record.target)[:64]!r}: {e}", field=e.field
        ) from None
    except (ValueError, TypeError) as e:
        raise InvalidAccessRecord(f"access record for {str(record.target)[:64]!r}: {e}") from None
    if check_warn_before(record.warn_before_seconds) is None:
        return replace(record, warn_before_seconds=DEFAULT_WARN_BEFORE_SECONDS)
    return record


def new_key_pair(target: str, request_id: str, directory: Path | None = None) -> tuple[Path, str]:
    """A fresh Ed25519 key for the access of ``request_id``; returns the private key path and
    the public key line. Another request's key, to this target or another, is left alone."""
    d = directory or keys_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    _migrate_legacy(d)
    path = key_path_for(target, request_id, d)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    pub += f" jit-ssh-{path.name}"
    write_atomic(path, pem, mode=0o600)
    write_atomic(path.with_name(path.name + ".pub"), pub + "\n")
    old_cert = path.with_name(path.name + "-cert.pub")
    if old_cert.exists():
        old_cert.unlink()
    return path, pub


def save_access(record: AccessRecord, certificate: str) -> None:
    """Write the (verified) certificate, the record and ssh_config, once the record passes :func:`check_record`."""
    directory = Path(record.key_path).parent
    check_record(record, directory)
    write_atomic(record.cert_path, certificate.strip() + "\n")
    write_atomic(_record_path(record), json.dumps(asdict(record), indent=2) + "\n")
    write_ssh_config(directory)


def refresh_warn_before(record: AccessRecord, seconds: int) -> AccessRecord:
    """The record with the lead time the server states now (the rule's ``warn_before`` under
    the current policy), written back when it changed."""
    if check_warn_before(seconds) is None or seconds == record.warn_before_seconds:
        return record
    fresh = replace(record, warn_before_seconds=seconds)
    check_record(fresh, Path(fresh.key_path).parent)
    write_atomic(_record_path(fresh), json.dumps(asdict(fresh), indent=2) + "\n")
    return fresh


def _record_path(record: AccessRecord) -> Path:
    key = Path(record.key_path)
    return key.with_name(key.name + ".json")


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _read_record(p: Path) -> AccessRecord | None:
    try:
        return AccessRecord(**json.loads(p.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _migrate_legacy(d: Path) -> bool:
    """Move each access of the older one-per-target layout to its request's names.

    A record that fails :func:`check_record` stays where it is, skipped with a warning
    each time (as the older versions did); so does one whose new names are taken.
    Returns whether any moved (ssh_config is then rewritten with the new names).
    """
    moved_any = False
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        if "+" in p.name:
            continue
        record = _read_record(p)
        if record is None:
            continue
        try:
            if p.name != f"{record.target}.json":
                raise InvalidAccessRecord(
                    f"{p.name} holds the record of target {str(record.target)[:64]!r}"
                )
            check_record(record, d, legacy=True)
            new_key = key_path_for(record.target, record.request_id, d)
        except JitSshError as e:
            _warn(f"skipping {p}: {e}")
            continue
        moved = replace(record, key_path=str(new_key), cert_path=f"{new_key}-cert.pub")
        old_key = Path(record.key_path)
        olds = (old_key, old_key.with_name(old_key.name + ".pub"), Path(record.cert_path), p)
        if _read_record(_record_path(moved)) == moved:
            # Moved already, but interrupted before the old files were removed.
            for old in olds:
                old.unlink(missing_ok=True)
            continue
        if _record_path(moved).exists():
            _warn(
                f"skipping {p}: {_record_path(moved).name} already holds request {record.request_id}"
            )
            continue
        moves = (
            (old_key, new_key, 0o600),
            (
                old_key.with_name(old_key.name + ".pub"),
                new_key.with_name(new_key.name + ".pub"),
                0o644,
            ),
            (Path(record.cert_path), Path(moved.cert_path), 0o644),
        )
        # Copied through the one atomic writer (the key keeps 0600), the old files removed
        # only once the new record is in place: an interruption leaves both, never neither.
        for old, new, mode in moves:
            if old.exists():
                write_atomic(new, old.read_bytes(), mode=mode)
        write_atomic(_record_path(moved), json.dumps(asdict(moved), indent=2) + "\n")
        for old in olds:
            old.unlink(missing_ok=True)
        click.echo(
            f"note: the access to {record.target} (request {record.request_id}) now lives in "
            f"{new_key} (one key per request)",
            err=True,
        )
        moved_any = True
    if moved_any:
        write_ssh_config(d)
    return moved_any


def load_accesses(directory: Path | None = None) -> list[AccessRecord]:
    """Every stored access that passes :func:`check_record` (the others are skipped with a
    warning), expired ones included, by target and then most time left first."""
    d = directory or keys_dir()
    _migrate_legacy(d)
    return _load(d)


def _load(d: Path) -> list[AccessRecord]:
    out = []
    for p in sorted(d.glob("*+*.json")) if d.is_dir() else []:
        record = _read_record(p)
        if record is None:
            continue
        try:
            if p.name != f"{record.target}+{record.name_id}.json":
                raise InvalidAccessRecord(
                    f"{p.name} holds the record of request {str(record.name_id)[:64]!r} "
                    f"to target {str(record.target)[:64]!r}"
                )
            checked = check_record(record, d)
            if check_warn_before(record.warn_before_seconds) is None:
                _warn(
                    f"{p}: warn_before_seconds {str(record.warn_before_seconds)[:32]!r} is not "
                    f"a number of seconds from 0 to {MAX_WARN_BEFORE_SECONDS}; warning "
                    f"{DEFAULT_WARN_BEFORE_SECONDS // 60} minutes before the access ends"
                )
            out.append(checked)
        except InvalidAccessRecord as e:
            _warn(f"skipping {p}: {e}")
    out.sort(key=lambda r: (r.target, -_end(r)))
    return out


def _end(record: AccessRecord) -> float:
    return datetime.fromisoformat(record.valid_before.replace("Z", "+00:00")).timestamp()


def best_access(records: list[AccessRecord], target: str, now: datetime) -> AccessRecord | None:
    """The access to ``target`` valid longest from ``now``, if any is valid at all."""
    valid = [r for r in records if r.target == target and r.seconds_left(now) > 0]
    return max(valid, key=_end, default=None)


def remove_access(record: AccessRecord) -> None:
    key = Path(record.key_path)
    for p in (key, key.with_name(key.name + ".pub"), Path(record.cert_path), _record_path(record)):
        p.unlink(missing_ok=True)
    write_ssh_config(key.parent)


def remove_expired(directory: Path | None = None, *, now: datetime) -> list[AccessRecord]:
    """Delete the key, certificate and record of every access whose window has passed
    (ssh-agent dropped them by itself: they were added for exactly that long)."""
    d = directory or keys_dir()
    gone = [r for r in load_accesses(d) if r.seconds_left(now) <= 0]
    for r in gone:
        key = Path(r.key_path)
        for p in (key, key.with_name(key.name + ".pub"), Path(r.cert_path), _record_path(r)):
            p.unlink(missing_ok=True)
    if gone:
        write_ssh_config(d)
    return gone


def _block(host: str, r: AccessRecord, *, hostname: str | None = None) -> list[str]:
    lines = [f"Host {host}"]
    if hostname:
        lines += [f"    HostName {hostname}"]
    if r.login_user:
        lines += [f"    User {r.login_user}"]
    lines += [
        f"    IdentityFile {ssh_path(r.key_path)}",
        f"    CertificateFile {ssh_path(r.cert_path)}",
    ]
    lines += [f"    {name} {value}" for name, value in SSH_AUTH_OPTIONS]
    return [*lines, ""]


def write_ssh_config(directory: Path) -> Path:
    """``~/.ssh/jit-ssh/config``: ``Include ~/.ssh/jit-ssh/config`` from ``~/.ssh/config``.

    ``Host <target>`` uses the target's valid access with the most time left;
    ``Host <target>+<request id>`` names each valid access. Only records that
    pass :func:`check_record` are written, and every value in it went through
    :mod:`ca.names` or :func:`ssh_path`. Host keys are checked as the rest of
    your ssh_config says: nothing here changes StrictHostKeyChecking or
    known_hosts.
    """
    where = ssh_path(directory / "config")
    lines = [
        "# Managed by jit-ssh: one block per target (its access with the most time left)",
        "# and one alias <target>+<request id> per access. Include it from ~/.ssh/config:",
        f"#   Include {where}",
        "",
    ]
    now = utcnow()
    valid = [r for r in _load(directory) if r.seconds_left(now) > 0]
    for target in sorted({r.target for r in valid}):
        best = best_access(valid, target, now)
        assert best is not None
        lines += _block(target, best)
        for r in valid:
            if r.target == target:
                lines += _block(r.alias, r, hostname=target)
    path = directory / "config"
    write_atomic(path, "\n".join(lines))
    return path


def agent_add(key_path: str, seconds: int) -> bool:
    """Add key and certificate to ssh-agent for ``seconds`` (ssh-add -t). False if no agent runs."""
    if not os.environ.get("SSH_AUTH_SOCK") or not shutil.which("ssh-add") or seconds <= 0:
        return False
    r = subprocess.run(
        ["ssh-add", "-q", "-t", str(seconds), key_path], capture_output=True, text=True, timeout=15
    )
    return r.returncode == 0


def agent_holds(key_path: str) -> bool:
    """Whether ssh-agent holds the key of ``key_path`` (``ssh-add -L`` lists its public key)."""
    if not os.environ.get("SSH_AUTH_SOCK") or not shutil.which("ssh-add"):
        return False
    try:
        blob = Path(key_path + ".pub").read_text().split()[1]
        listed = subprocess.run(["ssh-add", "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, IndexError, subprocess.SubprocessError):
        return False
    return any(line.split()[1:2] == [blob] for line in listed.stdout.splitlines())


def agent_remove(key_path: str) -> None:
    """Remove the key AND its certificate from ssh-agent.

    Quirk: ``ssh-add -d FILE`` also deletes ``FILE-cert.pub``, so it must be
    given the private key's path: given ``<key>.pub`` it looks for
    ``<key>.pub-cert.pub`` and leaves the certificate in the agent.
    """
    if not os.environ.get("SSH_AUTH_SOCK") or not shutil.which("ssh-add"):
        return
    if Path(key_path + ".pub").exists() or Path(key_path).exists():
        subprocess.run(["ssh-add", "-q", "-d", key_path], capture_output=True, timeout=15)
