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
    this holder loads and has not yet handed over, the first one included: by
    :meth:`reload` at once, by :meth:`get` in a thread of its own. A call that
    raises is retried later. It is not called from the constructor: a worker
    must start even while the database is out of reach.
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
        if policy is not self._policy:
            # Superseded while waiting for the lock: handing it over now would record a
            # change back to it. The current version is handed over next.
            return
        self.on_change(policy)
        self._synced = policy.version

    def _try_sync(self, policy: policies.Policy, t: float) -> None:
        """Hand ``policy`` over in a thread of its own: a request never waits for it (nor
        for a database that is down or hangs). At most one hand-over at a time per holder."""
        if self.on_change is None or self._synced == policy.version or t < self._sync_after:
            return
        if not self._sync_lock.acquire(blocking=False):
            return  # one is under way; the next check hands over what is current then
        try:
            threading.Thread(
                target=self._sync_in_background,
                args=(policy, t),
                name="jit-ssh-policy-record",
                daemon=True,
            ).start()
        except BaseException:
            self._sync_lock.release()
            raise

    def _sync_in_background(self, policy: policies.Policy, t: float) -> None:
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

    def wait_recorded(self, timeout: float = 30.0) -> bool:
        """Wait for a hand-over under way to end; return whether the version in force was
        handed over (tests, and a caller that must know the change is on record)."""
        if not self._sync_lock.acquire(timeout=timeout):
            return False
        self._sync_lock.release()
        return self.on_change is None or (
            self._policy is not None and self._synced == self._policy.version
        )

    def current(self) -> policies.Policy:
        """The policy as loaded, handing nothing over: for one-shot tools (an admin
        command), which must not start a thread that recording a change would need."""
        assert self._policy is not None
        return self._policy

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
