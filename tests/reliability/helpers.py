"""Real processes for the reliability tests: `jit-ssh serve` on SQLite or a fresh
PostgreSQL schema, signed HTTP clients, a TCP proxy that stands in for a
database outage, and the checks that say nothing was lost or half done.

Everything listens on 127.0.0.1 only, every loop is bounded in count and time,
and every process a test starts is stopped by the test (by its process group:
``jit-ssh serve`` is a gunicorn master with worker children).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import public_key_from_crypto
from tests.conftest import IN_CI
from tests.support import answers_healthz, free_port, signed_headers, wait_ready

__all__ = [
    "PG_URL",
    "POLICY",
    "require_postgres",
    "pg_schema",
    "pg_url",
    "Person",
    "Deployment",
    "ServerProcess",
    "TcpProxy",
    "Received",
    "LoadResult",
    "issue_loop",
    "run_threads",
    "new_key_line",
    "export_and_verify_audit",
    "check_consistency",
    "server_errors",
    "json_problem",
    "free_port",
]

PG_URL = os.environ.get("JIT_SSH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_HOST = "127.0.0.1"
PG_PORT = 5432

#: demo: auto-approved for oncall. prod-db: two approvals from the approvers group.
POLICY = """
[targets.demo]
principals = ["jit-demo@demo"]
login_users = ["jit-demo"]

[targets.prod-db]
principals = ["root@prod-db"]
login_users = ["root"]

[[rules]]
name = "prod-two-approvals"
targets = ["prod-db"]
groups = ["engineers"]
max_duration = "2h"
default_duration = "30m"
approvals_required = 2
approver_groups = ["approvers"]
reason_required = false
pending_ttl = "1h"
claim_window = "15m"

[[rules]]
name = "demo-auto"
targets = ["demo"]
groups = ["oncall", "engineers"]
max_duration = "1h"
default_duration = "10m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = false
pending_ttl = "1h"
claim_window = "15m"

[rules.auto_approve]
groups = ["oncall"]
max_duration = "1h"
"""


def _jit_ssh() -> str:
    exe = Path(sys.executable).with_name("jit-ssh")
    return str(exe) if exe.exists() else shutil.which("jit-ssh") or "jit-ssh"


def new_key_line() -> str:
    """A fresh user public key (the key a certificate is requested for)."""
    return public_key_from_crypto(ed25519.Ed25519PrivateKey.generate().public_key()).openssh


# ---- PostgreSQL ------------------------------------------------------------------------------


def _pg_up() -> bool:
    try:
        import psycopg

        with psycopg.connect(
            f"host={PG_HOST} port={PG_PORT} user=postgres dbname=test", connect_timeout=3
        ):
            return True
    except Exception:
        return False


def require_postgres() -> None:
    """Skip when PostgreSQL is not running; under CI=true fail instead (never a silent skip)."""
    if not _pg_up():
        if IN_CI:
            pytest.fail(
                f"PostgreSQL at {PG_HOST}:{PG_PORT} is required under CI=true but is not reachable"
            )
        pytest.skip(f"PostgreSQL is not running at {PG_HOST}:{PG_PORT}")


def pg_url(schema: str, *, port: int = PG_PORT) -> str:
    base = PG_URL.replace(f":{PG_PORT}/", f":{port}/") if port != PG_PORT else PG_URL
    return f"{base}?options=-csearch_path%3D{schema}"


@contextmanager
def pg_schema(prefix: str = "rel") -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards."""
    from sqlalchemy import create_engine, text

    require_postgres()
    schema = f"{prefix}_{secrets.token_hex(5)}"
    admin = create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield schema
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


# ---- people and their signed clients -----------------------------------------------------------


@dataclass
class Person:
    """An enrolled user and the Ed25519 key their API calls are signed with."""

    name: str
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ("requester",)
    key: ed25519.Ed25519PrivateKey = field(
        default_factory=ed25519.Ed25519PrivateKey.generate, repr=False
    )

    @property
    def public_openssh(self) -> str:
        return public_key_from_crypto(self.key.public_key()).openssh

    def call(
        self,
        url: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: str = "",
        timeout: float = 10.0,
    ) -> httpx.Response:
        """One signed call, whatever the answer (no retries, no raising on 4xx/5xx)."""
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        headers = signed_headers(self.key, self.name, method, path, data, query)
        return httpx.request(
            method,
            url + path + (f"?{query}" if query else ""),
            content=data or None,
            headers=headers,
            timeout=timeout,
        )

    def client(self, url: str, *, timeout: float = 10.0) -> Any:
        """An ApiClient that signs as this person over real HTTP; no retries, so a
        503 or a refused connection is seen as it happened."""
        from client.http import ApiClient
        from client.signing import KeyFileSigner

        return ApiClient(
            server=url,
            user=self.name,
            signer=KeyFileSigner.from_private_key(self.key),
            retries=1,
            timeout=timeout,
        )


