"""This worker's request-latency histogram, for ``/metrics`` (server/ops.py)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["Metrics", "BUCKETS", "LatencyBucket"]

#: Upper bounds (seconds) of the latency histogram's buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class LatencyBucket:
    """One endpoint's requests: how many, their total time, and how many fell in each bucket."""

    count: int = 0
    seconds: float = 0.0
    within: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))


@dataclass
class Metrics:
    latency: dict[str, LatencyBucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, endpoint: str, seconds: float) -> None:
        with self._lock:
            bucket = self.latency.setdefault(endpoint, LatencyBucket())
            bucket.count += 1
            bucket.seconds += seconds
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    bucket.within[i] += 1

    def snapshot(self) -> list[tuple[str, LatencyBucket]]:
        """A copy of every endpoint's bucket, sorted by endpoint."""
        with self._lock:
            return [
                (k, LatencyBucket(v.count, v.seconds, list(v.within)))
                for k, v in sorted(self.latency.items())
            ]
