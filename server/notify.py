"""Webhook notifications (Slack-compatible ``text``), sent off the request path.

A failing webhook is logged and retried a few times with backoff; it never
blocks or fails the request, approval or issuance it reports.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

import httpx

__all__ = ["Notifier"]

log = logging.getLogger("jit_ssh.notify")

_TEMPLATES = {
    "request.created": "{requester} requests {target} for {duration} ({state}): {reason} <{url}|review>",
    "request.approved": "Request {request_id} approved by {by} <{url}|details>",
    "request.denied": "Request {request_id} denied by {by}: {reason} <{url}|details>",
    "certificate.issued": "Certificate {serial} issued to {requester} for request {request_id} <{url}|details>",
}


class Notifier:
    def __init__(self, url: str, *, base_url: str, retries: int = 3, timeout: float = 5.0) -> None:
        self.url = url
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.timeout = timeout
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=10000)
        self._thread = threading.Thread(target=self._run, name="jit-ssh-webhook", daemon=True)
        self._thread.start()

    def send(self, kind: str, payload: dict[str, Any]) -> None:
        data = dict(payload)
        data["url"] = f"{self.base_url}/requests/{payload.get('request_id', '')}"
        duration = data.get("duration_seconds")
        data.setdefault("duration", f"{duration}s" if duration is not None else "")
        try:
            text = _TEMPLATES.get(kind, kind + " {request_id}").format_map(_Default(data))
        except (ValueError, IndexError):
            text = kind
        message = {"text": text, "event": kind, **{k: v for k, v in data.items() if isinstance(v, (str, int, bool))}}
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            log.error("webhook queue full; dropped %s", kind)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while True:
                message = self._queue.get()
                for attempt in range(self.retries):
                    try:
                        r = client.post(self.url, content=json.dumps(message), headers={"Content-Type": "application/json"})
                        if r.status_code < 300:
                            break
                        log.warning("webhook answered %s for %s (attempt %d)", r.status_code, message["event"], attempt + 1)
                    except httpx.HTTPError as e:
                        log.warning("webhook failed for %s (attempt %d): %s", message["event"], attempt + 1, e)
                    time.sleep(min(2**attempt, 30))
                else:
                    log.error("webhook gave up on %s after %d attempts", message["event"], self.retries)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until the queue is empty (for tests and shutdown)."""
        end = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < end:
            time.sleep(0.02)


class _Default(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""
