"""Throwaway CA keys, user keys and certificates for the KRL tests.

Everything is made at run time (no key files in the repository). Key
generation is cheap for Ed25519 and ECDSA; RSA keys are cached per size.
"""

from __future__ import annotations

import base64
import functools
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType

__all__ = [
    "TestCA",
    "TestCert",
    "make_ca",
    "make_cert",
    "make_user_key",
    "wire_blob",
    "ssh_string",
    "sk_ed25519_blob",
    "sk_ecdsa_blob",
    "dss_blob",
    "public_key_pool",
    "require_ssh_keygen",
    "query",
    "raw_krl",
    "raw_section",
    "raw_cert_section",
]

# Fixed, wide validity window: ssh-keygen -Q does not look at it, and fixed
# times keep the certificates independent of the clock.
_VALID_AFTER = 1_600_000_000
_VALID_BEFORE = 4_000_000_000


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def wire_blob(public_key: Any) -> bytes:
    """The SSH wire-format blob of a cryptography public key."""
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return base64.b64decode(line.split()[1])


def raw_section(kind: int, body: bytes) -> bytes:
    """A section or subsection: u8 type, string body."""
    return struct.pack(">BI", kind, len(body)) + body


def raw_cert_section(ca_blob: bytes, *subsections: bytes, reserved: bytes = b"") -> bytes:
    """A certificate section (type 1) for ``ca_blob`` (b"" = any CA)."""
    return raw_section(1, ssh_string(ca_blob) + ssh_string(reserved) + b"".join(subsections))


def raw_krl(
    *sections: bytes,
    version: int = 1,
    date: int = 0,
    flags: int = 0,
    reserved: bytes = b"",
    comment: bytes = b"",
) -> bytes:
    """A KRL written by hand, for shapes ``ca.krl.build_krl`` refuses to write."""
    head = b"SSHKRL\n\0" + struct.pack(">IQQQ", 1, version, date, flags)
    return head + ssh_string(reserved) + ssh_string(comment) + b"".join(sections)


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # not a pytest test class

    private_key: Any
    blob: bytes

    @property
    def pub_line(self) -> str:
        key_type = self.blob[4 : 4 + struct.unpack(">I", self.blob[:4])[0]].decode()
        return f"{key_type} {base64.b64encode(self.blob).decode()} test-ca\n"


@dataclass(frozen=True)
class TestCert:
    __test__ = False

    line: str  # "<type>-cert-v01@openssh.com AAAA..." as in a -cert.pub file
    user_blob: bytes  # the certified plain public key
    user_line: str  # the plain public key as a .pub line
    serial: int
    key_id: str


def make_ca(kind: str = "ed25519") -> TestCA:
    private_key: Any
    if kind == "ed25519":
        private_key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "ecdsa":
        private_key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "rsa":
        private_key = _rsa_key(3072)
    else:
        raise ValueError(kind)
    return TestCA(private_key=private_key, blob=wire_blob(private_key.public_key()))


def make_user_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def make_cert(
    ca: TestCA,
    *,
    serial: int,
    key_id: str = "test",
    user_key: ed25519.Ed25519PrivateKey | None = None,
) -> TestCert:
    user_key = user_key or make_user_key()
    cert = (
        SSHCertificateBuilder()
        .public_key(user_key.public_key())
        .serial(serial)
        .type(SSHCertificateType.USER)
        .key_id(key_id.encode())
        .valid_principals([b"root"])
        .valid_after(_VALID_AFTER)
        .valid_before(_VALID_BEFORE)
        .sign(ca.private_key)
    )
    user_blob = wire_blob(user_key.public_key())
    return TestCert(
        line=cert.public_bytes().decode() + "\n",
        user_blob=user_blob,
        user_line=f"ssh-ed25519 {base64.b64encode(user_blob).decode()}\n",
        serial=serial,
        key_id=key_id,
    )


@functools.cache
def _rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def sk_ed25519_blob(seed: int = 1) -> bytes:
    """An sk-ssh-ed25519 public key blob (any 32 bytes are a valid encoding)."""
    private_key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    raw = private_key.public_key().public_bytes_raw()
    return ssh_string(b"sk-ssh-ed25519@openssh.com") + ssh_string(raw) + ssh_string(b"ssh:")


def sk_ecdsa_blob() -> bytes:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return (
        ssh_string(b"sk-ecdsa-sha2-nistp256@openssh.com")
        + ssh_string(b"nistp256")
        + ssh_string(point)
        + ssh_string(b"ssh:")
    )


def dss_blob() -> bytes:
    """Structurally valid ssh-dss blob (OpenSSH 9.2 still parses DSA keys)."""
    p, q, g, y = (bytes([0x01]) + bytes(n) for n in (127, 19, 127, 127))
    return b"".join(ssh_string(field) for field in (b"ssh-dss", p, q, g, y))


@functools.lru_cache(maxsize=1)
def public_key_pool() -> tuple[bytes, ...]:
    """A fixed handful of plain public key blobs of every type KRLs may hold."""
    return (
        wire_blob(ed25519.Ed25519PrivateKey.generate().public_key()),
        wire_blob(ed25519.Ed25519PrivateKey.generate().public_key()),
        wire_blob(ec.generate_private_key(ec.SECP256R1()).public_key()),
        wire_blob(ec.generate_private_key(ec.SECP384R1()).public_key()),
        wire_blob(ec.generate_private_key(ec.SECP521R1()).public_key()),
        wire_blob(_rsa_key(2048).public_key()),
        sk_ed25519_blob(),
        sk_ecdsa_blob(),
        dss_blob(),
    )


def require_ssh_keygen() -> str:
    """Path of ssh-keygen; skip if missing, but fail when CI=true."""
    path = shutil.which("ssh-keygen")
    if path is None:
        reason = (
            "ssh-keygen (OpenSSH) is not installed, so KRL interop with OpenSSH cannot be checked"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: interop tests must run)")
        pytest.skip(reason)
    return path


def query(krl_path: Path, *cert_paths: Path) -> dict[str, bool]:
    """Run ``ssh-keygen -Q -f krl cert...``; map each cert path to revoked or not.

    Exit status 0 means none revoked, 1 some revoked; anything else (255: the
    KRL did not parse) fails the test with ssh-keygen's message.
    """
    proc = subprocess.run(
        [require_ssh_keygen(), "-Q", "-f", str(krl_path), *map(str, cert_paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode not in (0, 1):
        raise AssertionError(f"ssh-keygen -Q failed ({proc.returncode}): {proc.stderr.strip()}")
    result: dict[str, bool] = {}
    for line in proc.stdout.splitlines():
        name, _, verdict = line.rpartition(": ")
        path = name.split(" (")[0]
        result[path] = verdict == "REVOKED"
    assert (proc.returncode == 1) == any(result.values()), proc.stdout
    assert set(result) == set(map(str, cert_paths)), proc.stdout
    return result
