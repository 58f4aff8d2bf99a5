"""``jit-ssh admin user totp``: how an admin turns one-time codes on and off."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from client.cli import cli
from server.errors import NotFound


def test_admin_turns_totp_on_and_off(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"JIT_SSH_DATA_DIR": str(tmp_path / "data"), "JIT_SSH_CONFIG": ""}
    added = runner.invoke(
        cli,
        ["admin", "user", "add", "bob", "--role", "approver", "--password-stdin"],
        input="a long enough password\n",
        env=env,
    )
    assert added.exit_code == 0, added.output

    on = runner.invoke(cli, ["admin", "user", "totp", "bob"], env=env)
    assert on.exit_code == 0, on.output
    secret = re.search(r"secret: ([A-Z2-7]{32})\n", on.output)
    assert secret, on.output
    assert (
        f"uri:    otpauth://totp/jit-ssh:bob?secret={secret.group(1)}&issuer=jit-ssh" in on.output
    )

    again = runner.invoke(cli, ["admin", "user", "totp", "bob"], env=env)
    assert secret.group(1) not in again.output, "a new secret each time"

    off = runner.invoke(cli, ["admin", "user", "totp", "bob", "--disable"], env=env)
    assert off.exit_code == 0 and "no longer asks" in off.output

    missing = runner.invoke(cli, ["admin", "user", "totp", "nobody"], env=env)
    assert isinstance(missing.exception, NotFound)
