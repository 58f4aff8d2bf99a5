"""The engineer's whole path, end to end, with real processes only.

``jit-ssh serve`` runs the CA service; a throwaway sshd trusts it through the
files ``jit-ssh host setup --server`` wrote; alice, bob and carol run the
installed ``jit-ssh`` command, each with a HOME of their own:

1. alice logs in and waits; bob approves through the API (``jit-ssh approve``);
   alice's waiting login ends with a certificate; ``jit-ssh ssh`` runs a
   command on the host; a few seconds later the window has passed and sshd
   refuses the same certificate.
2. alice logs in again (``--no-wait``, approved, ``--resume``) and so does
   carol (auto-approved); alice ends her access with ``done`` and the host runs
   ``host sync-krl``: sshd refuses alice's certificate at once, carol's still works.
3. carol's repeated auto-approved logins succeed (their wall times, and ``--help``'s,
   are measured by ``python -m benchmarks``: benchmarks/cli_bench.py).

The fixtures are in ``e2e_helpers.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ca import parse_certificate

from .conftest import LOGIN_USER
from .e2e_helpers import PRINCIPAL, TARGET, World, load_json, request_id_from, run, wait_for, world  # noqa: F401

pytestmark = pytest.mark.integration


def _sleep_until(moment: datetime) -> None:
    delay = (moment - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay)


def _refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 255, (
        f"expected sshd to refuse, got {result.returncode}: {result.stdout!r} {result.stderr!r}"
    )
    assert "Permission denied (publickey)" in result.stderr, result.stderr


def test_login_waits_for_approval_then_ssh_works_until_the_window_ends(world: World) -> None:
    alice, bob, host = world.alice, world.bob, world.host
    if alice.agent_socket is None:
        alice.start_agent(world.root)
    # sshd really uses what host setup wrote (sshd -T prints the effective settings).
    effective = host.effective()
    assert effective["trustedusercakeys"] == str(host.dir / "jit-ssh" / "trusted_user_ca_keys")
    assert effective["revokedkeys"] == str(host.krl_path)
    assert effective["authorizedprincipalsfile"] == f"{host.dir}/jit-ssh/principals/%u"
    assert PRINCIPAL in host.principals_path.read_text().splitlines()

    # alice asks for 6 seconds and waits; nothing is on her disk yet.
    login, out, err = alice.jit_background(
        "login", TARGET, "--for", "6s", "--reason", "INC-1234: replica lag", "--poll", "0.2"
    )

    def waiting_for_bob() -> list[dict[str, object]]:
        rows = load_json(bob.jit("pending", "--json").stdout)
        return [r for r in rows if r["requester"] == "alice" and r["state"] == "pending"]

    rows = wait_for(
        waiting_for_bob, "alice's request in bob's `jit-ssh pending`", timeout=20, interval=0.2
    )
    request_id = str(rows[0]["id"])
    assert rows[0]["target"] == TARGET and rows[0]["duration_seconds"] == 6
    # The waiting login printed the same request id and the approval URL.
    assert (
        wait_for(lambda: request_id_from(err.read_text()), "the request id on alice's terminal")
        == request_id
    )
    assert f"/requests/{request_id}" in err.read_text()
    assert login.poll() is None, f"login did not wait: {out.read_text()} {err.read_text()}"

    # alice cannot approve herself; bob can.
    own = alice.jit("approve", request_id, expect=1)
    assert "self_approval" in own.stderr
    approved = bob.jit("approve", request_id, "--comment", "go ahead")
    assert "approved, 1/1 approvals" in approved.stdout

    # The waiting login picks the approval up and installs the certificate.
    try:
        status = login.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"login still waiting after approval: {err.read_text()}", pytrace=False)
    assert status == 0, f"stdout: {out.read_text()}\nstderr: {err.read_text()}"
    assert f"Access granted to {TARGET}" in out.read_text()

    # One key per request (issue 12): <target>+<request id>.
    key = alice.keys_dir / f"{TARGET}+{request_id}"
    cert_path = alice.keys_dir / f"{TARGET}+{request_id}-cert.pub"
    assert key.stat().st_mode & 0o777 == 0o600
    cert = parse_certificate(cert_path.read_text())
    assert cert.principals == (PRINCIPAL,)
    assert cert.valid_before - cert.valid_after == timedelta(seconds=6)
    assert cert.key_id == f"jit-ssh:req={request_id}:user=alice:by=bob"
    assert f"Host {TARGET}\n    User {LOGIN_USER}" in (alice.keys_dir / "config").read_text()
    # ssh-add -t: in the agent for the certificate's remaining validity.
    assert "ED25519-CERT" in alice.ssh_add_list()

    status_json = load_json(alice.jit("status", "--json").stdout)
    assert [(a["request_id"], a["serial"]) for a in status_json["active"]] == [
        (request_id, str(cert.serial))
    ]

    # `jit-ssh ssh` runs a command on the host; sshd logs the key ID and serial.
    mark = host.log_mark()
    ran = alice.jit("ssh", TARGET, *host.jit_ssh_args(), "--", "id", "-un")
    assert ran.stdout.strip() == LOGIN_USER
    host.wait_for_log(
        rf"Accepted publickey for {LOGIN_USER} from 127\.0\.0\.1 port \d+ ssh2: ED25519-CERT \S+ "
        rf"ID {re.escape(cert.key_id)} \(serial {cert.serial}\)",
        mark,
    )

    # Past the window sshd refuses the same certificate, by itself: nothing was revoked.
    # (sshd compares whole seconds, time(NULL) >= valid_before.)
    _sleep_until(cert.valid_before + timedelta(milliseconds=300))
    mark = host.log_mark()
    _refused(host.ssh_with(key, cert_path))
    host.wait_for_log(r"Certificate invalid: expired", mark)
    # ... the agent has dropped it, and status no longer lists it.
    assert "CERT" not in alice.ssh_add_list()
    assert load_json(alice.jit("status", "--json").stdout)["active"] == []
    history = {r["id"]: r["state"] for r in load_json(alice.jit("requests", "--json").stdout)}
    assert history[request_id] == "ended"


def test_done_and_sync_krl_refuse_at_once_while_another_certificate_works(world: World) -> None:
    alice, bob, carol, host, server = world.alice, world.bob, world.carol, world.host, world.server
    if alice.agent_socket is None:
        alice.start_agent(world.root)

    # alice: submit without waiting, bob approves, alice resumes.
    submitted = load_json(
        alice.jit(
            "login", TARGET, "--for", "2m", "--reason", "INC-1235", "--no-wait", "--json"
        ).stdout
    )
    assert submitted["state"] == "pending"
    request_id = submitted["request_id"]
    bob.jit("approve", request_id)
    resumed = load_json(alice.jit("login", TARGET, "--resume", request_id, "--json").stdout)
    assert (resumed["state"], resumed["request_id"], resumed["agent"]) == (
        "issued",
        request_id,
        True,
    )

    # carol is on call: auto-approved, no waiting.
    granted = carol.jit("login", TARGET, "--for", "2m", "--reason", "on-call check")
    assert f"Access granted to {TARGET}" in granted.stdout

    for person in (alice, carol):
        assert (
            person.jit("ssh", TARGET, *host.jit_ssh_args(), "--", "id", "-un").stdout.strip()
            == LOGIN_USER
        )

    # A copy of alice's key and certificate, as if someone had taken them off her laptop.
    copy = world.root / "copy"
    copy.mkdir(exist_ok=True)
    key_copy, cert_copy = copy / "key", copy / "key-cert.pub"
    shutil.copy(alice.keys_dir / f"{TARGET}+{request_id}", key_copy)
    os.chmod(key_copy, 0o600)
    shutil.copy(alice.keys_dir / f"{TARGET}+{request_id}-cert.pub", cert_copy)
    alice_cert = parse_certificate(cert_copy.read_text())
    carol_id = load_json(carol.jit("status", "--json").stdout)["active"][0]["request_id"]
    carol_cert_path = carol.keys_dir / f"{TARGET}+{carol_id}-cert.pub"
    assert str(alice_cert.serial) == resumed["serial"]

    # done: revoked on the server, gone from agent and disk and the ssh_config.
    done = alice.jit("done", request_id)
    assert f"Revoked serial {alice_cert.serial}" in done.stdout
    access = f"{TARGET}+{request_id}"
    for name in (access, f"{access}.pub", f"{access}-cert.pub", f"{access}.json"):
        assert not (alice.keys_dir / name).exists(), name
    assert f"Host {TARGET}" not in (alice.keys_dir / "config").read_text()
    assert "ED25519" not in alice.ssh_add_list()
    history = {r["id"]: r["state"] for r in load_json(alice.jit("requests", "--json").stdout)}
    assert history[request_id] == "revoked"

    # Until the host syncs, its sshd still accepts the copy: the KRL is what refuses it.
    assert host.ssh_with(key_copy, cert_copy).stdout.strip() == LOGIN_USER

    synced = host.sync_krl(server)
    assert "installed KRL version" in synced.stdout, synced.stdout
    query = [host.tools.ssh_keygen, "-Q", "-f", str(host.krl_path)]
    assert run([*query, str(cert_copy)], os.environ.copy()).returncode == 1  # revoked
    assert run([*query, str(carol_cert_path)], os.environ.copy()).returncode == 0  # not revoked

    # At once, no sshd restart: alice's certificate is refused ...
    mark = host.log_mark()
    _refused(host.ssh_with(key_copy, cert_copy))
    host.wait_for_log(rf"revoked by file {re.escape(str(host.krl_path))}", mark)
    # ... while carol's still works.
    assert (
        carol.jit("ssh", TARGET, *host.jit_ssh_args(), "--", "id", "-un").stdout.strip()
        == LOGIN_USER
    )

    # Nothing new since: the ETag says so and nothing is downloaded.
    assert "unchanged" in host.sync_krl(server).stdout
    carol.jit("done")


def test_help_and_repeated_auto_approved_logins_succeed(world: World) -> None:
    """carol (on call) logs in again and again, auto-approved, then ends her access.
    (Their wall times are figures of ``python -m benchmarks``, not a test: benchmarks/cli_bench.py.)"""
    carol = world.carol
    carol.jit("--help")
    for _ in range(5):
        carol.jit("login", TARGET, "--for", "1m", "--reason", "again")
    # Five accesses side by side now (issue 12): plain `done` would refuse to guess.
    carol.jit("done", "--all")


def test_a_host_whose_clock_runs_ahead_still_takes_the_servers_krl(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync-krl never installs a KRL older than the one in place (no rollback). host
    setup's placeholder KRL revokes nothing, so it must not outrank the server's: stamped
    with a host clock an hour fast, it kept every revocation out for that hour."""
    from click.testing import CliRunner

    import client.commands.host as host_cmd
    from client.cli import cli

    monkeypatch.setattr(host_cmd, "utcnow", lambda: datetime.now(UTC) + timedelta(hours=1))
    sshd_dir = tmp_path / "ssh"
    setup = CliRunner().invoke(
        cli,
        [
            "host",
            "setup",
            "--server",
            world.server.url,
            "--target",
            TARGET,
            "--sshd-dir",
            str(sshd_dir),
        ],
    )
    assert setup.exit_code == 0, setup.output
    krl = sshd_dir / "jit-ssh" / "revoked_keys.krl"
    synced = CliRunner().invoke(
        cli, ["host", "sync-krl", "--server", world.server.url, "--out", str(krl)]
    )
    assert synced.exit_code == 0, synced.output
    assert "installed KRL version" in synced.output
