"""The one place the client reads the clock.

Commands take the time from here and pass it down (``ca`` and ``policies``
take ``now`` as an argument); tests patch these two functions, or the name a
command module imported.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["utcnow", "unix_time"]


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def unix_time() -> float:
    """Now, in seconds since the epoch (request-signing timestamps, the KRL sync state)."""
    return time.time()
