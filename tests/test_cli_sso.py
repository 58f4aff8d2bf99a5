"""``jit-ssh sso login``: both flows, the key, the config, against a server that keeps the contract.

:class:`FakeSso` answers ``/v1/sso``, ``/v1/sso/start``, ``/finish`` and ``/poll``
exactly as issue 13's brief says (the real routes are tested in the real-app
tests further down and in tests/server). It checks every call's SSHSIG signature
against the public key in the start body (user header ``-``), and it plays the
provider and the browser too: after a loopback start it sends the browser back to
``http://127.0.0.1:<port>/callback`` from a thread, as the server's redirect would,
through a real socket on 127.0.0.1. Nothing else is contacted.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from ca import parse_public_key
from ca import request_signing as rs
from ca.sshsig import verify
from client import sso as flows
from client.cli import EXIT_FAILED, EXIT_OK, main
from client.errors import EXIT_INTERRUPTED

SERVER = "https://jit.example.com"
AUTHORIZE = "https://login.example.com/oauth2/v1/authorize"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _problem(status: int, code: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"status": status, "code": code, "detail": detail})


@dataclass
class Browser:
    """What the person's browser did: the URLs opened, the loopback pages it got back."""

    opened: list[str] = field(default_factory=list)
    pages: list[tuple[int, str]] = field(default_factory=list)
    works: bool = True


@dataclass
class FakeSso:
    """The server's side of the contract. ``callbacks`` are the loopback visits made after a
    start (default: one with the right flow and code); ``polls`` the device poll answers."""

    browser: Browser
    info: dict[str, Any] = field(
        default_factory=lambda: {
            "enabled": True,
            "display_name": "Okta",
            "device_flow": True,
            "enrolment_lifetime_seconds": 43200,
        }
    )
    user: str = "alice"
    groups: list[str] = field(default_factory=lambda: ["engineers"])
    lifetime: timedelta = timedelta(hours=12)
    callbacks: list[Callable[[FakeSso], tuple[str, dict[str, str]]]] | None = None
    polls: list[dict[str, Any] | httpx.Response] = field(default_factory=list)
    #: Replace a route's answer (the hostile tests): "POST /v1/sso/start" -> JSON or a Response.
    override: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    flow: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    finish_code: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    public_key: str | None = None
    port: int | None = None
    mode: str | None = None
    finished: int = 0
    #: Called with the public key when finish (or a poll) enrols it: the real app enrols it too.
    on_enrol: Callable[[str, str], None] | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- the contract

    def _signer(self, request: httpx.Request) -> str:
        """The fingerprint of the key that signed ``request`` (user ``-``); asserts it verifies."""
        h = request.headers
        assert h[rs.HEADER_USER] == "-"
        message = rs.signing_message(
            method=request.method,
            path=request.url.path,
            query=request.url.query.decode(),
            body=request.content,
            timestamp=int(h[rs.HEADER_TIMESTAMP]),
            nonce=h[rs.HEADER_NONCE],
            user="-",
        )
        signed = verify(message, base64.b64decode(h[rs.HEADER_SIGNATURE]), namespace=rs.NAMESPACE)
        return signed.fingerprint

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        key = f"{request.method} {request.url.path}"
        self.calls.append((request.method, request.url.path, body, dict(request.headers)))
        if key in self.override:
            answer = self.override[key]
            return (
                answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)
            )
        if key == "GET /v1/sso":
            assert rs.HEADER_SIGNATURE not in request.headers
            return httpx.Response(200, json=self.info)
        if key == "POST /v1/sso/start":
            return self._start(request, body)
        if key == "POST /v1/sso/finish":
            assert self._signer(request) == self.fingerprint
            if body != {"flow": self.flow, "code": self.finish_code} or self.finished:
                return _problem(400, "sso_flow_unknown", "no such sign-in")
            self.finished += 1
            if self.on_enrol is not None:
                assert self.public_key is not None
                self.on_enrol(self.user, self.public_key)
            return httpx.Response(200, json=self.enrolment())
        if key == "POST /v1/sso/poll":
            assert self._signer(request) == self.fingerprint
            assert body == {"flow": self.flow}
            answer = self.polls.pop(0)
            return (
                answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)
            )
        return _problem(404, "not_found", f"no route {key}")

    def _start(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        public = parse_public_key(body["public_key"])
        assert self._signer(request) == public.fingerprint
        self.public_key, self.mode = body["public_key"], body["mode"]
        expires = _iso(datetime.now(UTC) + timedelta(minutes=10))
        if body["mode"] == "device":
            assert set(body) == {"public_key", "mode"}
            return httpx.Response(
                200,
                json={
                    "flow": self.flow,
                    "user_code": "ABCD-EFGH",
                    "verification_uri": "https://login.example.com/activate",
                    "verification_uri_complete": "https://login.example.com/activate?user_code=ABCD-EFGH",
                    "interval": 5,
                    "expires_at": expires,
                },
            )
        assert body["mode"] == "loopback" and set(body) == {"public_key", "mode", "loopback_port"}
        assert isinstance(body["loopback_port"], int) and 1024 <= body["loopback_port"] < 65536
        self.port = body["loopback_port"]
        visits = self.callbacks if self.callbacks is not None else [right_callback]
        t = threading.Thread(target=self._visit, args=(visits,), daemon=True)
        self.threads.append(t)
        t.start()
        return httpx.Response(
            200,
            json={
                "flow": self.flow,
                "authorize_url": f"{AUTHORIZE}?client_id=jit-ssh&state={self.flow}",
                "expires_at": expires,
            },
        )

    def _visit(self, visits: list[Callable[[FakeSso], tuple[str, dict[str, str]]]]) -> None:
        """The server's redirect, as the browser follows it, after the person signed in."""
        for visit in visits:
            path, headers = visit(self)
            try:
                resp = httpx.get(f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=20)
            except httpx.HTTPError as e:
                self.browser.pages.append((0, str(e)))
                continue
            self.browser.pages.append((resp.status_code, resp.text))

    @property
    def fingerprint(self) -> str:
        assert self.public_key is not None
        return parse_public_key(self.public_key).fingerprint

    def enrolment(self, **changes: Any) -> dict[str, Any]:
        return {
            "user": self.user,
            "groups": self.groups,
            "groups_source": "sso",
            "fingerprint": self.fingerprint,
            "expires_at": _iso(datetime.now(UTC) + self.lifetime),
            **changes,
        }

    def done(self, **changes: Any) -> dict[str, Any]:
        return {"status": "done", **self.enrolment(**changes)}

    def paths(self) -> list[str]:
        return [f"{m} {p}" for m, p, _, _ in self.calls]

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=30)


