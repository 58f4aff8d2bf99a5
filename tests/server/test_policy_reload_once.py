"""One policy change records one ``policy.reloaded`` event (issue 12, point 8), on SQLite and
PostgreSQL: however many workers and replicas notice it, in threads or in processes of their own.

Every worker holds its own policy and notices a changed file on its own; the database decides
which one records the change (a compare-and-set on the one ``policy_state`` row, in the
transaction of the audit event). A change back to an earlier version is a change too.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from ca.audit import verify_export_lines
from server.config import ServerConfig
from server.deps import Deps, build_deps
from server.migrate import downgrade, upgrade
from server.services.policy_source import SYNC_RETRY_SECONDS, PolicyHolder

from .conftest import TEST_POLICY, Clock, build_app

#: TEST_POLICY with another meaning (and so another version): a longer demo grant.
POLICY_B = TEST_POLICY.replace('max_duration = "1h"', 'max_duration = "2h"')


_TICKS = itertools.count(1)


def _later() -> float:
    """A moment past every earlier one: the holder's once-a-second check runs."""
    return time.monotonic() + 3600 * next(_TICKS)


def _reloaded(app: Any) -> list[dict[str, Any]]:
    engine = app.extensions["jit_ssh.engine"]
    with engine.connect() as c:
        rows = c.execute(
            text("SELECT data FROM audit_events WHERE type = 'policy.reloaded' ORDER BY id")
        ).all()
    return [json.loads(r[0]) for r in rows]


def _recorded_version(app: Any) -> str | None:
    engine = app.extensions["jit_ssh.engine"]
    with engine.connect() as c:
        v: str | None = c.execute(text("SELECT version FROM policy_state WHERE id = 1")).scalar()
    return v


def _config(app: Any) -> ServerConfig:
    cfg = app.extensions["jit_ssh"].config
    assert isinstance(cfg, ServerConfig)
    return cfg


def _workers(app: Any, clock: Clock, n: int) -> list[Deps]:
    """``n`` more workers of the same server: each its own engine, sessions and policy holder."""
    return [build_deps(_config(app), clock=clock, say=lambda m: None) for _ in range(n)]


def _chain_verifies(app: Any) -> None:
    d = app.extensions["jit_ssh"]
    result = verify_export_lines(list(d.export_audit(0)), [d.audit_public_key], expect_first_id=1)
    assert result.ok, result.problem


def _race(workers: list[Deps]) -> list[str]:
    """Every worker notices the file at the same moment; returns the versions they serve."""
    barrier = threading.Barrier(len(workers))
    seen: list[str] = []
    errors: list[BaseException] = []

    def notice(d: Deps) -> None:
        try:
            barrier.wait(timeout=30)
            # As a request would: the once-a-second check finds the new file (and hands
            # the new version over in a thread of its own: waited for here).
            holder = d.service.policy
            seen.append(holder.get(_later()).version)
            assert holder.wait_recorded()
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=notice, args=(d,)) for d in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return seen


def test_the_first_start_records_no_change(app: Any) -> None:
    holder = app.extensions["jit_ssh"].service.policy
    version = holder.get().version
    assert holder.wait_recorded()
    # A first load was never a change: the version is stored, no event.
    assert _recorded_version(app) == version
    assert _reloaded(app) == []


def test_workers_noticing_one_change_record_one_event(app: Any, clock: Clock) -> None:
    workers = _workers(app, clock, 4)
    try:
        first = app.extensions["jit_ssh"].service.policy.reload().version
        for d in workers:
            assert d.service.policy.get(_later()).version == first
            assert d.service.policy.wait_recorded()
        policy_file = _config(app).resolved_policy_path
        policy_file.write_text(POLICY_B)

        seen = _race(workers)
        new = seen[0]
        assert seen == [new] * 4 and new != first
        # The app's own worker notices it too, later.
        assert app.extensions["jit_ssh"].service.policy.reload().version == new

        events = _reloaded(app)
        assert len(events) == 1, events
        assert events[0]["version"] == new and events[0]["previous"] == first
        assert events[0]["path"] == str(policy_file)
        assert _recorded_version(app) == new
        _chain_verifies(app)
    finally:
        for d in workers:
            d.engine.dispose()


