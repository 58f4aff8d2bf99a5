"""Real processes for the end-to-end test of the engineer's path.

* :class:`JitServer`: ``jit-ssh serve`` (gunicorn, one worker) on 127.0.0.1 and a
  free port, with its own data directory, policy file and HOME;
* :class:`Engineer`: one person with an enrolled key and a HOME of their own
  (the client writes ``~/.ssh/jit-ssh/`` there), running the *installed*
  ``jit-ssh`` command in subprocesses with ``JIT_SSH_SERVER/USER/IDENTITY``;
* :class:`HostSshd`: a throwaway sshd (see ``conftest.Sshd``) whose CA keys,
  principals and KRL are exactly what ``jit-ssh host setup`` wrote: its
  sshd_config includes the drop-in host setup wrote (``Include``).

Every process gets a timeout, and every process started here is ended in
teardown, by its own pid (or its own process group, for gunicorn's master and
worker).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support import answers_healthz, free_port, wait_ready

from .conftest import LOGIN_TIMEOUT, LOGIN_USER, Sshd, Tools, skip_or_fail

#: The policy target the throwaway host belongs to.
TARGET = "e2e"
#: The principal the policy puts into every certificate for TARGET.
PRINCIPAL = f"{LOGIN_USER}@{TARGET}"
#: Seconds any one jit-ssh command may take (they normally take well under one).
COMMAND_TIMEOUT = 30

POLICY = f"""\
# The end-to-end test's policy: one target whose principal and login user are
# the throwaway sshd's test account.
[targets.{TARGET}]
principals = ["{PRINCIPAL}"]
login_users = ["{LOGIN_USER}"]

[[rules]]
name = "e2e-engineers"
targets = ["{TARGET}"]
groups = ["engineers"]
# Down to seconds, so the test can watch a certificate expire.
max_duration = "10m"
default_duration = "5s"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = false
pending_ttl = "5m"
claim_window = "5m"
# Extensions (jit-ssh extend) are auto-approved up to this in all; the auto_approve below
# never approves one by itself.
extension_allowance = "10m"

[rules.auto_approve]
groups = ["oncall"]
max_duration = "10m"
"""


def jit_ssh_command() -> str:
    """The installed ``jit-ssh`` console script (beside this Python, i.e. in the venv)."""
    beside = Path(sys.executable).with_name("jit-ssh")
    path = str(beside) if beside.exists() else shutil.which("jit-ssh")
    if path is None:
        skip_or_fail("the jit-ssh command is not installed (pip install -e '.[test]')")
    return path  # type: ignore[return-value]


def _base_env() -> dict[str, str]:
    """A clean environment: nothing from the caller's jit-ssh settings, agent or XDG dirs."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return ""


def end_process(
    proc: subprocess.Popen[Any] | None, *, group: bool = False, timeout: float = 10
) -> None:
    """Terminate ``proc`` (or its process group, which it leads), then kill it if it lingers."""
    if proc is None or proc.poll() is not None:
        return

    def send(sig: int) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=timeout)


