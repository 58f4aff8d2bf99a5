"""Public keys as users hand them to us, and the CA's own keys.

User keys are parsed defensively: the key type string is checked *before*
cryptography sees the key, because cryptography silently loads an
``sk-ssh-ed25519@openssh.com`` key as a plain Ed25519 key (dropping the
security-key application string), and a certificate for that key would be
useless to the hardware token that holds it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import errno
import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from . import wire
from .errors import (
    BadPassphrase,
    CAKeyError,
    CertificateAsKey,
    InsecureKeyFile,
    InvalidKeyError,
    JitSshError,
    KeyTooLarge,
    PassphraseRequired,
    UnsupportedKeyType,
    WeakKey,
)

__all__ = [
    "MAX_KEY_TEXT",
    "MIN_USER_RSA_BITS",
    "MIN_CA_RSA_BITS",
    "PublicKey",
    "parse_public_key",
    "public_key_from_crypto",
    "fingerprint_of_blob",
    "CAKeyType",
    "CAKey",
    "CAPrivateKey",
    "generate_ca_key",
    "save_ca_key",
    "load_ca_key",
    "load_private_key_file",
    "write_new_file",
]

#: A public key line longer than this is refused before any parsing. The
#: largest key we accept (RSA 16384) is well under 3 KiB of text.
MAX_KEY_TEXT = 16 * 1024
MIN_USER_RSA_BITS = 2048
MIN_CA_RSA_BITS = 3072

CAPrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_USER_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    }
)
_SK_KEY_TYPES = frozenset({"sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"})


def fingerprint_of_blob(blob: bytes) -> str:
    """The fingerprint ``ssh-keygen -l`` prints: ``SHA256:`` and unpadded base64."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class PublicKey:
    """A validated OpenSSH public key.

    ``blob`` is the key in SSH wire format (what the base64 field of a
    ``.pub`` line decodes to); equality compares type and blob only.
    """

    key_type: str
    blob: bytes
    comment: str = field(default="", compare=False)
    key: Any = field(default=None, compare=False, repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of_blob(self.blob)

    @property
    def bits(self) -> int:
        if isinstance(self.key, rsa.RSAPublicKey):
            return self.key.key_size
        if isinstance(self.key, ec.EllipticCurvePublicKey):
            return self.key.curve.key_size
        return 256

    @property
    def openssh(self) -> str:
        """The key as one ``authorized_keys``/``.pub`` line (with its comment, if any)."""
        line = f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"
        return f"{line} {self.comment}" if self.comment else line

    def __str__(self) -> str:
        return self.openssh


def _wire_blob(key: Any) -> bytes:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def public_key_from_crypto(key: Any, comment: str = "") -> PublicKey:
    """Wrap a cryptography public key object as a :class:`PublicKey`."""
    blob = _wire_blob(key)
    key_type = wire.Reader(blob, context="public key").string("key type").decode("ascii")
    return PublicKey(key_type=key_type, blob=blob, comment=comment, key=key)


def parse_public_key(
    text: str | bytes, *, field: str = "public_key", min_rsa_bits: int = MIN_USER_RSA_BITS
) -> PublicKey:
    """Parse one OpenSSH public key line (``type base64 [comment]``).

    Refuses, each with its own error naming ``field``: text over 16 KiB
    (:class:`KeyTooLarge`), certificates (:class:`CertificateAsKey`), DSA,
    security-key and unknown types (:class:`UnsupportedKeyType`), RSA under
    ``min_rsa_bits`` (:class:`WeakKey`), and anything malformed, truncated or
    not base64 (:class:`InvalidKeyError`).
    """
    if isinstance(text, str):
        if len(text) > MAX_KEY_TEXT:
            raise KeyTooLarge(f"{field} is larger than {MAX_KEY_TEXT // 1024} KiB", field=field)
        try:
            data = text.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidKeyError(
                f"{field} must be ASCII text ('type base64 comment')", field=field
            ) from None
    elif isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_KEY_TEXT:
            raise KeyTooLarge(f"{field} is larger than {MAX_KEY_TEXT // 1024} KiB", field=field)
        data = bytes(text)
    else:
        raise InvalidKeyError(f"{field} must be a string, not {type(text).__name__}", field=field)

    parts = data.strip().split(None, 2)
    if not parts:
        raise InvalidKeyError(f"{field} is empty", field=field)
    if len(parts) < 2:
        raise InvalidKeyError(f"{field} must look like 'ssh-ed25519 AAAA... comment'", field=field)
    try:
        key_type = parts[0].decode("ascii")
        comment = parts[2].decode("ascii").strip() if len(parts) > 2 else ""
    except UnicodeDecodeError:
        raise InvalidKeyError(f"{field} must be ASCII text", field=field) from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in comment):
        raise InvalidKeyError(f"{field} comment holds control characters", field=field)

    if key_type.endswith("-cert-v01@openssh.com"):
        raise CertificateAsKey(
            f"{field} is a certificate ({key_type}); give the plain public key (the .pub file, "
            "not -cert.pub)",
            field=field,
        )
    if key_type == "ssh-dss":
        raise UnsupportedKeyType(f"{field}: DSA keys are not accepted (use Ed25519)", field=field)
    if key_type in _SK_KEY_TYPES:
        # cryptography's certificate builder cannot carry the sk- key's
        # application string; a certificate for the stripped key would not
        # work with the hardware token, so refuse rather than issue a dud.
        raise UnsupportedKeyType(
            f"{field}: security-key ({key_type}) keys cannot be certified yet; "
            "use an ssh-ed25519 or ecdsa key",
            field=field,
        )
    if key_type not in _USER_KEY_TYPES:
        raise UnsupportedKeyType(
            f"{field}: unknown key type {key_type[:64]!r} (accepted: ssh-ed25519, ecdsa-sha2-nistp*, ssh-rsa)",
            field=field,
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKeyError(f"{field}: the key data is not valid base64", field=field) from None
    try:
        inner_type = wire.Reader(blob, context="public key").string("key type")
    except wire.WireError:
        raise InvalidKeyError(f"{field}: the key data is truncated", field=field) from None
    if inner_type != parts[0]:
        raise InvalidKeyError(
            f"{field}: the key data says {inner_type[:64]!r} but the line says {key_type!r}",
            field=field,
        )
    try:
        key = serialization.load_ssh_public_key(parts[0] + b" " + parts[1])
    # NotImplementedError: cryptography raises it for an ECDSA point that is
    # not in uncompressed form (first byte other than 0x04); OpenSSH only
    # writes uncompressed points, so such a blob is simply malformed.
    except (ValueError, UnsupportedAlgorithm, TypeError, NotImplementedError):
        raise InvalidKeyError(
            f"{field}: the key data is malformed or truncated", field=field
        ) from None
    # Re-encoding must give back the same blob: this rejects trailing bytes
    # and non-canonical encodings that a lenient parser would let through.
    if _wire_blob(key) != blob:
        raise InvalidKeyError(
            f"{field}: the key data has trailing or non-canonical bytes", field=field
        )
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < min_rsa_bits:
        raise WeakKey(
            f"{field}: RSA keys must have at least {min_rsa_bits} bits, this one has {key.key_size}",
            field=field,
        )
    return PublicKey(key_type=key_type, blob=blob, comment=comment, key=key)


class CAKeyType(enum.StrEnum):
    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA = "rsa"

    @classmethod
    def parse(cls, text: str) -> CAKeyType:
        aliases = {"ecdsa": "ecdsa-p256", "ecdsa256": "ecdsa-p256", "ecdsa384": "ecdsa-p384"}
        if not isinstance(text, str):
            raise CAKeyError(f"key type must be a string, not {type(text).__name__}", field="type")
        try:
            return cls(aliases.get(text.lower(), text.lower()))
        except ValueError:
            allowed = ", ".join(sorted({m.value for m in cls} | set(aliases)))
            raise CAKeyError(f"key type {text!r} is not one of {allowed}", field="type") from None


def generate_ca_key(
    key_type: CAKeyType | str = CAKeyType.ED25519, *, bits: int | None = None
) -> CAPrivateKey:
    """A new CA private key: Ed25519 (default), ECDSA P-256/P-384, or RSA >= 3072 bits."""
    # Always parse (a CAKeyType is a str too): anything else, None included,
    # must not fall through to the RSA branch below.
    kind = CAKeyType.parse(key_type)
    if kind is CAKeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if kind is CAKeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if kind is CAKeyType.ECDSA_P384:
        return ec.generate_private_key(ec.SECP384R1())
    size = bits or MIN_CA_RSA_BITS
    if size < MIN_CA_RSA_BITS or size > 8192:
        raise WeakKey(
            f"bits: an RSA CA key must have {MIN_CA_RSA_BITS} to 8192 bits, got {size}",
            field="bits",
        )
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


@dataclass(frozen=True)
class CAKey:
    """A CA key pair. The private half is never printed, compared or serialised by repr."""

    public: PublicKey
    private: CAPrivateKey | None = field(default=None, repr=False, compare=False)
    path: Path | None = field(default=None, compare=False)

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    @classmethod
    def from_private(
        cls, private: CAPrivateKey, *, comment: str = "", path: Path | None = None
    ) -> CAKey:
        _check_ca_private(private)
        return cls(
            public=public_key_from_crypto(private.public_key(), comment), private=private, path=path
        )


def _check_ca_private(private: Any) -> None:
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < MIN_CA_RSA_BITS:
            raise WeakKey(
                f"an RSA CA key must have at least {MIN_CA_RSA_BITS} bits, this one has {private.key_size}",
                field="ca_key",
            )
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        if not isinstance(private.curve, (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)):
            raise UnsupportedKeyType("the CA key uses an unsupported curve", field="ca_key")
    elif not isinstance(private, ed25519.Ed25519PrivateKey):
        raise UnsupportedKeyType(
            f"CA keys must be Ed25519, ECDSA or RSA, not {type(private).__name__}", field="ca_key"
        )


def save_ca_key(
    path: str | os.PathLike[str],
    private: CAPrivateKey,
    *,
    passphrase: bytes | None = None,
    comment: str = "",
) -> CAKey:
    """Write ``private`` to ``path`` (OpenSSH format, mode 0600, never overwriting)
    and its public half to ``path.pub``. Encrypted when ``passphrase`` is given."""
    _check_ca_private(private)
    p = Path(path)
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, enc
    )
    ca = CAKey.from_private(private, comment=comment, path=p)
    pub_path = p.with_name(p.name + ".pub")
    # Neither half is ever overwritten: a stale .pub left beside a new private
    # key (or replaced under an old one) would put the wrong key in
    # TrustedUserCAKeys. Check the .pub before the private key is written.
    if pub_path.exists():
        raise FileExistsError(
            errno.EEXIST, "refusing to overwrite an existing CA public key", str(pub_path)
        )
    # O_EXCL: a second `ca init` racing the first must not clobber a key
    # that may already have signed certificates.
    write_new_file(p, pem, 0o600)
    write_new_file(pub_path, (ca.public.openssh + "\n").encode("utf-8"), 0o644)
    return ca


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (never overwriting: ``O_EXCL``), write ``data`` durably, set ``mode``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)  # the umask may have narrowed the .pub's 0644
        os.fsync(fd)
    finally:
        os.close(fd)


