"""The approver's web form in a real browser against a real server.

Debian's Chromium, driven by Playwright for Python, against ``jit-ssh serve``
(gunicorn, one worker) in a subprocess with its own data directory, policy
and users (made with ``jit-ssh admin user add``). Engineers are the installed
``jit-ssh login`` command waiting for approval, or a small signed API client
over HTTP (httpx).

Screenshots of the pending list, a request page and Active access (desktop and
phone sizes) go to ``test-results/``. At a phone's width (390 px) no page may
scroll sideways: every page is checked with long names, a 19-digit serial and
a long reason.

Without Chromium or Playwright these tests skip and say why; under CI=true
they fail instead.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import parse_certificate, public_key_from_crypto
from ca.krl import parse_krl
from server.totp import totp
from tests.conftest import IN_CI, require_tool
from tests.support import signed_headers

from .e2e_helpers import JitServer, _base_env, end_process, jit_ssh_command

pytestmark = pytest.mark.integration

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESULTS = Path(__file__).resolve().parents[2] / "test-results"
COMMAND_TIMEOUT = 30
#: Long, within the limits: a 63-character target, a long user name, a reason with long words.
LONG_TARGET = "payments-reconciliation-eu-west-1.primary-db-replica-cluster-07"
LONG_USER = "maximilian.schwarzenberger-lindqvist"
LONG_REASON = (
    "INC-48213: the nightly reconciliation batch for the EU ledger stalled at step 7 of 12 "
    "after the replica failover; see https://status.example.com/incidents/48213/timeline"
    "?view=full&tz=UTC and runbook RB-PAYMENTS-RECONCILIATION-0042-restart-the-ledger-consumer"
)
PASSWORD = {
    "bob": "bob's long web password",
    "carol": "carol's long web password",
    "erin": "erin's long web password",
    "tina": "tina's long web password",
    LONG_USER: "max's long web password",
}
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

POLICY = f"""\
[targets.prod-db]
description = "The production PostgreSQL primary and replicas."
principals = ["root@prod-db", "postgres@prod-db"]
login_users = ["root", "postgres"]

[targets.payments]
principals = ["deploy@payments"]
login_users = ["deploy"]

[[rules]]
name = "prod-db-on-call"
description = "Engineers reach the production database with one approver's OK."
targets = ["prod-db"]
groups = ["engineers"]
max_duration = "2h"
default_duration = "30m"
approvals_required = 1
approver_groups = ["approvers"]
approvers_may_shorten = true
reason_required = true
pending_ttl = "30m"
claim_window = "10m"

[[rules]]
name = "payments-two-approvals"
description = "Payments needs two approvers."
targets = ["payments"]
groups = ["engineers"]
max_duration = "1h"
default_duration = "1h"
approvals_required = 2
approver_groups = ["approvers"]
reason_required = true
pending_ttl = "15m"
force_command = "/usr/local/bin/payments-console"

[targets."{LONG_TARGET}"]
principals = ["deploy@{LONG_TARGET}", "postgres@{LONG_TARGET}"]
login_users = ["deploy", "postgres"]

[[rules]]
name = "reconciliation-on-call"
description = "Engineers reach the reconciliation replicas with one approver's OK."
targets = ["{LONG_TARGET}"]
groups = ["engineers"]
max_duration = "12h"
default_duration = "8h"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = true
pending_ttl = "30m"
claim_window = "10m"
"""


# --------------------------------------------------------------------------- tools


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright for Python is not installed (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(f"{reason}; it is required under CI=true", pytrace=False)
        pytest.skip(reason)
    return sync_playwright


def _clean_env(**extra: str) -> dict[str, str]:
    """Nothing from the caller's jit-ssh settings, ssh-agent or XDG directories."""
    return {**_base_env(), **extra}


# --------------------------------------------------------------------------- people and the server


@dataclass
class Person:
    name: str
    key: ed25519.Ed25519PrivateKey
    key_path: Path
    home: Path

    @property
    def public_openssh(self) -> str:
        return public_key_from_crypto(self.key.public_key()).openssh