def right_callback(s: FakeSso) -> tuple[str, dict[str, str]]:
    return f"/callback?flow={s.flow}&code={s.finish_code}", {}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in (
        "XDG_CONFIG_HOME",
        "SSH_AUTH_SOCK",
        "JIT_SSH_SERVER",
        "JIT_SSH_USER",
        "JIT_SSH_IDENTITY",
        "JIT_SSH_DEBUG",
        "WAYLAND_DISPLAY",
    ):
        monkeypatch.delenv(var, raising=False)
    # A desktop unless a test says otherwise.
    monkeypatch.setenv("DISPLAY", ":0")
    return h


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Browser:
    b = Browser()

    def open_url(url: str) -> bool:
        b.opened.append(url)
        return b.works

    monkeypatch.setattr(flows, "_open_browser", open_url)
    return b


@dataclass
class Clock:
    """The flows' monotonic clock and sleep: sleeping moves the clock, nothing waits."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(flows, "_monotonic", c.monotonic)
    monkeypatch.setattr(flows, "_sleep", c.sleep)
    return c


@pytest.fixture
def fake(browser: Browser) -> Iterator[FakeSso]:
    f = FakeSso(browser=browser)
    yield f
    f.join()


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, transport: Any, env: dict[str, str] | None = None) -> Run:
    runner = CliRunner()
    with runner.isolation(env={"JIT_SSH_SERVER": SERVER, **(env or {})}) as (out, err, _):
        try:
            main(list(args), meta={"jit_ssh.transport": transport})
            code = EXIT_OK
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else EXIT_FAILED
        return Run(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.fixture
def jit(home: Path, fake: FakeSso) -> Callable[..., Run]:
    def _run(*args: str, env: dict[str, str] | None = None, transport: Any = None) -> Run:
        return run_cli(*args, transport=transport or fake.transport(), env=env)

    return _run


def config_file(home: Path) -> Path:
    return home / ".config" / "jit-ssh" / "config.toml"


def sso_key(home: Path) -> Path:
    return home / ".config" / "jit-ssh" / "sso_ed25519"


def read_config(home: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(config_file(home).read_text())


def _done_when_empty(fake: FakeSso) -> httpx.MockTransport:
    """The fake's transport, answering "done" once the scripted polls are used up (the
    enrolment names the key, known only after start)."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/sso/poll" and not fake.polls:
            fake.polls.append(fake.done())
        return fake.handle(request)

    return httpx.MockTransport(handle)


# --------------------------------------------------------------------------- loopback


