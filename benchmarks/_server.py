"""Start a real `jit-ssh serve` for a benchmark, with auto-approved users enrolled."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ._util import env_with, free_port, wait_http

BENCH_POLICY = """
[targets.demo]
principals = ["jit-demo@demo"]
login_users = ["jit-demo"]

[[rules]]
name = "bench"
targets = ["demo"]
groups = ["oncall"]
max_duration = "1h"
default_duration = "10m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = false

[rules.auto_approve]
groups = ["oncall"]
max_duration = "1h"
"""


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    tmp: Path
    users: list[tuple[str, Path]]
    env: dict[str, str]
    schema: str | None = None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.schema:
            from sqlalchemy import create_engine, text

            e = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
            with e.begin() as c:
                c.execute(text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
            e.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)


def jit_ssh() -> str:
    exe = Path(sys.executable).with_name("jit-ssh")
    return str(exe) if exe.exists() else "jit-ssh"


def start(*, users: int, database: str = "sqlite", workers: int = 2, threads: int = 4) -> Server:
    tmp = Path(tempfile.mkdtemp(prefix="jit-bench-"))
    (tmp / "policy.toml").write_text(BENCH_POLICY)
    env = env_with(
        JIT_SSH_DATA_DIR=str(tmp / "data"),
        JIT_SSH_POLICY=str(tmp / "policy.toml"),
        JIT_SSH_LOG_LEVEL="WARNING",
    )
    schema = None
    if database == "postgresql":
        from sqlalchemy import create_engine, text

        schema = "bench_" + secrets.token_hex(4)
        e = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
        with e.begin() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
        e.dispose()
        env["JIT_SSH_DATABASE_URL"] = (
            f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
        )
        subprocess.run([jit_ssh(), "db", "upgrade"], env=env, check=True, capture_output=True)
    # Enrol the users in-process (one app, many users) rather than one CLI process each.
    from server.admin import Admin
    from server.app import create_app
    from server.config import load_config

    app = create_app(load_config(None, env), say=lambda m: None)
    admin = Admin(app.extensions["jit_ssh"].service)
    made = []
    for i in range(users):
        key = ed25519.Ed25519PrivateKey.generate()
        path = tmp / f"user{i}"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        os.chmod(path, 0o600)
        pub = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        admin.add_user(f"user{i}", groups=["oncall"], ssh_keys=[pub])
        made.append((f"user{i}", path))
    app.extensions["jit_ssh.engine"].dispose()
    port = free_port()
    proc = subprocess.Popen(
        [
            jit_ssh(),
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "serve.log", "wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz")
    except Exception:
        proc.kill()
        raise RuntimeError((tmp / "serve.log").read_text()[-2000:]) from None
    return Server(url=url, proc=proc, tmp=tmp, users=made, env=env, schema=schema)
