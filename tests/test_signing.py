"""client.signing: key-file and ssh-agent signers, checked by ca.sshsig.verify and ssh-keygen -Y verify."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa

from ca.keys import public_key_from_crypto
from ca.sshsig import InvalidSignatureError, armor, sign_with, verify
from client.signing import (
    AgentError,
    AgentKeyNotFound,
    AgentSigner,
    AgentUnavailable,
    BadPassphrase,
    KeyFileError,
    KeyFileSigner,
    PassphraseRequired,
    Signer,
    SignerError,
    signer_from_identity,
)

from .conftest import require_tool
from .support import KEY_SPECS

NS = "jit-ssh-api@example.com"
MSG = b"POST\n/v1/requests\n\n" + b"\x00\xff" * 100


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {name: make() for name, make in KEY_SPECS.items()}


def write_key(path: Path, key: Any, *, passphrase: bytes | None = None, pub: bool = True) -> Path:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, enc)
    )
    path.chmod(0o600)  # ssh-add refuses group/other-readable keys
    if pub:
        path.with_name(path.name + ".pub").write_text(
            public_key_from_crypto(key.public_key(), comment="test@jit-ssh").openssh + "\n"
        )
    return path


def inner_algorithm(blob: bytes) -> str:
    pos = 10
    fields = []
    while pos < len(blob):
        (n,) = struct.unpack_from(">I", blob, pos)
        fields.append(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
    inner = fields[4]
    (n,) = struct.unpack_from(">I", inner, 0)
    return inner[4 : 4 + n].decode()


def keygen_verifies(blob: bytes, signer: Signer, tmp: Path, message: bytes = MSG) -> None:
    keygen = require_tool("ssh-keygen")
    pub = openssh_line(signer.public_key_blob)
    (tmp / "allowed_signers").write_text(f"alice@example.com {pub}\n")
    (tmp / "req.sig").write_text(armor(blob))
    done = subprocess.run(
        [
            keygen,
            "-Y",
            "verify",
            "-f",
            str(tmp / "allowed_signers"),
            "-I",
            "alice@example.com",
            "-n",
            NS,
            "-s",
            str(tmp / "req.sig"),
        ],
        input=message,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert signer.fingerprint in done.stdout.decode() + done.stderr.decode()


def openssh_line(blob: bytes) -> str:
    (n,) = struct.unpack_from(">I", blob, 0)
    return f"{blob[4 : 4 + n].decode()} {base64.b64encode(blob).decode()}"


# --- key files ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(KEY_SPECS))
def test_key_file_signer(keys: dict[str, Any], name: str, tmp_path: Path) -> None:
    key = keys[name]
    path = write_key(tmp_path / "id", key)
    signer = KeyFileSigner.from_path(path)
    assert isinstance(signer, Signer)
    expected = public_key_from_crypto(key.public_key())
    assert signer.public_key_blob == expected.blob and signer.fingerprint == expected.fingerprint
    blob = signer.sign(MSG, namespace=NS)
    got = verify(MSG, blob, namespace=NS)
    assert got.public_key_blob == expected.blob and got.fingerprint == signer.fingerprint
    if name.startswith("rsa"):
        assert inner_algorithm(blob) == "rsa-sha2-512"
    assert "private_key" not in repr(signer) and "PrivateKey" not in repr(signer)


@pytest.mark.integration
def test_key_file_signature_verifies_with_ssh_keygen(keys: dict[str, Any], tmp_path: Path) -> None:
    for name in ("ed25519", "p384", "rsa3072"):
        signer = KeyFileSigner.from_path(write_key(tmp_path / f"id_{name}", keys[name]))
        keygen_verifies(signer.sign(MSG, namespace=NS), signer, tmp_path)


def test_key_file_passphrases(keys: dict[str, Any], tmp_path: Path) -> None:
    path = write_key(tmp_path / "id", keys["ed25519"], passphrase=b"correct horse")
    with pytest.raises(PassphraseRequired, match="is encrypted"):
        KeyFileSigner.from_path(path)
    with pytest.raises(BadPassphrase, match="wrong passphrase"):
        KeyFileSigner.from_path(path, passphrase=b"battery staple")
    signer = KeyFileSigner.from_path(path, passphrase=b"correct horse")
    verify(MSG, signer.sign(MSG, namespace=NS), namespace=NS)
    # A passphrase for a key that has none does no harm.
    plain = write_key(tmp_path / "plain", keys["ed25519"])
    assert KeyFileSigner.from_path(plain, passphrase=b"unneeded").fingerprint == signer.fingerprint


def test_key_file_errors(tmp_path: Path, keys: dict[str, Any]) -> None:
    with pytest.raises(KeyFileError, match="no such key file"):
        KeyFileSigner.from_path(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="is a directory"):
        KeyFileSigner.from_path(tmp_path)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"hello\n")
    with pytest.raises(KeyFileError, match="not an OpenSSH private key"):
        KeyFileSigner.from_path(garbage)
    write_key(tmp_path / "id", keys["ed25519"])
    with pytest.raises(KeyFileError, match="public key"):
        KeyFileSigner.from_path(tmp_path / "id.pub")
    pem = tmp_path / "pkcs8"
    pem.write_bytes(
        keys["ed25519"].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="not an OpenSSH private key"):
        KeyFileSigner.from_path(pem)
    with pytest.raises(KeyFileError, match="at least 2048"):
        KeyFileSigner.from_path(write_key(tmp_path / "weak", rsa.generate_private_key(65537, 1024)))


def test_key_file_unsupported_types(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography deprecates SSH DSA keys
        path = write_key(tmp_path / "dsa", dsa.generate_private_key(1024), pub=False)
        with pytest.raises(KeyFileError, match="DSA"):
            KeyFileSigner.from_path(path)


def test_key_file_errors_are_jit_ssh_errors(tmp_path: Path) -> None:
    with pytest.raises(SignerError) as info:
        KeyFileSigner.from_path(tmp_path / "missing")
    assert info.value.code == "key_file_error" and info.value.field == "identity"


def test_signer_from_identity_key_file(keys: dict[str, Any], tmp_path: Path) -> None:
    path = write_key(tmp_path / "id", keys["p256"], passphrase=b"pw")
    asked: list[int] = []

    def ask() -> bytes:
        asked.append(1)
        return b"pw"

    signer = signer_from_identity(str(path), use_agent=False, passphrase=ask)
    assert asked == [1]
    verify(MSG, signer.sign(MSG, namespace=NS), namespace=NS)
    with pytest.raises(PassphraseRequired):
        signer_from_identity(str(path), use_agent=False)
    plain = write_key(tmp_path / "plain", keys["ed25519"])
    signer_from_identity(str(plain), use_agent=False, passphrase=ask)
    assert asked == [1]  # not asked for an unencrypted key
    with pytest.raises(SignerError, match="no key to sign with"):
        signer_from_identity(None, use_agent=False)


# --- ssh-agent ------------------------------------------------------------------


class Agent:
    """A private ssh-agent for one test."""

    def __init__(self, sock: Path, proc: subprocess.Popen[bytes], ssh_add: str) -> None:
        self.sock = sock
        self.proc = proc
        self._ssh_add = ssh_add

    def ssh_add(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SSH_AUTH_SOCK": str(self.sock)}
        env.pop("DISPLAY", None)
        env.pop("SSH_ASKPASS", None)
        return subprocess.run(
            [self._ssh_add, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )

    def add(self, path: Path) -> None:
        done = self.ssh_add(str(path))
        assert done.returncode == 0, done.stderr

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    ssh_agent = require_tool("ssh-agent")
    ssh_add = require_tool("ssh-add")
    # A short directory: AF_UNIX socket paths are limited to ~107 bytes, and
    # pytest's tmp_path for a parametrized test can be longer than that.
    d = Path(tempfile.mkdtemp(prefix="jit-agent-"))
    sock = d / "agent.sock"
    proc = subprocess.Popen(
        [ssh_agent, "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    a = Agent(sock, proc, ssh_add)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None:
                pytest.fail(
                    f"ssh-agent exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            if time.monotonic() > deadline:
                pytest.fail("ssh-agent did not create its socket within 10 s")
            time.sleep(0.01)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield a
    finally:
        a.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["ed25519", "p256", "p384", "p521", "rsa2048", "rsa3072"])
def test_agent_signer(agent: Agent, keys: dict[str, Any], name: str, tmp_path: Path) -> None:
    agent.add(write_key(tmp_path / "id", keys[name]))
    expected = public_key_from_crypto(keys[name].public_key())
    with AgentSigner.connect() as signer:
        assert isinstance(signer, Signer)
        assert signer.public_key_blob == expected.blob
        assert signer.fingerprint == expected.fingerprint
        blob = signer.sign(MSG, namespace=NS)
        if name.startswith("rsa"):
            # paramiko only asks the agent for SHA-2 when told rsa-sha2-512.
            assert inner_algorithm(blob) == "rsa-sha2-512"
        got = verify(MSG, blob, namespace=NS)
        assert got.public_key_blob == expected.blob
        keygen_verifies(blob, signer, tmp_path)
        # The connection is reused: a second signature works as well.
        verify(b"again", signer.sign(b"again", namespace=NS), namespace=NS)


@pytest.mark.integration
def test_paramiko_agent_rsa_defaults_to_sha1(
    agent: Agent, keys: dict[str, Any], tmp_path: Path
) -> None:
    """Why AgentSigner passes algorithm="rsa-sha2-512": without it the agent signs with ssh-rsa (SHA-1)."""
    agent.add(write_key(tmp_path / "id", keys["rsa2048"]))
    from paramiko.agent import Agent as ParamikoAgent

    pa = ParamikoAgent()
    try:
        (key,) = pa.get_keys()
        with pytest.raises(InvalidSignatureError, match="SHA-1"):
            sign_with(MSG, namespace=NS, public_key_blob=key.blob, sign_raw=key.sign_ssh_data)
        # An unknown algorithm name silently means "no flags", i.e. SHA-1 too.
        with pytest.raises(InvalidSignatureError, match="SHA-1"):
            sign_with(
                MSG,
                namespace=NS,
                public_key_blob=key.blob,
                sign_raw=lambda d: key.sign_ssh_data(d, algorithm="rsa-sha512"),
            )
    finally:
        pa.close()


@pytest.mark.integration
def test_agent_picks_the_named_key(agent: Agent, keys: dict[str, Any], tmp_path: Path) -> None:
    paths = {
        name: write_key(tmp_path / f"id_{name}", keys[name])
        for name in ("ed25519", "p256", "rsa2048")
    }
    for p in paths.values():
        agent.add(p)
    with pytest.raises(AgentKeyNotFound, match="holds 3 keys.*--identity"):
        AgentSigner.connect()
    for name, p in paths.items():
        expected = public_key_from_crypto(keys[name].public_key())
        by_blob = AgentSigner.connect(public_key=expected.blob)
        by_line = AgentSigner.connect(public_key=expected.openssh)
        by_fp = AgentSigner.connect(fingerprint=expected.fingerprint)
        by_identity = signer_from_identity(str(p), use_agent=True)
        by_pub = signer_from_identity(str(p) + ".pub", use_agent=True)
        by_fp_identity = signer_from_identity(expected.fingerprint, use_agent=True)
        for s in (by_blob, by_line, by_fp, by_identity, by_pub, by_fp_identity):
            assert s.fingerprint == expected.fingerprint
            assert (
                verify(MSG, s.sign(MSG, namespace=NS), namespace=NS).fingerprint
                == expected.fingerprint
            )
            assert isinstance(s, AgentSigner)
            s.close()
    # A private key without its .pub beside it: the public half is read from
    # the (unencrypted) header of the OpenSSH key file, no passphrase needed.
    enc = write_key(tmp_path / "enc", keys["p384"], passphrase=b"pw", pub=False)
    agent.add(write_key(tmp_path / "p384plain", keys["p384"]))
    s = signer_from_identity(str(enc), use_agent=True)
    assert isinstance(s, AgentSigner)
    assert s.fingerprint == public_key_from_crypto(keys["p384"].public_key()).fingerprint
    s.close()


@pytest.mark.integration
def test_agent_key_not_found(agent: Agent, keys: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(AgentKeyNotFound, match="holds no keys"):
        AgentSigner.connect()
    agent.add(write_key(tmp_path / "id", keys["ed25519"]))
    other = public_key_from_crypto(keys["p256"].public_key())
    not_in = re.escape(f"key {other.fingerprint} is not in the ssh-agent") + ".*ssh-add"
    with pytest.raises(AgentKeyNotFound, match=not_in):
        AgentSigner.connect(public_key=other.blob)
    with pytest.raises(AgentKeyNotFound, match="not in the ssh-agent"):
        AgentSigner.connect(fingerprint="SHA256:nope")
    with pytest.raises(KeyFileError, match="no such key file"):
        signer_from_identity(str(tmp_path / "missing"), use_agent=True)


@pytest.mark.integration
def test_agent_ignores_certificates_when_choosing_the_only_key(
    agent: Agent, keys: dict[str, Any], tmp_path: Path
) -> None:
    keygen = require_tool("ssh-keygen")
    ca = write_key(tmp_path / "ca", ed25519.Ed25519PrivateKey.generate())
    user = write_key(tmp_path / "id", keys["ed25519"])
    subprocess.run(
        [keygen, "-q", "-s", str(ca), "-I", "test", "-n", "alice", "-V", "+1h", str(user) + ".pub"],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "id-cert.pub").exists()
    agent.add(user)  # ssh-add loads id-cert.pub beside the key as well
    listed = agent.ssh_add("-L").stdout
    assert "cert-v01@openssh.com" in listed
    with AgentSigner.connect() as signer:
        assert signer.key_type == "ssh-ed25519"
        verify(MSG, signer.sign(MSG, namespace=NS), namespace=NS)


def test_no_agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(AgentUnavailable, match="SSH_AUTH_SOCK is not set"):
        AgentSigner.connect()
    with pytest.raises(AgentUnavailable):
        signer_from_identity(None, use_agent=True)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "gone.sock"))
    with pytest.raises(AgentUnavailable, match="no ssh-agent answers"):
        AgentSigner.connect()
    # A socket file nobody listens on any more (a dead agent's leftover).
    d = Path(tempfile.mkdtemp(prefix="jit-dead-"))
    try:
        dead = d / "s"
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(dead))
        srv.close()
        monkeypatch.setenv("SSH_AUTH_SOCK", str(dead))
        with pytest.raises(AgentUnavailable, match="is the agent still running"):
            AgentSigner.connect()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.integration
def test_agent_goes_away_or_drops_the_key(
    agent: Agent, keys: dict[str, Any], tmp_path: Path
) -> None:
    path = write_key(tmp_path / "id", keys["ed25519"])
    agent.add(path)
    signer = AgentSigner.connect()
    assert agent.ssh_add("-d", str(path)).returncode == 0
    with pytest.raises(AgentError, match="refused to sign"):
        signer.sign(MSG, namespace=NS)
    agent.add(path)
    signer2 = AgentSigner.connect()
    agent.stop()
    with pytest.raises(AgentUnavailable):
        signer2.sign(MSG, namespace=NS)
    signer.close()
    signer2.close()
    with pytest.raises(AgentError, match="closed"):
        signer.sign(MSG, namespace=NS)


@pytest.mark.integration
def test_locked_agent(agent: Agent, keys: dict[str, Any], tmp_path: Path) -> None:
    agent.add(write_key(tmp_path / "id", keys["ed25519"]))
    env = {**os.environ, "SSH_AUTH_SOCK": str(agent.sock)}
    # ssh-add -x reads the lock password from the terminal; use the protocol
    # directly instead: SSH_AGENTC_LOCK (22) with a password string.
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(env["SSH_AUTH_SOCK"])
        body = bytes([22]) + struct.pack(">I", 2) + b"pw"
        c.sendall(struct.pack(">I", len(body)) + body)
        assert c.recv(5)[4] == 6  # SSH_AGENT_SUCCESS
    with pytest.raises(AgentKeyNotFound, match="locked"):
        AgentSigner.connect()