def test_loopback_sign_in_makes_a_key_enrols_it_and_writes_the_config(
    jit: Callable[..., Run], fake: FakeSso, browser: Browser, home: Path
) -> None:
    r = jit("sso", "login")
    assert r.code == EXIT_OK, r.stderr
    key = sso_key(home)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = Path(f"{key}.pub").read_text().split()
    # Only the public key went out, and it is the key on disk.
    assert fake.public_key is not None and fake.public_key.split()[:2] == pub[:2]
    assert all("PRIVATE KEY" not in json.dumps(body) for _, _, body, _ in fake.calls)
    assert fake.paths() == ["GET /v1/sso", "POST /v1/sso/start", "POST /v1/sso/finish"]
    url = f"{AUTHORIZE}?client_id=jit-ssh&state={fake.flow}"
    assert browser.opened == [url]
    assert f"Opening {url} in your browser (or open it yourself)\n" in r.stderr
    until = flows.until_text(datetime.now(UTC) + timedelta(hours=12))
    assert r.stdout == (
        f"Signed in as alice (groups: engineers) through Okta; this key is enrolled until {until}.\n"
    )
    assert read_config(home) == {"server": SERVER, "user": "alice", "identity": str(key)}
    fake.join()
    assert (
        browser.pages[0][0] == 200
        and "Signed in as alice; you can close this tab" in (browser.pages[0][1])
    )


def test_the_loopback_port_is_the_one_listening_on_127_0_0_1(
    jit: Callable[..., Run], fake: FakeSso, browser: Browser
) -> None:
    seen: list[tuple[str, int]] = []
    real = flows._Listener.__init__

    def spy(self: Any) -> None:
        real(self)
        seen.append(self.server_address[:2])

    with pytest.MonkeyPatch.context() as m:
        m.setattr(flows._Listener, "__init__", spy)
        r = jit("sso", "login")
    assert r.code == EXIT_OK, r.stderr
    assert seen == [("127.0.0.1", fake.port)]


def test_no_browser_prints_the_address_and_opens_nothing(
    jit: Callable[..., Run], fake: FakeSso, browser: Browser
) -> None:
    r = jit("sso", "login", "--no-browser")
    assert r.code == EXIT_OK, r.stderr
    assert browser.opened == []
    assert f"Opening {AUTHORIZE}?client_id=jit-ssh&state={fake.flow} in your browser" in r.stderr


def test_a_callback_for_another_flow_or_path_is_refused_and_the_wait_goes_on(
    jit: Callable[..., Run], fake: FakeSso, browser: Browser, home: Path
) -> None:
    fake.callbacks = [
        lambda s: (f"/callback?flow={'x' * 32}&code={s.finish_code}", {}),
        lambda s: (f"/other?flow={s.flow}&code={s.finish_code}", {}),
        lambda s: (f"/callback?flow={s.flow}&flow={s.flow}&code={s.finish_code}", {}),
        lambda s: (f"/callback?flow={s.flow}&code=no", {}),
        # A page that rebinds its own name to 127.0.0.1 sends its own Host header.
        lambda s: (f"/callback?flow={s.flow}&code={s.finish_code}", {"Host": "evil.example"}),
        right_callback,
    ]
    r = jit("sso", "login")
    assert r.code == EXIT_OK, r.stderr
    fake.join()
    assert [status for status, _ in browser.pages] == [400, 404, 400, 400, 400, 200]
    assert "not the sign-in jit-ssh is waiting for" in browser.pages[0][1]
    assert fake.finished == 1 and read_config(home)["user"] == "alice"


def test_an_idle_browser_connection_does_not_hold_up_the_callback(
    jit: Callable[..., Run], fake: FakeSso, browser: Browser
) -> None:
    import socket
    import time

    idle: list[socket.socket] = []

    def preconnect(s: FakeSso) -> tuple[str, dict[str, str]]:
        # Chromium opens a connection ahead of time and sends nothing on it.
        assert s.port is not None
        idle.append(socket.create_connection(("127.0.0.1", s.port)))
        return right_callback(s)

    fake.callbacks = [preconnect]
    began = time.monotonic()
    r = jit("sso", "login")
    assert r.code == EXIT_OK, r.stderr
    # Not the 10 s a one-at-a-time listener would wait on the idle connection.
    assert time.monotonic() - began < 8
    for sock in idle:
        sock.close()


def test_a_refusal_sent_back_to_the_loopback_ends_the_sign_in_and_writes_nothing(
    jit: Callable[..., Run], fake: FakeSso, browser: Browser, home: Path
) -> None:
    fake.callbacks = [lambda s: (f"/callback?flow={s.flow}&error=sso_domain_refused", {})]
    r = jit("sso", "login")
    assert r.code == EXIT_FAILED
    assert "refused the sign-in [sso_domain_refused]" in r.stderr
    assert "fix: sign in with an account in your organisation's email domain" in r.stderr
    assert "POST /v1/sso/finish" not in fake.paths()
    assert not config_file(home).exists()
    fake.join()
    assert "The sign-in failed (sso_domain_refused)" in browser.pages[0][1]


@pytest.mark.parametrize("sent", ["not_found", "server_unreachable", "x" * 300])
def test_a_refusal_code_that_is_not_a_sign_ins_is_shown_as_sso_error(
    jit: Callable[..., Run], fake: FakeSso, sent: str
) -> None:
    # A hostile server must not pick the exit code (3 not found, 4 unreachable) this way.
    fake.callbacks = [lambda s: (f"/callback?flow={s.flow}&error={sent}", {})]
    r = jit("sso", "login")
    assert r.code == EXIT_FAILED
    assert "the server refused the sign-in [sso_error]" in r.stderr
    assert sent not in r.stderr


