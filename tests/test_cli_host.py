"""`jit-ssh host setup`: the files a host's sshd needs, and sshd -t's opinion of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca.krl import parse_krl
from client.cli import cli


@pytest.fixture
def ca_keys(tmp_path: Path) -> Path:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    path = tmp_path / "ca.pub"
    path.write_bytes(key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    return path


def _setup(runner: CliRunner, sshd_dir: Path, ca_keys: Path, *extra: str):
    return runner.invoke(
        cli,
        ["host", "setup", "--ca-keys", str(ca_keys), "--sshd-dir", str(sshd_dir), *extra],
        catch_exceptions=False,
    )


def test_setup_writes_every_file(runner: CliRunner, tmp_path: Path, ca_keys: Path) -> None:
    sshd_dir = tmp_path / "ssh"
    r = _setup(runner, sshd_dir, ca_keys, "--target", "prod-db", "--login-user", "root",
               "--login-user", "postgres", "--principal", "root@prod-db")
    assert r.exit_code == 0, r.output
    dropin = (sshd_dir / "sshd_config.d" / "60-jit-ssh.conf").read_text()
    assert f"TrustedUserCAKeys {sshd_dir}/jit-ssh/trusted_user_ca_keys" in dropin
    assert f"AuthorizedPrincipalsFile {sshd_dir}/jit-ssh/principals/%u" in dropin
    assert f"RevokedKeys {sshd_dir}/jit-ssh/revoked_keys.krl" in dropin
    assert "LogLevel VERBOSE" in dropin
    assert (sshd_dir / "jit-ssh" / "trusted_user_ca_keys").read_text() == ca_keys.read_text()
    for user in ("root", "postgres"):
        lines = (sshd_dir / "jit-ssh" / "principals" / user).read_text().splitlines()
        assert "root@prod-db" in lines
    krl = parse_krl((sshd_dir / "jit-ssh" / "revoked_keys.krl").read_bytes())
    assert not krl.cert_sections and not krl.revoked_keys


def test_setup_keeps_other_targets_and_an_existing_krl(runner: CliRunner, tmp_path: Path, ca_keys: Path) -> None:
    sshd_dir = tmp_path / "ssh"
    _setup(runner, sshd_dir, ca_keys, "--target", "a", "--login-user", "root", "--principal", "root@a")
    krl_path = sshd_dir / "jit-ssh" / "revoked_keys.krl"
    from datetime import datetime, timezone

    from ca.krl import build_krl

    revoked = build_krl(ca_keys=[b""], serials=[5], version=99, now=datetime.now(timezone.utc))
    krl_path.write_bytes(revoked)
    _setup(runner, sshd_dir, ca_keys, "--target", "b", "--login-user", "root", "--principal", "root@b")
    lines = (sshd_dir / "jit-ssh" / "principals" / "root").read_text().splitlines()
    assert "root@a" in lines and "root@b" in lines
    # A valid KRL with revocations is never replaced by an empty one.
    assert krl_path.read_bytes() == revoked


def test_dry_run_writes_nothing(runner: CliRunner, tmp_path: Path, ca_keys: Path) -> None:
    sshd_dir = tmp_path / "ssh"
    r = _setup(runner, sshd_dir, ca_keys, "--target", "t", "--login-user", "root", "--principal", "root@t", "--dry-run")
    assert r.exit_code == 0
    assert "TrustedUserCAKeys" in r.output and "60-jit-ssh.conf" in r.output
    assert not sshd_dir.exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["--target", "t", "--login-user", "root"],  # no principal
        ["--target", "t", "--login-user", "bad user", "--principal", "p"],
        ["--target", "t", "--login-user", "root", "--principal", "a,b"],
        ["--target", "../etc", "--login-user", "root", "--principal", "p"],
    ],
)
def test_setup_refuses_bad_input(runner: CliRunner, tmp_path: Path, ca_keys: Path, extra: list[str]) -> None:
    from client.cli import main

    sshd_dir = tmp_path / "ssh"
    with pytest.raises(SystemExit) as exc:
        main(["host", "setup", "--ca-keys", str(ca_keys), "--sshd-dir", str(sshd_dir), *extra])
    assert exc.value.code in (1, 2)
    assert not sshd_dir.exists()


def test_server_must_be_https_except_localhost(runner: CliRunner, tmp_path: Path) -> None:
    r = runner.invoke(cli, ["host", "setup", "--server", "http://ca.example.com", "--target", "t",
                            "--login-user", "root", "--principal", "p", "--sshd-dir", str(tmp_path)])
    assert r.exit_code == 2 and "https" in r.output