def run(
    argv: Sequence[str], env: dict[str, str], *, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:  # subprocess.run has killed it
        pytest.fail(
            f"{' '.join(argv)} took longer than {timeout} s; stderr: {e.stderr!r}", pytrace=False
        )


def check(
    result: subprocess.CompletedProcess[str], expect: int = 0
) -> subprocess.CompletedProcess[str]:
    assert result.returncode == expect, (
        f"{' '.join(result.args)} exited {result.returncode}, expected {expect}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result


# --------------------------------------------------------------------------- the server


class JitServer:
    """``jit-ssh serve`` in a subprocess, with its own data directory and policy."""

    #: The server's HOME, under ``root``.
    home_name = "home"
    #: What ``start`` writes to the policy file.
    policy_text = POLICY

    def __init__(self, root: Path, jit_ssh: str) -> None:
        self.root = root
        self.jit_ssh = jit_ssh
        self.data_dir = root / "data"
        self.policy = root / "policy.toml"
        # gunicorn puts a control socket under $HOME: a HOME of its own keeps
        # two test servers (or a real one) from sharing it.
        self.home = root / self.home_name
        self.log = root / "serve.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **_base_env(),
            "HOME": str(self.home),
            "JIT_SSH_DATA_DIR": str(self.data_dir),
            "JIT_SSH_POLICY": str(self.policy),
            "JIT_SSH_LOG_LEVEL": "WARNING",
        }

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.policy.write_text(self.policy_text)
        for _attempt in range(3):
            self.port = free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.jit_ssh, "serve", "--bind", f"127.0.0.1:{self.port}", "--workers", "1"],
                    env=self.env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    # Its own process group: gunicorn's master and worker end together.
                    start_new_session=True,
                )
            if self._wait_ready(timeout=30):
                return
            self.stop()
            if "Address already in use" not in _tail(self.log):
                break
        pytest.fail(f"jit-ssh serve did not start; its log:\n{_tail(self.log)}", pytrace=False)

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        return wait_ready(self.proc, lambda: answers_healthz(self.url), timeout)

    def stop(self) -> None:
        end_process(self.proc, group=True)
        self.proc = None

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``jit-ssh admin ...`` against the same data directory (run on the server, not over HTTP)."""
        return check(run([self.jit_ssh, "admin", *args], self.env()))


# --------------------------------------------------------------------------- engineers


@dataclass
class Engineer:
    """One person: an enrolled key, a HOME, and the installed jit-ssh command."""

    name: str
    home: Path
    identity: Path
    server: JitServer
    agent_socket: Path | None = None
    background: list[subprocess.Popen[str]] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        root: Path,
        name: str,
        server: JitServer,
        *,
        groups: Sequence[str],
        roles: Sequence[str],
    ) -> Engineer:
        home = root / f"home-{name}"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        key = ed25519.Ed25519PrivateKey.generate()
        identity = home / ".ssh" / "id_ed25519"
        fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.OpenSSH,
                    serialization.NoEncryption(),
                )
            )
        pub = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        identity.with_name("id_ed25519.pub").write_bytes(pub + f" {name}@e2e\n".encode())
        args = ["user", "add", name, "--ssh-key", str(identity) + ".pub"]
        for g in groups:
            args += ["--group", g]
        for r in roles:
            args += ["--role", r]
        server.admin(*args)
        return cls(name=name, home=home, identity=identity, server=server)

    @property
    def keys_dir(self) -> Path:
        return self.home / ".ssh" / "jit-ssh"

    def env(self) -> dict[str, str]:
        env = {
            **_base_env(),
            "HOME": str(self.home),
            "JIT_SSH_SERVER": self.server.url,
            "JIT_SSH_USER": self.name,
            "JIT_SSH_IDENTITY": str(self.identity),
        }
        if self.agent_socket is not None:
            env["SSH_AUTH_SOCK"] = str(self.agent_socket)
        return env

    def jit(
        self, *args: str, expect: int | None = 0, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``jit-ssh ARGS`` as this person; check the exit status unless ``expect`` is None."""
        result = run([self.server.jit_ssh, *args], self.env(), timeout=timeout)
        return result if expect is None else check(result, expect)

    def jit_background(self, *args: str) -> tuple[subprocess.Popen[str], Path, Path]:
        """Start ``jit-ssh ARGS`` without waiting; returns the process and its stdout/stderr files."""
        n = len(self.background)
        out, err = self.home / f"bg-{n}.out", self.home / f"bg-{n}.err"
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.Popen(
                [self.server.jit_ssh, *args],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=o,
                stderr=e,
                text=True,
            )
        self.background.append(proc)
        return proc, out, err

    def ssh_add_list(self) -> str:
        assert self.agent_socket is not None
        return run(["ssh-add", "-l"], self.env(), timeout=15).stdout

    def start_agent(self, root: Path) -> subprocess.Popen[str]:
        """An ssh-agent of this person's own (-D: in the foreground, so we own its pid)."""
        sock = root / f"agent-{self.name}.sock"
        proc = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(sock)],
            env=_base_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.background.append(proc)
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ssh-agent did not start", pytrace=False)
            time.sleep(0.02)
        self.agent_socket = sock
        return proc

    def stop(self) -> None:
        for proc in self.background:
            end_process(proc)


# --------------------------------------------------------------------------- the host


_HOST_CONFIG = """\
# A throwaway sshd set up by `jit-ssh host setup`. The drop-in comes first:
# sshd keeps the FIRST value it reads for each keyword, so TrustedUserCAKeys,
# AuthorizedPrincipalsFile, RevokedKeys and LogLevel are host setup's own.
Include {dir}/sshd_config.d/*.conf
ListenAddress 127.0.0.1:{port}
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
# Debian's sshd with UsePAM yes would run the PAM account stack; the test user
# has no password and only certificates are tested.
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile none
# The files live in a temporary directory that StrictModes would reject.
StrictModes no
PermitRootLogin no
AllowUsers {user}
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PrintMotd no
PrintLastLog no
LoginGraceTime 30
MaxStartups 50
"""