def test_the_loopback_wait_ends_at_the_flows_expiry(
    jit: Callable[..., Run], fake: FakeSso, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    fake.callbacks = []
    ticks = iter(range(0, 10**6, 200))
    monkeypatch.setattr(flows, "_monotonic", lambda: float(next(ticks)))
    r = jit("sso", "login")
    assert r.code == EXIT_FAILED
    assert "the sign-in was not completed before it expired at" in r.stderr
    assert "run: jit-ssh sso login" in r.stderr
    assert not config_file(home).exists()


def test_ctrl_c_while_waiting_exits_130(
    jit: Callable[..., Run], fake: FakeSso, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    fake.callbacks = []

    def interrupt(url: str) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(flows, "_open_browser", interrupt)
    r = jit("sso", "login")
    assert r.code == EXIT_INTERRUPTED
    assert "sign-in interrupted; this key was not enrolled" in r.stderr
    assert not config_file(home).exists()


def test_a_browser_that_does_not_open_falls_back_to_the_code(
    jit: Callable[..., Run], fake: FakeSso, browser: Browser, clock: Clock
) -> None:
    browser.works = False
    fake.callbacks = []
    fake.polls = [{"status": "pending", "interval": 5}]
    r = jit("sso", "login", transport=_done_when_empty(fake))
    assert r.code == EXIT_OK, r.stderr
    assert "No browser could be opened; signing in with a code instead." in r.stderr
    assert fake.paths().count("POST /v1/sso/start") == 2 and fake.mode == "device"
    assert "To sign in, open https://login.example.com/activate and enter the code ABCD-EFGH" in (
        r.stderr
    )


# --------------------------------------------------------------------------- device


def test_headless_signs_in_with_a_code_and_honours_slow_down(
    jit: Callable[..., Run], fake: FakeSso, browser: Browser, clock: Clock, home: Path
) -> None:
    fake.polls = [
        {"status": "pending", "interval": 5},
        {"status": "slow_down", "interval": 5},
        {"status": "pending", "interval": 10},
    ]
    r = jit("sso", "login", "--headless", transport=_done_when_empty(fake))
    assert r.code == EXIT_OK, r.stderr
    assert fake.mode == "device" and browser.opened == []
    lines = r.stderr.splitlines()
    assert (
        "To sign in, open https://login.example.com/activate and enter the code ABCD-EFGH" in lines
    )
    assert (
        "  or open this link, the code filled in: https://login.example.com/activate?user_code=ABCD-EFGH"
        in lines
    )
    # 5 s, 5 s, then slow_down: five seconds more, kept by the next pending answer.
    assert clock.sleeps == [5, 5, 10, 10]
    assert fake.paths().count("POST /v1/sso/poll") == 4
    assert r.stdout.startswith("Signed in as alice (groups: engineers) through Okta;")
    assert read_config(home)["identity"] == str(sso_key(home))


def test_without_a_display_the_code_is_used(
    jit: Callable[..., Run],
    fake: FakeSso,
    browser: Browser,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setattr(sys, "platform", "linux")
    r = jit("sso", "login", transport=_done_when_empty(fake))
    assert r.code == EXIT_OK, r.stderr
    assert fake.mode == "device" and browser.opened == []


def test_the_code_expires_at_the_flows_expiry(
    jit: Callable[..., Run], fake: FakeSso, clock: Clock, home: Path
) -> None:
    fake.polls = [{"status": "pending", "interval": 60} for _ in range(20)]
    r = jit("sso", "login", "--headless")
    assert r.code == EXIT_FAILED
    assert "the code was not entered before it expired at" in r.stderr
    # Ten minutes at one poll a minute, and no poll after the expiry.
    assert sum(clock.sleeps) <= 600 and fake.paths().count("POST /v1/sso/poll") <= 10
    assert not config_file(home).exists()


def test_a_refused_poll_ends_the_sign_in(
    jit: Callable[..., Run], fake: FakeSso, clock: Clock, home: Path
) -> None:
    fake.polls = [_problem(401, "sso_token_invalid", "the provider's token is not valid")]
    r = jit("sso", "login", "--headless")
    assert r.code == EXIT_FAILED
    assert "[sso_token_invalid]" in r.stderr
    assert not config_file(home).exists()


def test_headless_against_a_server_without_the_device_flow_says_so(
    jit: Callable[..., Run], fake: FakeSso
) -> None:
    fake.info["device_flow"] = False
    r = jit("sso", "login", "--headless")
    assert r.code == EXIT_FAILED
    assert "offers no code (device flow)" in r.stderr
    assert fake.paths() == ["GET /v1/sso"]


# --------------------------------------------------------------------------- the server, the key, the config


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"enabled": False}),
        _problem(404, "not_found", "no route"),
    ],
)
def test_a_server_without_single_sign_on_says_so(
    jit: Callable[..., Run], fake: FakeSso, home: Path, answer: httpx.Response
) -> None:
    fake.override["GET /v1/sso"] = answer
    r = jit("sso", "login")
    assert r.code == EXIT_FAILED
    assert f"{SERVER} does not offer single sign-on" in r.stderr
    assert not sso_key(home).exists() and not config_file(home).exists()


