"""Issue 14, point 5: ``jit-ssh extend`` end to end, with real processes only (the installed
``jit-ssh``, ``jit-ssh serve``, a throwaway sshd set up by ``jit-ssh host setup``).

carol (on call: auto-approved) logs in, opens a session that stays open, and extends her
access. The new certificate (same key, same files) logs in; the old serial is in the KRL the
host installed (``ssh-keygen -Q`` exits 1 for the old certificate) and sshd refuses a new
connection with the old certificate. And what this measures, and docs/revocation.md says:
the session opened with the old certificate keeps running after that certificate is revoked
and after it expires. OpenSSH checks a certificate (its window, the KRL) when a connection
authenticates, never during a session.

The fixtures are in ``e2e_helpers.py``.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ca import parse_certificate

from .conftest import LOGIN_USER
from .e2e_helpers import (  # noqa: F401
    TARGET,
    Engineer,
    HostSshd,
    World,
    end_process,
    load_json,
    run,
    wait_for,
    world,
)

pytestmark = pytest.mark.integration


class Session:
    """``jit-ssh ssh TARGET -- cat`` kept open: each :meth:`ping` line must come back."""

    def __init__(self, person: Engineer, host: HostSshd) -> None:
        self.proc = subprocess.Popen(
            [person.server.jit_ssh, "ssh", TARGET, *host.jit_ssh_args(), "--", "cat"],
            env=person.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        person.background.append(self.proc)  # type: ignore[arg-type]
        self.n = 0

    def ping(self, timeout: float = 10.0) -> bool:
        """Whether the remote ``cat`` still echoes a line within ``timeout`` seconds."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.n += 1
        line = f"ping-{self.n}\n".encode()
        try:
            self.proc.stdin.write(line)
        except BrokenPipeError:
            return False
        got = b""
        deadline = time.monotonic() + timeout
        while not got.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                return False
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                return False
            got += chunk
        return got == line

    def close(self) -> None:
        end_process(self.proc)


def _accepted(host: HostSshd, mark: int, request_id: str) -> str:
    m = host.wait_for_log(
        rf"Accepted publickey for {LOGIN_USER} from 127\.0\.0\.1 port \d+ ssh2: ED25519-CERT \S+ "
        rf"ID jit-ssh:req={re.escape(request_id)}:user=carol:by=\S+ \(serial (\d+)\)",
        mark,
    )
    return m.group(1)


def _query(host: HostSshd, cert: Path) -> int:
    """``ssh-keygen -Q -f <the host's KRL> CERT``: 0 not revoked, 1 revoked."""
    return run(
        [host.tools.ssh_keygen, "-Q", "-f", str(host.krl_path), str(cert)], {}, timeout=15
    ).returncode


def _until(moment: datetime) -> None:
    """Sleep until ``moment`` (real time: sshd's own clock judges the certificate)."""
    left = (moment - datetime.now(UTC)).total_seconds()
    if left > 0:
        time.sleep(left)


def test_extend_replaces_the_certificate_and_the_open_session_survives_revocation_and_expiry(
    world: World,
) -> None:
    carol, host, server = world.carol, world.host, world.server
    carol.jit("done", "--all", expect=None)  # whatever an earlier test left
    first = load_json(carol.jit("login", TARGET, "--for", "15s", "--json").stdout)["request_id"]
    key = carol.keys_dir / f"{TARGET}+{first}"
    cert_path = Path(f"{key}-cert.pub")
    old = parse_certificate(cert_path.read_text())
    kept = world.root / "extend-old-cert.pub"
    shutil.copy2(cert_path, kept)

    # A session opened with the old certificate, kept open.
    mark = host.log_mark()
    session = Session(carol, host)
    try:
        assert session.ping(), session.proc.stderr
        assert _accepted(host, mark, first) == str(old.serial)

        ext = carol.jit("extend", "--for", "1m", "--reason", "still on it")
        new = parse_certificate(cert_path.read_text())
        assert new.serial != old.serial and new.public_key == old.public_key
        assert f"The old certificate (serial {old.serial}) is revoked." in ext.stdout
        extension = load_json(carol.jit("status", "--json").stdout)["active"][0]["request_id"]
        assert extension != first

        # The host installs the KRL: the old serial is in it, the new one is not.
        host.sync_krl(server)
        assert _query(host, kept) == 1
        assert _query(host, cert_path) == 0
        # A new connection with the new certificate (same key, same files) logs in...
        mark = host.log_mark()
        ran = carol.jit("ssh", TARGET, *host.jit_ssh_args(), "--", "id", "-un")
        assert ran.stdout.strip() == LOGIN_USER
        assert _accepted(host, mark, extension) == str(new.serial)
        # ... and one with the old certificate is refused: revoked.
        mark = host.log_mark()
        refused = host.ssh_with(key, kept)
        assert refused.returncode == 255, refused
        host.wait_for_log(rf"revoked by file {re.escape(str(host.krl_path))}", mark)

        # (a) Measured: the session opened with the old certificate survives its revocation.
        assert session.ping(), "the open session ended when its certificate was revoked"
        # (b) ... and its expiry, by sshd's own clock (the old window has passed).
        _until(old.valid_before)
        time.sleep(2)
        assert session.ping(), "the open session ended when its certificate expired"
        assert session.proc.poll() is None
    finally:
        session.close()
    carol.jit("done", "--all")


def test_an_open_session_outlives_an_expired_certificate(world: World) -> None:
    """Expiry alone (no revocation): new connections are refused, the open one runs on."""
    carol, host = world.carol, world.host
    carol.jit("done", "--all", expect=None)
    rid = load_json(carol.jit("login", TARGET, "--for", "6s", "--json").stdout)["request_id"]
    key = carol.keys_dir / f"{TARGET}+{rid}"
    cert_path = Path(f"{key}-cert.pub")
    cert = parse_certificate(cert_path.read_text())
    session = Session(carol, host)
    try:
        assert session.ping(), session.proc.stderr
        _until(cert.valid_before)
        time.sleep(2)
        mark = host.log_mark()
        late = host.ssh_with(key, cert_path)
        assert late.returncode == 255, late
        host.wait_for_log(r"[Cc]ertificate invalid: expired", mark)
        assert session.ping(), "the open session ended when its certificate expired"

        # What docs/krl.md tells a host admin: ending the session's sshd process (the
        # per-connection child of the listener) ends the session.
        def only_child() -> list[int]:
            children = host._children()
            return children if len(children) == 1 else []

        (monitor,) = wait_for(only_child, "one sshd child: the open session's")
        os.kill(monitor, signal.SIGTERM)
        # The client sees the connection close (ssh exits 255); nothing answers any more.
        assert session.proc.wait(timeout=10) == 255
        assert not session.ping(timeout=2)
    finally:
        session.close()
    carol.jit("done", "--all", expect=None)
