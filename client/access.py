"""The engineer's local side of an access: key pair, certificate, agent, ssh_config.

Per target, under ``~/.ssh/jit-ssh/``:

* ``<target>`` and ``<target>.pub``: a fresh Ed25519 key made for this access (0600);
* ``<target>-cert.pub``: its certificate;
* ``<target>.json``: request id, serial, window, login user, server;
* ``config``: an ssh_config with a ``Host <target>`` block per access, to
  ``Include`` from ``~/.ssh/config``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .settings import keys_dir

__all__ = ["AccessRecord", "new_key_pair", "save_access", "load_accesses", "remove_access", "agent_add", "agent_remove", "write_ssh_config"]


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


def _safe_target(target: str) -> str:
    if not target or "/" in target or target.startswith(".") or len(target) > 128:
        raise ValueError(f"bad target name {target!r}")
    return target


def new_key_pair(target: str, directory: Path | None = None) -> tuple[Path, str]:
    """A fresh Ed25519 key for one access; returns the private key path and the public key line."""
    d = directory or keys_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    path = d / _safe_target(target)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    pub += f" jit-ssh-{target}"
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    path.with_name(path.name + ".pub").write_text(pub + "\n")
    old_cert = path.with_name(path.name + "-cert.pub")
    if old_cert.exists():
        old_cert.unlink()
    return path, pub


def save_access(record: AccessRecord, certificate: str) -> None:
    Path(record.cert_path).write_text(certificate.strip() + "\n")
    meta = Path(record.key_path).with_name(Path(record.key_path).name + ".json")
    meta.write_text(json.dumps(asdict(record), indent=2) + "\n")
    write_ssh_config(Path(record.key_path).parent)


def load_accesses(directory: Path | None = None) -> list[AccessRecord]:
    d = directory or keys_dir()
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            out.append(AccessRecord(**json.loads(p.read_text())))
        except (ValueError, TypeError):
            continue
    return out


def remove_access(record: AccessRecord) -> None:
    key = Path(record.key_path)
    for p in (key, key.with_name(key.name + ".pub"), Path(record.cert_path), key.with_name(key.name + ".json")):
        p.unlink(missing_ok=True)
    write_ssh_config(key.parent)


def write_ssh_config(directory: Path) -> Path:
    """``~/.ssh/jit-ssh/config``: ``Include ~/.ssh/jit-ssh/config`` from ``~/.ssh/config``."""
    lines = ["# Managed by jit-ssh: one block per active access. Include it from ~/.ssh/config:",
             f"#   Include {directory}/config", ""]
    for r in load_accesses(directory):
        lines += [f"Host {r.target}"]
        if r.login_user:
            lines += [f"    User {r.login_user}"]
        lines += [f"    IdentityFile {r.key_path}", f"    CertificateFile {r.cert_path}", "    IdentitiesOnly yes", ""]
    path = directory / "config"
    path.write_text("\n".join(lines))
    return path


def agent_add(key_path: str, seconds: int) -> bool:
    """Add key and certificate to ssh-agent for ``seconds`` (ssh-add -t). False if no agent runs."""
    if not os.environ.get("SSH_AUTH_SOCK") or not shutil.which("ssh-add") or seconds <= 0:
        return False
    r = subprocess.run(["ssh-add", "-q", "-t", str(seconds), key_path], capture_output=True, text=True, timeout=15)
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


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


__all__.append("now_utc")
