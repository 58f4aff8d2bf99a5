"""The audit key: an Ed25519 key that signs checkpoints, kept apart from the CA key.

Generate, save, load, print and fingerprint it; read the public keys a
verifier is given. Why a separate key and what it proves: ``docs/audit.md``.
"""

from __future__ import annotations

import base64
import errno
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca.keys import fingerprint_of_blob, load_private_key_file, parse_public_key, write_new_file

from .errors import AuditKeyError

__all__ = [
    "AuditKey",
    "generate_audit_key",
    "save_audit_key",
    "load_audit_key",
    "audit_public_key_text",
    "audit_key_fingerprint",
    "load_audit_public_keys",
]

#: Either half of an audit key: what the printing and fingerprint functions take.
AuditKey = ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey


def generate_audit_key() -> ed25519.Ed25519PrivateKey:
    """A new audit signing key (Ed25519; kept apart from the CA key so that
    one leaking does not let the holder forge the other's signatures)."""
    return ed25519.Ed25519PrivateKey.generate()


def _public(key: AuditKey) -> ed25519.Ed25519PublicKey:
    # Callers outside this package are not type-checked: a CA key of another
    # type arriving here is a configuration error, so name it.
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise AuditKeyError(
        f"the audit key must be Ed25519, not {type(key).__name__}", field="audit_key"
    )


def _openssh_public(key: AuditKey) -> bytes:
    return _public(key).public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )


def audit_public_key_text(key: AuditKey, comment: str = "") -> str:
    """The public half as one OpenSSH line (``ssh-ed25519 AAAA... comment``), no newline."""
    line = _openssh_public(key).decode("ascii")
    return f"{line} {comment}" if comment else line


def audit_key_fingerprint(key: AuditKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it; what a checkpoint names its key by."""
    return fingerprint_of_blob(base64.b64decode(_openssh_public(key).split()[1]))


def save_audit_key(
    path: str | os.PathLike[str],
    private_key: ed25519.Ed25519PrivateKey,
    *,
    passphrase: bytes | None = None,
    comment: str = "jit-ssh audit key",
) -> str:
    """Write the key to ``path`` (OpenSSH format, 0600) and its public half to
    ``path.pub`` (0644); never overwrites either. Returns the public key line."""
    if not isinstance(private_key, ed25519.Ed25519PrivateKey):
        raise AuditKeyError("the audit key must be an Ed25519 private key", field="audit_key")
    p = Path(path)
    pub_path = p.with_name(p.name + ".pub")
    # Check the .pub first: a stale one beside a new key would make every
    # checkpoint fail against the key an auditor was given.
    if pub_path.exists():
        raise FileExistsError(
            errno.EEXIST, "refusing to overwrite an existing audit public key", str(pub_path)
        )
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, enc
    )
    pub = audit_public_key_text(private_key, comment)
    write_new_file(p, pem, 0o600)
    write_new_file(pub_path, (pub + "\n").encode("ascii"), 0o644)
    return pub


def load_audit_key(
    path: str | os.PathLike[str], *, passphrase: bytes | None = None
) -> ed25519.Ed25519PrivateKey:
    """Load the audit private key (OpenSSH format), as ``ca.keys.load_ca_key`` does:
    refuses a file group or others may read (``InsecureKeyFile``), an
    encrypted key without passphrase, a wrong passphrase, and non-Ed25519 keys."""
    p = Path(path)
    key = load_private_key_file(
        p, passphrase=passphrase, what="audit", field="audit_key", error=AuditKeyError
    )
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise AuditKeyError(
            f"{p}: the audit key must be Ed25519, not {type(key).__name__}", field="audit_key"
        )
    return key


def load_audit_public_keys(text: str) -> list[ed25519.Ed25519PublicKey]:
    """Every key in ``.pub``-style text (one a line; blank and ``#`` lines skipped)."""
    keys: list[ed25519.Ed25519PublicKey] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pub = parse_public_key(line, field=f"audit key line {n}")
        if pub.key_type != "ssh-ed25519" or not isinstance(pub.key, ed25519.Ed25519PublicKey):
            raise AuditKeyError(
                f"audit key line {n}: must be ssh-ed25519, not {pub.key_type}", field="pubkey"
            )
        keys.append(pub.key)
    return keys