def test_the_configured_identity_is_the_key_enrolled(
    jit: Callable[..., Run], fake: FakeSso, home: Path, tmp_path: Path
) -> None:
    from tests.test_cli_engineer import _write_key

    own = tmp_path / "ids" / "id_ed25519"
    fingerprint, _ = _write_key(own)
    cfg = config_file(home)
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'server = "{SERVER}"\nidentity = "{own}"\n')
    r = jit("sso", "login")
    assert r.code == EXIT_OK, r.stderr
    assert fake.fingerprint == fingerprint
    assert not sso_key(home).exists()
    assert read_config(home) == {"server": SERVER, "identity": str(own), "user": "alice"}


def test_a_second_sign_in_reuses_the_key(
    jit: Callable[..., Run], fake: FakeSso, home: Path
) -> None:
    assert jit("sso", "login").code == EXIT_OK
    first = sso_key(home).read_bytes()
    fake.join()
    fake.finished, fake.threads = 0, []
    r = jit("sso", "login")
    assert r.code == EXIT_OK, r.stderr
    assert sso_key(home).read_bytes() == first
    assert "Made a new key" not in r.stderr


def test_the_config_keeps_its_comments_and_other_settings(
    jit: Callable[..., Run], home: Path
) -> None:
    cfg = config_file(home)
    cfg.parent.mkdir(parents=True)
    before = (
        f'# my settings\nserver = "{SERVER}"  # the CA\n\n# how long\ndefault_duration = "1h"\n'
    )
    cfg.write_text(before)
    os.chmod(cfg, 0o640)
    r = jit("sso", "login")
    assert r.code == EXIT_OK, r.stderr
    text = cfg.read_text()
    assert text.startswith(before)
    assert read_config(home) == {
        "server": SERVER,
        "default_duration": "1h",
        "user": "alice",
        "identity": str(sso_key(home)),
    }
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640
    assert "Wrote user and identity to" in r.stderr


def test_a_configured_identity_that_does_not_exist_gives_way_to_jit_sshs_own_key(
    jit: Callable[..., Run], home: Path
) -> None:
    cfg = config_file(home)
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'server = "{SERVER}"\nuser = "alice"\nidentity = "~/.ssh/id_ed25519"\n')
    r = jit("sso", "login")
    assert r.code == EXIT_OK, r.stderr
    assert "does not exist; using jit-ssh's own key" in r.stderr
    assert read_config(home)["identity"] == str(sso_key(home))


def test_another_configured_user_is_an_error_that_changes_nothing(
    jit: Callable[..., Run], home: Path
) -> None:
    cfg = config_file(home)
    cfg.parent.mkdir(parents=True)
    before = f'server = "{SERVER}"\nuser = "bob"\n'
    cfg.write_text(before)
    r = jit("sso", "login")
    assert r.code == EXIT_FAILED
    assert "signed in as 'alice', but this machine's settings name 'bob'" in r.stderr
    assert cfg.read_text() == before


def test_sso_appears_in_the_help(home: Path) -> None:
    r = run_cli("--help", transport=None)
    assert "sso " in r.stdout and "single sign-on" in r.stdout
    r = run_cli("sso", "login", "--help", transport=None)
    assert "--headless" in r.stdout and "--no-browser" in r.stdout


# --------------------------------------------------------------------------- jit-ssh login signs in first

from tests.test_cli_engineer import TARGET, Server, keys, server  # noqa: E402, F401


@pytest.fixture
def app_and_sso(server: Server, fake: FakeSso) -> tuple[Server, FakeSso, list[str]]:
    """The real app for every call but /v1/sso*, which the fake answers; when the fake
    enrols a key, the real app enrols it too (as the server's finish does)."""
    from server.admin import Admin

    admin = Admin(server.app.extensions["jit_ssh"].service)

    def enrol(user: str, public_key: str) -> None:
        known = {u.name: u for u in admin.list_users()}
        if user in known:
            if parse_public_key(public_key).fingerprint not in str(known[user]):
                admin.enroll_key(user, public_key)
        else:
            admin.add_user(
                user, groups=["engineers", "oncall"], roles=["requester"], ssh_keys=[public_key]
            )

    fake.on_enrol = enrol
    return server, fake, []


