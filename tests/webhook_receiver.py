"""A webhook receiver on 127.0.0.1 for the notification tests.

In the test process, :class:`Receiver` records every POST (headers and raw body) and answers
with scripted statuses. Run as a program (``python -m tests.webhook_receiver``) it is the
crash tests' separate receiver process: it de-duplicates on ``Idempotency-Key`` and appends
each new delivery to a JSON-lines file (fsync'ed before it answers), so what it got survives
its own death; ``--hold`` makes it keep the first request open without answering (after
persisting it), ``--die-after-read`` makes it stop after reading the first body, neither persisting nor
answering, and say so in a file (the test then kills it with SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Records each POST; answers with the next of ``statuses`` (200 once used up), or
    ``always``; ``extra_headers`` go on every answer (``Location``, ``Retry-After``)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self.always: int | None = None
        self.extra_headers: dict[str, str] = {}
        self.gate: threading.Event | None = None
        self.cond = threading.Condition()
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with me.cond:
                    me.received.append(Received(self.path, dict(self.headers.items()), body))
                    status = me.always or (me.statuses.pop(0) if me.statuses else 200)
                    me.cond.notify_all()
                if me.gate is not None:
                    me.gate.wait(30)
                try:
                    self.send_response(status)
                    for k, v in me.extra_headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up (a timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/jit"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < n and time.monotonic() < end:
                self.cond.wait(0.05)
            assert len(self.received) >= n, f"{len(self.received)} of {n} deliveries"
            return list(self.received)

    def events(self) -> list[str]:
        with self.cond:
            return [r.json["event"] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- the receiver process of the crash tests ------------------------------------------------


def _serve(port: int, store: Path, *, hold: bool, die_after_read: bool) -> None:
    seen = set()
    if store.exists():
        seen = {json.loads(line)["key"] for line in store.read_text().splitlines() if line}
    lock = threading.Lock()
    first = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            key = self.headers.get("Idempotency-Key", "")
            is_first = not first.is_set()
            first.set()
            if die_after_read and is_first:
                # Read the body, keep nothing, answer nothing: the test kills this process now.
                (store.parent / f"receiver-{port}.read").write_text(key)
                time.sleep(3600)
            with lock:
                if key not in seen:
                    seen.add(key)
                    with store.open("a") as f:
                        f.write(json.dumps({"key": key, "body": json.loads(body)}) + "\n")
                        f.flush()
                        os.fsync(f.fileno())
                # Every arrival, duplicates included: what the test counts redeliveries by.
                with store.with_suffix(".arrivals").open("a") as f:
                    f.write(key + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            if hold and is_first:
                time.sleep(3600)  # hold the request open until this process is killed
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    server: HTTPServer = Server(("127.0.0.1", port), Handler)
    (store.parent / f"receiver-{port}.ready").write_text(str(os.getpid()))
    server.serve_forever(poll_interval=0.05)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--hold", action="store_true")
    p.add_argument("--die-after-read", action="store_true")
    a = p.parse_args()
    _serve(a.port, a.store, hold=a.hold, die_after_read=a.die_after_read)


if __name__ == "__main__":
    main()
