"""The client's signers: SSHSIG signatures from a key file or through ssh-agent.

Every API call is signed with the engineer's enrolled SSH key (see
``ca.sshsig``). A :class:`Signer` hides where the private key lives:

- :class:`KeyFileSigner`: an OpenSSH private key file, read with cryptography;
- :class:`AgentSigner`: a key held by ssh-agent, reached through paramiko
  (imported only when an agent is used: it costs ~90 ms of start-up).

Errors::

    JitSshError
    └── SignerError               code "signer_error"
        ├── KeyFileError          "key_file_error"        missing, unreadable, not a key, unsupported type
        │   ├── PassphraseRequired "passphrase_required"  also a ca.errors.PassphraseRequired
        │   └── BadPassphrase     "bad_passphrase"        also a ca.errors.BadPassphrase
        └── AgentError            "agent_error"           the agent refused or went away
            ├── AgentUnavailable  "agent_unavailable"     SSH_AUTH_SOCK unset or dead
            └── AgentKeyNotFound  "agent_key_not_found"   the key is not in the agent
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ca import errors, wire
from ca.errors import InvalidKeyError, JitSshError
from ca.keys import fingerprint_of_blob, parse_public_key
from ca.sshsig import sign as _sshsig_sign
from ca.sshsig import sign_with as _sshsig_sign_with

if TYPE_CHECKING:  # paramiko is imported lazily, at run time only by AgentSigner.connect
    from paramiko.agent import Agent, AgentKey

__all__ = [
    "Signer",
    "KeyFileSigner",
    "AgentSigner",
    "signer_from_identity",
    "SignerError",
    "KeyFileError",
    "PassphraseRequired",
    "BadPassphrase",
    "AgentError",
    "AgentUnavailable",
    "AgentKeyNotFound",
]


class SignerError(JitSshError):
    code = "signer_error"


class KeyFileError(SignerError):
    code = "key_file_error"


class PassphraseRequired(KeyFileError, errors.PassphraseRequired):
    """The key file is encrypted and no passphrase was given."""

    code = "passphrase_required"


class BadPassphrase(KeyFileError, errors.BadPassphrase):
    """The passphrase does not decrypt the key file."""

    code = "bad_passphrase"


class AgentError(SignerError):
    code = "agent_error"


class AgentUnavailable(AgentError):
    code = "agent_unavailable"


class AgentKeyNotFound(AgentError):
    code = "agent_key_not_found"


@runtime_checkable
class Signer(Protocol):
    """Something that makes SSHSIG signatures with one SSH key."""

    @property
    def public_key_blob(self) -> bytes:
        """The key in SSH wire format."""
        ...

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
        ...

    def sign(self, message: bytes, *, namespace: str) -> bytes:
        """The binary SSHSIG blob over ``message``."""
        ...


# Key types a signature may come from (ca.sshsig.verify accepts exactly these).
_SIGNING_KEY_TYPES = frozenset(
    {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"}
)


# --- key files ----------------------------------------------------------------


@dataclass(frozen=True)
class KeyFileSigner:
    """Signs with a private key read from an OpenSSH private key file."""

    private_key: Any = field(repr=False, compare=False)
    public_key_blob: bytes
    fingerprint: str
    key_type: str
    path: Path | None = None

    @classmethod
    def from_private_key(cls, private_key: Any, *, path: Path | None = None) -> KeyFileSigner:
        try:
            blob = private_key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            public = parse_public_key(blob, field="identity")
        except (AttributeError, TypeError, ValueError, InvalidKeyError) as e:
            where = f"{path}: " if path else ""
            raise KeyFileError(
                f"{where}cannot sign API requests with this key: {e}", field="identity"
            ) from None
        return cls(
            private_key=private_key,
            public_key_blob=public.blob,
            fingerprint=public.fingerprint,
            key_type=public.key_type,
            path=path,
        )

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], passphrase: bytes | None = None
    ) -> KeyFileSigner:
        """Load an OpenSSH private key file (``~/.ssh/id_ed25519``; ``~`` is expanded).

        Raises :class:`KeyFileError` for a missing or unreadable file, a file
        that is not an OpenSSH private key or holds an unsupported key type
        (DSA, security keys, RSA under 2048 bits), :class:`PassphraseRequired`
        for an encrypted key without passphrase and :class:`BadPassphrase`.
        """
        p = Path(path).expanduser()
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise KeyFileError(f"{p}: no such key file", field="identity") from None
        except IsADirectoryError:
            raise KeyFileError(f"{p} is a directory, not a key file", field="identity") from None
        except OSError as e:
            raise KeyFileError(
                f"{p}: cannot read the key file: {e.strerror or e}", field="identity"
            ) from None
        if p.suffix == ".pub" or data.lstrip().startswith((b"ssh-", b"ecdsa-", b"sk-")):
            raise KeyFileError(
                f"{p} is a public key; give the private key file (without .pub)", field="identity"
            )
        try:
            private = serialization.load_ssh_private_key(data, password=passphrase or None)
        except TypeError:
            # cryptography raises TypeError both for "encrypted, no password"
            # and "password given, key not encrypted".
            if not passphrase:
                raise PassphraseRequired(
                    f"{p} is encrypted; a passphrase is needed", field="passphrase"
                ) from None
            private = _load_unencrypted(p, data)
        except ValueError as e:
            # A wrong passphrase shows up as a broken checksum: the decrypted
            # check-ints of PROTOCOL.key do not match.
            if passphrase and "checksum" in str(e).lower():
                raise BadPassphrase(f"{p}: wrong passphrase", field="passphrase") from None
            raise KeyFileError(
                f"{p} is not an OpenSSH private key ({e})", field="identity"
            ) from None
        except UnsupportedAlgorithm as e:
            raise KeyFileError(f"{p}: unsupported key type ({e})", field="identity") from None
        return cls.from_private_key(private, path=p)

    def sign(self, message: bytes, *, namespace: str) -> bytes:
        return _sshsig_sign(message, namespace=namespace, private_key=self.private_key)


def _load_unencrypted(p: Path, data: bytes) -> Any:
    try:
        return serialization.load_ssh_private_key(data, password=None)
    except (TypeError, ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{p} is not an OpenSSH private key ({e})", field="identity") from None


# --- ssh-agent ----------------------------------------------------------------


def _agent_socket() -> str:
    """``$SSH_AUTH_SOCK`` if something listens there; :class:`AgentUnavailable` otherwise.

    paramiko's ``Agent()`` does not say when there is no agent: with
    ``SSH_AUTH_SOCK`` unset, or pointing at a dead socket, it quietly
    connects to nothing and lists no keys. So probe the socket first, to tell
    "no agent" from "an agent with no keys".
    """
    if sys.platform == "win32":
        # paramiko talks to Pageant or the OpenSSH agent's named pipe there,
        # not to SSH_AUTH_SOCK; an empty key list is all it can tell us.
        return "the Windows ssh-agent"
    path = os.environ.get("SSH_AUTH_SOCK")
    if not path:
        raise AgentUnavailable(
            "no ssh-agent: SSH_AUTH_SOCK is not set (start one with `eval $(ssh-agent)` and `ssh-add`, "
            "or give a key file with --identity)",
            field="agent",
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        probe.connect(path)
    except OSError as e:
        raise AgentUnavailable(
            f"no ssh-agent answers at SSH_AUTH_SOCK={path} ({e.strerror or e}); is the agent still running?",
            field="agent",
        ) from None
    finally:
        probe.close()
    return path


def _describe(key: AgentKey) -> str:
    comment = f" {key.comment}" if getattr(key, "comment", "") else ""
    return f"{fingerprint_of_blob(key.blob)} ({key.name}{comment})"


class AgentSigner:
    """Signs through ssh-agent with one of its keys.

    Make one with :meth:`connect`. Holds a connection to the agent; close it
    with :meth:`close` (or use ``with``). Safe to share between threads: the
    agent protocol is request/response on one socket, so signing is
    serialised.
    """

    def __init__(self, agent: Agent, key: AgentKey) -> None:
        self._agent = agent
        self._key = key
        self._lock = threading.Lock()
        self._closed = False
        self.public_key_blob: bytes = bytes(key.blob)
        self.key_type: str = key.name
        self.fingerprint: str = fingerprint_of_blob(self.public_key_blob)
        self.comment: str = getattr(key, "comment", "") or ""

    def __repr__(self) -> str:
        return f"AgentSigner({self.key_type} {self.fingerprint})"

    @classmethod
    def connect(
        cls, *, public_key: bytes | str | None = None, fingerprint: str | None = None
    ) -> AgentSigner:
        """Connect to ``$SSH_AUTH_SOCK`` and pick a key.

        ``public_key`` (a wire blob, or an ``authorized_keys``-style line) or
        ``fingerprint`` (``SHA256:...``) names the key; with neither, the agent
        must hold exactly one usable key. Certificates the agent holds beside
        their keys (``ssh-add`` loads ``id_*-cert.pub`` too), DSA and
        security-key entries are not usable and are ignored.
        """
        want_blob: bytes | None = None
        if public_key is not None:
            if isinstance(public_key, str):
                try:
                    want_blob = parse_public_key(public_key, field="identity").blob
                except InvalidKeyError as e:
                    raise SignerError(str(e), field="identity") from None
            else:
                want_blob = bytes(public_key)
        path = _agent_socket()

        from paramiko.agent import Agent  # lazy: paramiko is slow to import
        from paramiko.ssh_exception import SSHException

        try:
            agent = Agent()
        except (SSHException, OSError) as e:
            raise AgentUnavailable(
                f"the ssh-agent at {path} did not answer: {e}", field="agent"
            ) from None
        try:
            key = cls._pick(agent.get_keys(), want_blob, fingerprint)
        except BaseException:
            agent.close()
            raise
        return cls(agent, key)

    @staticmethod
    def _pick(
        keys: tuple[AgentKey, ...], want_blob: bytes | None, fingerprint: str | None
    ) -> AgentKey:
        if not keys:
            # A locked agent (`ssh-add -x`) also lists no keys.
            raise AgentKeyNotFound(
                "the ssh-agent holds no keys (add one with ssh-add; is it locked?)", field="agent"
            )
        if want_blob is not None or fingerprint is not None:
            for k in keys:
                blob = bytes(k.blob)
                if (want_blob is not None and blob == want_blob) or (
                    fingerprint is not None and fingerprint_of_blob(blob) == fingerprint
                ):
                    if k.name not in _SIGNING_KEY_TYPES:
                        raise AgentKeyNotFound(
                            f"the agent's key {_describe(k)} cannot sign API requests "
                            "(use ssh-ed25519, ecdsa-sha2-nistp* or ssh-rsa)",
                            field="identity",
                        )
                    return k
            wanted = (
                fingerprint if fingerprint is not None else fingerprint_of_blob(want_blob or b"")
            )
            held = ", ".join(_describe(k) for k in keys)
            raise AgentKeyNotFound(
                f"key {wanted} is not in the ssh-agent (it holds: {held}); add it with ssh-add",
                field="identity",
            )
        usable = [k for k in keys if k.name in _SIGNING_KEY_TYPES]
        if not usable:
            held = ", ".join(_describe(k) for k in keys)
            raise AgentKeyNotFound(
                f"the ssh-agent holds no key that can sign ({held})", field="agent"
            )
        if len(usable) > 1:
            held = ", ".join(_describe(k) for k in usable)
            raise AgentKeyNotFound(
                f"the ssh-agent holds {len(usable)} keys ({held}); say which with --identity",
                field="identity",
            )
        return usable[0]

    def _sign_raw(self, data: bytes) -> bytes:
        from paramiko.ssh_exception import SSHException

        # paramiko's AgentKey.sign_ssh_data sends flags 0 unless `algorithm`
        # is exactly "rsa-sha2-256"/"rsa-sha2-512" (any other name silently
        # maps to 0), and flags 0 makes the agent sign an RSA key with
        # legacy ssh-rsa (SHA-1), which verify() refuses. Other key types
        # ignore the flags. It returns the agent's signature blob as bytes
        # (string algorithm, string signature), unlike a local PKey's
        # sign_ssh_data, which returns a paramiko Message.
        algorithm = "rsa-sha2-512" if self.key_type == "ssh-rsa" else None
        try:
            with self._lock:
                if self._closed:
                    raise AgentError("this AgentSigner is closed", field="agent")
                raw = self._key.sign_ssh_data(data, algorithm=algorithm)
        except SSHException as e:
            if "lost ssh-agent" in str(e):
                raise AgentUnavailable(
                    "the ssh-agent went away while signing", field="agent"
                ) from None
            # SSH_AGENT_FAILURE: the key was removed meanwhile, the agent is
            # locked, or a confirmation (ssh-add -c) was declined.
            raise AgentError(
                f"the ssh-agent refused to sign with {self.fingerprint} (key removed, agent locked, "
                "or confirmation declined?)",
                field="agent",
            ) from None
        except OSError as e:
            raise AgentUnavailable(
                f"lost the ssh-agent while signing: {e.strerror or e}", field="agent"
            ) from None
        return bytes(raw)

    def sign(self, message: bytes, *, namespace: str) -> bytes:
        return _sshsig_sign_with(
            message,
            namespace=namespace,
            public_key_blob=self.public_key_blob,
            sign_raw=self._sign_raw,
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._agent.close()

    def __enter__(self) -> AgentSigner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- choosing a signer --------------------------------------------------------


def _public_blob_for_identity(identity: str) -> bytes:
    """The public key of a key file, for finding it in the agent.

    ``identity`` may be a ``.pub`` file, a private key with its ``.pub``
    beside it, or a private key alone: an OpenSSH private key file carries
    its public key unencrypted (PROTOCOL.key), so no passphrase is needed.
    """
    p = Path(identity).expanduser()
    candidates = [p] if p.suffix == ".pub" else [p.with_name(p.name + ".pub"), p]
    for c in candidates:
        try:
            data = c.read_bytes()
        except OSError:
            continue
        if data.lstrip().startswith((b"ssh-", b"ecdsa-", b"sk-")):
            try:
                return parse_public_key(data.strip().split(b"\n", 1)[0], field="identity").blob
            except InvalidKeyError as e:
                raise KeyFileError(f"{c}: {e}", field="identity") from None
        blob = _public_blob_from_private_file(data)
        if blob is not None:
            return blob
    raise KeyFileError(f"{p}: no such key file (nor {p.name}.pub)", field="identity")


_KEY_V1_MAGIC = b"openssh-key-v1\x00"


def _public_blob_from_private_file(data: bytes) -> bytes | None:
    text = data.strip()
    head, tail = b"-----BEGIN OPENSSH PRIVATE KEY-----", b"-----END OPENSSH PRIVATE KEY-----"
    if not (text.startswith(head) and text.endswith(tail)):
        return None
    try:
        raw = base64.b64decode(b"".join(text[len(head) : -len(tail)].split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_KEY_V1_MAGIC):
        return None
    # PROTOCOL.key: magic, ciphername, kdfname, kdfoptions, number of keys, then the public keys.
    r = wire.Reader(raw, start=len(_KEY_V1_MAGIC), context="private key file")
    try:
        for field in ("ciphername", "kdfname", "kdfoptions"):
            r.string(field)
        nkeys = r.uint32("number of keys")
        blob = r.string("public key")
    except wire.WireError:
        return None
    return blob if nkeys >= 1 else None


def signer_from_identity(
    identity: str | None,
    *,
    use_agent: bool,
    passphrase: Callable[[], bytes | None] | None = None,
) -> Signer:
    """The signer for a ``--identity``/``--agent`` choice.

    - ``use_agent``: sign through ssh-agent, with the key ``identity`` names (a
      key file, its ``.pub``, or a ``SHA256:`` fingerprint), or with the
      agent's only key when ``identity`` is ``None``;
    - otherwise ``identity`` is a private key file; ``passphrase()`` is
      asked only when that file turns out to be encrypted.
    """
    if use_agent:
        if identity is None:
            return AgentSigner.connect()
        if identity.startswith("SHA256:"):
            return AgentSigner.connect(fingerprint=identity)
        return AgentSigner.connect(public_key=_public_blob_for_identity(identity))
    if identity is None:
        raise SignerError(
            "no key to sign with: give a private key file (--identity) or use ssh-agent",
            field="identity",
        )
    try:
        return KeyFileSigner.from_path(identity)
    except PassphraseRequired:
        if passphrase is None:
            raise
        secret = passphrase()
        if not secret:
            raise
        return KeyFileSigner.from_path(identity, passphrase=secret)
