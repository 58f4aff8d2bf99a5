"""Nothing is lost when the notification worker or the receiver dies mid-delivery.

Real processes: the worker is ``jit-ssh admin outbox work`` (the standalone worker), the
receiver is ``python -m tests.webhook_receiver`` on 127.0.0.1, which de-duplicates on the
``Idempotency-Key`` and fsyncs what it got before answering. The database is SQLite or
PostgreSQL (a fresh schema).

* The worker is killed with SIGKILL while the receiver holds its request open (after the
  receiver kept it): after a restart every message arrives, the held one twice, and the
  receiver keeps each key exactly once.
* The receiver is killed after reading a body and before answering (and before keeping it):
  after its restart every message arrives, exactly once per key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from server.config import resolve_config
from server.context import open_context
from server.db import is_sqlite
from server.migrate import upgrade
from tests.server.conftest import database_url  # noqa: F401 (the fixture: SQLite and PostgreSQL)
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
JIT_SSH = str(Path(sys.executable).parent / "jit-ssh")
MESSAGES = 12
SECRET = "crash-test-secret"


class Setup:
    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.dir = tmp_path
        self.port = free_port()
        self.store = tmp_path / "received.jsonl"
        self.config = tmp_path / "server.toml"
        self.database_url = database_url
        self.config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            f'database_url = "{database_url}"\n'
            f'[[webhooks]]\nname = "crash"\nurl = "http://127.0.0.1:{self.port}/hook"\ntimeout = 2\n'
            '[notifications]\nworker = false\nmax_attempts = 100\nbackoff_base = "1s"\n'
            'backoff_max = "2s"\nlease = "8s"\n'
        )
        self.env = {
            **os.environ,
            "JIT_SSH_CONFIG": str(self.config),
            "JIT_SSH_WEBHOOK_SECRET_CRASH": SECRET,
            "PYTHONPATH": str(ROOT),
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def record_events(self) -> None:
        if not is_sqlite(self.database_url):
            engine = create_engine(self.database_url)
            upgrade(engine)
            engine.dispose()
        cfg = resolve_config(env=self.env)
        with open_context(cfg, say=lambda m: None) as ctx, ctx.service._tx() as s:
            for i in range(MESSAGES):
                ctx.audit.record(
                    s, type="request.created", now=ctx.clock(), actor=f"user{i}", data={"n": i}
                )

    def rows(self) -> list[tuple[str, str, int]]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as c:
                return [
                    (r[0], str(r[1]), int(r[2]))
                    for r in c.execute(text("SELECT key, state, attempts FROM outbox ORDER BY id"))
                ]
        finally:
            engine.dispose()

    def receiver(self, *flags: str) -> subprocess.Popen[bytes]:
        ready = self.dir / f"receiver-{self.port}.ready"
        ready.unlink(missing_ok=True)
        p = subprocess.Popen(
            [sys.executable, "-m", "tests.webhook_receiver", "--port", str(self.port)]
            + ["--store", str(self.store), *flags],
            cwd=ROOT,
            env=self.env,
        )
        self.procs.append(p)
        _until(lambda: ready.exists() or p.poll() is not None, 20, "the receiver to listen")
        assert p.poll() is None, "the receiver did not start"
        return p

    def worker(self) -> subprocess.Popen[bytes]:
        log = (self.dir / "worker.log").open("ab")
        p = subprocess.Popen(
            [JIT_SSH, "admin", "outbox", "work"], env=self.env, stdout=log, stderr=log
        )
        self.procs.append(p)
        return p

    def kept(self) -> list[str]:
        if not self.store.exists():
            return []
        return [json.loads(line)["key"] for line in self.store.read_text().splitlines() if line]

    def arrivals(self) -> list[str]:
        f = self.store.with_suffix(".arrivals")
        return f.read_text().split() if f.exists() else []

    def all_delivered(self) -> bool:
        return all(state == "delivered" for _, state, _ in self.rows())

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def _until(probe: object, timeout: float, what: str) -> None:
    assert callable(probe)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if probe():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def setup(tmp_path: Path, database_url: str) -> Iterator[Setup]:
    s = Setup(tmp_path, database_url)
    s.record_events()
    yield s
    s.stop_all()


def _assert_each_kept_once(s: Setup) -> None:
    keys = [k for k, _, _ in s.rows()]
    assert len(keys) == MESSAGES
    kept = s.kept()
    assert sorted(kept) == sorted(keys), "every message kept by the receiver, once each"
    assert len(set(kept)) == len(kept)


def test_a_worker_killed_mid_delivery_loses_nothing(setup: Setup) -> None:
    s = setup
    s.receiver("--hold")
    worker = s.worker()
    # The receiver has kept the first message and holds the request open, unanswered.
    _until(lambda: len(s.arrivals()) >= 1, 30, "the first delivery")
    (held,) = s.arrivals()
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    states = {k: state for k, state, _ in s.rows()}
    assert states[held] == "pending"  # not marked delivered: nobody answered
    assert s.kept() == [held]

    restarted = s.worker()
    _until(s.all_delivered, 60, "every message delivered after the restart")
    _assert_each_kept_once(s)
    # The held message was delivered again (at least once) and de-duplicated by its key.
    assert s.arrivals().count(held) == 2
    assert sorted(set(s.arrivals())) == sorted(s.kept())
    # A clean stop.
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(15) == 0


def test_a_receiver_killed_before_answering_loses_nothing(setup: Setup) -> None:
    s = setup
    dying = s.receiver("--die-after-read")
    worker = s.worker()
    # It read the first body; killed before it answers or keeps anything.
    marker = s.dir / f"receiver-{s.port}.read"
    _until(marker.exists, 30, "the receiver to read the first body")
    dying.send_signal(signal.SIGKILL)
    dying.wait(10)
    assert s.kept() == []
    time.sleep(1.5)  # the worker meets the dead receiver (refused connections, retried)
    assert any(attempts >= 1 for _, state, attempts in s.rows() if state == "pending")

    s.receiver()
    _until(s.all_delivered, 60, "every message delivered after the receiver's restart")
    _assert_each_kept_once(s)
    assert len(s.arrivals()) == MESSAGES  # the lost answer was retried, nothing twice
    assert worker.poll() is None


def test_jit_ssh_serve_delivers_by_itself(tmp_path: Path) -> None:
    """The worker thread of a ``jit-ssh serve`` process: an event recorded (by another
    process, on the same database) reaches the webhook within seconds, nobody asking."""
    from tests.integration.e2e_helpers import JitServer
    from tests.webhook_receiver import Receiver

    hook = Receiver()

    class Server(JitServer):
        def env(self) -> dict[str, str]:
            return {
                **super().env(),
                "JIT_SSH_WEBHOOK_URL": hook.url,
                "JIT_SSH_WEBHOOK_SECRET_DEFAULT": SECRET,
            }

    server = Server(tmp_path, JIT_SSH)
    server.start()
    try:
        cfg = resolve_config(env=server.env())
        with open_context(cfg, say=lambda m: None) as ctx, ctx.service._tx() as s:
            ctx.audit.record(s, type="request.created", now=ctx.clock(), actor="alice")
        (got,) = hook.wait_for(1, timeout=30)
        assert got.headers["Idempotency-Key"].endswith(".webhook:default")
        assert got.headers["X-Jit-Ssh-Signature"].startswith("v1=")
    finally:
        server.stop()
        hook.close()
