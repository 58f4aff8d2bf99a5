"""``jit-ssh extend`` against the real app (the fixtures of :mod:`tests.test_cli_engineer`;
request ids are sequential there: 0000000000000001, ...).

An extension keeps the access's key and file names, writes the new certificate in place of
the old one, and the old serial is revoked; ``status``, ``ssh`` and ``done`` then work on the
new certificate. What the server answers is checked before anything is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ca import parse_certificate
from client.cli import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from client.commands import engineer

from .test_cli_engineer import (  # noqa: F401 (fixtures)
    TARGET,
    Run,
    Server,
    access,
    home,
    jit,
    keys,
    keys_dir,
    server,
    sleeps,
)

FIRST, SECOND, THIRD = "0000000000000001", "0000000000000002", "0000000000000003"


@pytest.fixture(autouse=True)
def _oncall_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    """The on-call requester (the harness's "auto" mode) extends within an allowance: a rule's
    auto_approve alone never approves an extension. In front of the engineers' rule, so that an
    engineer alone (the "pending" mode) still waits for approvers."""
    from . import test_cli_engineer

    oncall = """
[[rules]]
name = "oncall"
targets = ["prod-db", "other", "other-target"]
groups = ["oncall"]
max_duration = "2h"
default_duration = "30m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = false
claim_window = "15m"
extension_allowance = "2h"

[rules.auto_approve]
groups = ["oncall"]
max_duration = "2h"
"""
    policy = test_cli_engineer.POLICY.replace("\n[[rules]]\n", oncall + "\n[[rules]]\n", 1)
    assert policy.index('name = "oncall"') < policy.index('name = "engineers"')
    monkeypatch.setattr(test_cli_engineer, "POLICY", policy)


def _cert(home: Path, request_id: str = FIRST, target: str = TARGET) -> Any:
    return parse_certificate(Path(f"{access(home, target, request_id)}-cert.pub").read_text())


def _record(home: Path, request_id: str = FIRST, target: str = TARGET) -> dict[str, Any]:
    return json.loads(Path(f"{access(home, target, request_id)}.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(engineer.os, "execv", fake_execv)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    return calls


def test_extend_replaces_the_certificate_in_place_and_revokes_the_old_serial(
    jit: Callable[..., Run], server: Server, home: Path, execs: list[list[str]]
) -> None:
    assert jit("login", TARGET, "--for", "10m").code == EXIT_OK
    key = access(home)
    key_bytes, old = key.read_bytes(), _cert(home)
    r = jit("extend", "--for", "30m", "--reason", "INC-7 still digging")
    assert r.code == EXIT_OK, r.stderr
    new = _cert(home)
    # Same key, same files; a new certificate that runs 30 minutes past the old one.
    assert key.read_bytes() == key_bytes
    assert new.public_key == old.public_key and new.serial != old.serial
    assert new.valid_before == old.valid_before + timedelta(minutes=30)
    record = _record(home)
    assert record["request_id"] == SECOND and record["files_id"] == FIRST
    assert record["serial"] == str(new.serial)
    assert not Path(f"{access(home, TARGET, SECOND)}.json").exists()
    assert f"Extension {SECOND} of request {FIRST} ({TARGET})" in r.stderr
    assert f"serial {new.serial}" in r.stdout
    assert f"The old certificate (serial {old.serial}) is revoked." in r.stdout
    assert server.revoked(str(old.serial)) and not server.revoked(str(new.serial))
    assert server.state(FIRST) == "revoked" and server.state(SECOND) == "issued"
    # ssh_config still points at the same files.
    config = (keys_dir(home) / "config").read_text()
    assert f"Host {TARGET}+{FIRST}" in config and f"CertificateFile {key}-cert.pub" in config

    # status, ssh and done work on the new certificate.
    s = jit("status")
    assert s.code == EXIT_OK, s.stderr
    assert f"request {SECOND}" in s.stdout and f"serial {new.serial}" in s.stdout
    assert jit("ssh", TARGET).code == EXIT_OK
    assert execs[-1][1:5] == ["-i", str(key), "-o", f"CertificateFile={key}-cert.pub"]
    d = jit("done")
    assert d.code == EXIT_OK, d.stderr
    assert f"Revoked serial {new.serial}" in d.stdout
    assert server.revoked(str(new.serial)) and not key.exists()


def test_extend_waits_for_approvers_and_says_it_is_an_extension(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    assert jit("login", TARGET, "--for", "10m").code == EXIT_OK
    server.submit = "pending"
    server.script[SECOND] = [None, lambda: server.approve(SECOND)]
    r = jit("extend", FIRST, "--for", "20m", "--reason", "more")
    assert r.code == EXIT_OK, r.stderr
    assert f"Extension of request {FIRST}: adds 20m, 30m in all." in r.stderr
    assert "Needs 1 approval" in r.stderr
    assert _record(home)["request_id"] == SECOND


def test_extend_no_wait_then_resume(jit: Callable[..., Run], server: Server, home: Path) -> None:
    assert jit("login", TARGET, "--for", "10m").code == EXIT_OK
    server.submit = "pending"
    r = jit("extend", TARGET, "--for", "20m", "--no-wait")
    assert r.code == EXIT_OK, r.stderr
    assert f"Not waiting. Later: jit-ssh extend --resume {SECOND}" in r.stderr
    assert _record(home)["request_id"] == FIRST
    server.approve(SECOND)
    r = jit("extend", "--resume", SECOND)
    assert r.code == EXIT_OK, r.stderr
    assert _record(home)["request_id"] == SECOND
    # Again: already done, nothing fetched.
    again = jit("extend", "--resume", SECOND)
    assert again.code == EXIT_OK and "already extends" in again.stdout


def test_extend_picks_one_access_or_says_why_not(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    none = jit("extend", "--for", "10m")
    assert none.code == EXIT_NOT_FOUND
    assert "no running access on this machine to extend" in none.stderr
    assert jit("login", TARGET, "--for", "10m").code == EXIT_OK
    assert jit("login", "other", "--for", "10m").code == EXIT_OK
    several = jit("extend", "--for", "10m")
    assert several.code == EXIT_FAILED
    assert "2 accesses are valid on this machine; nothing was extended" in several.stderr
    assert FIRST in several.stderr and SECOND in several.stderr
    assert jit("extend", "--for", "10m", "nope").code == EXIT_NOT_FOUND
    assert jit("extend").code == EXIT_USAGE
    # Nothing was filed for any of these.
    assert not any(
        m == "POST" and p == "/v1/requests" and "extends" in b for m, p, b in server.calls
    )
    ok = jit("extend", "other", "--for", "10m")
    assert ok.code == EXIT_OK, ok.stderr
    assert _record(home, SECOND, "other")["request_id"] == THIRD


def test_a_refused_extension_changes_nothing_here(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    assert jit("login", TARGET, "--for", "10m").code == EXIT_OK
    before = Path(f"{access(home)}-cert.pub").read_text()
    r = jit("extend", "--for", "3h")
    assert r.code == EXIT_FAILED
    assert "maximum" in r.stderr
    assert Path(f"{access(home)}-cert.pub").read_text() == before
    server.revoke(FIRST)
    r = jit("extend", "--for", "10m")
    assert r.code == EXIT_FAILED and "revoked" in r.stderr


def _tampering(server: Server, change: Callable[[dict[str, Any]], None]) -> httpx.MockTransport:
    """The real server, its certificate answers changed by ``change`` on the way."""

    def handle(request: httpx.Request) -> httpx.Response:
        resp = server.handle(request)
        if request.url.path.endswith("/certificate") and resp.status_code == 200:
            resp.read()
            body = json.loads(resp.content)
            change(body)
            return httpx.Response(200, json=body)
        return resp

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda b: b.update(replaces_serial="12345"), id="another-serial"),
        pytest.param(lambda b: b.pop("replaces_serial"), id="no-serial"),
        pytest.param(lambda b: b.update(replaces_serial="-1 x"), id="not-a-serial"),
    ],
)
def test_a_certificate_answer_that_does_not_replace_this_access_is_refused(
    jit: Callable[..., Run], server: Server, home: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    assert jit("login", TARGET, "--for", "10m").code == EXIT_OK
    before = {p.name: p.read_bytes() for p in keys_dir(home).iterdir()}
    r = jit("extend", "--for", "10m", transport=_tampering(server, change))
    assert r.code != EXIT_OK
    assert "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in keys_dir(home).iterdir()} == before


def test_the_agent_gets_the_new_certificate_when_it_held_the_old_one(
    jit: Callable[..., Run], server: Server, home: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ssh-add.log"
    held = tmp_path / "held"
    # An ssh-add whose agent lists what "held" holds, and records what it is asked.
    (bin_dir / "ssh-add").write_text(
        f'#!/bin/sh\nif [ "$1" = -L ]; then cat {held} 2>/dev/null; exit 0; fi\n'
        f'echo "$@" >> {log}\n'
    )
    (bin_dir / "ssh-add").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    env = {"SSH_AUTH_SOCK": str(tmp_path / "agent.sock")}
    assert jit("login", TARGET, "--for", "10m", env=env).code == EXIT_OK
    key = str(access(home))
    held.write_text(Path(f"{key}.pub").read_text())
    r = jit("extend", "--for", "20m", env=env)
    assert r.code == EXIT_OK, r.stderr
    lines = log.read_text().splitlines()
    assert lines[-2] == f"-q -d {key}"
    add = lines[-1].split()
    assert add[:2] == ["-q", "-t"] and add[3] == key and 1700 <= int(add[2]) <= 1800
    assert "ssh-agent holds the new certificate" in r.stdout


def test_pending_and_my_requests_say_a_row_is_an_extension_and_the_whole_access() -> None:
    """Approvers listing `jit-ssh pending` see that a request extends a running access, what it
    adds and the total the access then makes; a plain request's line says nothing of it."""
    from client.commands._connect import request_line
    from client.verify import check_request_answer

    base = {
        "id": SECOND,
        "state": "pending",
        "requester": "alice",
        "target": TARGET,
        "reason": "still draining",
        "duration_seconds": 600,
        "approvals_required": 1,
        "created_at": "2026-12-02T18:08:35Z",
    }
    ext = {"of": FIRST, "added_seconds": 600, "extensions_seconds": 600, "total_seconds": 1800}
    line = request_line(check_request_answer({**base, "extends": FIRST, "extension": ext}))
    assert f"extension of {FIRST}: adds 10m, 30m in all" in line
    assert "extension" not in request_line(check_request_answer(base))