def load_private_key_file(
    path: str | os.PathLike[str],
    *,
    passphrase: bytes | None,
    what: str,
    field: str,
    error: type[JitSshError] = CAKeyError,
    passphrase_hint: str = "",
) -> Any:
    """Read an OpenSSH private key file the way every jit-ssh key is read.

    Refuses a file that group or others may read (:class:`InsecureKeyFile`),
    an encrypted key without a passphrase (:class:`PassphraseRequired`), a
    wrong passphrase (:class:`BadPassphrase`), and anything that is not an
    OpenSSH private key (``error``). ``what`` names the key in messages.
    """
    p = Path(path)
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise InsecureKeyFile(
            f"{p}: the {what} private key is readable by group or others (mode {mode:04o}); run: chmod 600 {p}",
            field=field,
        )
    data = p.read_bytes()
    try:
        return serialization.load_ssh_private_key(data, password=passphrase or None)
    except TypeError:
        if not passphrase:
            raise PassphraseRequired(
                f"{p} is encrypted; give its passphrase{passphrase_hint}", field="passphrase"
            ) from None
        # A passphrase for a key that has none: the key is still usable.
        return load_private_key_file(p, passphrase=None, what=what, field=field, error=error)
    except ValueError as e:
        # cryptography reports a wrong passphrase as a "broken checksum": the
        # decrypted check-ints (PROTOCOL.key) do not match.
        if passphrase and "checksum" in str(e).lower():
            raise BadPassphrase(f"{p}: wrong passphrase", field="passphrase") from None
        raise error(f"{p} is not an OpenSSH private key: {e}", field=field) from None
    except UnsupportedAlgorithm as e:
        raise error(f"{p}: {e}", field=field) from None


