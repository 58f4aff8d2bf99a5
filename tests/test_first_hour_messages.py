"""Issue 12, points 3 and 8: durations need a unit, and messages that do not mislead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from client.cli import cli

from .test_cli_ca import _user_key
from .test_cli_engineer import (  # noqa: F401  # fixtures
    TARGET,
    Run,
    Server,
    home,
    jit,
    keys,
    server,
    sleeps,
)

UNIT_HINT = "give a unit, e.g. 30m, 1h or 90s"


# -- point 3: durations need a unit --------------------------------------------------


def test_login_for_a_bare_number_is_refused_with_the_forms_that_work(
    jit: Callable[..., Run],
    server: Server,
) -> None:
    r = jit("login", TARGET, "--for", "30", "--reason", "INC-1")
    # Refused before anything is sent: approvers are never asked to approve a 30-second request.
    assert r.code == 1
    assert f"--for '30': {UNIT_HINT}" in r.stderr and "[invalid_duration]" in r.stderr
    assert server.paths() == []
    s = jit("ssh", TARGET, "--for", "45", "--reason", "INC-1")
    assert s.code == 1 and "--for '45': give a unit, e.g. 45m, 1h or 90s" in s.stderr
    assert server.paths() == []


def test_ca_sign_for_a_bare_number_is_refused(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    assert runner.invoke(cli, ["ca", "init"]).exit_code == 0
    args = ["ca", "sign", str(_user_key(tmp_path)), "-n", "demo", "--key-id", "k"]
    r = runner.invoke(cli, [*args, "--reason", "r", "--no-record", "--for", "30"])
    assert r.exit_code != 0
    assert f"--for '30': {UNIT_HINT}" in r.output + str(r.exception)


@pytest.mark.parametrize("value", ["30", " 30 "])
def test_the_api_refuses_a_bare_number_as_text_but_takes_integer_seconds(value: str) -> None:
    from ca import InvalidDuration
    from server.api import _duration

    with pytest.raises(InvalidDuration) as exc:
        _duration(value, "duration")
    assert f"duration '30': {UNIT_HINT}" in str(exc.value)
    # A JSON number is seconds, as the API has always documented.
    assert _duration(30, "duration") is not None and _duration(30, "duration").total_seconds() == 30


# -- point 8: messages that do not mislead -------------------------------------------


def _export(runner: CliRunner, data_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """An audit export and its key, the key then moved out of the data directory."""
    from .test_cli_ca import _serve_once

    _serve_once(data_dir)
    r = runner.invoke(cli, ["audit", "export"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    export = tmp_path / "audit.jsonl"
    export.write_text(r.output)
    pub = next(data_dir.rglob("audit_ed25519.pub"))
    kept = tmp_path / "kept-audit.pub"
    pub.rename(kept)
    return export, kept


def test_audit_verify_without_pubkey_says_the_signatures_were_not_checked(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    export, _ = _export(runner, data_dir, tmp_path)
    r = runner.invoke(cli, ["audit", "verify", str(export)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("audit log OK: ")
    assert "signatures NOT checked: only the hash chain was" in r.output
    assert "--pubkey" in r.output


def test_audit_verify_takes_several_pubkeys(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    export, kept = _export(runner, data_dir, tmp_path)
    older = tmp_path / "older-audit.pub"
    older.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    args = ["audit", "verify", str(export), "--pubkey", str(older), "--pubkey", str(kept)]
    r = runner.invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "checked against the 2 audit key(s) given with --pubkey" in r.output
    # The older key alone did not sign these checkpoints.
    r = runner.invoke(cli, ["audit", "verify", str(export), "--pubkey", str(older)])
    assert r.exit_code == 1


def test_db_upgrade_says_what_it_created_then_that_it_is_up_to_date(
    runner: CliRunner, data_dir: Path
) -> None:
    from alembic.script import ScriptDirectory

    from server.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    r = runner.invoke(cli, ["db", "upgrade"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert r.output == f"the database was empty: created the schema at revision {head}\n"
    r = runner.invoke(cli, ["db", "upgrade"], catch_exceptions=False)
    assert r.output == f"database schema is up to date (revision {head})\n"


def test_config_show_prints_toml_that_reads_back_as_the_same_settings(
    jit: Callable[..., Run],
    home: Path,
) -> None:
    import tomllib

    from client.settings import load_settings

    path = home / ".config" / "jit-ssh" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        'server = "https://jit.example.com"\nuser = "o\'brien"\n'
        "identity = '/keys/a \"b\"'\nuse_agent = false\ntimeout = 7\n"
    )
    env = {"JIT_SSH_SERVER": "", "JIT_SSH_USER": "", "JIT_SSH_IDENTITY": ""}
    shown = jit("config", "show", env=env)
    assert shown.code == 0, shown.stderr
    data = tomllib.loads(shown.stdout)
    assert data == {
        "server": "https://jit.example.com",
        "user": "o'brien",
        "identity": '/keys/a "b"',
        "use_agent": False,
        "timeout": 7.0,
    }
    assert "# default_duration is not set" in shown.stdout
    # Saved as the config file, it means the same settings.
    before = load_settings(path, env={})
    path.write_text(shown.stdout)
    assert load_settings(path, env={}) == before


def test_a_reason_pattern_refusal_shows_the_pattern_as_written() -> None:
    from policies import AccessRequest, decide, parse_policy

    from .test_policies_decide import NOW, POLICY_TEXT

    assert "reason_pattern = 'INC-\\d+'" in POLICY_TEXT  # as the policy file holds it
    request = AccessRequest(
        requester="dan", requester_groups=frozenset({"dba"}), target="db", reason="disk full"
    )
    decision = decide(parse_policy(POLICY_TEXT), request, NOW)
    assert any("the pattern 'INC-\\d+' required by rule 'dba'" in r for r in decision.reasons), (
        decision.reasons
    )


def test_already_enrolled_names_the_user_who_holds_the_key(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    key = _user_key(tmp_path)
    add = ["admin", "user", "add"]
    r = runner.invoke(cli, [*add, "alice", "--group", "eng", "--ssh-key", str(key)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, [*add, "bob", "--group", "eng", "--ssh-key", str(key)])
    assert r.exit_code != 0
    assert "is already enrolled for user 'alice'" in r.output + str(r.exception)
    assert runner.invoke(cli, [*add, "carol", "--group", "eng"]).exit_code == 0
    r = runner.invoke(cli, ["admin", "user", "enroll-key", "carol", str(key)])
    assert r.exit_code != 0
    assert "is already enrolled for user 'alice'" in r.output + str(r.exception)
    # A removed key stays on record for its user: it says so instead of "already enrolled".
    from ca import parse_public_key

    fingerprint = parse_public_key(key.read_text()).fingerprint
    assert runner.invoke(cli, ["admin", "user", "remove-key", "alice", fingerprint]).exit_code == 0
    r = runner.invoke(cli, ["admin", "user", "enroll-key", "carol", str(key)])
    assert r.exit_code != 0
    assert "was enrolled for user 'alice' and removed" in r.output + str(r.exception)