def test_a_change_back_to_an_earlier_version_is_recorded_again(app: Any, clock: Clock) -> None:
    workers = _workers(app, clock, 3)
    try:
        policy_file = _config(app).resolved_policy_path
        a = app.extensions["jit_ssh"].service.policy.reload().version
        for d in workers:
            d.service.policy.get(_later())
            assert d.service.policy.wait_recorded()
        versions = [a]
        for body in (POLICY_B, TEST_POLICY, POLICY_B):
            policy_file.write_text(body)
            seen = _race(workers)
            assert len(set(seen)) == 1
            versions.append(seen[0])
        assert versions[2] == a and versions[1] == versions[3] != a

        # A -> B -> A -> B: three changes, three events, each from the version before.
        events = _reloaded(app)
        assert [(e["previous"], e["version"]) for e in events] == list(
            zip(versions, versions[1:], strict=False)
        )
        _chain_verifies(app)
    finally:
        for d in workers:
            d.engine.dispose()


def test_a_change_made_while_the_server_was_down_is_recorded_at_start(
    app: Any, clock: Clock
) -> None:
    a = app.extensions["jit_ssh"].service.policy.reload().version
    _config(app).resolved_policy_path.write_text(POLICY_B)
    # A restart: new workers, which never held version A, see B on disk and A in the database.
    restarted = _workers(app, clock, 2)
    try:
        seen = _race(restarted)
        events = _reloaded(app)
        assert len(events) == 1 and events[0]["previous"] == a
        assert events[0]["version"] == seen[0] != a
    finally:
        for d in restarted:
            d.engine.dispose()


# ---- real processes -----------------------------------------------------------------------

_WORKER = """
import pathlib, sys, time
from server.config import ServerConfig
from server.deps import build_deps

data_dir, url, policy, ready, go = sys.argv[1:6]
cfg = ServerConfig(
    data_dir=pathlib.Path(data_dir), database_url=url, policy_path=pathlib.Path(policy),
    bootstrap=False, audit_checkpoint_every=5,
)
d = build_deps(cfg, say=lambda m: None)
holder = d.service.policy
holder.get()
assert holder.wait_recorded()
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.002)
print(holder.get(time.monotonic() + 3600).version, flush=True)
assert holder.wait_recorded()
d.engine.dispose()
"""


def test_worker_processes_noticing_one_change_record_one_event(
    app: Any, tmp_path: Path, database_url: str
) -> None:
    cfg = _config(app)
    first = app.extensions["jit_ssh"].service.policy.reload().version
    go = tmp_path / "go"
    procs, ready = [], []
    for i in range(3):
        flag = tmp_path / f"ready-{i}"
        ready.append(flag)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WORKER,
                    str(cfg.data_dir),
                    database_url,
                    str(cfg.resolved_policy_path),
                    str(flag),
                    str(go),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        deadline = time.monotonic() + 60
        while not all(f.exists() for f in ready):
            assert time.monotonic() < deadline, "the workers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        cfg.resolved_policy_path.write_text(POLICY_B)
        go.touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), outputs
    seen = {out.strip() for out, _ in outputs}
    assert len(seen) == 1 and first not in seen
    events = _reloaded(app)
    assert len(events) == 1, events
    assert events[0]["previous"] == first and events[0]["version"] in seen
    _chain_verifies(app)


# ---- the holder: a failed record is retried, a worker still starts ------------------------


