"""The engineer's local side of an access: key pair, certificate, agent, ssh_config.

Per target, under ``~/.ssh/jit-ssh/``:

* ``<target>`` and ``<target>.pub``: a fresh Ed25519 key made for this access (0600);
* ``<target>-cert.pub``: its certificate;
* ``<target>.json``: request id, serial, window, login user, server;
* ``config``: an ssh_config with a ``Host <target>`` block per access, to
  ``Include`` from ``~/.ssh/config``.

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
import sys
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca.errors import InvalidName, JitSshError
from ca.names import check_login_user, check_principal, check_target

from .files import write_atomic
from .settings import keys_dir
from .verify import check_request_id, check_serial

__all__ = [
    "AccessRecord",
    "InvalidAccessRecord",
    "check_record",
    "ssh_path",
    "new_key_pair",
    "save_access",
    "load_accesses",
    "remove_access",
    "agent_add",
    "agent_remove",
    "write_ssh_config",
]


class InvalidAccessRecord(JitSshError):
    """A stored access record (``<target>.json``) that fails the checks of what may reach ssh."""

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

    def seconds_left(self, now: datetime) -> int:
        end = datetime.fromisoformat(self.valid_before.replace("Z", "+00:00"))
        return max(0, int((end - now).total_seconds()))


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


def check_record(record: AccessRecord, directory: Path) -> AccessRecord:
    """Check a stored record as if it had just come from the server; raise :class:`InvalidAccessRecord` if it fails."""
    try:
        check_target(record.target, field="target")
        # The same checks as for the server's answer the record was made from.
        check_request_id(record.request_id, field="request_id")
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
        # The files are where this machine keeps them for that target, nowhere else.
        key = directory / record.target
        if record.key_path != str(key) or record.cert_path != f"{key}-cert.pub":
            raise InvalidName(f"key or certificate path is not {key}[-cert.pub]", field="key_path")
        ssh_path(key)
        ssh_path(record.cert_path)
    except JitSshError as e:
        raise InvalidAccessRecord(
            f"access record for {record.target!r}: {e}", field=e.field
        ) from None
    except (ValueError, TypeError) as e:
        raise InvalidAccessRecord(f"access record for {record.target!r}: {e}") from None
    return record


def new_key_pair(target: str, directory: Path | None = None) -> tuple[Path, str]:
    """A fresh Ed25519 key for one access; returns the private key path and the public key line."""
    d = directory or keys_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    path = d / check_target(target, field="target")
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
    pub += f" jit-ssh-{target}"
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
    meta = Path(record.key_path).with_name(Path(record.key_path).name + ".json")
    write_atomic(meta, json.dumps(asdict(record), indent=2) + "\n")
    write_ssh_config(directory)


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def load_accesses(directory: Path | None = None) -> list[AccessRecord]:
    """The stored records that pass :func:`check_record`; the others are skipped with a warning."""
    d = directory or keys_dir()
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            record = AccessRecord(**json.loads(p.read_text()))
        except (ValueError, TypeError):
            continue
        try:
            if p.name != f"{record.target}.json":
                raise InvalidAccessRecord(
                    f"{p.name} holds the record of target {str(record.target)[:64]!r}"
                )
            out.append(check_record(record, d))
        except InvalidAccessRecord as e:
            _warn(f"skipping {p}: {e}")
    return out


def remove_access(record: AccessRecord) -> None:
    key = Path(record.key_path)
    for p in (
        key,
        key.with_name(key.name + ".pub"),
        Path(record.cert_path),
        key.with_name(key.name + ".json"),
    ):
        p.unlink(missing_ok=True)
    write_ssh_config(key.parent)


def write_ssh_config(directory: Path) -> Path:
    """``~/.ssh/jit-ssh/config``: ``Include ~/.ssh/jit-ssh/config`` from ``~/.ssh/config``.

    Only records that pass :func:`check_record` are written, and every value
    in it went through :mod:`ca.names` or :func:`ssh_path`.
    """
    where = ssh_path(directory / "config")
    lines = [
        "# Managed by jit-ssh: one block per active access. Include it from ~/.ssh/config:",
        f"#   Include {where}",
        "",
    ]
    for r in load_accesses(directory):
        lines += [f"Host {r.target}"]
        if r.login_user:
            lines += [f"    User {r.login_user}"]
        lines += [
            f"    IdentityFile {ssh_path(r.key_path)}",
            f"    CertificateFile {ssh_path(r.cert_path)}",
            "    IdentitiesOnly yes",
            "",
        ]
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
