"""audit verify over 1,000,000 events (an export file, verified offline)."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ca import audit as chain


def run(quick: bool) -> list[dict[str, Any]]:
    n = 50_000 if quick else 1_000_000
    key = chain.generate_audit_key()
    t = datetime(2026, 11, 29, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "audit.jsonl"
        prev = None
        cps = []
        t0 = time.perf_counter()
        with path.open("w") as f:
            for i in range(1, n + 1):
                ev = chain.make_event(
                    prev,
                    id=i,
                    at=chain.format_at(t + timedelta(milliseconds=i)),
                    type="certificate.issued",
                    actor="alice",
                    request_id=f"{i:016x}",
                    data={
                        "serial": str(i * 7919),
                        "principals": ["jit-demo@demo"],
                        "duration_seconds": 600,
                    },
                )
                f.write(chain.event_line(ev) + "\n")
                if i % 1000 == 0 or i == n:
                    cps.append(chain.sign_checkpoint(key, ev, ev.at))
                prev = ev
            for cp in cps:
                f.write(chain.checkpoint_line(cp) + "\n")
        t_write = time.perf_counter() - t0
        size = path.stat().st_size
        t0 = time.perf_counter()
        result = chain.verify_export_file(path, [key.public_key()])
        t_verify = time.perf_counter() - t0
    return [
        {
            "figure": f"audit verify, {n:,} events",
            "measured": f"{t_verify:.2f} s",
            "reference": f"{size / 1e6:.0f} MB export, written in {t_write:.1f} s; ok={result.ok}",
            "verdict": "goal < 10 s",
            "verify_s": t_verify,
            "ok": result.ok,
        }
    ]
