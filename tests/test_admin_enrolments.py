"""``jit-ssh admin user enrolments NAME [--revoke FINGERPRINT | --all]``: a user's API keys and
single sign-on enrolments, with source, dates, groups and state; revoking ends them at once,
and with no usable key left, the user's access (as removing the last key does)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import public_key_from_crypto
from client.cli import cli
from tests.server.conftest import Clock
from tests.server.sso_fakes import FakeProvider, claims_for, open_cli, settings


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"JIT_SSH_DATA_DIR": str(tmp_path / "data"), "JIT_SSH_CONFIG": ""}


def _enrol(env: dict[str, str], claims: dict[str, Any]) -> str:
    """Sign ``claims`` in through the CLI's loopback flow (the provider faked); the key's
    fingerprint."""
    from server.config import resolve_config
    from server.context import open_context
    from server.services.sso import SsoService

    key = public_key_from_crypto(ed25519.Ed25519PrivateKey.generate().public_key(), "laptop")
    cfg = replace(resolve_config(env=env), base_url="https://jit.example.test")
    fake = FakeProvider(Clock())
    with open_context(cfg, say=lambda m: None) as ctx:
        sso = SsoService(ctx.service, settings(), fake, base_url=cfg.base_url)
        started = sso.begin_cli(key.openssh, 50000, signer=key.fingerprint)
        opened = open_cli(sso, started)
        back = fake.sign_in(opened.authorize_url, claims)
        result = sso.complete_callback(
            state=back["state"], code=back["code"], issuer=back["iss"], browser_state=opened.flow
        )
        code = result.redirect.split("code=")[1]  # type: ignore[union-attr]
        sso.finish_cli(started.flow, code, signer=key.fingerprint)
    return key.fingerprint


def _list(runner: CliRunner, env: dict[str, str], name: str) -> list[dict[str, Any]]:
    r = runner.invoke(cli, ["admin", "user", "enrolments", name, "--json"], env=env)
    assert r.exit_code == 0, r.output
    rows: list[dict[str, Any]] = json.loads(r.stdout)
    return rows


def _audit_types(env: dict[str, str]) -> list[str]:
    r = CliRunner().invoke(cli, ["audit", "export"], env=env)
    assert r.exit_code == 0, r.output
    return [json.loads(line).get("type") for line in r.stdout.splitlines() if line.strip()]


def test_enrolments_lists_admin_keys_and_sso_enrolments(
    env: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()
    pub = tmp_path / "admin.pub"
    pub.write_text(
        public_key_from_crypto(ed25519.Ed25519PrivateKey.generate().public_key()).openssh
    )
    r = runner.invoke(cli, ["admin", "user", "add", "alice", "--ssh-key", str(pub)], env=env)
    assert r.exit_code == 0, r.output
    fp = _enrol(env, claims_for("alice", ["engineers"]))

    rows = _list(runner, env, "alice")
    assert [(e["source"], e["state"]) for e in rows] == [("admin", "active"), ("sso", "active")]
    admin_key, sso_key = rows
    assert admin_key["expires_at"] is None
    assert sso_key["fingerprint"] == fp
    assert sso_key["groups"] == ["engineers"]
    assert sso_key["expires_at"] > sso_key["created_at"]

    table = runner.invoke(cli, ["admin", "user", "enrolments", "alice"], env=env)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["FINGERPRINT", "SOURCE", "CREATED", "EXPIRES", "STATE", "GROUPS"]
    assert fp in lines[2] and " sso " in lines[2] and "engineers" in lines[2]
    assert "never" in lines[1]


def test_revoke_ends_one_enrolment_and_the_key_is_refused(env: dict[str, str]) -> None:
    runner = CliRunner()
    first = _enrol(env, claims_for("alice", ["engineers"]))
    second = _enrol(env, claims_for("alice", ["engineers"]))
    r = runner.invoke(cli, ["admin", "user", "enrolments", "alice", "--revoke", first], env=env)
    assert r.exit_code == 0, r.output
    assert f"revoked {first}" in r.stdout
    states = {e["fingerprint"]: e["state"] for e in _list(runner, env, "alice")}
    assert states == {first: "revoked", second: "active"}
    assert "key.removed" in _audit_types(env)

    # Revoked twice: not found, a clear error and a failing exit.
    again = runner.invoke(cli, ["admin", "user", "enrolments", "alice", "--revoke", first], env=env)
    assert again.exit_code != 0
    # (Through `jit-ssh`'s main this error is one line on stderr: client.errors.run.)
    assert "no single sign-on enrolment" in str(again.exception)


def test_revoke_all_ends_every_enrolment_and_the_users_access(env: dict[str, str]) -> None:
    from sqlalchemy import select

    from server.config import resolve_config
    from server.context import open_context
    from server.db import transaction
    from server.models import SshKey

    runner = CliRunner()
    _enrol(env, claims_for("alice", ["engineers"]))
    _enrol(env, claims_for("alice", ["engineers"]))
    r = runner.invoke(cli, ["admin", "user", "enrolments", "alice", "--all"], env=env)
    assert r.exit_code == 0, r.output
    assert r.stdout.count("revoked ") == 2
    assert {e["state"] for e in _list(runner, env, "alice")} == {"revoked"}
    with open_context(resolve_config(env=env), say=lambda m: None) as ctx:
        with transaction(ctx.sessions) as s:
            assert all(k.removed_at is not None for k in s.execute(select(SshKey)).scalars())
    # Nothing left to revoke.
    r = runner.invoke(cli, ["admin", "user", "enrolments", "alice", "--all"], env=env)
    assert r.exit_code == 0 and "no active single sign-on enrolment" in r.stdout


def test_admin_keys_are_not_revoked_here(env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    pub = tmp_path / "admin.pub"
    key = public_key_from_crypto(ed25519.Ed25519PrivateKey.generate().public_key())
    pub.write_text(key.openssh)
    assert (
        runner.invoke(
            cli, ["admin", "user", "add", "bob", "--ssh-key", str(pub)], env=env
        ).exit_code
        == 0
    )
    r = runner.invoke(
        cli, ["admin", "user", "enrolments", "bob", "--revoke", key.fingerprint], env=env
    )
    assert r.exit_code != 0
    assert [e["state"] for e in _list(runner, env, "bob")] == ["active"]


def test_revoke_and_all_together_is_a_usage_error(env: dict[str, str]) -> None:
    r = CliRunner().invoke(
        cli, ["admin", "user", "enrolments", "x", "--revoke", "SHA256:x", "--all"], env=env
    )
    assert r.exit_code == 2


def test_an_unknown_user_is_an_error(env: dict[str, str]) -> None:
    r = CliRunner().invoke(cli, ["admin", "user", "enrolments", "nobody"], env=env)
    assert r.exit_code != 0
    assert "no user 'nobody'" in str(r.exception)
