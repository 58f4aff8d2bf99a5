"""The client trusts nothing the server sends: a hostile server, written here, against the real CLI.

The server is a small WSGI app. It answers the calls ``jit-ssh login`` makes
and sends REAL certificates, signed with cryptography's SSHCertificateBuilder
by its own CA, for whatever principals, key id, key and window a test
chooses, while its JSON answer may state something else. Most tests reach it
through ``httpx.WSGITransport`` (injected like every CLI test's transport);
the redirect tests and one login serve it on a real socket on 127.0.0.1.
Nothing here contacts a non-loopback address.

For every hostile answer: the exit status is non-zero with one clear line,
and nothing was written to ~/.ssh/jit-ssh (no certificate, no record, the
ssh_config unchanged).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import wsgiref.simple_server
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType

from client.cli import EXIT_OK, main
from client.commands import engineer
from client.http import ApiClient, BadServerAnswer, RedirectRefused

TARGET = "prod-db"
GOOD_PRINCIPAL = f"root@{TARGET}"


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ed25519() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _openssh(public: Any) -> str:
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class HostileServer:
    """``cert`` and ``answer`` are hooks: each may change what is signed and what the JSON states."""

    ca: ed25519.Ed25519PrivateKey = field(default_factory=_ed25519)
    #: The CA key published at /v1/ca.pub (the signing CA unless a test says otherwise).
    published: ed25519.Ed25519PrivateKey | None = None
    principals: list[bytes] = field(default_factory=lambda: [GOOD_PRINCIPAL.encode()])
    key_id: bytes = b"jit-ssh:req=0000000000000001:user=alice:by=auto"
    serial: int = 4242
    cert_type: SSHCertificateType = SSHCertificateType.USER
    #: Certify this key instead of the one the client sent.
    other_key: Any = None
    #: Changes applied to the JSON answer after signing (what the server "states").
    stated: dict[str, Any] = field(default_factory=dict)
    #: A raw (status, headers, body) for POST .../certificate instead of a certificate.
    certificate_reply: tuple[str, list[tuple[str, str]], bytes] | None = None
    calls: list[str] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        self.calls.append(f"{method} {path}")
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"{}") if size else {}
        if method == "GET" and path == "/v1/ca.pub":
            return self._reply(
                start_response,
                "200 OK",
                _openssh((self.published or self.ca).public_key()) + "\n",
                "text/plain",
            )
        if method == "POST" and path == "/v1/requests":
            request = {
                "id": "0000000000000001",
                "state": "approved",
                "target": body["target"],
                "duration_seconds": 1800,
                "approvals_required": 0,
                "approvals": [],
                "principals": [GOOD_PRINCIPAL],
                "approval_url": "https://jit.example.com/requests/0000000000000001",
            }
            return self._reply(start_response, "201 Created", json.dumps(request))
        if method == "POST" and path == "/v1/requests/0000000000000001/certificate":
            if self.certificate_reply is not None:
                status, headers, data = self.certificate_reply
                start_response(status, headers)
                return [data]
            return self._reply(
                start_response, "200 OK", json.dumps(self._certificate(body["public_key"]))
            )
        return self._reply(
            start_response, "404 Not Found", json.dumps({"code": "not_found", "detail": "no route"})
        )

    @staticmethod
    def _reply(
        start_response: Callable[..., Any], status: str, text: str, kind: str = "application/json"
    ) -> list[bytes]:
        data = text.encode()
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(data)))])
        return [data]

    def _certificate(self, public_key: str) -> dict[str, Any]:
        now = int(datetime.now(UTC).timestamp())
        subject = (
            self.other_key.public_key()
            if self.other_key
            else serialization.load_ssh_public_key(public_key.encode())
        )
        builder = (
            SSHCertificateBuilder()
            .public_key(subject)
            .serial(self.serial)
            .type(self.cert_type)
            .key_id(self.key_id)
        )
        # No principals: to sshd, valid for ANY user.
        builder = (
            builder.valid_principals(self.principals)
            if self.principals
            else builder.valid_for_all_principals()
        )
        cert = (
            builder.valid_after(now)
            .valid_before(now + 1800)
            .add_extension(b"permit-pty", b"")
            .sign(self.ca)
        )
        answer = {
            "certificate": cert.public_bytes().decode(),
            "serial": str(self.serial),
            "key_id": self.key_id.decode("utf-8", "replace"),
            "principals": [p.decode("utf-8", "replace") for p in self.principals],
            "valid_after": _iso(datetime.fromtimestamp(now, UTC)),
            "valid_before": _iso(datetime.fromtimestamp(now + 1800, UTC)),
            "reissued": False,
        }
        answer.update(self.stated)
        return answer


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "SSH_AUTH_SOCK", "JIT_SSH_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    identity = tmp_path / "id_alice"
    identity.write_bytes(
        _ed25519().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    os.chmod(identity, 0o600)
    monkeypatch.setenv("JIT_SSH_USER", "alice")
    monkeypatch.setenv("JIT_SSH_IDENTITY", str(identity))
    monkeypatch.setenv("JIT_SSH_SERVER", "https://jit.example.com")
    return h


def jit(*args: str, transport: Any = None, capsys: pytest.CaptureFixture[str]) -> Run:
    capsys.readouterr()
    try:
        main(list(args), meta={"jit_ssh.transport": transport} if transport is not None else None)
        code = EXIT_OK
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return Run(code, out.out, out.err)


def keys_dir(home: Path) -> Path:
    return home / ".ssh" / "jit-ssh"


@pytest.fixture
def before(home: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, bytes]:
    """A good access to another target first, so there is an ssh_config that must stay unchanged."""
    good = HostileServer()
    r = jit("login", "other", transport=httpx.WSGITransport(app=good), capsys=capsys)
    assert r.code == EXIT_OK, r.stderr
    return {
        p.name: p.read_bytes()
        for p in keys_dir(home).iterdir()
        if p.name.startswith(("config", "other"))
    }


def assert_nothing_written(home: Path, before: dict[str, bytes]) -> None:
    d = keys_dir(home)
    # One access per request (issue 12): <target>+<request id>, none for TARGET.
    assert not list(d.glob(f"{TARGET}+*-cert.pub"))
    assert not list(d.glob(f"{TARGET}+*.json"))
    assert {
        p.name: p.read_bytes() for p in d.iterdir() if p.name.startswith(("config", "other"))
    } == before
    assert TARGET not in (d / "config").read_text()


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    (
        "newline ProxyCommand principal",
        {"principals": [b"root@prod-db\n    ProxyCommand id > /tmp/pwned"]},
        "must not contain whitespace [invalid_principal]",
    ),
    (
        "principal read as an ssh option",
        {"principals": [b"-oProxyCommand=id@prod-db"]},
        "must not start with '-'",
    ),
    ("whitespace in a principal", {"principals": [b"root prod-db"]}, "whitespace"),
    ("% token in a principal", {"principals": [b"%d@prod-db"]}, "'%'"),
    ("percent token after @", {"principals": [b"root@%h"]}, "'%'"),
    ("bidi override", {"principals": ["root@prod-db\u202e".encode()]}, "U+202E"),
    (
        "key id with a newline",
        {"key_id": b"jit-ssh:req=1\nsshd: Accepted for root"},
        "[invalid_key_id]",
    ),
    ("certificate for another key", {"other_key": _ed25519()}, "not the key made for this access"),
    (
        "signed by a CA it does not publish",
        {"published": _ed25519()},
        "not a trusted CA key [untrusted_ca]",
    ),
    ("host certificate", {"cert_type": SSHCertificateType.HOST}, "host certificate"),
    (
        "window differs from the JSON",
        {"stated": {"valid_before": "2099-01-01T00:00:00Z"}},
        "disagree on valid_before",
    ),
    (
        "principals differ from the JSON",
        {
            "principals": [b"root@prod-db", b"postgres@prod-db"],
            "stated": {"principals": ["root@prod-db"]},
        },
        "disagree on principals",
    ),
    ("serial differs from the JSON", {"stated": {"serial": "1"}}, "disagree on serial"),
    (
        "key id differs from the JSON",
        {"stated": {"key_id": "jit-ssh:req=2:user=alice:by=auto"}},
        "disagree on key id",
    ),
    (
        "JSON principals hostile, certificate fine",
        {"stated": {"principals": ["root@prod-db\nProxyCommand id"]}},
        "whitespace",
    ),
    ("no principals", {"principals": [], "stated": {"principals": []}}, "list of 1 to 256"),
    ("204 answer", {"certificate_reply": ("204 No Content", [], b"")}, "[bad_server_answer]"),
    (
        "empty 200 answer",
        {"certificate_reply": ("200 OK", [("Content-Type", "application/json")], b"")},
        "no body where a JSON object was expected",
    ),
    (
        "redirect",
        {"certificate_reply": ("302 Found", [("Location", "http://evil.example/cert")], b"")},
        "redirect to 'http://evil.example/cert'",
    ),
    ("JSON that is not an object", {"certificate_reply": ("200 OK", [], b"[]")}, "not an object"),
]


@pytest.mark.parametrize("changes, message", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_login_refuses_what_a_hostile_server_sends_and_writes_nothing(
    home: Path,
    before: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, Any],
    message: str,
) -> None:
    server = HostileServer(**changes)
    r = jit("login", TARGET, transport=httpx.WSGITransport(app=server), capsys=capsys)
    assert r.code == 1, (r.stdout, r.stderr)
    last = r.stderr.splitlines()[-1]
    assert message in last and last.startswith("error: "), r.stderr
    assert sum(line.startswith("error: ") for line in r.stderr.splitlines()) == 1
    assert "Access granted" not in r.stdout
    assert_nothing_written(home, before)


def test_a_real_ssh_reads_only_what_jit_ssh_meant(
    home: Path, before: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    """ssh -G parses the ssh_config jit-ssh wrote: no ProxyCommand, the right user and files."""
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("OpenSSH's ssh is not installed")
    hostile = HostileServer(principals=[b"root@prod-db\nProxyCommand id"])
    assert jit("login", TARGET, transport=httpx.WSGITransport(app=hostile), capsys=capsys).code == 1
    config = keys_dir(home) / "config"
    shown = subprocess.run(
        [ssh, "-G", "-F", str(config), "other"], capture_output=True, text=True, check=True
    ).stdout
    options = dict(line.split(" ", 1) for line in shown.splitlines() if " " in line)
    assert "proxycommand" not in options
    assert options["user"] == "root"
    assert options["certificatefile"] == str(keys_dir(home) / "other+0000000000000001-cert.pub")


# --------------------------------------------------------------------------- stored records


def test_a_stale_record_is_skipped_with_a_warning_never_written_to_ssh_config(
    home: Path, before: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    d = keys_dir(home)
    record = json.loads((d / "other+0000000000000001.json").read_text())
    stale = {
        **record,
        "target": "stale",
        "key_path": str(d / "stale+0000000000000001"),
        "cert_path": str(d / "stale+0000000000000001-cert.pub"),
        "login_user": "root\n    ProxyCommand id",
    }
    (d / "stale+0000000000000001.json").write_text(json.dumps(stale))
    # Any login or done rewrites the config; a second good login does.
    r = jit("login", "third", transport=httpx.WSGITransport(app=HostileServer()), capsys=capsys)
    assert r.code == EXIT_OK, r.stderr
    text = (d / "config").read_text()
    assert (
        "ProxyCommand" not in text
        and "Host stale" not in text
        and "Host third" in text
        and "Host other" in text
    )
    assert re.search(
        r"warning: skipping .*stale\+0000000000000001\.json: access record for 'stale': login user .* is not a valid user name",
        r.stderr,
    ), r.stderr


# --------------------------------------------------------------------------- jit-ssh ssh


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(engineer.os, "execv", fake_execv)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    return calls


def test_ssh_puts_double_dash_before_the_destination(
    home: Path, execs: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    r = jit(
        "ssh",
        TARGET,
        "--",
        "-oProxyCommand=id",
        transport=httpx.WSGITransport(app=HostileServer()),
        capsys=capsys,
    )
    assert r.code == EXIT_OK, r.stderr
    argv = execs[-1]
    assert argv[-3:] == ["--", f"root@{TARGET}", "-oProxyCommand=id"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--host", "-oProxyCommand=id"], "--host '-oProxyCommand=id' must not start with '-'"),
        (["--host", "db 1"], "--host 'db 1' must not contain whitespace"),
        (
            ["--login-user", "-oProxyCommand=id"],
            "--login-user '-oProxyCommand=id' is not a valid user name",
        ),
        (["--login-user", "root\nProxyCommand id"], "is not a valid user name"),
    ],
)
def test_ssh_refuses_host_and_login_user_values_ssh_would_misread(
    home: Path,
    before: dict[str, bytes],
    execs: list[list[str]],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    server = HostileServer()
    r = jit("ssh", "other", *args, transport=httpx.WSGITransport(app=server), capsys=capsys)
    assert r.code == 1 and message in r.stderr, r.stderr
    assert execs == []
    # Checked first: no login is made for a target without access either.
    r = jit("ssh", TARGET, *args, transport=httpx.WSGITransport(app=server), capsys=capsys)
    assert r.code == 1 and message in r.stderr, r.stderr
    assert execs == [] and server.calls == []


def test_ssh_never_uses_a_stale_record(
    home: Path, before: dict[str, bytes], execs: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    d = keys_dir(home)
    record = json.loads((d / "other+0000000000000001.json").read_text())
    record["login_user"] = "-oProxyCommand=id"
    (d / "other+0000000000000001.json").write_text(json.dumps(record))
    # The stale record is skipped, so ssh logs in afresh (the server sends a good certificate).
    r = jit("ssh", "other", transport=httpx.WSGITransport(app=HostileServer()), capsys=capsys)
    assert r.code == EXIT_OK, r.stderr
    assert "warning: skipping" in r.stderr
    assert not any(a.startswith("-oProxyCommand") for a in execs[-1])
    assert execs[-1][-2:] == ["--", "root@other"]


# --------------------------------------------------------------------------- the one HTTP client


@pytest.mark.parametrize(
    "reply, error, fragment",
    [
        ((204, {}, b""), BadServerAnswer, "no body"),
        ((200, {}, b""), BadServerAnswer, "no body"),
        (
            (301, {"Location": "http://evil.example/"}, b""),
            RedirectRefused,
            "'http://evil.example/'",
        ),
        (
            (302, {"Location": "https://127.0.0.1:1/"}, b"{}"),
            RedirectRefused,
            "never follows redirects",
        ),
        ((304, {}, b""), RedirectRefused, "HTTP 304"),
        ((200, {}, b"not json"), BadServerAnswer, "not JSON"),
        ((200, {}, b'"text"'), BadServerAnswer, "not an object"),
    ],
)
def test_only_a_2xx_json_object_is_a_result(
    reply: tuple[int, dict[str, str], bytes], error: type[Exception], fragment: str
) -> None:
    status, headers, body = reply
    transport = httpx.MockTransport(
        lambda request: httpx.Response(status, headers=headers, content=body)
    )
    with ApiClient(server="https://jit.example.com", transport=transport) as api:
        with pytest.raises(error) as info:
            api.get("/v1/targets", signed=False)
    assert fragment in str(info.value)


def test_answers_are_size_limited() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"x" * 5000))
    with ApiClient(server="https://jit.example.com", transport=transport) as api:
        with pytest.raises(BadServerAnswer, match="larger than 4096"):
            api.get("/v1/ca.pub", signed=False, raw=True, max_bytes=4096)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@jit.example.com",
        "https://jit.example.com/?x=1",
        "https://jit.example.com\n",
        "http://127.0.0.2",
        "http://localhost.evil.example",
    ],
)
def test_one_url_check_refuses_more(url: str) -> None:
    from client.http import InsecureServerURL

    with pytest.raises(InsecureServerURL):
        ApiClient(server=url)


# --------------------------------------------------------------------------- a real socket: host setup and redirects


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    """serve(app) -> http://127.0.0.1:PORT, in a thread, shut down afterwards."""
    servers: list[wsgiref.simple_server.WSGIServer] = []

    def start(app: Any) -> str:
        httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_port}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _redirecting(location: str, calls: list[str]) -> Callable[..., list[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("302 Found", [("Location", location), ("Content-Length", "0")])
        return [b""]

    return app


def test_host_setup_refuses_a_redirect_to_another_port_without_following_it(
    serve: Callable[[Any], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = HostileServer()
    elsewhere = serve(evil)
    calls: list[str] = []
    url = serve(_redirecting(f"{elsewhere}/v1/ca.pub", calls))
    r = jit(
        "host",
        "setup",
        "--server",
        url,
        "--target",
        TARGET,
        "--login-user",
        "root",
        "--principal",
        GOOD_PRINCIPAL,
        "--sshd-dir",
        str(tmp_path / "ssh"),
        capsys=capsys,
    )
    assert r.code == 1, r.stderr
    assert f"redirect to '{elsewhere}/v1/ca.pub'" in r.stderr and "[redirect_refused]" in r.stderr
    assert calls == ["/v1/ca.pub"] and evil.calls == []
    assert not (tmp_path / "ssh").exists()


def test_host_setup_refuses_a_redirect_to_plain_http(
    serve: Callable[[Any], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []
    url = serve(_redirecting("http://evil.example/ca.pub", calls))
    r = jit(
        "host",
        "setup",
        "--server",
        url,
        "--target",
        TARGET,
        "--login-user",
        "root",
        "--principal",
        GOOD_PRINCIPAL,
        "--sshd-dir",
        str(tmp_path / "ssh"),
        capsys=capsys,
    )
    assert r.code == 1 and "redirect to 'http://evil.example/ca.pub'" in r.stderr, r.stderr
    assert calls == ["/v1/ca.pub"]
    assert not (tmp_path / "ssh").exists()


def test_host_setup_goes_through_the_one_client(
    serve: Callable[[Any], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server whose target list holds a hostile login user: refused, nothing written."""
    ca = _ed25519()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] == "/v1/ca.pub":
            data = (_openssh(ca.public_key()) + "\n").encode()
        else:
            data = json.dumps(
                {
                    "targets": [
                        {
                            "name": TARGET,
                            "principals": [GOOD_PRINCIPAL],
                            "login_users": ["root\nAuthorizedKeysFile /tmp/x"],
                        }
                    ]
                }
            ).encode()
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]

    r = jit(
        "host",
        "setup",
        "--server",
        serve(app),
        "--target",
        TARGET,
        "--sshd-dir",
        str(tmp_path / "ssh"),
        capsys=capsys,
    )
    assert r.code == 2 and "is not a valid user name" in r.stderr, r.stderr
    assert not (tmp_path / "ssh").exists()


def test_login_against_a_real_socket(
    serve: Callable[[Any], str], home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = HostileServer(principals=[b"-oProxyCommand=id@prod-db"])
    url = serve(hostile)
    r = jit("login", TARGET, "--server", url, capsys=capsys)
    assert r.code == 1 and "must not start with '-'" in r.stderr, r.stderr
    assert hostile.calls == [
        "POST /v1/requests",
        "POST /v1/requests/0000000000000001/certificate",
        "GET /v1/ca.pub",
    ]
    assert not (keys_dir(home) / f"{TARGET}+0000000000000001-cert.pub").exists()
    good = HostileServer()
    r = jit("login", TARGET, "--server", serve(good), capsys=capsys)
    assert r.code == EXIT_OK, r.stderr
    assert (keys_dir(home) / f"{TARGET}+0000000000000001-cert.pub").exists()


def test_paths_with_spaces_and_percent_reach_ssh_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ssh_config splits at spaces and expands %-tokens in IdentityFile: the paths are quoted and escaped."""
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("OpenSSH's ssh is not installed")
    odd = tmp_path / "my home %d"
    odd.mkdir()
    monkeypatch.setenv("HOME", str(odd))
    identity = tmp_path / "id"
    identity.write_bytes(
        _ed25519().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    os.chmod(identity, 0o600)
    for name, value in (
        ("JIT_SSH_USER", "alice"),
        ("JIT_SSH_IDENTITY", str(identity)),
        ("JIT_SSH_SERVER", "https://jit.example.com"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    assert (
        jit("login", TARGET, transport=httpx.WSGITransport(app=HostileServer()), capsys=capsys).code
        == EXIT_OK
    )
    d = keys_dir(odd)
    shown = subprocess.run(
        [ssh, "-G", "-F", str(d / "config"), TARGET], capture_output=True, text=True, check=True
    ).stdout
    options = [line.split(" ", 1) for line in shown.splitlines() if " " in line]
    # One token each, space included (quoted); ssh -G shows values before %-expansion,
    # where "%%" is a literal "%" (ssh_config(5), TOKENS).
    escaped = str(d).replace("%", "%%")
    assert ["identityfile", f"{escaped}/{TARGET}+0000000000000001"] in options
    assert ["certificatefile", f"{escaped}/{TARGET}+0000000000000001-cert.pub"] in options
    assert ["user", "root"] in options


# Text a hostile server sends to be printed: ESC sequences that rewrite the screen or set the
# window title, a carriage return that overwrites the line, U+202E that reverses what follows.
_TERMINAL_TRICKS = "\x1b[2J\x1b]0;owned\x07\rINC-1 \u202eevil\x9b31m"


def _pending_answer(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/requests":
        row = {
            "id": "0000000000000009",
            "state": "pending",
            "requester": "mallory\x1b[8m",
            "target": "prod-db",
            "duration_seconds": 600,
            "approvals_required": 1,
            "approvals": [],
            "created_at": "2026-12-01T10:00:00Z",
            "reason": _TERMINAL_TRICKS,
        }
        return httpx.Response(200, json={"requests": [row]})
    if request.url.path.endswith("/deny"):
        return httpx.Response(
            409, json={"code": "conflict", "detail": "already decided" + _TERMINAL_TRICKS}
        )
    return httpx.Response(404, json={"code": "not_found", "detail": "no route"})


@pytest.mark.parametrize(
    "argv", [["pending"], ["requests"], ["deny", "0000000000000009", "--reason", "no"]]
)
def test_server_text_never_reaches_the_terminal_as_control_characters(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    r = jit(*argv, transport=httpx.MockTransport(_pending_answer), capsys=capsys)
    printed = r.stdout + r.stderr
    assert "prod-db" in printed or "already decided" in printed, printed
    for c in printed:
        assert c in "\n\t" or (c.isprintable() and c != "\u202e"), (
            f"{c!r} reached the terminal: {printed!r}"
        )
    # What was hidden is shown as visible escapes, so an approver sees that something is odd.
    assert "\\x1b" in printed


def _submit_answer(answer: Any, calls: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.raw_path.decode()}")
        if request.method == "POST" and request.url.path == "/v1/requests":
            return httpx.Response(201, json=answer)
        return httpx.Response(404, json={"code": "not_found", "detail": "no route"})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    "answer, fragment",
    [
        # The request id goes into the next URL paths: ".." would climb to another endpoint,
        # "?" or "#" would start a query; the signed certificate POST must never go there.
        (
            {"id": "../../v1/admin/users/bob/disable", "state": "approved", "target": "prod-db"},
            "request id",
        ),
        ({"id": "abc?x=1#", "state": "approved", "target": "prod-db"}, "request id"),
        ({}, "request id"),
        (
            {"id": "0000000000000001", "state": "pending", "target": "prod-db", "approvals": [1]},
            "approvals",
        ),
        ({"id": "0000000000000001", "state": "owned", "target": "prod-db"}, "state"),
        (
            {
                "id": "0000000000000001",
                "state": "pending",
                "target": "prod-db",
                "duration_seconds": "30m",
            },
            "duration_seconds",
        ),
        ({"id": "0000000000000001", "state": "pending", "target": ["prod-db"]}, "target"),
    ],
)
def test_a_malformed_request_answer_is_a_clear_error_and_no_call_follows(
    home: Path, capsys: pytest.CaptureFixture[str], answer: dict[str, Any], fragment: str
) -> None:
    calls: list[str] = []
    r = jit("login", TARGET, "--for", "30m", transport=_submit_answer(answer, calls), capsys=capsys)
    assert r.code == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and fragment in last, r.stderr
    assert calls == ["POST /v1/requests"], calls
    assert not keys_dir(home).exists() or not any(keys_dir(home).glob("*-cert.pub"))


@pytest.mark.parametrize(
    "path",
    [
        "/v1/requests/../../v1/admin",
        "/v1/requests/a?b=1",
        "/v1/requests/a#b",
        "/v1/requests/%2e%2e/x",
        "/v1/requests/a b",
        "v1/requests",
        "/v1/requests/.x",
    ],
)
def test_the_one_client_refuses_paths_that_would_mean_another_endpoint(path: str) -> None:
    from client.http import InvalidApiPath

    sent: list[str] = []
    transport = httpx.MockTransport(
        lambda request: sent.append(str(request.url)) or httpx.Response(200, json={})
    )
    with ApiClient(server="https://jit.example.com", transport=transport) as api:
        with pytest.raises(InvalidApiPath):
            api.get(path, signed=False)
    assert sent == []