def test_a_record_that_fails_is_retried_and_the_worker_keeps_serving(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(TEST_POLICY)
    calls: list[str] = []
    down = [True]

    def record(policy: Any) -> None:
        calls.append(policy.version)
        if down[0]:
            raise ConnectionError("database unreachable")

    # The constructor touches no database: a worker starts while it is down.
    holder = PolicyHolder(policy_file, on_change=record)
    assert calls == []
    t = 1000.0
    served = holder.get(t).version
    assert not holder.wait_recorded()
    assert calls == [served]
    # Within the retry interval the requests go on, with no new try.
    assert holder.get(t + 1.5).version == served
    holder.wait_recorded()
    assert len(calls) == 1
    down[0] = False
    holder.get(t + 1.5 + SYNC_RETRY_SECONDS)
    assert holder.wait_recorded()
    assert calls == [served, served]
    # Handed over: not again until the version changes.
    holder.get(t + 30)
    assert holder.wait_recorded() and len(calls) == 2
    policy_file.write_text(POLICY_B)
    new = holder.get(t + 40).version
    assert holder.wait_recorded()
    assert new != served and calls[-1] == new and len(calls) == 3


def test_a_request_does_not_wait_for_the_record(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(TEST_POLICY)
    release = threading.Event()

    def record(policy: Any) -> None:
        # A database that hangs.
        release.wait(30)

    holder = PolicyHolder(policy_file, on_change=record)
    started = time.monotonic()
    holder.get(1000.0)
    holder.get(1002.0)
    assert time.monotonic() - started < 5
    assert not holder.wait_recorded(timeout=0.1)
    release.set()
    assert holder.wait_recorded()


# ---- the migration ------------------------------------------------------------------------


def test_the_migration_creates_the_one_row_and_steps_back(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from server.db import make_engine
    from server.models import Base

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as c:
            rows = c.execute(text("SELECT id, version FROM policy_state")).all()
            ctx = MigrationContext.configure(c, opts={"compare_type": True})
            diffs = [d for d in compare_metadata(ctx, Base.metadata) if "policy_state" in repr(d)]
        assert [tuple(r) for r in rows] == [(1, None)]
        assert diffs == []
        downgrade(engine, "0005")
        with engine.connect() as c:
            assert "policy_state" not in inspect(c).get_table_names()
        upgrade(engine)
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM policy_state")).scalar_one() == 1
    finally:
        engine.dispose()


@pytest.fixture
def app_without_state_row(tmp_path: Path, database_url: str, clock: Clock) -> Any:
    app = build_app(tmp_path, database_url, clock)
    with app.extensions["jit_ssh.engine"].begin() as c:
        c.execute(text("DELETE FROM policy_state"))
    yield app
    app.extensions["jit_ssh.engine"].dispose()


def test_workers_put_a_missing_row_back_once(app_without_state_row: Any, clock: Clock) -> None:
    app = app_without_state_row
    workers = _workers(app, clock, 3)
    try:
        seen = _race(workers)
        assert _recorded_version(app) == seen[0]
        assert _reloaded(app) == []
    finally:
        for d in workers:
            d.engine.dispose()


# ---- the real server: gunicorn workers ----------------------------------------------------


def _burst(url: str, n: int = 12) -> list[str]:
    """``n`` concurrent /healthz calls (so that every worker answers some): the versions served."""
    import httpx

    out: list[str] = []

    def one() -> None:
        r = httpx.get(url + "/healthz", timeout=10)
        assert r.status_code == 200, r.text
        out.append(r.json()["policy_version"])

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(out) == n
    return out


def _served_everywhere(url: str, version: str) -> None:
    deadline = time.monotonic() + 30
    streak = 0
    while streak < 3:
        assert time.monotonic() < deadline, "the workers did not all pick up the new policy"
        streak = streak + 1 if set(_burst(url)) == {version} else 0
        time.sleep(0.5)
    # Each worker hands the new version over in a thread of its own: give them a moment.
    time.sleep(1.0)


@pytest.mark.integration
def test_gunicorn_workers_record_one_event_per_change(tmp_path: Path) -> None:
    import os
    import shutil
    import signal

    from policies import parse_policy
    from tests.support import answers_healthz, free_port, wait_ready

    jit_ssh = Path(sys.executable).with_name("jit-ssh")
    command = str(jit_ssh) if jit_ssh.exists() else shutil.which("jit-ssh")
    assert command, "the jit-ssh command is not installed (pip install -e '.[test]')"
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(TEST_POLICY)
    (tmp_path / "home").mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "JIT_SSH_DATA_DIR": str(tmp_path / "data"),
        "JIT_SSH_POLICY": str(policy_file),
        "JIT_SSH_LOG_LEVEL": "WARNING",
    }
    url = f"http://127.0.0.1:{free_port()}"
    with open(tmp_path / "serve.log", "ab") as log:
        proc = subprocess.Popen(
            [command, "serve", "--bind", url.removeprefix("http://"), "--workers", "3"]
            + ["--threads", "1"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            # Its own process group: the master and its workers end together, by this pid.
            start_new_session=True,
        )
    try:
        assert wait_ready(proc, lambda: answers_healthz(url), 60), (
            tmp_path / "serve.log"
        ).read_text()[-3000:]
        a, b = parse_policy(TEST_POLICY).version, parse_policy(POLICY_B).version
        _served_everywhere(url, a)
        from sqlalchemy import create_engine

        engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'jit-ssh.sqlite3'}")

        def reloaded() -> list[tuple[str, str]]:
            with engine.connect() as c:
                rows = c.execute(
                    text("SELECT data FROM audit_events WHERE type = 'policy.reloaded'")
                ).all()
            return [(d["previous"], d["version"]) for d in (json.loads(r[0]) for r in rows)]

        try:
            assert reloaded() == []
            policy_file.write_text(POLICY_B)
            _served_everywhere(url, b)
            assert reloaded() == [(a, b)]
            policy_file.write_text(TEST_POLICY)
            _served_everywhere(url, a)
            assert reloaded() == [(a, b), (b, a)]
        finally:
            engine.dispose()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
