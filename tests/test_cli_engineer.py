"""The engineer's and approver's commands, against the real app behind ``httpx.WSGITransport``.

Each test runs ``client.cli.main`` (the real entry point: one line on stderr
per error, the documented exit codes) inside ``CliRunner``'s isolation, with
the transport injected through the click context's meta. Behind it is the
real server (``create_app`` over a temporary SQLite database, a test policy,
alice enrolled as an engineer and bob as an approver), which checks every
call's SSHSIG signature against the enrolled key. :class:`Server` records the
calls the client makes, and can make a call fail (an unreachable server, a
problem answer) or let something happen on the server between two of them
(bob approves while alice's login waits). HOME is a temporary directory:
keys and certificates land in ``tmp_path/home/.ssh/jit-ssh``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import parse_certificate, parse_public_key
from ca import request_signing as rs
from client import http as client_http
from client.cli import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, cli, main
from client.commands import engineer

from .support import signed_headers

SERVER = "https://jit.example.com"
TARGET = "prod-db"
PRINCIPAL = f"root@{TARGET}"

POLICY = """
[targets.prod-db]
principals = ["root@prod-db"]
login_users = ["root"]

[targets.other]
principals = ["root@other"]
login_users = ["root"]

[targets.other-target]
principals = ["root@other-target"]
login_users = ["root"]

[[rules]]
name = "engineers"
targets = ["prod-db", "other", "other-target"]
groups = ["engineers"]
max_duration = "2h"
default_duration = "30m"
approvals_required = 1
approver_groups = ["approvers"]
approvers_may_shorten = true
reason_required = false
pending_ttl = "1h"
claim_window = "15m"

[rules.auto_approve]
groups = ["oncall"]
max_duration = "2h"
"""


# --------------------------------------------------------------------------- the real server


def _problem(status: int, code: str, detail: str, **extra: Any) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "type": f"urn:jit-ssh:problem:{code}",
            "status": status,
            "code": code,
            "detail": detail,
            **extra,
        },
    )


@dataclass
class Server:
    """The real app, and what the client sent it.

    ``submit`` says whether alice's requests are auto-approved ("auto": she is
    on call) or wait for an approver ("pending"). ``script[id]`` is a list of
    steps, one run before each ``GET /v1/requests/<id>`` (a waiting login's
    polls): ``None`` or a function. ``fail`` maps "METHOD /path" to a response
    or an exception, instead of the server's answer.
    """

    app: Any
    keys: dict[str, Any]
    database_url: str
    script: dict[str, list[Callable[[], Any] | None]] = field(default_factory=dict)
    fail: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    nonces: list[str] = field(default_factory=list)
    _submit: str = "auto"
    _forgotten: bool = False

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @property
    def submit(self) -> str:
        return self._submit

    @submit.setter
    def submit(self, mode: str) -> None:
        from server.admin import Admin

        groups = ("engineers", "oncall") if mode == "auto" else ("engineers",)
        Admin(self.app.extensions["jit_ssh"].service).set_groups("alice", groups)
        self._submit = mode

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        key = f"{request.method} {request.url.path}"
        self.calls.append(
            (
                request.method,
                request.url.path + (f"?{request.url.query.decode()}" if request.url.query else ""),
                body,
            )
        )
        if rs.HEADER_NONCE in request.headers:
            self.nonces.append(request.headers[rs.HEADER_NONCE])
        if key in self.fail:
            outcome = self.fail[key]
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        m = re.fullmatch(r"/v1/certificates/(\d+)/revoke", request.url.path)
        if m and self._forgotten:
            return _problem(
                404, "not_found", f"no certificate with serial {m.group(1)}", field="serial"
            )
        m = re.fullmatch(r"/v1/requests/([^/]+)", request.url.path)
        if m and request.method == "GET" and self.script.get(m.group(1)):
            step = self.script[m.group(1)].pop(0)
            if step is not None:
                step()
        return httpx.WSGITransport(app=self.app).handle_request(request)

    # -- what happens on the server meanwhile, through its own API

    def call(self, user: str, method: str, path: str, body: Any = None) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        path_only, _, query = path.partition("?")
        headers = signed_headers(self.keys[user], user, method, path_only, data, query)
        with httpx.Client(transport=httpx.WSGITransport(app=self.app), base_url=SERVER) as c:
            resp = c.request(method, path, content=data or None, headers=headers)
        assert resp.status_code < 300, resp.text
        return resp.json()

    def approve(self, request_id: str, by: str = "bob") -> None:
        self.call(by, "POST", f"/v1/requests/{request_id}/approve", {"comment": ""})

    def deny(self, request_id: str, reason: str, by: str = "bob") -> None:
        self.call(by, "POST", f"/v1/requests/{request_id}/deny", {"reason": reason})

    def expire(self, request_id: str) -> None:
        """The request's pending deadline passes (the next read expires it)."""
        from sqlalchemy import update

        from server.db import make_engine
        from server.models import AccessRequest

        engine = make_engine(self.database_url)
        try:
            with engine.begin() as c:
                c.execute(
                    update(AccessRequest)
                    .where(AccessRequest.id == request_id)
                    .values(pending_until=datetime.now(UTC) - timedelta(seconds=1))
                )
        finally:
            engine.dispose()

    def revoke(self, request_id: str) -> None:
        """Someone revokes the request's certificate on the server (an approver, an admin)."""
        serial = self.call("alice", "GET", f"/v1/requests/{request_id}")["certificate"]["serial"]
        self.call("bob", "POST", f"/v1/certificates/{serial}/revoke", {"reason": "test"})

    def forget_certificates(self) -> None:
        """From now on the server knows no certificate to revoke (a server restored from an
        older backup)."""
        self._forgotten = True

    def state(self, request_id: str) -> str:
        state: str = self.call("alice", "GET", f"/v1/requests/{request_id}")["state"]
        return state

    def revoked(self, serial: str) -> bool:
        from sqlalchemy import select

        from server.db import make_engine
        from server.models import Revocation

        engine = make_engine(self.database_url)
        try:
            with engine.connect() as c:
                row = c.execute(select(Revocation).where(Revocation.serial == int(serial))).first()
        finally:
            engine.dispose()
        return row is not None

    def paths(self) -> list[str]:
        return [f"{m} {p}" for m, p, _ in self.calls]


