"""Staged CA rotation against a real sshd (issue 10, point 6).

`ca init --rotate` switched the signer at once: a host that still trusted only the old key
refused every new certificate. Now: add (trusted, published, not signing) -> hosts take the new
TrustedUserCAKeys -> promote (signs) -> retire. At every step the host lets the engineer in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ca import CAKey, parse_certificate
from ca.keyring import KeyState, ca_dir, write_states
from ca.keys import save_ca_key
from client.cli import cli

from .conftest import ALLOWED_PRINCIPAL, Sshd, UserKey
from .test_sshd import assert_logged_in

pytestmark = pytest.mark.integration


def test_staged_rotation_never_locks_a_host_out(
    sshd: Sshd, ca: CAKey, user_key: UserKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.app import create_app
    from server.config import load_config

    # The CA server's data directory holds the key this sshd trusts, and has served once.
    data = tmp_path / "data"
    ca_dir(data).mkdir(parents=True, mode=0o700)
    assert ca.private is not None
    old = save_ca_key(ca_dir(data) / _name(ca), ca.private)
    write_states(data, {old.fingerprint: KeyState.SIGNING})
    create_app(load_config(None, {"JIT_SSH_DATA_DIR": str(data)}), say=lambda m: None).extensions[
        "jit_ssh.engine"
    ].dispose()
    monkeypatch.setenv("JIT_SSH_DATA_DIR", str(data))
    for var in ("JIT_SSH_CONFIG", "JIT_SSH_DATABASE_URL", "JIT_SSH_POLICY"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def jit(*args: str) -> Any:
        r = runner.invoke(cli, list(args), catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r

    def login(n: int) -> str:
        cert = tmp_path / f"c{n}-cert.pub"
        jit(
            "ca",
            "sign",
            str(_pub(tmp_path, user_key)),
            "-n",
            ALLOWED_PRINCIPAL,
            "--for",
            "5m",
            "--key-id",
            f"rotation-{n}",
            "--reason",
            "rotation test",
            "--out",
            str(cert),
        )
        assert_logged_in(sshd.ssh(user_key, cert), sshd)
        return parse_certificate(cert.read_text()).ca_public_key.fingerprint

    trusted = sshd.dir / "trusted_user_ca_keys"
    try:
        added = jit("ca", "add-key", "--type", "ed25519")
        new = next(w for w in added.output.split() if w.startswith("SHA256:"))
        # The host has not been updated yet: it trusts only the old key, and still lets us in.
        assert login(1) == old.fingerprint
        # The host takes the published keys (what host setup writes), then the new key signs.
        trusted.write_text(jit("ca", "show", "--no-fingerprints").output)
        jit("ca", "promote", new)
        assert login(2) == new
        jit("ca", "retire", old.fingerprint)
        trusted.write_text(jit("ca", "show", "--no-fingerprints").output)
        assert old.public.openssh.split()[1] not in trusted.read_text()
        assert login(3) == new
    finally:
        trusted.write_text(
            ca.public.openssh + "\n"
        )  # the session's sshd, as the other tests expect it


def _name(ca: CAKey) -> str:
    kind = {"ssh-ed25519": "ed25519", "ecdsa-sha2-nistp256": "ecdsa-p256", "ssh-rsa": "rsa"}[
        ca.public.key_type
    ]
    return f"ca-20261201T000000Z-{kind}"


def _pub(tmp_path: Path, key: UserKey) -> Path:
    path = tmp_path / "id.pub"
    path.write_text(key.public.openssh + "\n")
    return path
