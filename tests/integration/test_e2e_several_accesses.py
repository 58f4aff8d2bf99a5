"""Issue 12, point 2 and the ssh side of point 6, with real processes only.

carol (on call: auto-approved) holds two accesses to the throwaway host's target at once.
``jit-ssh ssh`` logs in with the one that has the most time left (sshd's log names its
request), or the one ``--request`` names; ``done ID`` ends one while the other still logs in;
a certificate the host refuses ends the connection at once: ssh never falls back to a
password, even on an sshd that offers one and with an askpass program ready to answer.

The fixtures are in ``e2e_helpers.py``.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from ca import parse_certificate

from .conftest import LOGIN_TIMEOUT, LOGIN_USER
from .e2e_helpers import TARGET, HostSshd, World, load_json, run, world  # noqa: F401

pytestmark = pytest.mark.integration


class PasswordHost(HostSshd):
    """The same host setup, on an sshd that also offers password and keyboard-interactive logins."""

    def config_text(self) -> str:
        return (
            super()
            .config_text()
            .replace("PasswordAuthentication no", "PasswordAuthentication yes")
            .replace("KbdInteractiveAuthentication no", "KbdInteractiveAuthentication yes")
        )


def _accepted(host: HostSshd, mark: int, request_id: str) -> None:
    host.wait_for_log(
        rf"Accepted publickey for {LOGIN_USER} from 127\.0\.0\.1 port \d+ ssh2: ED25519-CERT \S+ "
        rf"ID jit-ssh:req={re.escape(request_id)}:user=carol:by=\S+ \(serial \d+\)",
        mark,
    )


def _files(keys_dir: Path, request_id: str) -> list[Path]:
    key = keys_dir / f"{TARGET}+{request_id}"
    return [key, Path(f"{key}.pub"), Path(f"{key}-cert.pub"), Path(f"{key}.json")]


def _askpass(root: Path) -> tuple[Path, Path]:
    """An SSH_ASKPASS program that records each prompt it is shown (and answers wrongly)."""
    log = root / "askpass.log"
    script = root / "askpass"
    script.write_text(f'#!/bin/sh\necho "$1" >> {log}\necho wrong\n')
    script.chmod(0o755)
    log.unlink(missing_ok=True)
    return script, log


def test_two_accesses_side_by_side_ssh_takes_the_longest_and_done_ends_one(world: World) -> None:
    carol, host, server = world.carol, world.host, world.server
    carol.jit("done", "--all", expect=None)  # whatever an earlier test left

    longer = load_json(carol.jit("login", TARGET, "--for", "3m", "--json").stdout)["request_id"]
    shorter = load_json(carol.jit("login", TARGET, "--for", "2m", "--json").stdout)["request_id"]
    assert longer != shorter
    for rid in (longer, shorter):
        assert all(p.exists() for p in _files(carol.keys_dir, rid)), rid
    active = load_json(carol.jit("status", "--json").stdout)["active"]
    assert [(a["request_id"], a["login_user"], a["ssh_default"]) for a in active] == [
        (longer, LOGIN_USER, True),
        (shorter, LOGIN_USER, False),
    ]

    # The one with the most time left, unless --request names the other.
    mark = host.log_mark()
    ran = carol.jit("ssh", TARGET, *host.jit_ssh_args(), "--", "id", "-un")
    assert ran.stdout.strip() == LOGIN_USER
    _accepted(host, mark, longer)
    mark = host.log_mark()
    ran = carol.jit("ssh", TARGET, "--request", shorter, *host.jit_ssh_args(), "--", "id", "-un")
    assert ran.stdout.strip() == LOGIN_USER
    _accepted(host, mark, shorter)

    # Plain `done` does not guess between two.
    refused = carol.jit("done", expect=1)
    assert "2 accesses are valid" in refused.stderr and "fix: " in refused.stderr
    assert all(p.exists() for p in _files(carol.keys_dir, longer) + _files(carol.keys_dir, shorter))

    # Keep the longer access's files, as if the laptop still held them after a revocation.
    kept = world.root / "kept"
    kept.mkdir(exist_ok=True)
    for p in _files(carol.keys_dir, longer):
        shutil.copy2(p, kept / p.name)
    serial = parse_certificate(_files(carol.keys_dir, longer)[2].read_text()).serial

    done = carol.jit("done", longer)
    assert f"Revoked serial {serial} ({TARGET}, request {longer})." in done.stdout
    assert not any(p.exists() for p in _files(carol.keys_dir, longer))
    host.sync_krl(server)
    # The other still logs in, now as jit-ssh ssh's default.
    mark = host.log_mark()
    ran = carol.jit("ssh", TARGET, *host.jit_ssh_args(), "--", "id", "-un")
    assert ran.stdout.strip() == LOGIN_USER
    _accepted(host, mark, shorter)

    # The revoked one put back: jit-ssh ssh picks it (most time left), and sshd refuses it.
    for p in kept.iterdir():
        shutil.copy2(p, carol.keys_dir / p.name)
    mark = host.log_mark()
    refused_ssh = carol.jit("ssh", TARGET, *host.jit_ssh_args(), "--", "id", "-un", expect=255)
    assert "Permission denied (publickey)" in refused_ssh.stderr
    host.wait_for_log(rf"revoked by file {re.escape(str(host.krl_path))}", mark)

    # Ending both: the server says the first was revoked already, and by whom.
    ended = carol.jit("done", "--all")
    assert re.search(
        rf"Request {longer} \({TARGET}, serial {serial}\) was already revoked by carol at ",
        ended.stdout,
    ), ended.stdout
    assert f"({TARGET}, request {shorter})." in ended.stdout
    assert load_json(carol.jit("status", "--json").stdout)["active"] == []


def test_a_refused_certificate_never_falls_back_to_a_password_prompt(world: World) -> None:
    carol, server = world.carol, world.server
    pw_host = PasswordHost(world.root / "pw-host", LOGIN_USER, world.host.tools)
    pw_host.dir.mkdir(exist_ok=True)
    try:
        pw_host.prepare()
        pw_host.setup_from(server)
        pw_host.start()
        assert pw_host.effective()["passwordauthentication"] == "yes"
        carol.jit("done", "--all", expect=None)
        rid = load_json(carol.jit("login", TARGET, "--for", "2m", "--json").stdout)["request_id"]
        key, _pub, cert, _record = _files(carol.keys_dir, rid)
        # The certificate is good, but this host refuses it: revoked, KRL synced.
        keep = world.root / "refused"
        keep.mkdir(exist_ok=True)
        for p in _files(carol.keys_dir, rid):
            shutil.copy2(p, keep / p.name)
        carol.jit("done", rid)
        for p in keep.iterdir():
            shutil.copy2(p, carol.keys_dir / p.name)
        pw_host.sync_krl(server)

        askpass, asked = _askpass(world.root)
        env = {
            **carol.env(),
            "SSH_ASKPASS": str(askpass),
            "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": ":0",
        }
        # No BatchMode here: it alone would forbid the prompt.
        reach = [
            "--host",
            "127.0.0.1",
            "--port",
            str(pw_host.port),
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
        ]

        # Control: plain ssh with the same key, certificate and askpass asks for a password.
        control = run(
            [
                pw_host.tools.ssh,
                "-F",
                "/dev/null",
                "-i",
                str(key),
                "-o",
                f"CertificateFile={cert}",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "NumberOfPasswordPrompts=1",
                *reach[4:],
                "-p",
                str(pw_host.port),
                "--",
                f"{LOGIN_USER}@127.0.0.1",
                "true",
            ],
            env,
            timeout=LOGIN_TIMEOUT,
        )
        assert control.returncode == 255, control
        assert asked.exists() and "password" in asked.read_text().lower(), control.stderr
        asked.unlink()

        mark = pw_host.log_mark()
        start = time.monotonic()
        refused = run(
            [server.jit_ssh, "ssh", TARGET, "--request", rid, *reach, "--", "true"],
            env,
            timeout=LOGIN_TIMEOUT,
        )
        elapsed = time.monotonic() - start
        assert refused.returncode == 255, refused
        # sshd offered a password; ssh did not take it up, and nothing was asked.
        assert re.search(r"Permission denied \(publickey,[^)]*password", refused.stderr), refused
        assert not asked.exists(), asked.read_text()
        assert elapsed < 10, elapsed
        # sshd refused the certificate itself (the KRL lists its serial): no other method was tried.
        pw_host.wait_for_log(rf"revoked by file {re.escape(str(pw_host.krl_path))}", mark)
        assert not re.search(r"Failed (password|keyboard-interactive)", pw_host.log_since(mark)), (
            pw_host.log_since(mark)
        )
    finally:
        pw_host.stop()
        carol.jit("done", "--all", expect=None)
