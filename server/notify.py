"""Webhook notifications (Slack-compatible ``text``), sent off the request path.

A failing webhook is logged and retried a few times with backoff; it never
blocks or fails the request, approval or issuance it reports.

Values people typed (a reason, a comment) are escaped for Slack's mrkdwn
(``&``, ``<``, ``>``): otherwise a reason such as ``<https://evil|approve here>``
would put a link of the requester's choosing in front of the approvers.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Mapping

import httpx

from ca import format_duration

__all__ = ["Notifier"]

log = logging.getLogger("jit_ssh.notify")

_TEMPLATES = {
    "request.created": "{requester} requests {target} for {duration} ({state}): {reason} <{url}|review>",
    "request.approved": "Request {request_id} approved by {by} <{url}|details>",
    "request.denied": "Request {request_id} denied by {by}: {reason} <{url}|details>",
    "certificate.issued": "Certificate {serial} issued to {requester} for request {request_id} <{url}|details>",
}


class Notifier:
    def __init__(
        self,
        url: str,
        *,
        base_url: str,
        retries: int = 3,
        timeout: float = 5.0,
        backoff: float = 1.0,
    ) -> None:
        self.url = url
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.timeout = timeout
        #: Seconds before the first retry; doubled for each further one (at most 30 s).
        self.backoff = backoff
        self._queue: queue.Queue[dict[str, object] | None] = queue.Queue(maxsize=10000)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jit-ssh-webhook", daemon=True)
        self._thread.start()

    def send(self, kind: str, payload: Mapping[str, object]) -> None:
        data = dict(payload)
        data["url"] = f"{self.base_url}/requests/{payload.get('request_id', '')}"
        duration = data.get("duration_seconds")
        data.setdefault("duration", format_duration(duration) if isinstance(duration, int) else "")
        shown = _Default({k: v if k == "url" else _mrkdwn(v) for k, v in data.items()})
        try:
            text = _TEMPLATES.get(kind, kind + " {request_id}").format_map(shown)
        except (ValueError, IndexError, KeyError, AttributeError):
            text = kind
        message: dict[str, object] = {
            "text": text,
            "event": kind,
            **{k: v for k, v in data.items() if isinstance(v, (str, int, bool))},
        }
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            log.error("webhook queue full; dropped %s", kind)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while True:
                message = self._queue.get()
                if message is None:  # close()
                    self._queue.task_done()
                    return
                try:
                    if self._closed.is_set():
                        log.error("webhook closed; dropped %s", message["event"])
                    else:
                        self._deliver(client, message)
                except Exception:
                    log.exception("webhook delivery of %s failed", message.get("event"))
                finally:
                    self._queue.task_done()

    def _deliver(self, client: httpx.Client, message: Mapping[str, object]) -> None:
        body = json.dumps(message)
        for attempt in range(self.retries):
            if attempt and self._closed.wait(min(self.backoff * 2 ** (attempt - 1), 30)):
                log.error("webhook closed; dropped %s", message["event"])
                return
            try:
                r = client.post(
                    self.url, content=body, headers={"Content-Type": "application/json"}
                )
                if r.status_code < 300:
                    return
                log.warning(
                    "webhook answered %s for %s (attempt %d)",
                    r.status_code,
                    message["event"],
                    attempt + 1,
                )
            except (httpx.HTTPError, httpx.InvalidURL) as e:
                log.warning(
                    "webhook failed for %s (attempt %d): %s", message["event"], attempt + 1, e
                )
        log.error("webhook gave up on %s after %d attempts", message["event"], self.retries)

    def close(self, timeout: float = 1.0) -> None:
        """Stop sending: what is still queued is dropped (and logged)."""
        self._closed.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued message was delivered or given up on (for tests and
        shutdown); False if that took longer than ``timeout``."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks


def _mrkdwn(value: object) -> object:
    # Slack's three control characters in message text; the rest is shown as written.
    if isinstance(value, str):
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value


class _Default(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return ""
