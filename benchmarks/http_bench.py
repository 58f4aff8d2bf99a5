"""Full auto-approved issuance over HTTP (request + fetch) against `jit-ssh serve`,
N concurrent clients, on SQLite and PostgreSQL: issuances/s and p50/p95/p99.

Clients run in their own processes on the same 2-core machine as the server,
so they take CPU from it: the figure is a floor for what the server does alone.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from ._server import start
from ._util import pct


def _client(url: str, user: str, key_path: str, seconds: float, out: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from ca import public_key_from_crypto
    from client.http import ApiClient
    from client.signing import KeyFileSigner

    signer = KeyFileSigner.from_path(key_path)
    pub = public_key_from_crypto(ed25519.Ed25519PrivateKey.generate().public_key()).openssh
    lat: list[float] = []
    errors = 0
    with ApiClient(server=url, user=user, signer=signer, retries=1) as api:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                r = api.post("/v1/requests", {"target": "demo", "duration": 600})
                api.post(f"/v1/requests/{r['id']}/certificate", {"public_key": pub})
                lat.append(time.perf_counter() - t0)
            except Exception:
                errors += 1
    out.put((lat, errors))


def _load(url: str, users: list[tuple[str, Any]], seconds: float) -> tuple[list[float], int, float]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(url, u, str(k), seconds, q)) for u, k in users]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    lat: list[float] = []
    errors = 0
    for _ in procs:
        got, e = q.get(timeout=seconds + 120)
        lat.extend(got)
        errors += e
    for p in procs:
        p.join(30)
    return lat, errors, time.perf_counter() - t0


def run(quick: bool) -> list[dict[str, Any]]:
    seconds = 3.0 if quick else 15.0
    clients = 4 if quick else 8
    rows = []
    for db in ("sqlite", "postgresql"):
        try:
            srv = start(users=clients, database=db, workers=2, threads=4)
        except Exception as e:
            rows.append({"figure": f"HTTP issuance ({db})", "measured": f"not run: {e}"[:200]})
            continue
        try:
            lat, errors, wall = _load(srv.url, srv.users, seconds)
        finally:
            srv.stop()
        n = len(lat)
        rps = n / seconds
        ms = [x * 1000 for x in lat]
        rows.append(
            {
                "figure": f"HTTP issuance (request + fetch), {db}, {clients} clients, 2 workers",
                "measured": f"{rps:,.0f}/s",
                "reference": f"p50 {pct(ms, 50):.1f} ms, p95 {pct(ms, 95):.1f} ms, p99 {pct(ms, 99):.1f} ms; errors {errors}",
                "verdict": "goal >= 1,300/s, p99 < 15 ms (Vault SSH: 1,295/s)",
                "per_s": rps,
                "p50_ms": pct(ms, 50),
                "p95_ms": pct(ms, 95),
                "p99_ms": pct(ms, 99),
                "errors": errors,
                "n": n,
            }
        )
    return rows
