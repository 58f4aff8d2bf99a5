"""KRL for 100,000 revoked serials: build and parse time, and ssh-keygen -Q accepting it."""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import CAKey, issue_certificate, public_key_from_crypto
from ca.krl import build_krl, parse_krl


def run(quick: bool) -> list[dict[str, Any]]:
    n = 10_000 if quick else 100_000
    ca = CAKey.from_private(ed25519.Ed25519PrivateKey.generate())
    rng = random.Random(7)
    serials = rng.sample(range(1, 2**63), n)
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    data = build_krl(ca_keys=[ca.public.blob], serials=serials, version=1, now=now)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    parse_krl(data)
    t_parse = time.perf_counter() - t0
    verdict = f"{t_build * 1000:.0f} ms (goal < 500 ms)"
    row: dict[str, Any] = {
        "figure": f"KRL build, {n:,} random serials",
        "measured": f"{t_build * 1000:.0f} ms build, {t_parse * 1000:.0f} ms parse",
        "reference": f"{len(data):,} bytes",
        "verdict": verdict,
        "build_s": t_build,
        "parse_s": t_parse,
    }
    keygen = shutil.which("ssh-keygen")
    if keygen:
        user = public_key_from_crypto(ed25519.Ed25519PrivateKey.generate().public_key())
        with tempfile.TemporaryDirectory() as d:
            krl = Path(d) / "k.krl"
            krl.write_bytes(data)
            revoked = issue_certificate(
                ca,
                user,
                principals=["p"],
                duration=timedelta(minutes=5),
                key_id="k",
                now=now,
                serial=serials[n // 2],
            )
            ok = issue_certificate(
                ca,
                user,
                principals=["p"],
                duration=timedelta(minutes=5),
                key_id="k",
                now=now,
                serial=1,
            )
            (Path(d) / "r-cert.pub").write_text(revoked.openssh)
            (Path(d) / "o-cert.pub").write_text(ok.openssh)
            t0 = time.perf_counter()
            rc_r = subprocess.run(
                [keygen, "-Q", "-f", str(krl), str(Path(d) / "r-cert.pub")], capture_output=True
            ).returncode
            t_q = time.perf_counter() - t0
            rc_o = subprocess.run(
                [keygen, "-Q", "-f", str(krl), str(Path(d) / "o-cert.pub")], capture_output=True
            ).returncode
        row["reference"] += (
            f"; ssh-keygen -Q: revoked={'yes' if rc_r == 1 else 'NO'}, other ok={'yes' if rc_o == 0 else 'NO'} ({t_q * 1000:.0f} ms)"
        )
    return [row]
