"""Admin commands and `ca sign` work on the database through server.context: no Flask loaded.

Each command runs in a fresh interpreter (the real entry point), which then
reports the modules it imported: neither Flask nor Werkzeug may be among them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

_PROBE = """
import json, sys
from client.cli import main
out, args = sys.argv[1], sys.argv[2:]
try:
    main(args)
    code = 0
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else 1
web = sorted(m for m in sys.modules if m.split(".")[0] in ("flask", "werkzeug", "flask_wtf"))
with open(out, "w") as f:
    json.dump({"code": code, "web": web}, f)
"""


_PROBE_EACH = """
import contextlib, io, json, sys
from client.cli import main
out, commands = sys.argv[1], json.loads(sys.argv[2])
results = []
for args in commands:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    web = sorted(m for m in sys.modules if m.split(".")[0] in ("flask", "werkzeug", "flask_wtf"))
    results.append({"code": code, "web": web, "stderr": err.getvalue()[-2000:]})
with open(out, "w") as f:
    json.dump(results, f)
"""


def _run_each(
    tmp_path: Path, env: dict[str, str], commands: list[tuple[str, ...]]
) -> list[dict[str, object]]:
    out = tmp_path / "probe-each.json"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE_EACH, str(out), json.dumps(commands)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.exists(), proc.stderr
    results: list[dict[str, object]] = json.loads(out.read_text())
    return results


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JIT_SSH_")}
    return {**clean, "JIT_SSH_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}


def _run(tmp_path: Path, env: dict[str, str], *args: str) -> dict[str, object]:
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    result: dict[str, object] = json.loads(out.read_text())
    assert result["code"] == 0, proc.stderr
    return {**result, "stdout": proc.stdout, "stderr": proc.stderr}


def _pubkey(tmp_path: Path) -> Path:
    path = tmp_path / "id.pub"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + b" alice@laptop\n"
    )
    return path


def test_admin_commands_and_ca_sign_import_no_flask(tmp_path: Path, env: dict[str, str]) -> None:
    key = _pubkey(tmp_path)
    # The first admin command on a fresh data directory creates it, as `serve` would.
    added = _run(
        tmp_path, env, "admin", "user", "add", "alice", "--group", "eng", "--ssh-key", str(key)
    )
    assert added["web"] == [] and "alice (active) groups=eng" in str(added["stdout"])
    listed = _run(tmp_path, env, "admin", "user", "list", "--json")
    assert listed["web"] == [] and json.loads(str(listed["stdout"]))[0]["name"] == "alice"
    # One interpreter runs these in turn (a fresh one each cost a second apiece); after each, the
    # modules loaded so far must still hold no Flask, so none of them loaded it.
    commands = [
        ("admin", "user", "set-groups", "alice", "--group", "oncall"),
        ("admin", "user", "disable", "alice"),
        ("admin", "expire"),
        ("audit", "export"),
        ("audit", "verify"),
        ("ca", "list"),
        ("admin", "user", "totp", "alice"),
        ("admin", "user", "totp", "alice", "--disable"),
    ]
    for args, result in zip(commands, _run_each(tmp_path, env, commands), strict=True):
        assert result["code"] == 0 and result["web"] == [], (args, result)
    signed = _run(
        tmp_path,
        env,
        "ca",
        "sign",
        str(key),
        "-n",
        "root@db",
        "--for",
        "5m",
        "--key-id",
        "break-glass-1",
        "--reason",
        "INC-1: the server is down",
    )
    assert signed["web"] == [] and str(signed["stdout"]).startswith(
        "ssh-ed25519-cert-v01@openssh.com "
    )
    exported = _run(tmp_path, env, "audit", "export")
    types = [json.loads(line).get("type") for line in str(exported["stdout"]).splitlines()]
    assert {"user.added", "user.updated"} <= set(types), types


def test_the_admin_context_module_imports_no_flask(tmp_path: Path, env: dict[str, str]) -> None:
    code = (
        "import sys, server.context, server.admin, server.totp, client.commands.service, client.commands.ca;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
