"""Fixtures for service tests: an app on SQLite or on a fresh PostgreSQL schema,
a controllable clock, users with enrolled keys, and a client that signs its calls."""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import public_key_from_crypto
from tests.conftest import IN_CI
from tests.support import signed_headers

PG_URL = os.environ.get("JIT_SSH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

TEST_POLICY = """
[targets.demo]
principals = ["jit-demo@demo"]
login_users = ["jit-demo"]

[targets.prod-db]
principals = ["root@prod-db", "postgres@prod-db"]
login_users = ["root", "postgres"]

[[rules]]
name = "prod-two-approvals"
targets = ["prod-db"]
groups = ["engineers"]
max_duration = "2h"
default_duration = "30m"
approvals_required = 2
approver_groups = ["approvers"]
reason_required = true
reason_pattern = 'INC-\\d+'
pending_ttl = "10m"
claim_window = "5m"
force_command = "/usr/bin/uptime"
source_address = ["10.0.0.0/8"]

[[rules]]
name = "demo-access"
targets = ["demo"]
groups = ["engineers", "oncall"]
max_duration = "1h"
default_duration = "15m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = false
pending_ttl = "1h"
claim_window = "15m"

[rules.auto_approve]
groups = ["oncall"]
max_duration = "15m"
"""


class Clock:
    """The server's clock in tests: real time to start with (signed calls carry
    real timestamps), moved forward by ``advance``."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        return (self.frozen or datetime.now(UTC)) + self.offset

    def advance(self, **kw: float) -> None:
        self.offset += timedelta(**kw)

    def freeze(self) -> None:
        """Stop at the current whole second: tests that land exactly on a
        deadline must not drift past it while they run (certificates count
        whole seconds, so a window starts at the floor of the issuing moment)."""
        self.frozen = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Caller:
    """A user with an enrolled Ed25519 key who signs every call."""

    name: str
    key: ed25519.Ed25519PrivateKey
    client: Any
    clock: Clock
    skew: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)

    @property
    def public_openssh(self) -> str:
        return public_key_from_crypto(self.key.public_key()).openssh

    def headers(
        self,
        method: str,
        path: str,
        body: bytes,
        query: str = "",
        *,
        nonce: str | None = None,
        ts: int | None = None,
        user: str | None = None,
    ) -> dict[str, str]:
        ts = int(self.clock().timestamp()) + self.skew if ts is None else ts
        h = signed_headers(
            self.key, user or self.name, method, path, body, query, ts=ts, nonce=nonce
        )
        self.last_headers = h
        return h

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        query: str = "",
        headers: dict[str, str | None] | None = None,
        signed_path: str | None = None,
        **kw: Any,
    ) -> Any:
        """Sign and send one call. ``headers`` are applied after signing (a ``None``
        value removes that header); ``signed_path`` is the path the signature covers
        when the URL is percent-encoded (the server verifies the decoded path)."""
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        h: dict[str, str] = self.headers(method, signed_path or path, data, query, **kw)
        for name, value in (headers or {}).items():
            if value is None:
                h.pop(name, None)
            else:
                h[name] = value
        url = path + (f"?{query}" if query else "")
        return self.client.open(url, method=method, data=data, headers=h)

    def get(self, path: str, query: str = "", **kw: Any) -> Any:
        return self.call("GET", path, query=query, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body if body is not None else {}, **kw)


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3
        ):
            return True
    except Exception:
        return False


# The PostgreSQL variant needs a running server: it belongs to the integration set
# (see the marker in pyproject.toml); the SQLite variant stays in the inner loop.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jit.sqlite3'}"
        return
    if not _pg_available():
        if IN_CI:
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required under CI=true")
        pytest.skip("PostgreSQL is not running at 127.0.0.1:5432")
    from sqlalchemy import create_engine, text

    schema = "t_" + secrets.token_hex(6)
    admin = create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    # synchronous_commit=off: these throwaway schemas need no durability, and each
    # commit no longer waits for a WAL flush (the server under test is unchanged).
    yield f"{PG_URL}?options=-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"
    with admin.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


_sqlite_template: dict[str, Path] = {}


def _migrated_sqlite(path: Path) -> None:
    """Put a fully migrated SQLite database at ``path``: a copy of one migrated once per
    process. Running Alembic's migrations costs ~0.2 s per test; the copy ~1 ms. The app
    still runs ``upgrade`` at start, which finds nothing to do."""
    from server.db import make_engine
    from server.migrate import upgrade

    template = _sqlite_template.get("path")
    if template is None:
        directory = Path(tempfile.mkdtemp(prefix="jit-ssh-template-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        template = directory / "migrated.sqlite3"
        engine = make_engine(f"sqlite:///{template}")
        upgrade(engine)
        engine.dispose()
        _sqlite_template["path"] = template
    shutil.copyfile(template, path)
    os.chmod(path, 0o600)


def build_app(tmp_path: Path, database_url: str, clock: Clock, **config: Any) -> Any:
    """The test app: TEST_POLICY, a fresh data directory, and ``config`` overrides of ServerConfig."""
    from server.app import create_app
    from server.config import ServerConfig
    from server.db import is_sqlite, make_engine
    from server.migrate import upgrade

    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY)
    if is_sqlite(database_url):
        db_file = Path(database_url.removeprefix("sqlite:///"))
        if database_url.startswith("sqlite:///") and not db_file.exists():
            _migrated_sqlite(db_file)
    else:
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()
    settings: dict[str, Any] = {
        "base_url": "https://jit.example.test",
        "audit_checkpoint_every": 5,
        **config,
    }
    cfg = ServerConfig(
        data_dir=tmp_path / "data", database_url=database_url, policy_path=policy, **settings
    )
    app = create_app(cfg, clock=clock, say=lambda m: None)
    app.testing = True
    return app


@pytest.fixture
def app(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[Any]:
    app = build_app(tmp_path, database_url, clock)
    yield app
    app.extensions["jit_ssh.engine"].dispose()


@pytest.fixture
def admin(app: Any) -> Any:
    from server.admin import Admin

    return Admin(app.extensions["jit_ssh"].service)


@pytest.fixture
def make_user(app: Any, admin: Any, clock: Clock) -> Any:
    def make(
        name: str, groups: tuple[str, ...] = (), roles: tuple[str, ...] = ("requester",)
    ) -> Caller:
        key = ed25519.Ed25519PrivateKey.generate()
        caller = Caller(name=name, key=key, client=app.test_client(), clock=clock)
        admin.add_user(name, groups=groups, roles=roles, ssh_keys=[caller.public_openssh])
        return caller

    return make


@pytest.fixture
def alice(make_user: Any) -> Caller:
    return make_user("alice", ("engineers",))


@pytest.fixture
def oncall(make_user: Any) -> Caller:
    return make_user("olga", ("oncall",))


@pytest.fixture
def bob(make_user: Any) -> Caller:
    return make_user("bob", ("approvers",), ("requester", "approver"))


@pytest.fixture
def carol(make_user: Any) -> Caller:
    return make_user("carol", ("approvers", "engineers"), ("requester", "approver"))


@pytest.fixture
def root(make_user: Any) -> Caller:
    return make_user("root-admin", (), ("admin",))


def user_key_line() -> str:
    return public_key_from_crypto(ed25519.Ed25519PrivateKey.generate().public_key()).openssh


# ---- checking that a call changed nothing ---------------------------------------------------

_COUNTED = ("users", "ssh_keys", "requests", "approvals", "certificates", "revocations")


def snapshot(app: Any) -> dict[str, Any]:
    """What a refused call must leave alone: row counts, request states, the audit log."""
    from sqlalchemy import text

    engine = app.extensions["jit_ssh.engine"]
    with engine.connect() as c:
        counts = {t: c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in _COUNTED}
        states = sorted(
            tuple(r) for r in c.execute(text("SELECT id, state, granted_seconds FROM requests"))
        )
        disabled = sorted(tuple(r) for r in c.execute(text("SELECT name, disabled FROM users")))
        events = [
            tuple(r)
            for r in c.execute(text("SELECT id, type, actor, data FROM audit_events ORDER BY id"))
        ]
    return {"counts": counts, "states": states, "users": disabled, "events": events}


def new_events(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[Any, ...]]:
    assert after["events"][: len(before["events"])] == before["events"], (
        "the audit log was rewritten"
    )
    return after["events"][len(before["events"]) :]


def assert_unchanged(
    before: dict[str, Any], after: dict[str, Any], *, allowed_events: tuple[str, ...] = ()
) -> list[str]:
    """Nothing changed but (at most) new audit events of the allowed types; returns their types."""
    assert after["counts"] == before["counts"]
    assert after["states"] == before["states"]
    assert after["users"] == before["users"]
    types = [e[1] for e in new_events(before, after)]
    assert set(types) <= set(allowed_events), f"unexpected audit events {types}"
    return types


def assert_problem(
    resp: Any, status: int | tuple[int, ...], code: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem with a stable code, and no traceback."""
    statuses = (status,) if isinstance(status, int) else status
    body = resp.get_data(as_text=True)
    assert resp.status_code in statuses, (resp.status_code, body[:500])
    assert resp.mimetype == "application/problem+json", (resp.mimetype, body[:200])
    assert "Traceback" not in body and 'File "' not in body
    problem = json.loads(body)
    assert problem["status"] == resp.status_code
    assert isinstance(problem["code"], str) and problem["code"]
    assert problem["type"] == f"urn:jit-ssh:problem:{problem['code']}"
    if code is not None:
        assert problem["code"] == code, problem
    return problem