# ---- a deployment: data directory, database, users; and its server processes ------------------


@dataclass
class ServerProcess:
    """One `jit-ssh serve` (gunicorn master and workers, in their own process group)."""

    deployment: Deployment
    port: int
    workers: int = 2
    threads: int = 4
    database_url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = dict(self.deployment.env)
        if self.database_url:
            env["JIT_SSH_DATABASE_URL"] = self.database_url
        self.starts += 1
        self.log_path = self.deployment.tmp / f"serve-{self.port}-{self.starts}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                _jit_ssh(),
                "serve",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait_ready(self.proc, lambda: answers_healthz(self.url), timeout):
            return self
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"jit-ssh serve exited with {self.proc.returncode}:\n{self.log_tail()}"
            )
        self.kill9()
        raise RuntimeError(
            f"jit-ssh serve did not answer /healthz in {timeout} s:\n{self.log_tail()}"
        )

    def log_tail(self, n: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-n:]

    def logs(self) -> str:
        """Every log of every start of this server."""
        return "".join(
            p.read_text(errors="replace")
            for p in sorted(self.deployment.tmp.glob(f"serve-{self.port}-*.log"))
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill9(self) -> None:
        """SIGKILL the master and every worker at once, mid-request: a crash, not a shutdown."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._reap_group()
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        self._reap_group()

    def _reap_group(self) -> None:
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


class Deployment:
    """A data directory (CA key, audit key, policy), a database and enrolled people,
    shared by every server process started from it (replicas share all three)."""

    def __init__(self, tmp: Path, *, database_url: str | None = None) -> None:
        self.tmp = tmp
        self.data_dir = tmp / "data"
        (tmp / "policy.toml").write_text(POLICY)
        self.env = dict(os.environ)
        self.env.update(
            JIT_SSH_DATA_DIR=str(self.data_dir),
            JIT_SSH_POLICY=str(tmp / "policy.toml"),
            JIT_SSH_LOG_LEVEL="WARNING",
            JIT_SSH_AUDIT_CHECKPOINT_EVERY="50",
        )
        self.env.pop("JIT_SSH_CA_PASSPHRASE", None)
        self.env.pop("JIT_SSH_CONFIG", None)
        #: What the tests read the database with (servers may reach it through a proxy).
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'jit-ssh.sqlite3'}"
        if database_url:
            self.env["JIT_SSH_DATABASE_URL"] = database_url
        self.people: dict[str, Person] = {}
        self.servers: list[ServerProcess] = []
        self._engine: Any = None
        if database_url:
            subprocess.run(
                [_jit_ssh(), "db", "upgrade"],
                env=self.env,
                check=True,
                capture_output=True,
                timeout=60,
            )

    def enrol(self, *people: Person) -> None:
        """Enrol people in-process (first start: creates the keys and, on SQLite, the database)."""
        from server.admin import Admin
        from server.app import create_app
        from server.config import load_config

        app = create_app(load_config(None, self.env), say=lambda m: None)
        try:
            admin = Admin(app.extensions["jit_ssh"].service)
            for p in people:
                admin.add_user(p.name, groups=p.groups, roles=p.roles, ssh_keys=[p.public_openssh])
                self.people[p.name] = p
        finally:
            app.extensions["jit_ssh.engine"].dispose()

    def server(
        self, *, workers: int = 2, threads: int = 4, database_url: str | None = None
    ) -> ServerProcess:
        srv = ServerProcess(
            self, free_port(), workers=workers, threads=threads, database_url=database_url
        )
        self.servers.append(srv)
        return srv

    @property
    def audit_pubkey_path(self) -> Path:
        return self.data_dir / "audit" / "audit_ed25519.pub"

    def engine(self) -> Any:
        from sqlalchemy import create_engine

        if self._engine is None:
            self._engine = create_engine(self.database_url)
        return self._engine

    def close(self) -> None:
        for s in self.servers:
            s.stop()
        if self._engine is not None:
            self._engine.dispose()


# ---- a TCP proxy in front of PostgreSQL: the test's own database outage ------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL. ``stop()`` closes the listener and
    cuts every forwarded connection (the database is gone for the server, but not
    for anyone else on the machine); ``start()`` listens again on the same port.
    ``blackhole()`` keeps accepting connections but forwards nothing: a database
    that hangs rather than refuses (a stuck host, a half-open network path)."""

    def __init__(self, target: tuple[str, int] = (PG_HOST, PG_PORT)) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._forward = True

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> TcpProxy:
        self._forward = True
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        self._thread = threading.Thread(
            target=self._accept, args=(ls,), daemon=True, name="pg-proxy"
        )
        self._thread.start()
        return self

    def blackhole(self) -> None:
        """Cut the open connections; accept new ones, but never answer them."""
        self._forward = False
        self._cut_all()

    def stop(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        if self._thread is not None:
            self._thread.join(5)
        self._cut_all()

    def _cut_all(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(client)
            if not self._forward:
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.add(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass


# ---- what clients received, and whether the server kept it ------------------------------------


@dataclass(frozen=True)
class Received:
    """A certificate a client received: what the server must have recorded."""

    request_id: str
    serial: int
    certificate: str
    public_key: str


def export_and_verify_audit(dep: Deployment, admin: Person, url: str) -> list[Any]:
    """Export the audit log over the API (as an admin), verify it offline with
    `jit-ssh audit verify FILE --pubkey`, and verify it in-process from event 1.
    Returns the events."""
    from ca import audit as chain

    with admin.client(url, timeout=60) as api:
        text = api.get("/v1/audit", raw=True).text
    path = dep.tmp / f"audit-{secrets.token_hex(3)}.jsonl"
    path.write_text(text)
    cli = subprocess.run(
        [_jit_ssh(), "audit", "verify", str(path), "--pubkey", str(dep.audit_pubkey_path)],
        env=dep.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, f"jit-ssh audit verify failed:\n{cli.stdout}\n{cli.stderr}"
    assert "audit log OK" in cli.stdout
    keys = chain.load_audit_public_keys(dep.audit_pubkey_path.read_text())
    events, checkpoints = chain.parse_export(text.splitlines())
    result = chain.verify_chain(events, checkpoints, keys, expect_first_id=1)
    assert result.ok, result.problem
    return events


def check_consistency(
    dep: Deployment, events: list[Any], received: list[Received]
) -> dict[str, int]:
    """Nothing lost, nothing half done, nothing counted twice. Returns a few counts.

    * every certificate a client received is in the certificates table (same
      serial, same request, same text) and has its ``certificate.issued`` event;
    * serials are unique, and one request has at most one certificate;
    * every certificate row has exactly one ``certificate.issued`` event, and
      every such event has its row (they commit together or not at all);
    * no request is ``issued`` without a certificate, nor has a certificate in a
      state that issuance cannot lead to;
    * every request row has exactly one ``request.created`` event, and vice versa;
    * approvals are counted once: approval rows == ``request.approval`` events,
      one per approver per request, and a request is approved at most once.
    """
    from sqlalchemy import text

    with dep.engine().connect() as c:
        certs = {
            int(r.serial): r
            for r in c.execute(
                text(
                    "SELECT serial, request_id, certificate, public_key_fingerprint FROM certificates"
                )
            )
        }
        requests = {
            r.id: r
            for r in c.execute(
                text("SELECT id, state, approvals_required, auto_approved FROM requests")
            )
        }
        approvals = list(c.execute(text("SELECT request_id, approver_id, decision FROM approvals")))

    by_type: dict[str, list[Any]] = defaultdict(list)
    for ev in events:
        by_type[ev.type].append(ev)

    # What clients received.
    serials = [r.serial for r in received]
    assert len(serials) == len(set(serials)), "a serial was handed out twice"
    by_request: dict[str, set[int]] = defaultdict(set)
    for r in received:
        by_request[r.request_id].add(r.serial)
    assert all(len(s) == 1 for s in by_request.values()), "a request yielded two certificates"
    issued_events = Counter(int(ev.data["serial"]) for ev in by_type["certificate.issued"])
    for r in received:
        row = certs.get(r.serial)
        assert row is not None, (
            f"certificate {r.serial} (request {r.request_id}) reached a client but is not in the database"
        )
        assert row.request_id == r.request_id and row.certificate.strip() == r.certificate.strip()
        assert issued_events[r.serial] == 1, (
            f"certificate {r.serial} reached a client but has {issued_events[r.serial]} issued events"
        )

    # The database against its audit log.
    cert_requests = [row.request_id for row in certs.values()]
    assert len(cert_requests) == len(set(cert_requests)), "one request has two certificate rows"
    for serial in certs:
        assert issued_events[serial] == 1, (
            f"certificate row {serial} has {issued_events[serial]} certificate.issued events"
        )
    for serial in issued_events:
        assert serial in certs, f"certificate.issued event for {serial} without its certificate row"
    issued_ev_request = {
        int(ev.data["serial"]): ev.request_id for ev in by_type["certificate.issued"]
    }
    for serial, row in certs.items():
        assert issued_ev_request[serial] == row.request_id
    with_cert = {row.request_id for row in certs.values()}
    for rid, req in requests.items():
        if req.state == "issued":
            assert rid in with_cert, (
                f"request {rid} is issued but has no certificate row (half done)"
            )
        if rid in with_cert:
            assert req.state in ("issued", "revoked", "ended"), (
                f"request {rid} has a certificate but is {req.state}"
            )

    created = Counter(ev.request_id for ev in by_type["request.created"])
    assert set(created) == set(requests), "request rows and request.created events differ"
    assert all(n == 1 for n in created.values()), "a request.created event was written twice"

    rows_per_request: dict[str, list[Any]] = defaultdict(list)
    for a in approvals:
        rows_per_request[a.request_id].append(a)
    for rid, rows in rows_per_request.items():
        approvers = [a.approver_id for a in rows]
        assert len(approvers) == len(set(approvers)), (
            f"request {rid}: an approver was counted twice"
        )
    approval_events = Counter(ev.request_id for ev in by_type["request.approval"])
    approve_rows = Counter(a.request_id for a in approvals if a.decision == "approve")
    assert approval_events == approve_rows, "approval rows and request.approval events differ"
    approved_events = Counter(ev.request_id for ev in by_type["request.approved"])
    assert all(n == 1 for n in approved_events.values()), "a request was approved twice"
    for rid, req in requests.items():
        if req.auto_approved:
            continue
        n = approve_rows[rid]
        assert n <= req.approvals_required, (
            f"request {rid}: {n} approvals counted, {req.approvals_required} required"
        )
        if req.state in ("approved", "issued", "revoked", "ended"):
            assert n == req.approvals_required and approved_events[rid] == 1
    return {
        "certificates": len(certs),
        "requests": len(requests),
        "events": len(events),
        "received": len(received),
    }


# ---- load -------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    received: list[Received] = field(default_factory=list)
    #: (request_id, public_key) whose fetch got no answer: the certificate may or may not exist.
    unsure: list[tuple[str, str, str]] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, r: Received) -> None:
        with self.lock:
            self.received.append(r)


def issue_loop(
    person: Person,
    urls: list[str],
    result: LoadResult,
    *,
    iterations: int,
    deadline: float,
    stop: threading.Event,
) -> None:
    """Auto-approved request + fetch, alternating between ``urls``; bounded by
    ``iterations``, ``deadline`` (monotonic) and ``stop``. Records every certificate
    received, and every fetch whose answer was lost."""
    from client.http import ApiError, ServerUnreachable

    clients = [person.client(u) for u in urls]
    try:
        for i in range(iterations):
            if stop.is_set() or time.monotonic() > deadline:
                return
            create = clients[i % len(clients)]
            fetch = clients[(i + 1) % len(clients)]
            try:
                req = create.post("/v1/requests", {"target": "demo", "duration": "10m"})
            except (ApiError, ServerUnreachable) as e:
                result.statuses[e.code if isinstance(e, ApiError) else "unreachable"] += 1
                time.sleep(0.05)
                continue
            key = new_key_line()
            try:
                cert = fetch.post(f"/v1/requests/{req['id']}/certificate", {"public_key": key})
            except ApiError as e:
                result.statuses[e.code] += 1
                with result.lock:
                    result.unsure.append((person.name, req["id"], key))
                continue
            except ServerUnreachable:
                result.statuses["unreachable"] += 1
                with result.lock:
                    result.unsure.append((person.name, req["id"], key))
                time.sleep(0.05)
                continue
            result.statuses["issued"] += 1
            result.add(Received(req["id"], int(cert["serial"]), cert["certificate"], key))
    finally:
        for c in clients:
            c.close()


def run_threads(targets: list[Callable[[], None]], timeout: float) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), (
        f"a load thread did not finish within {timeout} s"
    )
    if errors:
        raise errors[0]


def server_errors(*servers: ServerProcess) -> list[str]:
    """Lines in the servers' logs that say a request hit a bug (500)."""
    bad = []
    for s in servers:
        for line in s.logs().splitlines():
            if "unhandled error" in line or line.startswith("Traceback"):
                bad.append(line)
    return bad


def json_problem(resp: httpx.Response) -> dict[str, Any]:
    assert resp.headers.get("content-type", "").startswith("application/problem+json"), resp.text[
        :300
    ]
    body = json.loads(resp.text)
    assert body["status"] == resp.status_code
    return body