def _both(app: Server, fake: FakeSso, order: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        order.append(f"{request.method} {request.url.path}")
        if request.url.path.startswith("/v1/sso"):
            return fake.handle(request)
        return app.handle(request)

    return httpx.MockTransport(handle)


def test_login_with_no_key_signs_in_first_and_goes_on_with_the_request(
    home: Path, app_and_sso: tuple[Server, FakeSso, list[str]]
) -> None:
    app, fake, order = app_and_sso
    fake.user = "carol"
    r = run_cli("login", TARGET, "--for", "30m", transport=_both(app, fake, order))
    assert r.code == EXIT_OK, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "no enrolled key; signing in with Okta first"
    assert any(
        line.startswith("Signed in as carol (groups: engineers) through Okta;") for line in lines
    )
    assert order[:4] == [
        "GET /v1/sso",
        "POST /v1/sso/start",
        "POST /v1/sso/finish",
        "POST /v1/requests",
    ]
    assert f"Access granted to {TARGET}" in r.stdout
    assert read_config(home) == {"server": SERVER, "user": "carol", "identity": str(sso_key(home))}
    # The request was signed by the enrolled key, as carol.
    assert app.state("0000000000000001") == "issued"


def test_login_with_a_key_the_server_does_not_know_signs_in_then_retries(
    home: Path, app_and_sso: tuple[Server, FakeSso, list[str]], tmp_path: Path
) -> None:
    from tests.test_cli_engineer import _write_key

    app, fake, order = app_and_sso
    stranger = tmp_path / "ids" / "id_new"
    fingerprint, _ = _write_key(stranger)
    env = {"JIT_SSH_USER": "alice", "JIT_SSH_IDENTITY": str(stranger)}
    r = run_cli("login", TARGET, transport=_both(app, fake, order), env=env)
    assert r.code == EXIT_OK, r.stderr
    assert "the server does not know this key; signing in with Okta first" in r.stderr
    assert order[:5] == [
        "POST /v1/requests",
        "GET /v1/sso",
        "POST /v1/sso/start",
        "POST /v1/sso/finish",
        "POST /v1/requests",
    ]
    assert fake.fingerprint == fingerprint  # the configured key, not a new one
    assert not sso_key(home).exists()


def test_login_after_the_enrolment_ended_signs_in_again(
    home: Path, app_and_sso: tuple[Server, FakeSso, list[str]], keys: Any
) -> None:
    app, fake, order = app_and_sso
    app.fail["POST /v1/requests"] = _problem(
        401,
        "enrolment_expired",
        "your single sign-on enrolment of key SHA256:x ended at 2026-01-02T22:15:00Z; "
        "run `jit-ssh sso login`",
    )
    real = app.handle

    def once(request: httpx.Request) -> httpx.Response:
        answer = real(request)
        if request.url.path == "/v1/requests":
            app.fail.clear()
        return answer

    app.handle = once  # type: ignore[method-assign]
    env = {"JIT_SSH_USER": "alice", "JIT_SSH_IDENTITY": str(keys["alice"][0])}
    r = run_cli("login", TARGET, transport=_both(app, fake, order), env=env)
    assert r.code == EXIT_OK, r.stderr
    assert (
        "your single sign-on enrolment ended at 2026-01-02 22:15 UTC; signing in with Okta again"
        in r.stderr
    )
    assert order.count("POST /v1/requests") == 2 and "POST /v1/sso/finish" in order


def test_an_ended_enrolment_in_any_other_command_says_to_sign_in(
    home: Path, server: Server, keys: Any
) -> None:
    server.fail["GET /v1/requests"] = _problem(
        401,
        "enrolment_expired",
        "your single sign-on enrolment of key SHA256:x ended at 2026-01-02T22:15:00Z; "
        "run `jit-ssh sso login`",
    )
    env = {"JIT_SSH_USER": "alice", "JIT_SSH_IDENTITY": str(keys["alice"][0])}
    for command in (["requests"], ["status"]):
        r = run_cli(*command, transport=server.transport(), env=env)
        assert r.code == EXIT_FAILED
        assert (
            "your single sign-on enrolment ended at 2026-01-02 22:15 UTC; run: jit-ssh sso login"
            in r.stderr
        ), r.stderr


def test_login_against_a_server_without_single_sign_on_is_unchanged(
    home: Path, server: Server
) -> None:
    r = run_cli("login", TARGET, transport=server.transport())
    assert r.code == EXIT_FAILED
    # Asked once (404: this server has no single sign-on), then the error as before.
    assert server.paths() == ["GET /v1/sso"]
    assert "no user configured: run `jit-ssh config init`" in r.stderr


def test_status_shows_when_the_enrolment_ends(home: Path, server: Server, keys: Any) -> None:
    ends = datetime.now(UTC) + timedelta(hours=3)
    server.fail["GET /v1/whoami"] = httpx.Response(
        200,
        json={
            "user": "alice",
            "groups": ["engineers"],
            "roles": ["requester"],
            "groups_source": "sso",
            "enrolment_expires_at": _iso(ends),
        },
    )
    env = {"JIT_SSH_USER": "alice", "JIT_SSH_IDENTITY": str(keys["alice"][0])}
    r = run_cli("status", transport=server.transport(), env=env)
    assert r.code == EXIT_OK, r.stderr
    assert (
        f"This key is enrolled by single sign-on until {flows.until_text(ends)} "
        "(jit-ssh sso login renews it)." in r.stdout
    )
    r = run_cli("status", "--json", transport=server.transport(), env=env)
    assert json.loads(r.stdout)["enrolment_expires_at"] == _iso(ends)


def test_status_of_an_admin_enrolled_key_says_nothing_of_single_sign_on(
    home: Path, server: Server, keys: Any
) -> None:
    env = {"JIT_SSH_USER": "alice", "JIT_SSH_IDENTITY": str(keys["alice"][0])}
    r = run_cli("status", transport=server.transport(), env=env)
    assert r.code == EXIT_OK, r.stderr
    assert "single sign-on" not in r.stdout
    assert server.paths() == ["GET /v1/requests?mine=1", "GET /v1/whoami"]


def test_sso_status_says_who_and_until_when(
    home: Path, app_and_sso: tuple[Server, FakeSso, list[str]]
) -> None:
    app, fake, order = app_and_sso
    ends = datetime.now(UTC) + timedelta(hours=3)
    app.fail["GET /v1/whoami"] = httpx.Response(
        200,
        json={
            "user": "carol",
            "groups": ["engineers"],
            "roles": [],
            "groups_source": "sso",
            "enrolment_expires_at": _iso(ends),
        },
    )
    fake.user = "carol"
    assert run_cli("sso", "login", transport=_both(app, fake, order)).code == EXIT_OK
    r = run_cli("sso", "status", transport=_both(app, fake, order))
    assert r.code == EXIT_OK, r.stderr
    assert r.stdout.splitlines() == [
        "Single sign-on: Okta (in the browser, or with a code: --headless).",
        f"Signed in as carol (groups: engineers, from the provider); this key is enrolled "
        f"until {flows.until_text(ends)}.",
    ]


# --------------------------------------------------------------------------- against the real app
#
# The real server (create_app with an [sso] table, its SSO service, database, audit log and
# signature checks) behind httpx.WSGITransport; only the provider is the strict fake of
# tests/server/sso_fakes.py (the real provider: tests/integration). The "browser" signs in
# at the fake provider, follows the app's /sso/callback redirect to the loopback listener.


@dataclass
class RealSso:
    app: Any
    provider: Any
    database_url: str
    calls: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    pages: list[tuple[int, str]] = field(default_factory=list)
    redirects: list[str] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.calls.append(f"{request.method} {request.url.path}")
            return httpx.WSGITransport(app=self.app).handle_request(request)

        return httpx.MockTransport(handle)

    def browse(self, claims: dict[str, Any]) -> Callable[[str], bool]:
        """A browser whose person signs in at the provider as ``claims`` says."""

        def open_url(url: str) -> bool:
            back = self.provider.sign_in(url, claims)
            with httpx.Client(transport=httpx.WSGITransport(app=self.app), base_url=SERVER) as c:
                resp = c.get("/sso/callback", params=back)
            assert resp.status_code == 303, resp.text
            location = resp.headers["location"]
            self.redirects.append(location)

            def follow() -> None:
                r = httpx.get(location, timeout=20)
                self.pages.append((r.status_code, r.text))

            t = threading.Thread(target=follow, daemon=True)
            self.threads.append(t)
            t.start()
            return True

        return open_url

    def end_enrolments(self) -> None:
        """Every enrolment made by signing in has ended (its expires_at passed)."""
        from sqlalchemy import update

        from server.db import make_engine
        from server.models import SshKey

        engine = make_engine(self.database_url)
        try:
            with engine.begin() as c:
                c.execute(
                    update(SshKey)
                    .where(SshKey.expires_at.is_not(None))
                    .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
                )
        finally:
            engine.dispose()

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=30)


