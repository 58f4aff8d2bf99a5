"""The policy source: the current policy file, reloaded when it changes.

Every worker process (and every replica) holds its own :class:`PolicyHolder`
and notices a changed file on its own. What a change means for the shared
database (one ``policy.reloaded`` event, requests for removed targets expired)
is the ``on_change`` callback's to do, and it must be idempotent: it is called
by every holder that sees a version it has not yet handed over, and the
database decides which one of them records it
(``RequestService.record_policy_version``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import policies

__all__ = ["PolicyHolder"]

log = logging.getLogger("jit_ssh.service")

#: Seconds between tries to hand a version to ``on_change`` after one failed
#: (the database is down, say): requests go on meanwhile with the new policy.
SYNC_RETRY_SECONDS = 5.0


class PolicyHolder:
    """The current policy, reloaded when its file changes (checked at most once a second).

    ``on_change(policy)`` is called (outside any transaction) with each version
    this holder loads and has not yet handed over, the first one included; a
    call that raises is retried later. It is not called from the constructor: a
    worker must start even while the database is out of reach.
    """

    def __init__(
        self,
        path: Path,
        *,
        on_change: Callable[[policies.Policy], object] | None = None,
    ):
        self.path = path
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._mtime: int | None = None
        self._checked = 0.0
        self._policy: policies.Policy | None = None
        #: The last version ``on_change`` accepted.
        self._synced: str | None = None
        self._sync_after = 0.0
        self.on_change = on_change
        self._load()

    def _load(self) -> policies.Policy:
        with self._lock:
            st = self.path.stat()
            new = policies.load_policy(self.path)
            self._policy, self._mtime = new, st.st_mtime_ns
        return new

    def reload(self) -> policies.Policy:
        """Read the file now and hand its version over at once (errors raise)."""
        new = self._load()
        with self._sync_lock:
            self._sync(new)
        return new

    def _sync(self, policy: policies.Policy) -> None:
        if self.on_change is None or self._synced == policy.version:
            return
        self.on_change(policy)
        self._synced = policy.version

    def _try_sync(self, policy: policies.Policy, t: float) -> None:
        if self.on_change is None or self._synced == policy.version or t < self._sync_after:
            return
        # Another thread of this worker is at it: it hands over the same version.
        if not self._sync_lock.acquire(blocking=False):
            return
        try:
            self._sync(policy)
        except Exception:
            self._sync_after = t + SYNC_RETRY_SECONDS
            log.exception(
                "policy version %s not yet recorded (retrying in %.0f s)",
                policy.version[:12],
                SYNC_RETRY_SECONDS,
            )
        finally:
            self._sync_lock.release()

    def get(self, monotonic: float | None = None) -> policies.Policy:
        t = time.monotonic() if monotonic is None else monotonic
        if t - self._checked >= 1.0:
            self._checked = t
            try:
                if self.path.stat().st_mtime_ns != self._mtime:
                    self._load()
            except (OSError, policies.InvalidPolicy) as e:
                # Keep serving the last good policy; say so loudly.
                log.error(
                    "policy %s not reloaded, keeping version %s: %s",
                    self.path,
                    self._policy and self._policy.version[:12],
                    e,
                )
            assert self._policy is not None
            self._try_sync(self._policy, t)
        assert self._policy is not None
        return self._policy
