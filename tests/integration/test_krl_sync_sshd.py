"""`host sync-krl` against a real sshd: a KRL that revokes a plain key never gets installed.

The sshd here trusts a jit-ssh CA for certificates AND lets a plain,
non-jit key in through authorized_keys, as a real host does for its admins.
A KRL revoking that plain key is valid for OpenSSH, and installed it locks
the admin out (checked below, to be sure the threat is real); sync-krl must
refuse it and leave the host's KRL as it was.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from ca import CAKey, generate_ca_key
from ca.krl import build_krl, krl_version_at
from client.cli import cli

from .conftest import LOGIN_TIMEOUT, Sshd, Tools, UserKey, utcnow

pytestmark = pytest.mark.integration


class PlainKeySshd(Sshd):
    """The throwaway sshd, plus an authorized_keys file for the login user."""

    def config_text(self) -> str:
        return (
            super()
            .config_text()
            .replace("AuthorizedKeysFile none", f"AuthorizedKeysFile {self.dir}/authorized_keys/%u")
        )

    def authorize(self, key: UserKey) -> None:
        # Quirk: sshd reads authorized_keys as the login user: world-readable, like
        # the principals file.
        directory = self.dir / "authorized_keys"
        directory.mkdir(mode=0o755, exist_ok=True)
        os.chmod(directory, 0o755)
        path = directory / self.user
        path.write_text(key.public.openssh + "\n")
        os.chmod(path, 0o644)

    def ssh_plain(self, key: UserKey, command: str = "id -un") -> subprocess.CompletedProcess[str]:
        """Log in with the plain key alone, no certificate."""
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


@pytest.fixture
def plain_sshd(
    login_user: str, openssh: Tools, user_keys: dict[str, UserKey]
) -> Iterator[PlainKeySshd]:
    ca = CAKey.from_private(generate_ca_key("ed25519"), comment="jitssh-krl-sync-ca")
    directory = Path(tempfile.mkdtemp(prefix="jitssh-sshd-plain-"))
    server = PlainKeySshd(directory, ca, login_user, openssh)
    try:
        server.prepare()
        server.authorize(user_keys["ed25519"])
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


class KRLServer:
    """A stand-in jit-ssh server: GET /v1/krl answers with ``krl``."""

    def __init__(self) -> None:
        self.krl = b""
        self.url = ""


@pytest.fixture
def krl_server() -> Iterator[KRLServer]:
    fake = KRLServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = fake.krl
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
            self.send_header("X-KRL-SHA256", hashlib.sha256(body).hexdigest())
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_sync_krl_refuses_a_krl_revoking_a_plain_key_and_the_key_still_logs_in(
    plain_sshd: PlainKeySshd, krl_server: KRLServer, user_keys: dict[str, UserKey]
) -> None:
    admin_key = user_keys["ed25519"]
    assert plain_sshd.ssh_plain(admin_key).stdout.strip() == plain_sshd.user
    now = utcnow()
    hostile = build_krl(
        ca_keys=[plain_sshd.ca.public.blob],
        serials=[5],
        public_keys=[admin_key.public.blob],
        version=krl_version_at(now - timedelta(seconds=10)),
        now=now,
    )
    before = plain_sshd.krl_path.read_bytes()

    krl_server.krl = hostile
    r = CliRunner().invoke(
        cli, ["host", "sync-krl", "--server", krl_server.url, "--out", str(plain_sshd.krl_path)]
    )
    assert r.exit_code == 6, r.output
    assert "plain key" in r.stderr
    assert plain_sshd.krl_path.read_bytes() == before
    # The admin's non-jit key still gets in.
    result = plain_sshd.ssh_plain(admin_key)
    assert result.returncode == 0 and result.stdout.strip() == plain_sshd.user, result.stderr

    # The threat is real: that same KRL, in place, locks the key out of this sshd.
    plain_sshd.krl_path.write_bytes(hostile)
    try:
        mark = plain_sshd.log_mark()
        locked = plain_sshd.ssh_plain(admin_key)
        assert locked.returncode == 255 and "Permission denied" in locked.stderr
        plain_sshd.wait_for_log(r"revoked by file", mark)
    finally:
        plain_sshd.krl_path.write_bytes(before)