@pytest.fixture
def real(tmp_path: Path, keys: Any) -> Iterator[RealSso]:
    from server.admin import Admin
    from server.app import create_app
    from server.config import ServerConfig
    from tests.server.sso_fakes import FakeProvider
    from tests.server.sso_fakes import settings as sso_settings
    from tests.test_cli_engineer import POLICY

    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    url = f"sqlite:///{tmp_path / 'server.sqlite3'}"
    cfg = ServerConfig(
        data_dir=tmp_path / "data",
        database_url=url,
        policy_path=policy,
        base_url=SERVER,
        max_clock_skew=60,
        sso=sso_settings(),
    )
    app = create_app(cfg, say=lambda m: None)
    provider = FakeProvider(lambda: datetime.now(UTC))
    app.extensions["jit_ssh"].sso_holder.provider = provider
    # bob approves; alice was enrolled by an admin (a key of her own, no expiry).
    admin = Admin(app.extensions["jit_ssh"].service)
    admin.add_user(
        "bob",
        groups=["approvers"],
        roles=["approver"],
        ssh_keys=[Path(f"{keys['bob'][0]}.pub").read_text()],
    )
    r = RealSso(app=app, provider=provider, database_url=url)
    yield r
    r.join()
    app.extensions["jit_ssh.engine"].dispose()


