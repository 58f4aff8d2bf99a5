"""`jit-ssh ca`, `cert` and `krl` as an admin uses them (CliRunner, plus the installed command)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import parse_certificate
from client.cli import cli

from .conftest import require_tool


def _user_key(tmp_path: Path, name: str = "id_ed25519") -> Path:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path = tmp_path / f"{name}.pub"
    path.write_bytes(pub + b" alice@laptop\n")
    return path


def _run(runner: CliRunner, *args: str, input: str | None = None):
    return runner.invoke(cli, list(args), input=input, catch_exceptions=False)


def _main(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed entry point, as a user runs it (errors handled by client.cli.main)."""
    return subprocess.run(
        [sys.executable, "-c", "from client.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def _serve_once(data_dir: Path, **env: str) -> Any:
    """What the first `jit-ssh serve` does to a data directory: the database, the audit key, the recorded keys."""
    from server.app import create_app
    from server.config import load_config

    app = create_app(
        load_config(None, {"JIT_SSH_DATA_DIR": str(data_dir), **env}), say=lambda m: None
    )
    app.extensions["jit_ssh.engine"].dispose()
    return app.extensions["jit_ssh"]


def test_init_show_sign_round_trip(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    r = _run(runner, "ca", "init")
    assert r.exit_code == 0, r.output
    _serve_once(data_dir)
    key_files = sorted((data_dir / "ca").iterdir())
    private = [p for p in key_files if p.name.startswith("ca-") and not p.name.endswith(".pub")]
    assert len(private) == 1
    assert stat.S_IMODE(private[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / "ca").stat().st_mode) == 0o700

    show = _run(runner, "ca", "show")
    assert show.exit_code == 0
    lines = [line for line in show.output.splitlines() if not line.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("ssh-ed25519 ")
    assert "SHA256:" in show.output

    pub = _user_key(tmp_path)
    out = tmp_path / "id_ed25519-cert.pub"
    r = _run(
        runner,
        "ca",
        "sign",
        str(pub),
        "--principal",
        "root@prod-db",
        "--principal",
        "deploy@prod-db",
        "--for",
        "2m",
        "--key-id",
        "breakglass-alice",
        "--reason",
        "INC-1: db down",
        "--out",
        str(out),
        "--force-command",
        "uptime",
        "--source-address",
        "10.0.0.0/8,192.168.1.0/24",
        "--serial",
        "4711",
    )
    assert r.exit_code == 0, r.output
    cert = parse_certificate(out.read_text())
    assert cert.duration == timedelta(minutes=2)
    assert cert.principals == ("root@prod-db", "deploy@prod-db")
    assert cert.key_id == "breakglass-alice"
    assert cert.serial == 4711
    assert cert.force_command == "uptime"
    assert cert.source_address == "10.0.0.0/8,192.168.1.0/24"

    # The break-glass signing left a record with its reason.
    records = [json.loads(x) for x in (data_dir / "issuances.jsonl").read_text().splitlines()]
    assert records[-1]["serial"] == 4711 and records[-1]["reason"] == "INC-1: db down"

    inspect = _run(runner, "cert", "inspect", str(out), "--verify")
    assert inspect.exit_code == 0, inspect.output
    assert "Serial: 4711" in inspect.output and "Verified" in inspect.output


def test_sign_prints_certificate_to_stdout(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    _run(runner, "ca", "init", "--type", "ecdsa")
    r = _run(
        runner,
        "ca",
        "sign",
        str(_user_key(tmp_path)),
        "-n",
        "demo",
        "--for",
        "1h30m",
        "--key-id",
        "k",
        "--reason",
        "r",
        "--no-record",
    )
    assert r.exit_code == 0
    cert = parse_certificate(r.stdout.strip())
    assert cert.duration == timedelta(hours=1, minutes=30)
    assert cert.ca_public_key.key_type == "ecdsa-sha2-nistp256"


def test_ca_sign_window_in_ssh_keygen_is_exactly_two_minutes(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    keygen = require_tool("ssh-keygen")
    _run(runner, "ca", "init", "--type", "rsa")
    out = tmp_path / "c-cert.pub"
    r = _run(
        runner,
        "ca",
        "sign",
        str(_user_key(tmp_path)),
        "-n",
        "demo",
        "--for",
        "2m",
        "--key-id",
        "k",
        "--reason",
        "r",
        "--out",
        str(out),
        "--no-record",
    )
    assert r.exit_code == 0
    listing = subprocess.run(
        [keygen, "-L", "-f", str(out)], capture_output=True, text=True, check=True
    ).stdout
    from datetime import datetime

    valid = next(line for line in listing.splitlines() if "Valid:" in line).split()
    start = datetime.fromisoformat(valid[2])
    end = datetime.fromisoformat(valid[4])
    assert end - start == timedelta(minutes=2)
    assert "rsa-sha2-512" in listing


def test_rotation_is_staged_add_promote_retire(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    # Was test_rotation_keeps_old_key_trusted_and_signs_with_new, on `ca init --rotate`, which
    # switched the signer at once. Same intent, in stages: the new key is trusted first, signs
    # only once promoted, and the old one is dropped only by retire.
    _run(runner, "ca", "init")
    again = _run(runner, "ca", "init")
    assert again.exit_code != 0 and "ca add-key" in again.output
    rotate = _run(runner, "ca", "init", "--rotate")
    assert rotate.exit_code == 2 and "ca add-key" in rotate.output and "ca promote" in rotate.output
    _serve_once(data_dir)
    old = _run(runner, "ca", "show").output.splitlines()[0].split()[1]

    added = _run(runner, "ca", "add-key", "--type", "ecdsa-p384")
    assert added.exit_code == 0, added.output
    new = next(w for w in added.output.split() if w.startswith("SHA256:"))
    show = _run(runner, "ca", "show", "--no-fingerprints").output.splitlines()
    assert [line.split()[0] for line in show] == ["ssh-ed25519", "ecdsa-sha2-nistp384"]

    def signer() -> str:
        r = _run(
            runner,
            "ca",
            "sign",
            str(_user_key(tmp_path)),
            "-n",
            "demo",
            "--for",
            "5m",
            "--key-id",
            "k",
            "--reason",
            "r",
        )
        assert r.exit_code == 0, r.output
        return parse_certificate(r.stdout).ca_public_key.fingerprint

    assert signer() == old  # added: trusted and published, not signing
    listing = _run(runner, "ca", "list").output
    assert f"signing  {old}" in listing and f"staged   {new}" in listing

    refused = _main("ca", "retire", old, env={"JIT_SSH_DATA_DIR": str(data_dir)})
    assert (
        refused.returncode == 1
        and "[invalid_rotation]" in refused.stderr
        and "promote" in refused.stderr
    )
    assert _run(runner, "ca", "promote", new).exit_code == 0
    assert signer() == new
    assert _run(runner, "ca", "retire", old).exit_code == 0
    assert [
        line.split()[0]
        for line in _run(runner, "ca", "show", "--no-fingerprints").output.splitlines()
    ] == ["ecdsa-sha2-nistp384"]


def test_encrypted_ca_key_needs_its_passphrase(
    runner: CliRunner, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    assert _run(runner, "ca", "init", "--passphrase-file", str(pw)).exit_code == 0
    pub = str(_user_key(tmp_path))
    args = [
        "ca",
        "sign",
        pub,
        "-n",
        "demo",
        "--for",
        "5m",
        "--key-id",
        "k",
        "--reason",
        "r",
        "--no-record",
    ]

    no_pw = _main(*args, env={"JIT_SSH_DATA_DIR": str(data_dir)})
    assert no_pw.returncode == 1
    assert "passphrase_required" in no_pw.stderr and "Traceback" not in no_pw.stderr

    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    bad = _main(*args, "--passphrase-file", str(wrong), env={"JIT_SSH_DATA_DIR": str(data_dir)})
    assert bad.returncode == 1 and "bad_passphrase" in bad.stderr

    ok = _main(
        *args,
        env={
            "JIT_SSH_DATA_DIR": str(data_dir),
            "JIT_SSH_CA_PASSPHRASE": "correct horse battery staple",
        },
    )
    assert ok.returncode == 0, ok.stderr
    assert parse_certificate(ok.stdout).principals == ("demo",)


def test_group_readable_ca_key_is_refused(
    data_dir: Path, tmp_path: Path, runner: CliRunner
) -> None:
    _run(runner, "ca", "init")
    key = next(
        p
        for p in (data_dir / "ca").iterdir()
        if p.name.startswith("ca-") and not p.name.endswith(".pub")
    )
    os.chmod(key, 0o640)
    r = _main(
        "ca",
        "sign",
        str(_user_key(tmp_path)),
        "-n",
        "demo",
        "--for",
        "5m",
        "--key-id",
        "k",
        "--reason",
        "r",
        "--no-record",
        env={"JIT_SSH_DATA_DIR": str(data_dir)},
    )
    assert r.returncode == 1
    assert "insecure_key_file" in r.stderr and "chmod 600" in r.stderr


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["-n", "root prod"], "invalid_principal"),
        (["-n", "a,b"], "invalid_principal"),
        (["-n", ""], "invalid_principal"),
        (["-n", "x", "--for", "0s"], "invalid_duration"),
        (["-n", "x", "--for", "25h"], "invalid_duration"),
        (["-n", "x", "--for", "soon"], "invalid_duration"),
        (["-n", "x", "--source-address", "10.0.0.1/8"], "invalid_source_address"),
        (["-n", "x", "--source-address", "not-an-ip"], "invalid_source_address"),
        (["-n", "x", "--extension", "permit-everything"], "invalid_extension"),
        (["-n", "x", "--serial", "0"], "invalid_serial"),
        (["-n", "x", "--serial", "abc"], "invalid_serial"),
        (["-n", "x", "--backdate", "1m"], "invalid_duration"),
    ],
)
def test_bad_sign_input_is_one_line_with_its_code(
    data_dir: Path, tmp_path: Path, runner: CliRunner, extra: list[str], code: str
) -> None:
    _run(runner, "ca", "init")
    args = ["ca", "sign", str(_user_key(tmp_path)), "--key-id", "k", "--reason", "r"]
    if "--for" not in extra:
        args += ["--for", "5m"]
    r = _main(*args, *extra, env={"JIT_SSH_DATA_DIR": str(data_dir)})
    assert r.returncode == 1, r.stdout
    assert f"[{code}]" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stdout == ""  # nothing that looks like a certificate


@pytest.mark.parametrize(
    ("content", "code"),
    [
        ("ssh-ed25519 !!!notbase64", "invalid_key"),
        ("ssh-dss AAAAB3NzaC1kc3MAAAA=", "unsupported_key_type"),
        ("", "invalid_key"),
    ],
)
def test_bad_public_key_file(
    data_dir: Path, tmp_path: Path, runner: CliRunner, content: str, code: str
) -> None:
    _run(runner, "ca", "init")
    pub = tmp_path / "bad.pub"
    pub.write_text(content)
    r = _main(
        "ca",
        "sign",
        str(pub),
        "-n",
        "x",
        "--for",
        "5m",
        "--key-id",
        "k",
        "--reason",
        "r",
        env={"JIT_SSH_DATA_DIR": str(data_dir)},
    )
    assert r.returncode == 1 and f"[{code}]" in r.stderr


def test_sign_without_ca_tells_how_to_make_one(data_dir: Path, tmp_path: Path) -> None:
    r = _main(
        "ca",
        "sign",
        str(_user_key(tmp_path)),
        "-n",
        "x",
        "--for",
        "5m",
        "--key-id",
        "k",
        "--reason",
        "r",
        env={"JIT_SSH_DATA_DIR": str(data_dir)},
    )
    assert r.returncode == 1 and "jit-ssh ca init" in r.stderr


def test_data_dir_option_on_the_subcommand(
    runner: CliRunner, tmp_path: Path, data_dir: Path
) -> None:
    other = tmp_path / "elsewhere"
    assert _run(runner, "ca", "init", "--data-dir", str(other)).exit_code == 0
    assert (other / "ca").is_dir() and not data_dir.exists()
    assert _run(runner, "--data-dir", str(other), "ca", "show").exit_code == 0


def test_krl_build_and_inspect(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    _run(runner, "ca", "init")
    out = tmp_path / "revoked.krl"
    r = _run(
        runner,
        "krl",
        "build",
        "--serial",
        "42",
        "--serial",
        "100-200",
        "--key-id",
        "bad-id",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    from ca.krl import parse_krl

    first = parse_krl(out.read_bytes())
    assert first.is_revoked(42, "x", first.cert_sections[0].ca_key)
    assert first.is_revoked(150, "x", first.cert_sections[0].ca_key)
    assert not first.is_revoked(43, "x", first.cert_sections[0].ca_key)
    assert first.is_revoked(7, "bad-id", first.cert_sections[0].ca_key)
    shown = _run(runner, "krl", "inspect", str(out))
    assert shown.exit_code == 0 and "42" in shown.output

    _run(runner, "krl", "build", "--out", str(out))
    assert parse_krl(out.read_bytes()).version > first.version  # krl_version rises with every build

    garbage = tmp_path / "garbage.krl"
    garbage.write_bytes(out.read_bytes()[:-3])
    bad = _main("krl", "inspect", str(garbage))
    assert bad.returncode == 1 and "[invalid_krl]" in bad.stderr


def test_krl_from_ssh_keygen_agrees(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    keygen = require_tool("ssh-keygen")
    _run(runner, "ca", "init")
    pub = _user_key(tmp_path)
    revoked, kept = tmp_path / "r-cert.pub", tmp_path / "k-cert.pub"
    for path, serial in ((revoked, "77"), (kept, "78")):
        assert (
            _run(
                runner,
                "ca",
                "sign",
                str(pub),
                "-n",
                "x",
                "--for",
                "5m",
                "--key-id",
                "k",
                "--reason",
                "r",
                "--serial",
                serial,
                "--out",
                str(path),
                "--no-record",
            ).exit_code
            == 0
        )
    krl = tmp_path / "r.krl"
    assert _run(runner, "krl", "build", "--serial", "77", "--out", str(krl)).exit_code == 0
    assert (
        subprocess.run([keygen, "-Q", "-f", str(krl), str(revoked)], capture_output=True).returncode
        == 1
    )
    assert (
        subprocess.run([keygen, "-Q", "-f", str(krl), str(kept)], capture_output=True).returncode
        == 0
    )


def test_help_lists_groups_and_exit_codes(runner: CliRunner) -> None:
    r = _run(runner, "--help")
    for name in ("ca", "cert", "krl", "host", "policy"):
        assert f"  {name} " in r.output
    assert "Exit codes" in r.output


def test_ca_sign_is_recorded_in_the_service_database(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    from sqlalchemy import select

    from ca import audit as chain
    from server.app import create_app
    from server.config import load_config
    from server.models import Certificate

    app = create_app(load_config(None, {"JIT_SSH_DATA_DIR": str(data_dir)}), say=lambda m: None)
    ext = app.extensions["jit_ssh"]
    out = tmp_path / "bg-cert.pub"
    r = _main(
        "ca",
        "sign",
        str(_user_key(tmp_path)),
        "-n",
        "root@prod-db",
        "--for",
        "10m",
        "--key-id",
        "bg",
        "--reason",
        "INC-7: primary down",
        "--serial",
        "99",
        "--out",
        str(out),
        env={"JIT_SSH_DATA_DIR": str(data_dir)},
    )
    assert r.returncode == 0, r.stderr
    with ext.service.sessions() as s:
        row = s.execute(select(Certificate).where(Certificate.serial == 99)).scalar_one()
        assert row.offline and row.request_id is None
    events, cps = chain.parse_export(list(ext.export_audit(0)))
    issued = [e for e in events if e.type == "certificate.issued"]
    assert (
        issued
        and issued[-1].data["offline"] is True
        and issued[-1].data["reason"] == "INC-7: primary down"
    )
    assert chain.verify_chain(events, cps, [ext.audit_public_key]).ok
    # The revocation list covers it like any service-issued certificate.
    admin_krl, _ = ext.service.krl()
    from ca.krl import parse_krl

    assert not parse_krl(admin_krl).cert_sections  # not revoked yet