class HostSshd(Sshd):
    """``conftest.Sshd`` configured by ``jit-ssh host setup --server URL --target TARGET``."""

    def __init__(self, directory: Path, user: str, tools: Tools) -> None:
        super().__init__(directory, None, user, tools)  # type: ignore[arg-type]  # no CA of its own
        self.dropin = directory / "sshd_config.d" / "60-jit-ssh.conf"
        self.krl_path = directory / "jit-ssh" / "revoked_keys.krl"
        self.principals_path = directory / "jit-ssh" / "principals" / user

    def config_text(self) -> str:
        return _HOST_CONFIG.format(port=self.port, dir=self.dir, user=self.user)

    def prepare(self) -> None:
        # Quirk: sshd reads AuthorizedPrincipalsFile as the login user, so the
        # directory tree host setup writes into must be world-readable.
        os.chmod(self.dir, 0o755)
        check(
            run(
                [
                    self.tools.ssh_keygen,
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "jitssh-e2e-host",
                    "-f",
                    str(self.dir / "ssh_host_ed25519_key"),
                ],
                _base_env(),
            )
        )
        # Written now so that host setup validates the real thing with `sshd -t`;
        # start() writes it again with the port it finally binds.
        self.port = free_port()
        self.config.write_text(self.config_text())

    def setup_from(
        self, server: JitServer, target: str = TARGET
    ) -> subprocess.CompletedProcess[str]:
        return check(
            run(
                [
                    server.jit_ssh,
                    "host",
                    "setup",
                    "--server",
                    server.url,
                    "--target",
                    target,
                    "--sshd-dir",
                    str(self.dir),
                ],
                _base_env(),
            )
        )

    def effective(self) -> dict[str, str]:
        """``sshd -T``: the configuration sshd really uses, keyword -> value."""
        out = check(run([self.tools.sshd, "-T", "-f", str(self.config)], _base_env())).stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def sync_krl(self, server: JitServer) -> subprocess.CompletedProcess[str]:
        return check(
            run(
                [
                    server.jit_ssh,
                    "host",
                    "sync-krl",
                    "--server",
                    server.url,
                    "--out",
                    str(self.krl_path),
                ],
                _base_env(),
            )
        )

    def ssh_with(
        self, key: Path, cert: Path, command: str = "id -un"
    ) -> subprocess.CompletedProcess[str]:
        """Plain OpenSSH with a key and certificate file (e.g. a copy kept after `done`)."""
        return run(
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
                str(key),
                "-o",
                f"CertificateFile={cert}",
                "-p",
                str(self.port),
                f"{self.user}@127.0.0.1",
                command,
            ],
            _base_env(),
            timeout=LOGIN_TIMEOUT,
        )

    def jit_ssh_args(self) -> list[str]:
        """Arguments for ``jit-ssh ssh TARGET ...`` to reach this throwaway host (a host key made a
        moment ago: trusted on first use, as jit-ssh ssh never turns host key checking off)."""
        return [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ]


def wait_for(predicate: Any, what: str, timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll ``predicate()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def request_id_from(stderr_text: str) -> str | None:
    m = re.search(r"^Request ([0-9a-f]+) for ", stderr_text, re.M)
    return m.group(1) if m else None


def load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pytest.fail(f"not JSON: {text!r}", pytrace=False)


# --------------------------------------------------------------------------- fixtures


@dataclass
class World:
    """Everything the end-to-end tests share: one server, one host, three people."""

    server: JitServer
    host: HostSshd
    alice: Engineer  # engineer: needs an approval
    bob: Engineer  # approver
    carol: Engineer  # engineer and on-call: auto-approved
    root: Path


@pytest.fixture(scope="module")
def world(openssh: Tools, login_user: str) -> Iterator[World]:
    import tempfile

    jit_ssh = jit_ssh_command()
    for tool in ("ssh-add", "ssh-agent"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} is not installed (Debian: apt-get install openssh-client)")
    # mkdtemp under /tmp, not pytest's 0700 tmp dirs: the login user must be
    # able to read the principals file host setup writes in here.
    root = Path(tempfile.mkdtemp(prefix="jitssh-e2e-"))
    os.chmod(root, 0o755)
    server = JitServer(root / "server", jit_ssh)
    host = HostSshd(root / "host", login_user, openssh)
    host.dir.mkdir()
    people: list[Engineer] = []
    try:
        server.start()
        alice = Engineer.create(root, "alice", server, groups=["engineers"], roles=["requester"])
        bob = Engineer.create(root, "bob", server, groups=["approvers"], roles=["approver"])
        carol = Engineer.create(
            root, "carol", server, groups=["engineers", "oncall"], roles=["requester"]
        )
        people += [alice, bob, carol]
        host.prepare()
        host.setup_from(server)
        host.start()
        yield World(server=server, host=host, alice=alice, bob=bob, carol=carol, root=root)
    finally:
        for person in people:
            person.stop()
        host.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
