"""`host setup --server` and `host sync-krl` against the real app (httpx.WSGITransport over
create_app on a temporary SQLite database), through the CLI's one HTTP client.

tests/test_cli_host.py keeps its crafted KRL server for KRLs the real server never
emits (versions from the future, foreign sections, rollbacks after a restore).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from ca.krl import parse_krl
from client.cli import cli

SERVER = "https://jit.example.com"
POLICY = """
[targets.prod-db]
principals = ["root@prod-db"]
login_users = ["root"]

[[rules]]
name = "engineers"
targets = ["prod-db"]
groups = ["engineers"]
max_duration = "1h"
default_duration = "30m"
approvals_required = 1
approver_groups = ["approvers"]
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    yield from _app(tmp_path, POLICY)


def _app(tmp_path: Path, policy_text: str) -> Iterator[Any]:
    from server.app import create_app
    from server.config import ServerConfig

    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text)
    cfg = ServerConfig(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'server.sqlite3'}",
        policy_path=policy,
        base_url=SERVER,
    )
    app = create_app(cfg, say=lambda m: None)
    yield app
    app.extensions["jit_ssh.engine"].dispose()


def test_setup_then_sync_krl_from_the_real_server(app: Any, tmp_path: Path) -> None:
    calls: list[str] = []
    wsgi = httpx.WSGITransport(app=app)

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        return wsgi.handle_request(request)

    meta = {"jit_ssh.transport": httpx.MockTransport(handle)}
    runner = CliRunner()
    sshd = tmp_path / "ssh"
    r = runner.invoke(
        cli,
        ["host", "setup", "--server", SERVER, "--target", "prod-db", "--sshd-dir", str(sshd)],
        meta=meta,
    )
    assert r.exit_code == 0, r.output
    assert calls == ["GET /v1/ca.pub", "GET /v1/targets"]
    state = sshd / "jit-ssh"
    # The principals and login users came from the server's policy, the CA key from /v1/ca.pub.
    assert "root@prod-db" in (state / "principals" / "root").read_text()
    served = app.extensions["jit_ssh"].keyring.trusted_user_ca_keys()
    assert (state / "trusted_user_ca_keys").read_text().split() == served.split()

    krl = state / "revoked_keys.krl"
    sync = ["host", "sync-krl", "--server", SERVER, "--out", str(krl)]
    first = runner.invoke(cli, sync, meta=meta)
    assert first.exit_code == 0, first.output
    assert "installed KRL version" in first.output
    with httpx.Client(transport=wsgi, base_url=SERVER) as c:
        served_krl = parse_krl(c.get("/v1/krl").content)
    installed = parse_krl(krl.read_bytes())
    assert (installed.version, installed.summary()) == (served_krl.version, served_krl.summary())
    # Unchanged on the server: the ETag saves the download.
    again = runner.invoke(cli, sync, meta=meta)
    assert again.exit_code == 0, again.output
    assert "unchanged" in again.output
    assert calls[-2:] == ["GET /v1/krl", "GET /v1/krl"]


def test_setup_warns_about_a_policy_login_user_with_no_account_here(tmp_path: Path) -> None:
    import pwd

    missing = "jitssh-nosuchuser"
    try:
        pwd.getpwnam(missing)
        pytest.skip(f"{missing} exists on this machine")
    except KeyError:
        pass
    from contextlib import contextmanager

    policy = POLICY.replace('["root"]', f'["root", "{missing}"]')
    with contextmanager(_app)(tmp_path, policy) as app:
        r = CliRunner().invoke(
            cli,
            ["host", "setup", "--server", SERVER, "--target", "prod-db"]
            + ["--sshd-dir", str(tmp_path / "ssh")],
            meta={"jit_ssh.transport": httpx.WSGITransport(app=app)},
        )
    # A warning, not a failure; root exists, so only the other one is named.
    assert r.exit_code == 0, r.output
    assert f"can log in as it: {missing}\n" in r.output
    assert (
        f"fix: useradd -m {missing}   (or take {missing} out of target prod-db's login_users in the policy)"
        in r.output
    )
    assert "useradd -m root" not in r.output
