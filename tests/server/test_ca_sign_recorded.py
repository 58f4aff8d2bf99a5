"""Every issuance is in the database and the audit log, or nothing is issued (issue 10, point 5).

`jit-ssh ca sign` resolves the database as `serve` does (flag > env > TOML > data directory), commits
the certificate row and its audit event before it prints anything, refuses when it cannot, and with
--no-record still records the certificate once the database answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select

from ca import parse_certificate

from .conftest import Clock, build_app

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"


def _user_key(tmp_path: Path) -> Path:
    pub = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    path = tmp_path / "id_ed25519.pub"
    path.write_bytes(pub + b" alice@laptop\n")
    return path


def _toml(tmp_path: Path, name: str, **settings: str) -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return path


def _jit(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed command, with no JIT_SSH_* from the caller's environment: only what the test gives."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JIT_SSH_")}
    return subprocess.run(
        [sys.executable, "-c", "from client.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
    )


def _sign(tmp_path: Path, *extra: str, serial: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _jit(
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
        serial,
        *extra,
        **env,
    )


def _issued(app: Any, serial: int) -> tuple[Any, list[Any]]:
    from ca import audit as chain
    from server.models import Certificate

    ext = app.extensions["jit_ssh"]
    with ext.service.sessions() as s:
        row = s.execute(
            select(Certificate).where(Certificate.serial == serial)
        ).scalar_one_or_none()
    events, cps = chain.parse_export(list(ext.export_audit(0)))
    assert chain.verify_chain(events, cps, [ext.audit_public_key]).ok
    return row, [
        e for e in events if e.type == "certificate.issued" and e.data.get("serial") == str(serial)
    ]


def test_ca_sign_records_in_the_database_named_only_by_the_toml_config(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    app = build_app(
        tmp_path, database_url, clock
    )  # the server, on a database outside the data directory
    data_dir = tmp_path / "data"
    assert not (data_dir / "jit-ssh.sqlite3").exists()
    config = _toml(
        tmp_path,
        "server.toml",
        database_url=database_url,
        policy_path=str(tmp_path / "policy.toml"),
    )

    r = _sign(tmp_path, serial="4711", JIT_SSH_CONFIG=str(config), JIT_SSH_DATA_DIR=str(data_dir))
    assert r.returncode == 0, r.stderr
    assert parse_certificate(r.stdout).serial == 4711
    row, events = _issued(app, 4711)
    assert row is not None and row.offline and row.request_id is None
    assert (
        len(events) == 1
        and events[0].data["reason"] == "INC-7: primary down"
        and events[0].data["offline"]
    )
    assert "no_record" not in events[0].data

    # The data directory may come from the TOML file too: one resolver for every setting.
    only_toml = _toml(
        tmp_path,
        "all.toml",
        database_url=database_url,
        policy_path=str(tmp_path / "policy.toml"),
        data_dir=str(data_dir),
    )
    r = _sign(tmp_path, serial="4712", JIT_SSH_CONFIG=str(only_toml))
    assert r.returncode == 0, r.stderr
    assert _issued(app, 4712)[0] is not None
    app.extensions["jit_ssh.engine"].dispose()


def test_ca_sign_prints_nothing_it_could_not_record(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    app = build_app(tmp_path, database_url, clock)
    data_dir = tmp_path / "data"
    down = _toml(
        tmp_path, "down.toml", database_url=UNREACHABLE, policy_path=str(tmp_path / "policy.toml")
    )

    r = _sign(tmp_path, serial="5001", JIT_SSH_CONFIG=str(down), JIT_SSH_DATA_DIR=str(data_dir))
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert "[database_unavailable]" in r.stderr and "--no-record" in r.stderr
    assert not (data_dir / "pending-records.jsonl").exists()
    assert _issued(app, 5001) == (None, [])

    # No database at all (none configured, none in the data directory): refused too, never created.
    fresh = tmp_path / "fresh"
    assert _jit("ca", "init", JIT_SSH_DATA_DIR=str(fresh)).returncode == 0
    r = _sign(tmp_path, serial="5002", JIT_SSH_DATA_DIR=str(fresh))
    assert r.returncode == 4 and r.stdout == "" and "no database" in r.stderr
    assert not (fresh / "jit-ssh.sqlite3").exists()
    app.extensions["jit_ssh.engine"].dispose()


def test_no_record_signs_and_the_next_admin_command_records_it(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    app = build_app(tmp_path, database_url, clock)
    data_dir = tmp_path / "data"
    down = _toml(
        tmp_path, "down.toml", database_url=UNREACHABLE, policy_path=str(tmp_path / "policy.toml")
    )
    r = _sign(
        tmp_path,
        "--no-record",
        serial="6001",
        JIT_SSH_CONFIG=str(down),
        JIT_SSH_DATA_DIR=str(data_dir),
    )
    assert r.returncode == 0, r.stderr
    assert parse_certificate(r.stdout).serial == 6001
    assert "NOT in the database" in r.stderr
    pending = data_dir / "pending-records.jsonl"
    assert oct(pending.stat().st_mode & 0o777) == "0o600"
    assert json.loads(pending.read_text())["certificate"].split()[1] == r.stdout.split()[1]
    assert _issued(app, 6001) == (None, [])

    # The database is back: the next admin command on this data directory records it.
    up = _toml(
        tmp_path, "up.toml", database_url=database_url, policy_path=str(tmp_path / "policy.toml")
    )
    listed = _jit("admin", "user", "list", JIT_SSH_CONFIG=str(up), JIT_SSH_DATA_DIR=str(data_dir))
    assert listed.returncode == 0, listed.stderr
    assert not pending.exists()
    row, events = _issued(app, 6001)
    assert row is not None and row.offline
    assert len(events) == 1
    assert events[0].data["no_record"] is True and events[0].data["recorded_late"] is True
    # Once only, however often the pending file would be flushed.
    assert (
        _jit(
            "admin", "user", "list", JIT_SSH_CONFIG=str(up), JIT_SSH_DATA_DIR=str(data_dir)
        ).returncode
        == 0
    )
    assert len(_issued(app, 6001)[1]) == 1
    app.extensions["jit_ssh.engine"].dispose()


def test_no_record_with_the_database_up_records_at_once(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    app = build_app(tmp_path, database_url, clock)
    data_dir = tmp_path / "data"
    up = _toml(
        tmp_path, "up.toml", database_url=database_url, policy_path=str(tmp_path / "policy.toml")
    )
    r = _sign(
        tmp_path,
        "--no-record",
        serial="7001",
        JIT_SSH_CONFIG=str(up),
        JIT_SSH_DATA_DIR=str(data_dir),
    )
    assert r.returncode == 0, r.stderr
    assert not (data_dir / "pending-records.jsonl").exists()
    row, events = _issued(app, 7001)
    assert row is not None and len(events) == 1 and events[0].data["no_record"] is True
    assert "recorded_late" not in events[0].data
    app.extensions["jit_ssh.engine"].dispose()
