"""Fixtures for tests against a real, throwaway OpenSSH sshd.

One sshd per CA type (Ed25519, ECDSA P-256, RSA 3072) listens on 127.0.0.1 on a
free port, with its own host key, TrustedUserCAKeys, AuthorizedPrincipalsFile,
RevokedKeys and ``LogLevel VERBOSE``; its stderr (``-e``) goes to a file so the
tests can assert on its log lines. It is shared by all tests of that CA type
and killed at the end of the session.

Needs root (sshd drops privileges to the login user), ``/usr/sbin/sshd``,
``ssh`` and ``ssh-keygen``. Without them the tests skip with the reason, except
when ``CI=true``: then they fail, because CI must never silently skip them.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ca import (
    CAKey,
    IssuedCertificate,
    PublicKey,
    generate_ca_key,
    issue_certificate,
    public_key_from_crypto,
)
from tests.support import free_port, wait_ready

SSHD = "/usr/sbin/sshd"
LOGIN_USER = "jitssh-test"
#: The one principal the throwaway host accepts for LOGIN_USER.
ALLOWED_PRINCIPAL = "root@jitssh-throwaway"
#: Seconds any single test may run (a hung ssh or sshd must not hang the suite).
TEST_TIMEOUT = 60
#: Seconds a single ssh / paramiko login may take.
LOGIN_TIMEOUT = 20

CA_TYPES = ("ed25519", "ecdsa", "rsa")
USER_KEY_TYPES = ("ed25519", "ecdsa", "rsa")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; under CI=true fail instead, so nothing is skipped silently."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: integration tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def require_paramiko() -> Any:
    try:
        import paramiko
    except ImportError:
        skip_or_fail("paramiko is not installed (pip install -e '.[test]')")
    return paramiko


# --------------------------------------------------------------------------- timeouts


@pytest.fixture(autouse=True)
def _per_test_timeout() -> Iterator[None]:
    """Fail a test that runs longer than TEST_TIMEOUT seconds (no pytest-timeout needed).

    Every subprocess and paramiko call has its own, shorter timeout; this is the
    backstop for anything that still hangs.
    """
    if not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        pytest.fail(f"test took longer than {TEST_TIMEOUT} s", pytrace=False)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class Tools:
    ssh: str
    ssh_keygen: str
    sshd: str = SSHD


@pytest.fixture(scope="session")
def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        skip_or_fail("ssh-keygen is not installed (Debian: apt-get install openssh-client)")
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def openssh(ssh_keygen: str) -> Tools:
    """The OpenSSH binaries, or a skip (a failure under CI=true) saying what is missing."""
    if not (os.path.isfile(SSHD) and os.access(SSHD, os.X_OK)):
        skip_or_fail(f"{SSHD} is not installed (Debian: apt-get install openssh-server)")
    ssh = shutil.which("ssh")
    if ssh is None:
        skip_or_fail("ssh is not installed (Debian: apt-get install openssh-client)")
    if os.geteuid() != 0:
        skip_or_fail("a throwaway sshd needs root (it switches to the login user); run as root")
    for tool in ("useradd", "usermod"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} is not installed: cannot create the test login user")
    # Quirk: sshd (and `sshd -t`, which `host setup` runs) needs its privilege
    # separation directory, /run/sshd on Debian, normally made by the systemd
    # unit: without it every check fails with "Missing privilege separation
    # directory". A new machine has no /run/sshd until something makes it.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    return Tools(ssh=ssh, ssh_keygen=ssh_keygen)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def login_user(openssh: Tools) -> str:
    """A local account to log in as. Created once and left in place (it is idempotent,
    and deleting it could pull the rug from a concurrent run)."""
    try:
        pwd.getpwnam(LOGIN_USER)
    except KeyError:
        r = subprocess.run(
            ["useradd", "-m", "-s", "/bin/sh", LOGIN_USER],
            capture_output=True,
            text=True,
            timeout=30,
        )
        # 9: the name already exists (a concurrent run created it first).
        if r.returncode not in (0, 9):
            pytest.fail(f"useradd {LOGIN_USER} failed: {r.stderr.strip()}", pytrace=False)
    # Quirk: useradd leaves "!" in /etc/shadow, and sshd (with UsePAM no) treats an
    # account whose password starts with "!" as locked and refuses even a valid
    # certificate ("User ... not allowed because account is locked"). "*" means
    # "no password can match" but not locked.
    r = subprocess.run(
        ["usermod", "-p", "*", LOGIN_USER], capture_output=True, text=True, timeout=30
    )
    if r.returncode != 0:
        pytest.fail(f"usermod -p '*' {LOGIN_USER} failed: {r.stderr.strip()}", pytrace=False)
    return LOGIN_USER


# --------------------------------------------------------------------------- keys


@pytest.fixture(scope="session", params=CA_TYPES)
def ca_type(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def ca(ca_type: str) -> CAKey:
    """The CA the throwaway sshd trusts (TrustedUserCAKeys)."""
    bits = 3072 if ca_type == "rsa" else None
    return CAKey.from_private(
        generate_ca_key(ca_type, bits=bits), comment=f"jitssh-test-{ca_type}-ca"
    )


@pytest.fixture(scope="session")
def other_ca(ca_type: str) -> CAKey:
    """A CA of the same type that the sshd does NOT trust."""
    bits = 3072 if ca_type == "rsa" else None
    return CAKey.from_private(
        generate_ca_key(ca_type, bits=bits), comment=f"untrusted-{ca_type}-ca"
    )


@dataclass(frozen=True)
class UserKey:
    kind: str
    path: Path  # the private key file, OpenSSH format, mode 0600
    public: PublicKey
    private: Any = field(repr=False)


def _new_user_private_key(kind: str) -> Any:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(kind)


@pytest.fixture(scope="session")
def user_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, UserKey]:
    """One engineer key of each type, written as OpenSSH private key files."""
    d = tmp_path_factory.mktemp("user-keys")
    keys = {}
    for kind in USER_KEY_TYPES:
        private = _new_user_private_key(kind)
        path = d / f"id_{kind}"
        data = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        # ssh refuses a private key that group or others can read ("UNPROTECTED
        # PRIVATE KEY FILE"), even for root.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        keys[kind] = UserKey(
            kind, path, public_key_from_crypto(private.public_key(), f"engineer-{kind}"), private
        )
    return keys


@pytest.fixture
def user_key(user_keys: dict[str, UserKey]) -> UserKey:
    """The usual engineer key: Ed25519."""
    return user_keys["ed25519"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Signed:
    cert: IssuedCertificate
    path: Path  # the "-cert.pub" file


@pytest.fixture
def sign(ca: CAKey, tmp_path: Path) -> Callable[..., Signed]:
    """``sign(user_key, **issue_certificate kwargs)``: a certificate from the trusted CA
    (or ``ca=...``) written to a file, with defaults that sshd accepts: the allowed
    principal, 5 minutes from now, a unique key id."""
    counter = itertools.count(1)

    def _sign(key: UserKey, *, ca: CAKey = ca, **kwargs: Any) -> Signed:
        kwargs.setdefault("principals", [ALLOWED_PRINCIPAL])
        kwargs.setdefault("duration", timedelta(minutes=5))
        kwargs.setdefault("now", utcnow())
        kwargs.setdefault("key_id", f"jit-ssh:req={uuid.uuid4().hex[:12]}:user=alice:by=bob")
        cert = issue_certificate(ca, key.public, **kwargs)
        path = tmp_path / f"cert-{next(counter)}-cert.pub"
        path.write_text(cert.openssh + "\n")
        return Signed(cert, path)

    return _sign


# --------------------------------------------------------------------------- sshd


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    # sshd re-reads RevokedKeys on every authentication; replacing the file
    # atomically means it never sees a half-written KRL (which would make it
    # refuse every key).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


_CONFIG = """\
# A throwaway sshd for jit-ssh's integration tests.
ListenAddress 127.0.0.1:{port}
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
# Debian's sshd with UsePAM yes would run the PAM account stack; our test user
# has no password and we test certificates only.
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
# Certificates only: no authorized_keys fallback for the plain key.
AuthorizedKeysFile none
TrustedUserCAKeys {dir}/trusted_user_ca_keys
AuthorizedPrincipalsFile {dir}/principals/%u
RevokedKeys {dir}/revoked_keys.krl
# VERBOSE logs the key id and serial of each certificate login.
LogLevel VERBOSE
# The files live in a temporary directory that StrictModes would reject.
StrictModes no
PermitRootLogin no
AllowUsers {user}
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTTY yes
PrintMotd no
PrintLastLog no
LoginGraceTime 30
MaxStartups 50
"""


class Sshd:
    """A running throwaway sshd and the files it reads."""

    def __init__(self, directory: Path, ca: CAKey, user: str, tools: Tools) -> None:
        self.dir = directory
        self.ca = ca
        self.user = user
        self.tools = tools
        self.config = directory / "sshd_config"
        self.log_path = directory / "sshd.log"
        self.krl_path = directory / "revoked_keys.krl"
        self.principals_path = directory / "principals" / user
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._krl_version = itertools.count(1)

    # -- files

    def prepare(self) -> None:
        # Quirk: sshd opens AuthorizedPrincipalsFile with the *login user's*
        # privileges (temporarily_use_uid), not root's. pytest's tmp dirs are
        # 0700 root, so the user could not read the file and every certificate
        # would be refused for want of a principal. Hence a 0755 directory made
        # with mkdtemp (under /tmp, 1777) and a 0644 file.
        os.chmod(self.dir, 0o755)
        subprocess.run(
            [
                self.tools.ssh_keygen,
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "jitssh-throwaway-host",
                "-f",
                str(self.dir / "ssh_host_ed25519_key"),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        (self.dir / "trusted_user_ca_keys").write_text(self.ca.public.openssh + "\n")
        self.principals_path.parent.mkdir(mode=0o755)
        os.chmod(self.principals_path.parent, 0o755)
        self.principals_path.write_text(f"{ALLOWED_PRINCIPAL}\n")
        os.chmod(self.principals_path, 0o644)
        # Quirk: sshd refuses EVERY key when RevokedKeys names a missing (or
        # unreadable, or corrupt) file, so a valid empty KRL goes in first.
        self.set_revoked()

    def set_revoked(self, serials: Sequence[int] = (), key_ids: Sequence[str] = ()) -> None:
        """Replace the KRL. sshd reads it on each authentication: no restart needed."""
        from ca import krl

        version = next(self._krl_version)
        if serials or key_ids:
            data = krl.build_krl(
                ca_keys=[self.ca.public.blob],
                serials=tuple(serials),
                key_ids=tuple(key_ids),
                version=version,
                now=utcnow(),
            )
        else:
            data = krl.empty_krl(version=version, now=utcnow())
        _write_atomic(self.krl_path, data)

    def config_text(self) -> str:
        """The sshd_config for ``self.port`` (subclasses may configure sshd differently)."""
        return _CONFIG.format(port=self.port, dir=self.dir, user=self.user)

    # -- process

    def start(self) -> None:
        # Quirk: sshd needs its privilege separation directory (/run/sshd on
        # Debian, normally made by the systemd unit) to exist, root-owned, not
        # group/world-writable: "Missing privilege separation directory".
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        last_error = ""
        for _attempt in range(5):
            self.port = free_port()
            self.config.write_text(self.config_text())
            check = subprocess.run(
                [self.tools.sshd, "-t", "-f", str(self.config)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if check.returncode != 0:
                pytest.fail(
                    f"sshd -t rejects the test config: {check.stderr.strip()}", pytrace=False
                )
            with open(self.log_path, "ab") as log:
                # Quirk: sshd must be started by absolute path ("sshd re-exec
                # requires execution with an absolute path"): it re-executes
                # itself for every connection. -D: stay in the foreground so we
                # own the process; -e: log to stderr, i.e. our log file.
                self.proc = subprocess.Popen(
                    [self.tools.sshd, "-D", "-e", "-f", str(self.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            if self._wait_ready(timeout=15):
                return
            last_error = self.log_text()[-2000:]
            self.stop()
            # The port we picked may have been taken between our probe and sshd's
            # bind: try another one.
            if "Address already in use" not in last_error and "Cannot bind" not in last_error:
                break
        pytest.fail(f"the throwaway sshd did not start; its log:\n{last_error}", pytrace=False)

    def _wait_ready(self, timeout: float) -> bool:
        """True once the port accepts connections and answers with an SSH banner."""
        assert self.proc is not None
        return wait_ready(self.proc, self._answers_banner, timeout, interval=0.05)

    def _answers_banner(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(2)
                return s.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def _children(self) -> list[int]:
        assert self.proc is not None
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # Quirk: sshd's per-connection processes call setsid() and outlive a
            # SIGTERM to the listener, so a child still tearing down the last
            # session would be left behind. Give them a moment to finish, then
            # end the stragglers (our own sshd's children, by pid).
            deadline = time.monotonic() + 5
            while self._children() and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in self._children():
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    # -- log

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """The current end of the log: pass it to ``log_since`` to see only newer lines."""
        return len(self.log_text())

    def log_since(self, mark: int) -> str:
        return self.log_text()[mark:]

    def wait_for_log(self, pattern: str, mark: int = 0, timeout: float = 5.0) -> re.Match[str]:
        """Wait for a log line matching ``pattern`` (a regex) after ``mark``.

        sshd's per-connection process writes some lines a moment after the
        client has already exited, so poll briefly instead of reading once.
        """
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_since(mark))
            if m:
                return m
            if time.monotonic() > deadline:
                pytest.fail(
                    f"sshd never logged /{pattern}/; its log since the test began:\n{self.log_since(mark)}",
                    pytrace=False,
                )
            time.sleep(0.05)

    # -- clients

    def ssh(
        self, key: UserKey, cert: Path | Signed, command: str = "id -un"
    ) -> subprocess.CompletedProcess[str]:
        """Log in with OpenSSH's ssh client, certificate ``cert``, and run ``command``."""
        cert_path = cert.path if isinstance(cert, Signed) else cert
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
        return subprocess.run(
            [
                self.tools.ssh,
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "PreferredAuthentications=publickey",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
                "-i",
                str(key.path),
                "-o",
                f"CertificateFile={cert_path}",
                "-p",
                str(self.port),
                f"{self.user}@127.0.0.1",
                command,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=LOGIN_TIMEOUT,
            env=env,
        )

    def paramiko_exec(
        self, key: UserKey, cert: Path | Signed, command: str = "id -un"
    ) -> tuple[int, str]:
        """Log in with paramiko and a certificate; return (exit status, stdout)."""
        paramiko = require_paramiko()
        cert_path = cert.path if isinstance(cert, Signed) else cert
        pkey = paramiko.PKey.from_path(key.path)
        pkey.load_certificate(str(cert_path))
        client = paramiko.SSHClient()
        # A throwaway host with a host key made seconds ago: nothing to pin.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(
                hostname="127.0.0.1",
                port=self.port,
                username=self.user,
                pkey=pkey,
                look_for_keys=False,
                allow_agent=False,
                timeout=LOGIN_TIMEOUT,
                banner_timeout=LOGIN_TIMEOUT,
                auth_timeout=LOGIN_TIMEOUT,
            )
            _stdin, stdout, _stderr = client.exec_command(command, timeout=LOGIN_TIMEOUT)
            out = stdout.read().decode()
            return stdout.channel.recv_exit_status(), out
        finally:
            client.close()


@pytest.fixture(scope="session")
def _sshd_server(ca: CAKey, login_user: str, openssh: Tools) -> Iterator[Sshd]:
    directory = Path(tempfile.mkdtemp(prefix=f"jitssh-sshd-{ca.public.key_type}-"))
    server = Sshd(directory, ca, login_user, openssh)
    try:
        server.prepare()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def sshd(_sshd_server: Sshd) -> Iterator[Sshd]:
    """The throwaway sshd for this CA type, with an empty KRL and still running."""
    if _sshd_server.proc is None or _sshd_server.proc.poll() is not None:
        pytest.fail(
            f"the throwaway sshd has died; its log:\n{_sshd_server.log_text()[-2000:]}",
            pytrace=False,
        )
    _sshd_server.set_revoked()
    yield _sshd_server
    # Leave the next test an empty KRL even if this one failed halfway.
    _sshd_server.set_revoked()
