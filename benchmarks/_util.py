from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable


def rate(fn: Callable[[], object], *, seconds: float = 2.0, min_n: int = 50) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(10):
        fn()
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= min_n and time.perf_counter() - t0 >= seconds:
            break
    return n / (time.perf_counter() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def env_with(**kw: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(kw)
    return e
