"""`jit-ssh login` wall time (auto-approved, local server, the whole process) and `jit-ssh --help`
start-up: median and fastest of ``n`` runs after one warm-up run (which fills the OS's file cache).

These figures were printed by a test in tests/integration/test_e2e_login.py; a wall time on a
shared machine is a measurement to read, not an assertion, so they live here now."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from ._server import jit_ssh, start
from ._util import env_with, pct


def _time(argv: list[str], env: dict[str, str], n: int) -> list[float]:
    subprocess.run(argv, env=env, check=True, capture_output=True)  # the warm-up run
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    n = 3 if quick else 10
    bare = _time([sys.executable, "-c", "pass"], dict(os.environ), n)
    helps = _time([jit_ssh(), "--help"], dict(os.environ), n)
    rows = [
        {
            "figure": "jit-ssh --help start-up",
            "measured": f"{pct([h * 1000 for h in helps], 50):.0f} ms (median), min {min(helps) * 1000:.0f} ms",
            "reference": f"python -c pass {pct([b * 1000 for b in bare], 50):.0f} ms",
            "verdict": "goal < 150 ms",
            "help_ms": pct([h * 1000 for h in helps], 50),
        }
    ]
    srv = start(users=1, workers=2, threads=4)
    try:
        user, key = srv.users[0]
        with tempfile.TemporaryDirectory() as home:
            env = env_with(
                HOME=home, JIT_SSH_SERVER=srv.url, JIT_SSH_USER=user, JIT_SSH_IDENTITY=str(key)
            )
            env.pop("SSH_AUTH_SOCK", None)
            logins = _time([jit_ssh(), "login", "demo", "--for", "5m", "--json"], env, n)
        ms = [x * 1000 for x in logins]
        rows.append(
            {
                "figure": "jit-ssh login (auto-approved, local server)",
                "measured": f"{pct(ms, 50):.0f} ms (median), min {min(ms):.0f} ms, max {max(ms):.0f} ms",
                "reference": "",
                "verdict": "goal < 300 ms",
                "login_ms": pct(ms, 50),
            }
        )
    finally:
        srv.stop()
    return rows
