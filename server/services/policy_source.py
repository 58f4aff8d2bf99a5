"""The policy source: the current policy file, reloaded when it changes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import policies

__all__ = ["PolicyHolder"]

log = logging.getLogger("jit_ssh.service")


class PolicyHolder:
    """The current policy, reloaded when its file changes (checked at most once a second)."""

    def __init__(
        self,
        path: Path,
        *,
        on_reload: Callable[[policies.Policy, policies.Policy | None], None] | None = None,
    ):
        self.path = path
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._checked = 0.0
        self._policy: policies.Policy | None = None
        self._on_reload = on_reload
        self.reload()

    def reload(self) -> policies.Policy:
        with self._lock:
            st = self.path.stat()
            new = policies.load_policy(self.path)
            old = self._policy
            self._policy, self._mtime = new, st.st_mtime_ns
        if old is not None and old.version != new.version and self._on_reload:
            self._on_reload(new, old)
        return new

    def get(self, monotonic: float | None = None) -> policies.Policy:
        t = time.monotonic() if monotonic is None else monotonic
        if t - self._checked >= 1.0:
            self._checked = t
            try:
                if self.path.stat().st_mtime_ns != self._mtime:
                    self.reload()
            except (OSError, policies.InvalidPolicy) as e:
                # Keep serving the last good policy; say so loudly.
                log.error(
                    "policy %s not reloaded, keeping version %s: %s",
                    self.path,
                    self._policy and self._policy.version[:12],
                    e,
                )
        assert self._policy is not None
        return self._policy