def load_ca_key(path: str | os.PathLike[str], *, passphrase: bytes | None = None) -> CAKey:
    """Load a CA private key in OpenSSH format (see :func:`load_private_key_file` for what is refused)."""
    p = Path(path)
    private = load_private_key_file(
        p,
        passphrase=passphrase,
        what="CA",
        field="ca_key",
        passphrase_hint=" (--passphrase-file or $JIT_SSH_CA_PASSPHRASE)",
    )
    comment = ""
    pub_path = p.with_name(p.name + ".pub")
    if pub_path.exists():
        parts = pub_path.read_text().split(None, 2)
        comment = parts[2].strip() if len(parts) > 2 else ""
    return CAKey.from_private(private, comment=comment, path=p)


def load_public_keys(text: str, *, field: str = "ca_keys") -> tuple[PublicKey, ...]:
    """Every key in a TrustedUserCAKeys-style file (blank lines and # comments skipped)."""
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keys.append(
            parse_public_key(line, field=f"{field} line {n}", min_rsa_bits=MIN_USER_RSA_BITS)
        )
    return tuple(keys)


__all__.append("load_public_keys")


def keys_for_trust(keys: Sequence[CAKey | PublicKey]) -> str:
    """TrustedUserCAKeys text: one key a line."""
    lines = []
    for k in keys:
        pub = k.public if isinstance(k, CAKey) else k
        lines.append(pub.openssh)
    return "".join(line + "\n" for line in lines)


__all__.append("keys_for_trust")