class Api:
    """A signed API client over real HTTP (as ``tests/server/conftest.py``'s Caller signs)."""

    def __init__(self, base_url: str, person: Person) -> None:
        import httpx

        self.person = person
        self.http = httpx.Client(base_url=base_url, timeout=15)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        headers = signed_headers(self.person.key, self.person.name, method, path, data)
        return self.http.request(method, path, content=data, headers=headers)

    def submit(self, target: str, duration: str, reason: str) -> dict[str, Any]:
        r = self.call(
            "POST", "/v1/requests", {"target": target, "duration": duration, "reason": reason}
        )
        assert r.status_code == 201, r.text
        return r.json()

    def get(self, request_id: str) -> dict[str, Any]:
        r = self.call("GET", f"/v1/requests/{request_id}")
        assert r.status_code == 200, r.text
        return r.json()


class Server(JitServer):
    """``jit-ssh serve`` (the end-to-end tests' JitServer) with this module's policy and people."""

    home_name = "server-home"
    policy_text = POLICY

    def __init__(self, root: Path, jit_ssh: str) -> None:
        super().__init__(root, jit_ssh)
        self.people: dict[str, Person] = {}

    def admin(self, *args: str, stdin: str | None = None) -> str:  # type: ignore[override]
        r = subprocess.run(
            [self.jit_ssh, "admin", *args],
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert r.returncode == 0, f"jit-ssh admin {' '.join(args)}: {r.stderr}"
        return r.stdout

    def add_person(self, name: str, *options: str, password: str | None = None) -> Person:
        key = ed25519.Ed25519PrivateKey.generate()
        home = self.root / f"home-{name}"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        key_path = home / ".ssh" / "id_ed25519"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        person = Person(name=name, key=key, key_path=key_path, home=home)
        key_path.with_suffix(".pub").write_text(person.public_openssh + "\n")
        args = ["user", "add", name, *options, "--ssh-key", str(key_path.with_suffix(".pub"))]
        if password is not None:
            args.append("--password-stdin")
        self.admin(*args, stdin=None if password is None else password + "\n")
        self.people[name] = person
        return person

    def api(self, name: str) -> Api:
        return Api(self.url, self.people[name])


class WaitingLogin:
    """The installed ``jit-ssh login TARGET`` in a subprocess, waiting for an approver."""

    def __init__(
        self, server: Server, person: Person, target: str, duration: str, reason: str
    ) -> None:
        env = _clean_env(
            HOME=str(person.home),
            JIT_SSH_SERVER=server.url,
            JIT_SSH_USER=person.name,
            JIT_SSH_IDENTITY=str(person.key_path),
        )
        self.person = person
        self.target = target
        self.proc = subprocess.Popen(
            [
                server.jit_ssh,
                "login",
                target,
                "--for",
                duration,
                "--reason",
                reason,
                "--poll",
                "0.3",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.proc.stderr, self.stderr, True), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.proc.stdout, self.stdout, False), daemon=True
            ),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any, into: list[str], announce: bool) -> None:
        for line in stream:
            into.append(line)
            if announce:
                self.lines.put(line)

    def approval_url(self, timeout: float = COMMAND_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            m = re.search(r"Approve at: (\S+)", line)
            if m:
                return m.group(1)
        pytest.fail(
            f"jit-ssh login printed no approval URL; stderr: {''.join(self.stderr)}", pytrace=False
        )

    def finish(self, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            end_process(self.proc, group=True)
            pytest.fail(
                f"jit-ssh login did not finish; stderr: {''.join(self.stderr)}", pytrace=False
            )
        for t in self._readers:
            t.join(timeout=5)
        return self.proc.returncode, "".join(self.stdout), "".join(self.stderr)

    def stop(self) -> None:
        end_process(self.proc, group=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    jit_ssh = jit_ssh_command()
    s = Server(tmp_path_factory.mktemp("web-browser"), jit_ssh)
    s.policy.write_text(POLICY)
    s.add_person("alice", "--group", "engineers")
    s.add_person("dave", "--group", "engineers")
    s.add_person(
        "bob",
        "--group",
        "approvers",
        "--role",
        "requester",
        "--role",
        "approver",
        password=PASSWORD["bob"],
    )
    # Carol approves, and also asks for access herself.
    s.add_person(
        "carol",
        "--group",
        "approvers",
        "--group",
        "engineers",
        "--role",
        "requester",
        "--role",
        "approver",
        password=PASSWORD["carol"],
    )
    s.start()
    try:
        yield s
    finally:
        end_process(s.proc, group=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    chromium = require_tool("chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Session:
    """One browser context (its own cookies) logged in as one approver."""

    def __init__(self, browser: Any, server: Server, viewport: dict[str, int] = DESKTOP) -> None:
        self.server = server
        self.context = browser.new_context(base_url=server.url, viewport=viewport)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.dialogs: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def login(self, name: str, path: str = "/") -> None:
        """Open ``path``; the server sends us through the login form and back."""
        page = self.page
        page.goto(path)
        assert "/login" in page.url
        page.fill("#username", name)
        page.fill("#password", PASSWORD[name])
        page.click("button:has-text('Log in')")
        page.wait_for_load_state()
        target = path if path.startswith("/") else path.replace(self.server.url, "")
        assert page.url == self.server.url + target, page.url

    def csrf_token(self) -> str:
        return self.page.locator("form.logout input[name=csrf_token]").get_attribute("value") or ""

    def shot(self, name: str) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def session(browser: Any, server: Server) -> Iterator[Session]:
    s = Session(browser, server)
    yield s
    s.close()


def _path(server: Server, url: str) -> str:
    assert url.startswith(server.url + "/requests/"), url
    return url[len(server.url) :]


# --------------------------------------------------------------------------- tests


def test_login_failure_then_success_and_logout(session: Session, server: Server) -> None:
    page = session.page
    page.goto("/")
    assert page.url.startswith(server.url + "/login")
    page.fill("#username", "bob")
    page.fill("#password", "not bob's password")
    with page.expect_response(
        lambda r: r.url.endswith("/login") and r.request.method == "POST"
    ) as resp:
        page.click("button:has-text('Log in')")
    assert resp.value.status == 401
    assert "Login failed" in page.locator(".flash-error").inner_text()
    # The same answer for a name no account has.
    page.fill("#username", "nobody-here")
    page.fill("#password", "whatever it is")
    page.click("button:has-text('Log in')")
    assert "Login failed" in page.locator(".flash-error").inner_text()

    session.login("bob")
    assert page.locator("h1").inner_text().startswith("Pending for me")
    cookie = next(c for c in session.context.cookies() if c["name"] == "jit_ssh_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    headers = page.request.get("/").headers
    assert (
        "script-src" not in headers["content-security-policy"]
        and "default-src 'none'" in headers["content-security-policy"]
    )
    assert headers["x-frame-options"] == "DENY"

    page.click("button:has-text('Log out')")
    assert page.url.startswith(server.url + "/login")
    page.goto("/")
    assert page.url.startswith(server.url + "/login")


def test_pending_list_and_request_page_through_the_notification_link(
    browser: Any, server: Server
) -> None:
    from playwright.sync_api import expect

    alice, dave = server.api("alice"), server.api("dave")
    first = alice.submit(
        "prod-db", "45m", "INC-4711: replica lag on db-3; restart the replica and watch WAL replay"
    )
    dave.submit(
        "payments", "1h", "INC-4712: refund batch stuck since 09:10, need the payments console"
    )
    alice.submit("prod-db", "15m", "Check autovacuum on the orders table (INC-4713)")

    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        s = Session(browser, server, viewport)
        try:
            # The link from the notification, through the login form and back.
            s.login("bob", _path(server, first["approval_url"]))
            page = s.page
            assert (
                page.locator("h1")
                .inner_text()
                .replace("\n", " ")
                .startswith("alice → prod-db for 45m")
            )
            assert "INC-4711: replica lag on db-3" in page.locator(".big-reason").inner_text()
            facts = page.locator("dl.facts").first.inner_text().lower()
            for text in (
                "root@prod-db",
                "postgres@prod-db",
                "45m asked",
                "asked",
                "lapses unanswered in",
                "0/1",
                "prod-db-on-call",
            ):
                assert text in facts, (text, facts)
            assert page.locator("button.approve-button").is_visible()
            assert page.locator("button.deny-button").is_visible()
            assert "Requested" in page.locator("ol.trail").inner_text()
            s.shot(f"web-request-{label}.png")

            page.click("nav >> text=Pending for me")
            # The click returns once the navigation has started, not when the list is in:
            # count the cards only after the pending page has loaded, and wait for the
            # third one (a bare count() does not wait, and saw a half-parsed page).
            page.wait_for_url(server.url + "/")
            cards = page.locator("ul.cards > li")
            expect(cards.nth(2)).to_be_attached()
            assert cards.count() >= 3
            # (inner_text applies the stylesheet's text-transform to the labels.)
            text = page.locator("ul.cards").inner_text().lower()
            for needle in (
                "alice",
                "dave",
                "prod-db",
                "payments",
                "root@prod-db",
                "deploy@payments",
                "45m",
                "1h",
                "inc-4712: refund batch stuck",
                "0/2",
                "0/1",
                "lapses unanswered in",
                "asked",
            ):
                assert needle in text, (needle, text)
            s.shot(f"web-pending-{label}.png")
        finally:
            s.close()


def test_approve_and_the_waiting_client_gets_its_certificate(
    session: Session, server: Server
) -> None:
    alice = server.people["alice"]
    waiting = WaitingLogin(server, alice, "prod-db", "20m", "INC-5001: failover drill")
    try:
        url = waiting.approval_url()
        session.login("bob", _path(server, url))
        page = session.page
        page.select_option("#duration", label="15m")
        page.fill("#comment", "ok, keep it short")
        page.click("button.approve-button")
        assert (
            "Approved: alice can now get a certificate for prod-db (15m)"
            in page.locator(".flash-ok").inner_text()
        )

        rc, out, err = waiting.finish()
        assert rc == 0, err
        assert "Access granted to prod-db" in out
        # One key and certificate per request: <target>+<request id>-cert.pub.
        (cert_file,) = (alice.home / ".ssh" / "jit-ssh").glob("prod-db+*-cert.pub")
        assert url.rstrip("/").rsplit("/", 1)[-1] in cert_file.name
        cert = parse_certificate(cert_file.read_text())
        assert "by=bob" in cert.key_id
        assert (cert.valid_before - cert.valid_after).total_seconds() == 15 * 60
        assert set(cert.principals) == {"root@prod-db", "postgres@prod-db"}

        page.reload()
        assert "issued" in page.locator(".page-head .badge").text_content()
        session.shot("web-request-issued-desktop.png")
        trail = page.locator("ol.trail").inner_text()
        assert (
            "Approved" in trail and "Certificate issued" in trail and "ok, keep it short" in trail
        )
    finally:
        waiting.stop()


def test_deny_and_the_waiting_client_sees_the_reason(session: Session, server: Server) -> None:
    waiting = WaitingLogin(
        server, server.people["alice"], "prod-db", "30m", "INC-5002: read the slow query log"
    )
    try:
        url = waiting.approval_url()
        session.login("bob", _path(server, url))
        page = session.page
        page.fill("#reason", "Use the read replica: prod-db-ro has the same logs")
        page.click("button.deny-button")
        assert "Denied" in page.locator(".flash-ok").inner_text()
        assert "denied" in page.locator(".page-head .badge").text_content()

        rc, _out, err = waiting.finish()
        assert rc == 1
        assert "denied by bob: Use the read replica: prod-db-ro has the same logs" in err
    finally:
        waiting.stop()


def test_self_approval_is_blocked(session: Session, server: Server) -> None:
    req = server.api("carol").submit("prod-db", "30m", "INC-5003: my own request")
    session.login("carol", f"/requests/{req['id']}")
    page = session.page
    assert page.locator("button.approve-button").count() == 0
    assert page.locator("button.deny-button").count() == 0
    assert "This is your own request" in page.locator(".notice").inner_text()
    # Nor is it in her pending list.
    page.goto("/")
    assert req["id"] not in page.content()

    # A forged POST, with a valid CSRF token, is refused all the same.
    resp = page.request.post(
        f"/requests/{req['id']}/approve", form={"csrf_token": session.csrf_token(), "comment": "me"}
    )
    assert resp.status == 403
    assert "never approve or deny their own request" in resp.text()
    assert server.api("carol").get(req["id"])["state"] == "pending"


def test_a_post_without_the_csrf_token_is_refused(session: Session, server: Server) -> None:
    req = server.api("dave").submit("prod-db", "30m", "INC-5004: csrf")
    session.login("bob", f"/requests/{req['id']}")
    page = session.page
    # The real form, with its token taken out.
    page.locator("form.approve input[name=csrf_token]").evaluate("e => e.remove()")
    with page.expect_response(lambda r: r.url.endswith("/approve")) as resp:
        page.click("button.approve-button")
    assert resp.value.status == 400
    assert "This form was not accepted" in page.locator(".flash-error").inner_text()
    # And a hand-made POST with a wrong token.
    assert (
        page.request.post(f"/requests/{req['id']}/approve", form={"csrf_token": "forged"}).status
        == 400
    )
    assert server.api("dave").get(req["id"])["state"] == "pending"


def test_a_script_in_a_reason_shows_as_text(session: Session, server: Server) -> None:
    reason = (
        "INC-5005 <script>document.title='pwned';alert('pwned')</script>"
        "<img src=x onerror=\"alert('img')\"><b>bold</b>"
    )
    req = server.api("alice").submit("prod-db", "30m", reason)
    session.login("bob", f"/requests/{req['id']}")
    page = session.page
    assert page.locator(".big-reason").inner_text() == reason
    assert page.locator(".big-reason b, .big-reason img, .big-reason script").count() == 0
    assert "pwned" not in page.title()
    page.goto("/")
    card = page.locator("ul.cards > li", has_text="INC-5005")
    assert reason in card.locator(".reason").inner_text()
    assert page.locator("ul.cards img, ul.cards b").count() == 0
    assert session.dialogs == []


def test_revoke_on_active_access_puts_the_serial_in_the_krl(
    session: Session, server: Server
) -> None:
    alice = server.api("alice")
    req = alice.submit("prod-db", "30m", "INC-5006: revoke me")
    session.login("bob", f"/requests/{req['id']}")
    page = session.page
    page.click("button.approve-button")
    assert page.locator(".flash-ok").is_visible()
    key = ed25519.Ed25519PrivateKey.generate()
    r = alice.call(
        "POST",
        f"/v1/requests/{req['id']}/certificate",
        {"public_key": public_key_from_crypto(key.public_key()).openssh},
    )
    assert r.status_code == 200, r.text
    serial = int(r.json()["serial"])

    page.click("nav >> text=Active access")
    card = page.locator("ul.cards > li", has_text=str(serial))
    assert "alice" in card.inner_text() and "left" in card.inner_text()
    session.shot("web-active-desktop.png")
    card.locator("a:has-text('Revoke')").click()
    page.wait_for_url(f"{server.url}/certificates/{serial}/revoke?next=/active")
    assert "Revoke this certificate?" in page.locator("h1").inner_text()
    page.fill("#revoke-reason", "drill over")
    # Not confirmed: the browser does not send the form (the box is required).
    page.click("form.revoke-confirm button:has-text('Revoke')")
    assert page.url.endswith(f"/certificates/{serial}/revoke?next=/active")
    assert alice.get(req["id"])["state"] == "issued"
    page.check("#revoke-confirm")
    page.click("form.revoke-confirm button:has-text('Revoke')")
    page.wait_for_url(server.url + "/active")
    assert f"Certificate {serial} revoked" in page.locator(".flash-ok").inner_text()
    assert page.locator("ul.cards > li", has_text=str(serial)).count() == 0

    krl = parse_krl(alice.http.get("/v1/krl").content)
    revoked = [(lo, hi) for section in krl.cert_sections for lo, hi in section.serial_ranges]
    assert any(lo <= serial <= hi for lo, hi in revoked), revoked
    assert alice.get(req["id"])["state"] == "revoked"


def test_an_approver_with_totp_logs_in_with_a_code(session: Session, server: Server) -> None:
    server.add_person(
        "erin", "--group", "approvers", "--role", "approver", password=PASSWORD["erin"]
    )
    out = server.admin("user", "totp", "erin")
    secret = re.search(r"secret: (\S+)", out).group(1)  # type: ignore[union-attr]
    assert f"otpauth://totp/jit-ssh:erin?secret={secret}" in out
    page = session.page
    page.goto("/active")
    page.fill("#username", "erin")
    page.fill("#password", PASSWORD["erin"])
    page.click("button:has-text('Log in')")
    assert page.url == server.url + "/login/code"
    now = datetime.now(UTC)
    valid = {totp(secret, now + timedelta(seconds=d)) for d in (-60, -30, 0, 30, 60)}
    page.fill("#code", next(c for c in ("000000", "111111", "222222") if c not in valid))
    page.click("button:has-text('Continue')")
    assert "Login failed" in page.locator(".flash-error").inner_text()
    page.fill("#code", totp(secret, datetime.now(UTC)))
    page.click("button:has-text('Continue')")
    assert page.url == server.url + "/active"
    assert page.locator(".me").inner_text() == "erin"


# --------------------------------------------------------------------------- phones

#: Every element's box, and the page's, against the viewport: an element pushed past the
#: right edge (a serial, a date, a long target) is what makes a phone scroll sideways, and
#: one inside an overflow:auto box would hide instead; the visually hidden labels are 1 px.
_OVERFLOW = """() => {
  const inner = window.innerWidth;
  const out = [];
  for (const e of document.querySelectorAll('body *')) {
    if (e.closest('.visually-hidden')) continue;
    const r = e.getBoundingClientRect();
    if (r.width > 0 && (r.right > inner + 0.5 || r.left < -0.5)) {
      out.push(e.tagName.toLowerCase() + '.' + e.className + ' ' + Math.round(r.right) + 'px: '
               + (e.textContent || '').trim().slice(0, 50));
    }
  }
  return {doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,
          inner: inner, wide: out.slice(0, 10)};
}"""


def assert_fits_a_phone(page: Any, what: str) -> None:
    m = page.evaluate(_OVERFLOW)
    assert m["inner"] == PHONE["width"], m
    assert m["doc"] <= m["inner"] and m["body"] <= m["inner"], (what, page.url, m)
    assert m["wide"] == [], (what, page.url, m["wide"])


def _form_post(s: Session, path: str, form: dict[str, str]) -> Any:
    r = s.page.request.post(path, form={"csrf_token": s.csrf_token(), **form}, max_redirects=0)
    assert r.status == 303, (path, r.status, r.text()[:500])
    return r


def test_no_page_scrolls_sideways_on_a_phone(browser: Any, server: Server) -> None:
    """At 390 px every page fits: login, the code page, Pending for me, a request (pending,
    with the requester's access and history, and issued, with its certificate), My
    requests, Active access, Decided by me, the revoke confirmation (and its refusal),
    and the error pages. Long names, a 19-digit serial, a long reason."""
    if LONG_USER not in server.people:
        server.add_person(LONG_USER, "--group", "engineers", password=PASSWORD[LONG_USER])
    max_api = server.api(LONG_USER)
    approver = Session(browser, server, DESKTOP)
    approver.login("bob", "/")
    # A live access with a 19-digit serial (serials are random below 2**63: most have 19).
    issued = serial = None
    for _ in range(10):
        req = max_api.submit(LONG_TARGET, "8h", LONG_REASON)
        _form_post(approver, f"/requests/{req['id']}/approve", {"comment": LONG_REASON})
        key = ed25519.Ed25519PrivateKey.generate()
        r = max_api.call(
            "POST",
            f"/v1/requests/{req['id']}/certificate",
            {"public_key": public_key_from_crypto(key.public_key()).openssh},
        )
        assert r.status_code == 200, r.text
        issued, serial = req, int(r.json()["serial"])
        if len(str(serial)) == 19:
            break
    assert issued is not None and serial is not None and len(str(serial)) == 19
    denied = max_api.submit(LONG_TARGET, "12h", LONG_REASON)
    _form_post(approver, f"/requests/{denied['id']}/deny", {"reason": LONG_REASON})
    pending = max_api.submit(LONG_TARGET, "8h", LONG_REASON)
    approver.close()

    s = Session(browser, server, PHONE)
    try:
        page = s.page
        page.goto("/login")
        assert_fits_a_phone(page, "login")
        s.login("bob", f"/requests/{pending['id']}")
        context = page.locator("section.context").inner_text()
        assert f"{LONG_USER} already holds valid access to" in context
        assert issued["id"] in context and denied["id"] in context
        assert_fits_a_phone(page, "request, pending")
        s.shot("web-request-context-phone.png")
        for path, what in (
            ("/", "pending"),
            (f"/requests/{issued['id']}", "request, issued"),
            ("/active", "active"),
            ("/decided", "decided"),
            ("/mine", "mine"),
            ("/requests/no-such-request", "error 404"),
            ("/decided?page=0", "error 400"),
        ):
            page.goto(path)
            assert_fits_a_phone(page, what)
            if what == "decided":
                assert "You denied" in page.locator("ul.cards").inner_text()
                s.shot("web-decided-phone.png")
        page.goto("/active")
        card = page.locator("ul.cards > li", has_text=str(serial))
        assert LONG_TARGET in card.inner_text() and "left" in card.inner_text()
        # The phone screenshot of Active access with a live access.
        card.scroll_into_view_if_needed()
        s.shot("web-active-phone.png")
        card.locator("a:has-text('Revoke')").click()
        page.wait_for_url(f"{server.url}/certificates/{serial}/revoke?next=/active")
        assert_fits_a_phone(page, "revoke confirmation")
        s.shot("web-revoke-phone.png")
        # Refused unconfirmed (the box's `required` taken out, as a forged form would):
        # asked again with a 400, nothing revoked.
        page.fill("#revoke-reason", LONG_REASON[:200])
        page.locator("#revoke-confirm").evaluate("e => e.removeAttribute('required')")
        with page.expect_response(lambda r: r.request.method == "POST") as resp:
            page.click("form.revoke-confirm button:has-text('Revoke')")
        assert resp.value.status == 400
        assert "Tick the box to confirm" in page.locator(".flash-error").inner_text()
        assert_fits_a_phone(page, "revoke refused")
        assert max_api.get(issued["id"])["state"] == "issued"
        page.click("button:has-text('Log out')")
        assert_fits_a_phone(page, "logged out")

        # The requester: My requests (who denied and why), his Active access, no Decided page.
        s.login(LONG_USER, "/mine")
        row = page.locator(f"table.list tr:has(a[href='/requests/{denied['id']}'])")
        assert "denied by bob" in row.inner_text().lower()
        assert_fits_a_phone(page, "mine, requester")
        s.shot("web-mine-phone.png")
        page.goto("/active")
        assert_fits_a_phone(page, "active, requester")
        page.goto("/decided")
        assert "Not allowed" in page.locator("h1").inner_text()
        assert_fits_a_phone(page, "error 403")
        page.click("button:has-text('Log out')")
    finally:
        s.close()

    # The one-time code page.
    if "tina" not in server.people:
        server.add_person(
            "tina", "--group", "approvers", "--role", "approver", password=PASSWORD["tina"]
        )
        server.admin("user", "totp", "tina")
    s = Session(browser, server, PHONE)
    try:
        page = s.page
        page.goto("/login")
        page.fill("#username", "tina")
        page.fill("#password", PASSWORD["tina"])
        page.click("button:has-text('Log in')")
        assert page.url == server.url + "/login/code"
        assert_fits_a_phone(page, "totp")
    finally:
        s.close()
