"""Replicas and keys (issue 10, point 6): the database records the CA and audit keys, a replica
with other keys refuses to start, and CA rotation is staged (add -> promote -> retire)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ca import parse_certificate
from client.cli import cli

from .conftest import Caller, Clock, build_app, user_key_line


def _fingerprints(app: Any) -> tuple[str, str]:
    ext = app.extensions["jit_ssh"]
    from ca.audit import audit_key_fingerprint

    return ext.keyring.signing_key.fingerprint, audit_key_fingerprint(ext.audit_public_key)


def _replica(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


def test_a_replica_with_its_own_generated_keys_refuses_to_start(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    from server.keystore import ReplicaKeysDiffer

    first = build_app(tmp_path, database_url, clock)
    ca_fp, _ = _fingerprints(first)
    # A second replica on the same database whose data directory was empty: first start made it
    # a CA key and an audit key of its own. Today it started "healthy" and signed with them.
    with pytest.raises(ReplicaKeysDiffer) as e:
        build_app(_replica(tmp_path, "r2"), database_url, clock)
    mine = next((tmp_path / "r2" / "data" / "ca").glob("ca-*.pub")).read_text().split()
    from ca.keys import parse_public_key

    other = parse_public_key(" ".join(mine[:2])).fingerprint
    assert e.value.code == "replica_keys_differ"
    assert ca_fp in str(e.value) and other in str(e.value) and ca_fp != other
    first.extensions["jit_ssh.engine"].dispose()


def test_a_replica_with_another_audit_key_refuses_to_start(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    from ca.audit import audit_key_fingerprint, load_audit_key
    from server.keystore import ReplicaKeysDiffer

    first = build_app(tmp_path, database_url, clock)
    _, audit_fp = _fingerprints(first)
    r2 = _replica(tmp_path, "r2")
    shutil.copytree(
        tmp_path / "data" / "ca", r2 / "data" / "ca"
    )  # the same CA keys, but not audit/
    with pytest.raises(ReplicaKeysDiffer) as e:
        build_app(r2, database_url, clock)
    theirs = audit_key_fingerprint(load_audit_key(r2 / "data" / "audit" / "audit_ed25519"))
    assert audit_fp in str(e.value) and theirs in str(e.value) and audit_fp != theirs
    assert "audit" in str(e.value)


def test_a_replica_with_the_same_keys_starts_and_signs_with_the_recorded_key(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    first = build_app(tmp_path, database_url, clock)
    r2 = _replica(tmp_path, "r2")
    shutil.copytree(tmp_path / "data", r2 / "data")
    second = build_app(r2, database_url, clock)
    assert _fingerprints(second) == _fingerprints(first)
    assert second.test_client().get("/healthz").json["ca"] == _fingerprints(first)[0]
    for a in (first, second):
        a.extensions["jit_ssh.engine"].dispose()


def _issue(caller: Caller) -> str:
    r = caller.post("/v1/requests", {"target": "demo", "duration": "10m"})
    assert r.status_code == 201 and r.json["state"] == "approved", r.json
    cert = caller.post(f"/v1/requests/{r.json['id']}/certificate", {"public_key": user_key_line()})
    assert cert.status_code == 200, cert.json
    return parse_certificate(cert.json["certificate"]).ca_public_key.fingerprint


def _published(app: Any) -> list[str]:
    from ca.keys import load_public_keys

    text = app.test_client().get("/v1/ca.pub").get_data(as_text=True)
    return [k.fingerprint for k in load_public_keys(text)]


def test_rotation_is_staged_add_then_promote_then_retire(
    app: Any, oncall: Caller, tmp_path: Path, database_url: str, clock: Clock
) -> None:
    ext = app.extensions["jit_ssh"]
    ext.keyring.max_age = (
        0  # follow the database on every request (a running replica checks once a second)
    )
    old = ext.keyring.signing_key.fingerprint
    before_rotation = _replica(tmp_path, "stale")
    shutil.copytree(tmp_path / "data", before_rotation / "data")

    env = {
        "JIT_SSH_DATA_DIR": str(tmp_path / "data"),
        "JIT_SSH_DATABASE_URL": database_url,
        "JIT_SSH_POLICY": str(tmp_path / "policy.toml"),
        "JIT_SSH_CONFIG": "",
    }
    runner = CliRunner()

    def run(*args: str) -> Any:
        r = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        # Any request makes the running app read the key states again (max_age 0 here, a
        # second in production), in the background; wait for that read to finish.
        app.test_client().get("/v1/targets")
        ext.keyring.join(30)
        return r

    added = run("ca", "add-key", "--type", "ecdsa")
    new = next(w for w in added.output.split() if w.startswith("SHA256:"))
    # Added: trusted and published (hosts can fetch it now), but the old key still signs.
    assert _published(app) == [old, new]
    assert _issue(oncall) == old

    with pytest.raises(Exception) as refused:
        runner.invoke(cli, ["ca", "retire", old], env=env, catch_exceptions=False)
    assert getattr(refused.value, "code", "") == "invalid_rotation"

    run("ca", "promote", new)
    assert _issue(oncall) == new  # this running app follows the database
    assert _published(app) == [old, new]  # the old key stays trusted for the certificates it signed

    # A replica whose data directory predates the rotation: the recorded signer is not there.
    from server.keystore import ReplicaKeysDiffer

    with pytest.raises(ReplicaKeysDiffer) as e:
        build_app(before_rotation, database_url, clock)
    assert new in str(e.value) and old in str(e.value)

    run("ca", "retire", old)
    assert _published(app) == [new]
    assert _issue(oncall) == new

    # Every step is in the audit log, and the chain verifies.
    from ca import audit as chain

    events, cps = chain.parse_export(list(ext.export_audit(0)))
    steps = [(e.type, e.data["fingerprint"]) for e in events if e.type.startswith("ca.key_")]
    assert steps == [("ca.key_added", new), ("ca.key_promoted", new), ("ca.key_retired", old)]
    assert chain.verify_chain(events, cps, [ext.audit_public_key]).ok
    listing = run("ca", "list").output
    assert f"retired  {old}" in listing and f"signing  {new}" in listing


def test_serve_with_other_keys_exits_naming_both_fingerprints(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    import os
    import subprocess
    import sys

    first = build_app(tmp_path, database_url, clock)
    ca_fp, _ = _fingerprints(first)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIT_SSH_")}
    env.update(
        JIT_SSH_DATA_DIR=str(tmp_path / "r2"),
        JIT_SSH_DATABASE_URL=database_url,
        JIT_SSH_POLICY=str(tmp_path / "policy.toml"),
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from client.cli import main; main()",
            "serve",
            "--bind",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    assert "[replica_keys_differ]" in r.stderr and ca_fp in r.stderr
    from ca.keys import parse_public_key

    mine = parse_public_key(next((tmp_path / "r2" / "ca").glob("ca-*.pub")).read_text()).fingerprint
    assert mine in r.stderr and "Traceback" not in r.stderr
    first.extensions["jit_ssh.engine"].dispose()


def test_serve_with_bootstrap_false_makes_no_key(tmp_path: Path) -> None:
    """A replica fed by configuration management (`bootstrap = false`) whose files are missing
    refuses to start: it never makes a CA key nobody trusts."""
    import os
    import subprocess
    import sys

    (tmp_path / "server.toml").write_text("bootstrap = false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIT_SSH_")}
    env.update(JIT_SSH_DATA_DIR=str(tmp_path / "data"))
    r = subprocess.run(
        [sys.executable, "-c", "from client.cli import main; main()", "serve"]
        + ["--config", str(tmp_path / "server.toml"), "--bind", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert not list((tmp_path / "data").rglob("*ed25519*")), "no key may be made"
    assert not list((tmp_path / "data").rglob("ca-*"))
