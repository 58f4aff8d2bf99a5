"""Measure every figure of DESIGN.md against its reference, in one run.

    python -m benchmarks [--quick] [--only NAME ...] [--json FILE]

Prints a table and writes JSON (default: benchmarks/results.json). Nothing
here is asserted: the figures are for people to read and compare.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import audit_bench, cli_bench, http_bench, issuance, krl_bench

SUITES: dict[str, Callable[[bool], list[dict[str, Any]]]] = {
    "issuance": issuance.run,
    "krl": krl_bench.run,
    "audit": audit_bench.run,
    "cli": cli_bench.run,
    "http": http_bench.run,
}


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("figure", "measured", "reference", "ratio / goal")
    lines = [head]
    for r in rows:
        lines.append((r["figure"], r["measured"], r.get("reference", ""), r.get("verdict", "")))
    widths = [max(len(str(line[i])) for line in lines) for i in range(4)]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=False)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller sizes (a smoke run, not the figures)"
    )
    p.add_argument("--only", nargs="*", choices=sorted(SUITES), help="run only these suites")
    p.add_argument(
        "--json",
        default=str(Path(__file__).with_name("results.json")),
        help="where to write the JSON results",
    )
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    started = time.time()
    for name, fn in SUITES.items():
        if args.only and name not in args.only:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(fn(args.quick))
        except Exception as e:
            rows.append(
                {"figure": f"{name}: FAILED", "measured": f"{type(e).__name__}: {e}", "suite": name}
            )
    print(_table(rows))
    meta = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "quick": args.quick,
        "seconds": round(time.time() - started, 1),
    }
    Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.json} ({meta['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