# --------------------------------------------------------------------------- fixtures


def _write_key(path: Path) -> tuple[str, Any]:
    key = ed25519.Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    path.with_name(path.name + ".pub").write_text(pub + "\n")
    return parse_public_key(pub).fingerprint, key


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in (
        "XDG_CONFIG_HOME",
        "XDG_STATE_HOME",
        "SSH_AUTH_SOCK",
        "JIT_SSH_SERVER",
        "JIT_SSH_USER",
        "JIT_SSH_IDENTITY",
        "JIT_SSH_DEBUG",
        "JIT_SSH_CA_PASSPHRASE",
    ):
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (private key file, fingerprint), for alice (engineer) and bob (approver)."""
    return {
        name: (p, _write_key(p)[0])
        for name in ("alice", "bob")
        for p in [tmp_path / "ids" / f"id_{name}"]
    }


class _SequentialIds:
    """``secrets`` for the server's request ids: 0000000000000001, 0000000000000002, ..."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def token_hex(self, nbytes: int) -> str:
        return f"{next(self._next):0{2 * nbytes}x}"


@pytest.fixture
def server(
    tmp_path: Path, keys: dict[str, tuple[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    """The real app on a temporary SQLite database: alice (engineers, on call: her requests
    are auto-approved until a test sets ``server.submit = "pending"``) and bob (approvers)."""
    import server.services.requests as services
    from server.admin import Admin
    from server.app import create_app
    from server.config import ServerConfig

    # Request ids the tests can name before they exist.
    monkeypatch.setattr(services, "secrets", _SequentialIds())
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    url = f"sqlite:///{tmp_path / 'server.sqlite3'}"
    cfg = ServerConfig(
        data_dir=tmp_path / "data",
        database_url=url,
        policy_path=policy,
        base_url=SERVER,
        # Every signed call is checked by the server: the enrolled key, and a timestamp
        # within a minute of its clock.
        max_clock_skew=60,
    )
    app = create_app(cfg, say=lambda m: None)
    admin = Admin(app.extensions["jit_ssh"].service)

    def pub(name: str) -> str:
        path = keys[name][0]
        return path.with_name(path.name + ".pub").read_text()

    # alice may approve too (others' requests, never her own: the server says so).
    admin.add_user(
        "alice",
        groups=["engineers", "oncall"],
        roles=["requester", "approver"],
        ssh_keys=[pub("alice")],
    )
    admin.add_user("bob", groups=["approvers"], roles=["approver"], ssh_keys=[pub("bob")])
    private = {
        name: serialization.load_ssh_private_key(path.read_bytes(), password=None)
        for name, (path, _) in keys.items()
    }
    yield Server(app=app, keys=private, database_url=url)
    app.extensions["jit_ssh.engine"].dispose()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """No real sleeping (backoff, polling); the delays asked for are recorded."""
    recorded: list[float] = []
    monkeypatch.setattr(client_http.time, "sleep", recorded.append)
    return recorded


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def jit(
    home: Path, keys: dict[str, tuple[Path, str]], server: Server, sleeps: list[float]
) -> Callable[..., Run]:
    """``jit("login", ..., as_user="alice")``: run the real entry point as that user."""
    runner = CliRunner()

    def _run(
        *args: str,
        as_user: str = "alice",
        input: str | None = None,
        transport: Any = None,
        env: dict[str, str] | None = None,
    ) -> Run:
        base = {
            "JIT_SSH_SERVER": SERVER,
            "JIT_SSH_USER": as_user,
            "JIT_SSH_IDENTITY": str(keys[as_user][0]),
        }
        with runner.isolation(input=input, env={**base, **(env or {})}) as (out, err, _):
            try:
                main(list(args), meta={"jit_ssh.transport": transport or server.transport()})
                code = EXIT_OK
            except SystemExit as e:
                code = (
                    e.code
                    if isinstance(e.code, int)
                    else (EXIT_OK if e.code is None else EXIT_FAILED)
                )
            return Run(code, out.getvalue().decode(), err.getvalue().decode())

    return _run


def keys_dir(home: Path) -> Path:
    return home / ".ssh" / "jit-ssh"


def access(home: Path, target: str = TARGET, request_id: str = "0000000000000001") -> Path:
    """One access's private key: one per request (issue 12), ``<target>+<request id>``."""
    return keys_dir(home) / f"{target}+{request_id}"


# --------------------------------------------------------------------------- login


def test_login_auto_approved_installs_key_certificate_record_and_ssh_config(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    r = jit("login", TARGET, "--for", "30m", "--reason", "INC-1")
    assert r.code == EXIT_OK, r.stderr
    d = keys_dir(home)
    key = access(home)
    cert_file = Path(f"{key}-cert.pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    cert = parse_certificate(cert_file.read_text())
    # The certificate is for the fresh key made for this access, not the identity.
    assert cert.public_key.openssh.split()[:2] == Path(f"{key}.pub").read_text().split()[:2]
    assert cert.principals == (PRINCIPAL,)
    record = json.loads(Path(f"{key}.json").read_text())
    assert record["serial"] == str(cert.serial) and record["login_user"] == "root"
    assert (
        f"Host {TARGET}\n    User root\n    IdentityFile {key}\n    CertificateFile {cert_file}"
        in (d / "config").read_text()
    )
    assert (
        f"Access granted to {TARGET}" in r.stdout
        and f"jit-ssh done {record['request_id']}" in r.stdout
    )
    # The certificate is checked against the CA keys the server publishes before anything is written.
    assert server.paths() == [
        "POST /v1/requests",
        f"POST /v1/requests/{record['request_id']}/certificate",
        "GET /v1/ca.pub",
    ]
    assert server.calls[0][2] == {"target": TARGET, "reason": "INC-1", "duration": "30m"}


def test_login_pending_waits_then_approved(
    jit: Callable[..., Run], server: Server, home: Path, sleeps: list[float]
) -> None:
    server.submit = "pending"
    server.script["0000000000000001"] = [
        None,
        None,
        lambda: server.approve("0000000000000001", by="bob"),
    ]
    r = jit("login", TARGET, "--for", "1h", "--poll", "0.25")
    assert r.code == EXIT_OK, r.stderr
    assert "Request 0000000000000001 for prod-db (1h): pending" in r.stderr
    assert f"Approve at: {SERVER}/requests/0000000000000001" in r.stderr
    assert server.paths().count("GET /v1/requests/0000000000000001") == 3
    assert sleeps == [0.25, 0.25, 0.25]
    cert = parse_certificate(Path(f"{access(home)}-cert.pub").read_text())
    assert cert.key_id.endswith(":by=bob")
    # A fresh nonce on every call.
    assert len(set(server.nonces)) == len(server.nonces) == 5


def test_login_denied_shows_who_and_why(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    server.submit = "pending"
    server.script["0000000000000001"] = [
        lambda: server.deny("0000000000000001", "not during the freeze", by="bob")
    ]
    r = jit("login", TARGET, "--poll", "0")
    assert r.code == EXIT_FAILED
    assert (
        r.stderr.splitlines()[-1]
        == "error: request 0000000000000001 was denied by bob: not during the freeze"
    )
    assert not Path(f"{access(home)}-cert.pub").exists()
    assert not any(p.endswith("/certificate") for p in server.paths())


def test_login_denied_with_json(jit: Callable[..., Run], server: Server) -> None:
    server.submit = "pending"
    server.script["0000000000000001"] = [lambda: server.deny("0000000000000001", "no")]
    r = jit("login", TARGET, "--poll", "0", "--json")
    assert r.code == EXIT_FAILED
    assert json.loads(r.stdout) == {
        "request_id": "0000000000000001",
        "state": "denied",
        "deny_reason": "no",
    }


def test_login_expired_while_waiting(jit: Callable[..., Run], server: Server) -> None:
    server.submit = "pending"
    server.script["0000000000000001"] = [None, lambda: server.expire("0000000000000001")]
    r = jit("login", TARGET, "--poll", "0")
    assert r.code == EXIT_FAILED
    assert (
        r.stderr.splitlines()[-1]
        == "error: request 0000000000000001 expired before it was approved or claimed"
    )


def test_login_claim_window_passed_is_one_line(jit: Callable[..., Run], server: Server) -> None:
    server.submit = "pending"
    server.script["0000000000000001"] = [lambda: server.approve("0000000000000001")]
    server.fail["POST /v1/requests/0000000000000001/certificate"] = _problem(
        410, "request_expired", "request 0000000000000001 expired"
    )
    r = jit("login", TARGET, "--poll", "0")
    assert r.code == EXIT_FAILED
    assert r.stderr.splitlines()[-1] == "error: request 0000000000000001 expired [request_expired]"


def test_policy_refusal_says_why_once(jit: Callable[..., Run], server: Server) -> None:
    reason = "2h is over the maximum of 1h for rule 'engineers'; ask for 1h or less"
    server.fail["POST /v1/requests"] = _problem(
        403, "policy_denied", f"request denied by policy: {reason}", reasons=[reason]
    )
    r = jit("login", TARGET, "--for", "2h")
    assert r.code == EXIT_FAILED
    assert r.stderr == f"error: refused by policy: {reason} [policy_denied]\n"


def test_policy_refusal_adds_reasons_the_detail_left_out(
    jit: Callable[..., Run], server: Server
) -> None:
    server.fail["POST /v1/requests"] = _problem(
        403, "policy_denied", "not eligible", reasons=["no rule names group 'interns'"]
    )
    r = jit("login", TARGET)
    assert (
        r.stderr
        == "error: refused by policy: not eligible: no rule names group 'interns' [policy_denied]\n"
    )


def test_clock_skew_says_so(jit: Callable[..., Run], server: Server) -> None:
    server.fail["POST /v1/requests"] = _problem(
        401,
        "clock_skew",
        "the call's timestamp is 900 s ahead of the server's clock (at most 300 s allowed)",
    )
    r = jit("login", TARGET)
    assert r.code == EXIT_FAILED
    assert r.stderr.startswith("error: clock skew too large: the call's timestamp is 900 s ahead")
    assert len(r.stderr.splitlines()) == 1


def test_server_unreachable_retries_with_backoff_then_one_line(
    jit: Callable[..., Run], server: Server, sleeps: list[float]
) -> None:
    server.fail["POST /v1/requests"] = httpx.ConnectError("[Errno 111] Connection refused")
    r = jit("login", TARGET)
    assert r.code == EXIT_UNREACHABLE
    assert server.paths() == ["POST /v1/requests"] * 3
    assert sleeps == [0.5, 1.0]
    assert r.stderr == (
        f"error: cannot reach {SERVER} after 3 attempts: [Errno 111] Connection refused "
        "[server_unreachable]\n"
    )


def test_server_back_on_the_last_attempt(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    attempts = {"n": 0}
    inner = server.handle

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise httpx.ConnectError("refused")
        return inner(request)

    r = jit("login", TARGET, transport=httpx.MockTransport(flaky))
    assert r.code == EXIT_OK, r.stderr
    assert Path(f"{access(home)}-cert.pub").exists()


def test_no_wait_then_resume(jit: Callable[..., Run], server: Server, home: Path) -> None:
    server.submit = "pending"
    r = jit("login", TARGET, "--no-wait")
    assert r.code == EXIT_OK
    assert "Not waiting. Later: jit-ssh login prod-db --resume 0000000000000001" in r.stderr
    assert not Path(f"{access(home)}-cert.pub").exists()

    # Still pending: --resume --no-wait says so again without waiting.
    again = jit("login", TARGET, "--resume", "0000000000000001", "--no-wait", "--json")
    assert json.loads(again.stdout)["state"] == "pending"

    assert jit("approve", "0000000000000001", as_user="bob").code == EXIT_OK
    done = jit("login", TARGET, "--resume", "0000000000000001", "--json")
    assert done.code == EXIT_OK, done.stderr
    out = json.loads(done.stdout)
    assert out["state"] == "issued" and out["request_id"] == "0000000000000001"
    assert parse_certificate(Path(f"{access(home)}-cert.pub").read_text()).serial == int(
        out["serial"]
    )

    # Resuming an issued request fetches the same certificate for the same key.
    key_before = (access(home)).read_bytes()
    third = jit("login", TARGET, "--resume", "0000000000000001", "--json")
    assert third.code == EXIT_OK and json.loads(third.stdout)["serial"] == out["serial"]
    assert (access(home)).read_bytes() == key_before


def test_resume_refuses_another_targets_request(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    server.submit = "pending"
    jit("login", "other-target", "--no-wait")
    r = jit("login", TARGET, "--resume", "0000000000000001")
    assert r.code == EXIT_FAILED
    assert "is for target 'other-target', not 'prod-db'" in r.stderr
    assert not keys_dir(home).exists() or not (access(home)).exists()


def test_login_json_output(jit: Callable[..., Run], server: Server, home: Path) -> None:
    r = jit("login", TARGET, "--for", "15m", "--json")
    assert r.code == EXIT_OK
    out = json.loads(r.stdout)  # stdout is exactly one JSON document
    assert set(out) == {
        "request_id",
        "state",
        "serial",
        "valid_before",
        "seconds_left",
        "key",
        "certificate",
        "principals",
        "agent",
    }
    assert out["state"] == "issued" and out["principals"] == [PRINCIPAL] and out["agent"] is False
    assert 14 * 60 < out["seconds_left"] <= 15 * 60
    assert out["key"] == str(access(home))


def test_no_wait_json(jit: Callable[..., Run], server: Server) -> None:
    server.submit = "pending"
    r = jit("login", TARGET, "--no-wait", "--json")
    assert json.loads(r.stdout) == {
        "request_id": "0000000000000001",
        "state": "pending",
        "approval_url": f"{SERVER}/requests/0000000000000001",
    }


def test_ctrl_c_without_a_terminal_leaves_the_request_pending(
    jit: Callable[..., Run], server: Server
) -> None:
    server.submit = "pending"
    server.fail["GET /v1/requests/0000000000000001"] = KeyboardInterrupt()
    r = jit("login", TARGET, "--poll", "0")
    assert r.code == 130
    assert "Left pending. Later: jit-ssh login prod-db --resume 0000000000000001" in r.stderr
    assert server.state("0000000000000001") == "pending"


# --------------------------------------------------------------------------- ssh-agent


@pytest.fixture
def fake_ssh_add(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``ssh-add`` on PATH that records its arguments, and an agent socket that seems to exist."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ssh-add.log"
    script = bin_dir / "ssh-add"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


def test_agent_gets_the_certificate_for_its_remaining_time_and_loses_it_on_done(
    jit: Callable[..., Run], server: Server, home: Path, fake_ssh_add: Path, tmp_path: Path
) -> None:
    # The identity is signed with from its file: this "agent" holds nothing.
    env = {"SSH_AUTH_SOCK": str(tmp_path / "no-agent.sock")}
    r = jit("login", TARGET, "--for", "10m", "--json", env=env)
    assert r.code == EXIT_OK, r.stderr
    key = str(access(home))
    add = fake_ssh_add.read_text().split()
    assert add[:3] == ["-q", "-t", add[2]] and 590 <= int(add[2]) <= 600 and add[3] == key
    assert json.loads(r.stdout)["agent"] is True
    assert jit("done", env=env).code == EXIT_OK
    # -d with the private key's path: ssh-add then removes <key>-cert.pub too
    # (given <key>.pub it would look for <key>.pub-cert.pub and leave the certificate).
    assert fake_ssh_add.read_text().splitlines()[-1] == f"-q -d {key}"


# --------------------------------------------------------------------------- status, done, requests


def test_status_lists_active_access_and_pending_requests(
    jit: Callable[..., Run], server: Server
) -> None:
    assert jit("login", TARGET, "--for", "1h").code == EXIT_OK
    server.submit = "pending"
    jit("login", "other", "--no-wait")
    r = jit("status")
    assert r.code == EXIT_OK
    lines = r.stdout.splitlines()
    assert re.match(
        rf"active\s+{TARGET}\s+{re.escape(PRINCIPAL)}\s+(59m\d*s?|1h)\s+left\s+request 0000000000000001",
        lines[0],
    ), lines
    assert re.match(r"pending\s+other\s+0/1 approvals\s+request 0000000000000002", lines[1]), lines

    js = json.loads(jit("status", "--json").stdout)
    assert [a["request_id"] for a in js["active"]] == ["0000000000000001"]
    assert js["pending"] == [
        {
            "request_id": "0000000000000002",
            "target": "other",
            "state": "pending",
            "approvals": 0,
            "approvals_required": 1,
        }
    ]


def test_status_hides_access_the_server_revoked_and_works_offline(
    jit: Callable[..., Run], server: Server, sleeps: list[float]
) -> None:
    jit("login", TARGET)
    server.revoke("0000000000000001")
    assert json.loads(jit("status", "--json").stdout)["active"] == []

    offline = httpx.MockTransport(
        lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused"))
    )
    r = jit("status", transport=offline)
    # Issue 12: an unreachable server is exit 4, said so; the local access still prints.
    assert r.code == EXIT_UNREACHABLE
    assert "[server_unreachable]" in r.stderr and r.stdout.startswith(f"active   {TARGET}")


def test_status_with_nothing(jit: Callable[..., Run]) -> None:
    r = jit("status")
    assert (r.code, r.stdout) == (EXIT_OK, "No active access and no pending requests.\n")


def test_done_revokes_then_removes_key_certificate_and_host_block(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    jit("login", TARGET)
    serial = json.loads((Path(f"{access(home)}.json")).read_text())["serial"]
    r = jit("done", "0000000000000001")
    assert r.code == EXIT_OK, r.stderr
    assert f"Revoked serial {serial} ({TARGET}, request 0000000000000001)." in r.stdout
    assert server.paths()[-1] == f"POST /v1/certificates/{serial}/revoke"
    assert server.calls[-1][2] == {"reason": "done"}
    assert server.revoked(serial)
    assert sorted(p.name for p in keys_dir(home).iterdir()) == ["config"]
    assert "Host " not in (keys_dir(home) / "config").read_text()


def test_done_by_target_name_and_all(jit: Callable[..., Run], server: Server, home: Path) -> None:
    jit("login", TARGET)
    jit("login", "other")
    assert jit("done", "other").code == EXIT_OK
    assert not (access(home, "other", "0000000000000002")).exists() and (access(home)).exists()
    assert jit("done").code == EXIT_OK
    assert not (access(home)).exists()


def test_done_with_nothing_to_end_is_exit_3(jit: Callable[..., Run], server: Server) -> None:
    r = jit("done")
    assert (r.code, r.stderr) == (EXIT_NOT_FOUND, "error: no local access to end\n")
    assert server.calls == []
    # An id with no local access is looked up on the server, which does not know it either.
    r = jit("done", "nope")
    assert r.code == EXIT_NOT_FOUND and "no request 'nope' on the server" in r.stderr
    assert server.paths() == ["GET /v1/requests/nope"]


def test_done_for_an_access_made_on_another_machine(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    jit("login", TARGET)
    serial = json.loads((Path(f"{access(home)}.json")).read_text())["serial"]
    for p in keys_dir(home).iterdir():  # this machine never held the key
        p.unlink()
    r = jit("done", "0000000000000001")
    assert r.code == EXIT_OK, r.stderr
    assert f"Revoked serial {serial}" in r.stdout and "another machine" in r.stdout
    assert server.paths()[-2:] == [
        "GET /v1/requests/0000000000000001",
        f"POST /v1/certificates/{serial}/revoke",
    ]
    assert server.revoked(serial)


def test_done_keeps_the_files_when_the_server_cannot_revoke(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    jit("login", TARGET)
    serial = json.loads((Path(f"{access(home)}.json")).read_text())["serial"]
    server.fail[f"POST /v1/certificates/{serial}/revoke"] = httpx.ConnectError("refused")
    r = jit("done")
    assert r.code == EXIT_UNREACHABLE
    # Not revoked, so not forgotten: the engineer can try again.
    assert (Path(f"{access(home)}.json")).exists()


def test_done_removes_locally_what_the_server_does_not_know(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    jit("login", TARGET)
    server.forget_certificates()
    r = jit("done")
    assert r.code == EXIT_OK
    assert "unknown to the server; removing it locally" in r.stderr
    assert not (access(home)).exists()


def test_requests_history(jit: Callable[..., Run], server: Server) -> None:
    jit("login", TARGET, "--reason", "INC-7: disk full on the replica, long text " + "x" * 40)
    r = jit("requests")
    assert r.code == EXIT_OK
    assert re.match(
        r"0000000000000001  issued\s+alice\s+prod-db\s+30m 0/0  \S+  INC-7: disk full", r.stdout
    )
    assert r.stdout.rstrip().endswith("…")
    assert server.calls[-1][1] == "/v1/requests?mine=1"
    assert [row["id"] for row in json.loads(jit("requests", "--json").stdout)] == [
        "0000000000000001"
    ]


def test_requests_empty(jit: Callable[..., Run]) -> None:
    assert jit("requests").stdout == "No requests yet.\n"


# --------------------------------------------------------------------------- approvers


def test_pending_lists_what_waits_for_me(jit: Callable[..., Run], server: Server) -> None:
    server.submit = "pending"
    jit("login", TARGET, "--no-wait", "--reason", "INC-9")
    r = jit("pending", as_user="bob")
    assert r.code == EXIT_OK
    assert re.match(r"0000000000000001  pending\s+alice\s+prod-db\s+30m 0/1 .* INC-9", r.stdout)
    assert server.calls[-1][1] == "/v1/requests?pending_for_me=1"
    assert jit("pending", as_user="alice").stdout == "Nothing waits for you.\n"


def test_approve_with_comment(jit: Callable[..., Run], server: Server) -> None:
    server.submit = "pending"
    jit("login", TARGET, "--no-wait")
    r = jit("approve", "0000000000000001", "--comment", "ok, INC-9", "--for", "10m", as_user="bob")
    assert r.code == EXIT_OK
    assert r.stdout == "Request 0000000000000001 (alice -> prod-db): approved, 1/1 approvals.\n"
    assert server.calls[-1][2] == {"comment": "ok, INC-9", "duration": "10m"}


def test_approve_own_request_is_refused(jit: Callable[..., Run], server: Server) -> None:
    server.submit = "pending"
    jit("login", TARGET, "--no-wait")
    r = jit("approve", "0000000000000001")
    assert (r.code, r.stderr) == (
        EXIT_FAILED,
        "error: requesters can never approve or deny their own request [self_approval]\n",
    )


def test_approve_unknown_request_is_exit_3(jit: Callable[..., Run]) -> None:
    r = jit("approve", "ffffffffffffffff", as_user="bob")
    assert (r.code, r.stderr) == (
        EXIT_NOT_FOUND,
        "error: no request 'ffffffffffffffff' [not_found]\n",
    )


def test_deny_needs_a_reason_and_sends_it(jit: Callable[..., Run], server: Server) -> None:
    server.submit = "pending"
    jit("login", TARGET, "--no-wait")
    missing = jit("deny", "0000000000000001", as_user="bob")
    assert missing.code == EXIT_USAGE and "--reason" in missing.stderr
    r = jit("deny", "0000000000000001", "--reason", "freeze", as_user="bob")
    assert (r.code, r.stdout) == (EXIT_OK, "Request 0000000000000001 denied.\n")
    assert server.calls[-1][2] == {"reason": "freeze"}
    assert server.state("0000000000000001") == "denied"


# --------------------------------------------------------------------------- ssh


def test_ssh_logs_in_if_needed_then_runs_openssh_with_the_certificate(
    jit: Callable[..., Run], server: Server, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    execs: list[list[str]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        execs.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(engineer.os, "execv", fake_execv)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    r = jit(
        "ssh",
        TARGET,
        "--host",
        "10.0.0.5",
        "-p",
        "2222",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "--",
        "id",
        "-un",
    )
    assert r.code == EXIT_OK, r.stderr
    key = str(access(home))
    assert execs == [
        [
            "/usr/bin/ssh",
            "-i",
            key,
            "-o",
            f"CertificateFile={key}-cert.pub",
            "-o",
            "IdentitiesOnly=yes",
            # Issue 12: the certificate or nothing, never a password prompt.
            "-o",
            "PreferredAuthentications=publickey",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-p",
            "2222",
            "--",
            "root@10.0.0.5",
            "id",
            "-un",
        ]
    ]
    # A second run reuses the access: no new request.
    jit("ssh", TARGET, "--login-user", "postgres")
    assert server.paths().count("POST /v1/requests") == 1
    assert execs[-1][-1] == f"postgres@{TARGET}"


# --------------------------------------------------------------------------- config


def test_config_init_non_interactive(
    jit: Callable[..., Run], home: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    identity = keys["alice"][0]
    r = jit(
        "config",
        "init",
        "--server",
        "https://jit.corp.example",
        "--user",
        "alice",
        "--identity",
        str(identity),
        "--default-duration",
        "45m",
    )
    assert r.code == EXIT_OK, r.stderr
    path = home / ".config" / "jit-ssh" / "config.toml"
    assert f"Wrote {path}." in r.stdout
    # Issue 12: alice's key is enrolled, and config init asks the server (GET /v1/whoami)
    # instead of always telling her to ask for enrolment (tests/test_first_hour_status.py).
    assert "Your key is enrolled as 'alice'" in r.stdout
    import tomllib

    assert tomllib.loads(path.read_text()) == {
        "server": "https://jit.corp.example",
        "user": "alice",
        "identity": str(identity),
        "use_agent": True,
        "default_duration": "45m",
    }
    # The file is read back, below the environment variables.
    shown = jit(
        "config", "show", env={"JIT_SSH_SERVER": "", "JIT_SSH_USER": "", "JIT_SSH_IDENTITY": ""}
    )
    assert (
        "server = 'https://jit.corp.example'" in shown.stdout
        and "default_duration = '45m'" in shown.stdout
    )
    assert f"source = '{path}'" in shown.stdout

    again = jit("config", "init", "--server", "https://x.example", "--user", "a")
    assert again.code == EXIT_FAILED and "use --force" in again.stderr
    forced = jit("config", "init", "--server", "https://x.example", "--user", "a", "--force")
    assert forced.code == EXIT_OK
    # Defaults without a terminal: ~/.ssh/id_ed25519 and 30m.
    assert tomllib.loads(path.read_text())["identity"] == str(home / ".ssh" / "id_ed25519")
    assert tomllib.loads(path.read_text())["default_duration"] == "30m"


def test_config_init_escapes_what_it_writes(jit: Callable[..., Run], home: Path) -> None:
    import tomllib

    r = jit(
        "config",
        "init",
        "--server",
        "https://jit.example.com",
        "--user",
        'o"neil\\x',
        "--identity",
        '/keys/my key "1"',
    )
    assert r.code == EXIT_OK, r.stderr
    data = tomllib.loads((home / ".config" / "jit-ssh" / "config.toml").read_text())
    assert (data["user"], data["identity"]) == ('o"neil\\x', '/keys/my key "1"')


def test_config_init_needs_server_and_user_without_a_terminal(
    jit: Callable[..., Run], home: Path
) -> None:
    r = jit("config", "init", "--user", "alice")
    assert r.code == EXIT_USAGE and "give --server" in r.stderr
    assert not (home / ".config").exists()


def test_config_init_asks_on_a_terminal(
    jit: Callable[..., Run], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engineer, "_interactive", lambda: True)
    r = jit("config", "init", input="https://jit.example.com\nalice\n\n1h\n")
    assert r.code == EXIT_OK, r.stderr
    import tomllib

    data = tomllib.loads((home / ".config" / "jit-ssh" / "config.toml").read_text())
    assert data == {
        "server": "https://jit.example.com",
        "user": "alice",
        "identity": str(home / ".ssh" / "id_ed25519"),
        "use_agent": True,
        "default_duration": "1h",
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--server", "http://jit.example.com", "--user", "a"],
            "refusing plain http to jit.example.com",
        ),
        (
            ["--server", "https://jit.example.com", "--user", "a", "--default-duration", "forever"],
            "default_duration",
        ),
    ],
)
def test_config_init_refuses_bad_values(
    jit: Callable[..., Run], home: Path, args: list[str], message: str
) -> None:
    r = jit("config", "init", *args)
    assert r.code == EXIT_FAILED and message in r.stderr
    assert not (home / ".config" / "jit-ssh" / "config.toml").exists()


def test_config_file_default_duration_is_used(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    path = home / ".config" / "jit-ssh" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('default_duration = "20m"\n')
    jit("login", TARGET)
    assert server.calls[0][2]["duration"] == "20m"


# --------------------------------------------------------------------------- http and exit codes


@pytest.mark.parametrize(
    "url", ["http://jit.example.com", "http://10.0.0.1:8022", "ftp://jit.example.com"]
)
def test_plain_http_is_refused_except_to_localhost(
    jit: Callable[..., Run], server: Server, url: str
) -> None:
    r = jit("login", TARGET, "--server", url)
    assert r.code == EXIT_FAILED and "[insecure_server_url]" in r.stderr
    assert server.calls == []


@pytest.mark.parametrize(
    "url", ["http://localhost:8022", "http://127.0.0.1:8022", "http://[::1]:8022", SERVER]
)
def test_localhost_and_https_are_allowed(jit: Callable[..., Run], server: Server, url: str) -> None:
    assert jit("requests", env={"JIT_SSH_SERVER": url}).code == EXIT_OK
    assert server.calls


def test_no_server_configured(jit: Callable[..., Run]) -> None:
    r = jit("requests", env={"JIT_SSH_SERVER": ""})
    assert r.code == EXIT_FAILED
    assert r.stderr == (
        "error: no server configured: run `jit-ssh config init`, or give --server or $JIT_SSH_SERVER "
        "[invalid_settings]\n"
    )


def test_an_unexpected_server_error_is_one_line(jit: Callable[..., Run], server: Server) -> None:
    server.fail["GET /v1/requests"] = httpx.Response(500, text="<html>oops</html>")
    r = jit("requests")
    assert (r.code, r.stderr) == (EXIT_FAILED, "error: Internal Server Error [http_500]\n")


def test_usage_error_is_exit_2(jit: Callable[..., Run]) -> None:
    r = jit("login", TARGET, "--no-such-option")
    assert r.code == EXIT_USAGE and "No such option" in r.stderr


def test_help_documents_the_exit_codes() -> None:
    r = CliRunner().invoke(cli, ["--help"])
    assert (
        "Exit codes: 0 ok; 1 refused or failed; 2 usage error; 3 not found; 4 server or tool unreachable."
        in " ".join(r.output.split())
    )
    login_help = " ".join(CliRunner().invoke(cli, ["login", "--help"]).output.split())
    assert "Exit codes: 0 certificate issued" in login_help and "4 server unreachable" in login_help


def test_clirunner_invoke_takes_the_transport_too(
    home: Path,
    keys: dict[str, tuple[Path, str]],
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JIT_SSH_SERVER", SERVER)
    monkeypatch.setenv("JIT_SSH_USER", "alice")
    monkeypatch.setenv("JIT_SSH_IDENTITY", str(keys["alice"][0]))
    r = CliRunner().invoke(cli, ["requests"], meta={"jit_ssh.transport": server.transport()})
    assert r.exit_code == 0, r.output
    assert server.paths() == ["GET /v1/requests?mine=1"]


def test_api_makes_one_signed_call(jit: Callable[..., Run], server: Server) -> None:
    jit("login", TARGET)
    r = jit("api", "GET", "/v1/requests?mine=1")
    assert r.code == EXIT_OK
    assert [row["id"] for row in json.loads(r.stdout)["requests"]] == ["0000000000000001"]
    assert server.calls[-1][1] == "/v1/requests?mine=1"
    bad = jit("api", "POST", "/v1/requests", "-d", "{not json")
    assert bad.code == EXIT_USAGE and "not valid JSON" in bad.stderr


def test_service_unavailable_is_retried(
    jit: Callable[..., Run], server: Server, sleeps: list[float]
) -> None:
    answers = [
        _problem(
            503,
            "database_unavailable",
            "the database is unavailable; nothing was changed, try again",
        )
    ]
    inner = server.handle
    transport = httpx.MockTransport(lambda request: answers.pop() if answers else inner(request))
    r = jit("requests", transport=transport)
    assert (r.code, r.stdout) == (EXIT_OK, "No requests yet.\n")
    assert sleeps == [0.5]