def _claims(name: str = "carol", groups: list[str] | None = None) -> dict[str, Any]:
    from tests.server.sso_fakes import claims_for

    return claims_for(name, ["engineers", "oncall"] if groups is None else groups)


def test_real_app_loopback_sign_in_enrols_the_key_and_login_uses_it(
    home: Path, real: RealSso, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flows, "_open_browser", real.browse(_claims()))
    r = run_cli("sso", "login", transport=real.transport())
    assert r.code == EXIT_OK, r.stderr
    assert r.stdout.startswith("Signed in as carol (groups: engineers, oncall) through Okta;")
    assert real.redirects[0].startswith("http://127.0.0.1:")
    real.join()
    assert real.pages[0][0] == 200 and "Signed in as carol" in real.pages[0][1]
    assert read_config(home) == {"server": SERVER, "user": "carol", "identity": str(sso_key(home))}
    # Every call after is signed by that key as carol: the request goes through.
    r = run_cli("login", TARGET, "--for", "30m", transport=real.transport())
    assert r.code == EXIT_OK, r.stderr
    assert f"Access granted to {TARGET}" in r.stdout
    assert "GET /v1/sso" not in real.calls[real.calls.index("POST /v1/sso/finish") + 1 :]
    r = run_cli("status", transport=real.transport())
    assert "This key is enrolled by single sign-on until" in r.stdout


def test_real_app_device_sign_in(
    home: Path, real: RealSso, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        # The person enters the code at the provider while the CLI waits.
        if not sleeps:
            real.provider.approve_device(_claims())
        sleeps.append(seconds)

    monkeypatch.setattr(flows, "_sleep", sleep)
    r = run_cli("sso", "login", "--headless", transport=real.transport())
    assert r.code == EXIT_OK, r.stderr
    assert "To sign in, open https://idp.example.test/device and enter the code ABCD-EFGH" in (
        r.stderr.splitlines()
    )
    assert r.stdout.startswith("Signed in as carol (groups: engineers, oncall) through Okta;")
    assert sleeps == [5]
    assert real.calls.count("POST /v1/sso/poll") == 1
    r = run_cli("login", TARGET, transport=real.transport())
    assert r.code == EXIT_OK, r.stderr


def test_real_app_login_with_nothing_configured_signs_in_and_gets_the_certificate(
    home: Path, real: RealSso, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flows, "_open_browser", real.browse(_claims()))
    r = run_cli("login", TARGET, "--for", "30m", transport=real.transport())
    assert r.code == EXIT_OK, r.stderr
    assert r.stderr.splitlines()[0] == "no enrolled key; signing in with Okta first"
    assert f"Access granted to {TARGET}" in r.stdout
    assert real.calls[:4] == [
        "GET /v1/sso",
        "POST /v1/sso/start",
        "POST /v1/sso/finish",
        "POST /v1/requests",
    ]


def test_real_app_an_ended_enrolment_is_refused_and_login_signs_in_again(
    home: Path, real: RealSso, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flows, "_open_browser", real.browse(_claims()))
    assert run_cli("sso", "login", transport=real.transport()).code == EXIT_OK
    real.end_enrolments()
    r = run_cli("requests", transport=real.transport())
    assert r.code == EXIT_FAILED
    assert re.search(
        r"your single sign-on enrolment ended at \d{4}-\d\d-\d\d \d\d:\d\d UTC; run: jit-ssh sso login",
        r.stderr,
    ), r.stderr
    r = run_cli("login", TARGET, transport=real.transport())
    assert r.code == EXIT_OK, r.stderr
    assert "your single sign-on enrolment ended at" in r.stderr
    assert "signing in with Okta again" in r.stderr
    assert f"Access granted to {TARGET}" in r.stdout


def test_real_app_a_refused_sign_in_comes_back_to_the_cli(
    home: Path, real: RealSso, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A user name the server refuses: it sends the browser back with the refusal's code.
    monkeypatch.setattr(flows, "_open_browser", real.browse(_claims(name="-bad name")))
    r = run_cli("sso", "login", transport=real.transport())
    assert r.code == EXIT_FAILED
    assert "error=" in real.redirects[0]
    assert "the server refused the sign-in [sso_bad_claim]" in r.stderr
    assert "POST /v1/sso/finish" not in real.calls
    assert not config_file(home).exists()


def test_real_app_a_provider_user_other_than_the_configured_one_changes_nothing(
    home: Path, real: RealSso, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config_file(home)
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'server = "{SERVER}"\nuser = "alice"\n')
    monkeypatch.setattr(flows, "_open_browser", real.browse(_claims("carol")))
    r = run_cli("sso", "login", transport=real.transport())
    assert r.code == EXIT_FAILED
    assert "signed in as 'carol', but this machine's settings name 'alice'" in r.stderr
    assert cfg.read_text() == f'server = "{SERVER}"\nuser = "alice"\n'
