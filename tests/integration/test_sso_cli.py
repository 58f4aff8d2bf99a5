"""Engineers enrol a device key by signing in: ``jit-ssh sso login``, for real.

The installed ``jit-ssh`` in a subprocess with a fresh HOME and XDG directories and only
``JIT_SSH_SERVER`` set, against ``jit-ssh serve`` with an ``[sso]`` table naming the test
OpenID provider (oidc-provider on 127.0.0.1). Debian's Chromium, driven by Playwright, plays
the engineer's browser:

* loopback: ``jit-ssh sso login --no-browser`` prints jit-ssh's confirmation page (which
  names the key); Chromium presses "Continue", signs in on the provider's real login page,
  is sent to jit-ssh's ``/sso/callback`` and on to the CLI's loopback listener; the CLI
  finishes and its own key (made locally) is enrolled;
* device: ``jit-ssh sso login --headless`` prints a code and URL; Chromium completes it on
  the provider's ``/device`` pages while the CLI polls;
* an enrolment past its end is refused with ``enrolment_expired``, and ``jit-ssh login``
  signs in again by itself. ``enrolment_lifetime`` is at least 5 minutes and ``jit-ssh serve``
  has no test clock, so the test moves the enrolment's end (``ssh_keys.expires_at``) into the
  past in the server's own database, as the lifetime would after 5 minutes.

Without node, the locked npm package, Chromium or Playwright these tests skip and say why;
under CI=true they fail instead.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ca import parse_public_key
from tests.oidc_support import (
    OidcProvider,
    chromium,
    complete_device_flow,
    complete_provider_login,
    continue_cli_sign_in,
    new_context,
    provider_factory,
)

from .e2e_helpers import jit_ssh_command, run
from .sso_helpers import CLI_PAGE, CliRun, SsoServer, authorize_url, device_code, person_env
from .test_web_browser import PHONE, assert_fits_a_phone

pytestmark = pytest.mark.integration

POLICY = """\
[targets.demo]
principals = ["jit-demo@demo"]
login_users = ["jit-demo"]

[[rules]]
name = "engineers"
targets = ["demo"]
groups = ["engineers"]
max_duration = "1h"
default_duration = "30m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = true
pending_ttl = "30m"
claim_window = "10m"
"""


@dataclass
class Setup:
    server: SsoServer
    provider: OidcProvider
    root: Path


def _setup(prefix: str, sso: dict[str, Any]) -> Iterator[Setup]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    s = SsoServer(root / "server", jit_ssh_command(), policy_text=POLICY, sso=sso)
    try:
        with provider_factory(root / "oidc") as start:
            provider = s.start_with(start)
            yield Setup(s, provider, root)
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    yield from _setup("jitssh-sso-cli-", {})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = new_context(browser)
    yield context.new_page()
    context.close()


def _config_dir(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "jit-ssh"


def _whoami(server: SsoServer, env: dict[str, str]) -> Any:
    r = run([server.jit_ssh, "api", "get", "/v1/whoami"], env)
    assert r.returncode == 0, f"whoami failed: {r.stdout} {r.stderr}"
    return json.loads(r.stdout)


def _loopback_sign_in(
    server: SsoServer, provider: OidcProvider, page: Any, env: dict[str, str], login: str
) -> CliRun:
    """``jit-ssh sso login --no-browser`` with ``login`` signing in in Chromium; returns the
    finished run."""
    cli = CliRun(server.jit_ssh, ["sso", "login", "--no-browser"], env)
    try:
        page.goto(authorize_url(cli))
        complete_provider_login(page, login)
        # The browser went provider -> jit-ssh /sso/callback -> the CLI's loopback listener.
        assert page.url.startswith("http://127.0.0.1:"), page.url
        assert "/callback?" in page.url and "flow=" in page.url, page.url
        assert cli.finish() == 0, cli.output()
    finally:
        cli.stop()
    return cli


# --------------------------------------------------------------------------- loopback


def test_sso_login_in_the_browser_enrols_the_clients_own_key(setup: Setup, page: Any) -> None:
    server, provider = setup.server, setup.provider
    env = person_env(setup.root, "alice-loopback", server)
    assert server.user("alice") is None

    cli = _loopback_sign_in(server, provider, page, env, "alice")
    assert "alice" in cli.output()

    # The key was made locally, private to its owner; the config now names it and alice.
    key = _config_dir(env) / "sso_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" in key.read_text()
    config = tomllib.loads((_config_dir(env) / "config.toml").read_text())
    assert config["user"] == "alice"
    assert Path(config["identity"]) == key

    # Signed calls work with it, and the server says where the groups came from.
    who = _whoami(server, env)
    assert who["user"] == "alice"
    assert who["groups"] == ["engineers"]
    assert who["groups_source"] == "sso"
    assert who["enrolment_expires_at"].endswith("Z")

    # On the server: one SSO enrolment of that key, and the audit trail.
    (enrolled,) = server.audit_data("key.enrolled", user="alice")
    assert enrolled["source"] == "sso"
    assert enrolled["groups"] == ["engineers"]
    assert enrolled["fingerprint"].startswith("SHA256:")
    assert enrolled["fingerprint"] in server.admin("user", "enrolments", "alice").stdout
    assert server.audit_data("sso.signed_in", user="alice", kind="cli")


def test_the_confirmation_page_names_the_clients_key_and_fits_a_phone(
    setup: Setup, browser: Any
) -> None:
    """The URL ``jit-ssh sso login`` prints is jit-ssh's own page, naming the key the CLI
    made (its fingerprint and comment) before anything happens at the provider."""
    server = setup.server
    setup.provider.set_account(
        "carol",
        preferred_username="carol",
        email="carol@example.com",
        email_verified=True,
        groups=["engineers"],
    )
    env = person_env(setup.root, "carol-confirm", server)
    context = new_context(browser, viewport=PHONE)
    cli = CliRun(server.jit_ssh, ["sso", "login", "--no-browser"], env)
    try:
        url = authorize_url(cli)
        assert url.startswith(server.url + "/sso/cli/"), url
        public = (_config_dir(env) / "sso_ed25519.pub").read_text()
        key = parse_public_key(public.strip(), field="public_key")
        page = context.new_page()
        page.goto(url)
        assert_fits_a_phone(page, "the CLI's confirmation page")
        text = continue_cli_sign_in(page)
        assert key.fingerprint in text, text
        assert key.comment in text, text
        assert "Sign in with" not in text  # the provider's display name follows "Continue"
        complete_provider_login(page, "carol")
        assert page.url.startswith("http://127.0.0.1:"), page.url
        assert cli.finish() == 0, cli.output()
    finally:
        cli.stop()
        context.close()
    (enrolled,) = server.audit_data("key.enrolled", user="carol")
    assert enrolled["fingerprint"] == key.fingerprint


def test_a_second_browser_cannot_continue_a_cli_sign_in(setup: Setup, browser: Any) -> None:
    """The printed link opened in another browser (read off ``ps``) after the person's own
    continued: that browser is told so and gets nowhere near the provider."""
    server = setup.server
    setup.provider.set_account(
        "dave",
        preferred_username="dave",
        email="dave@example.com",
        email_verified=True,
        groups=["engineers"],
    )
    env = person_env(setup.root, "dave-second", server)
    mine, other = new_context(browser), new_context(browser)
    cli = CliRun(server.jit_ssh, ["sso", "login", "--no-browser"], env)
    try:
        url = authorize_url(cli)
        late = other.new_page()
        late.goto(url)  # both have the page open
        page = mine.new_page()
        page.goto(url)
        complete_provider_login(page, "dave")
        assert cli.finish() == 0, cli.output()
        with late.expect_navigation():
            late.locator("button.sso-continue").click()
        body = late.locator("main").inner_text()
        assert "already used in another browser" in body, body
        assert "/sso/cli/" in late.url, late.url
    finally:
        cli.stop()
        mine.close()
        other.close()


def test_the_loopback_page_tells_the_person_to_go_back_to_the_terminal(
    setup: Setup, page: Any
) -> None:
    server, provider = setup.server, setup.provider
    env = person_env(setup.root, "bob-loopback", server)
    _loopback_sign_in(server, provider, page, env, "bob")
    body = page.inner_text("body").lower()
    assert "terminal" in body or "close" in body, body
    assert _whoami(server, env)["groups"] == ["approvers"]


def test_a_refused_identity_is_reported_by_the_cli_and_enrols_nothing(
    setup: Setup, page: Any
) -> None:
    server, provider = setup.server, setup.provider
    # A user name claim that is no valid jit-ssh user name: the server refuses the sign-in.
    provider.set_account(
        "mallory",
        preferred_username="mallory; rm -rf /",
        email="mallory@example.com",
        email_verified=True,
        groups=["engineers"],
    )
    env = person_env(setup.root, "mallory", server)
    cli = CliRun(server.jit_ssh, ["sso", "login", "--no-browser"], env)
    try:
        page.goto(authorize_url(cli))
        complete_provider_login(page, "mallory")
        assert cli.finish() != 0, cli.output()
    finally:
        cli.stop()
    assert "sso_bad_claim" in cli.output() or "preferred_username" in cli.output()
    config = _config_dir(env) / "config.toml"
    assert not config.exists() or "user" not in tomllib.loads(config.read_text())
    assert not server.audit_data("key.enrolled", user="mallory; rm -rf /")


def test_a_group_removed_at_the_provider_is_gone_at_the_next_enrolment(
    setup: Setup, browser: Any
) -> None:
    server, provider = setup.server, setup.provider
    provider.set_account(
        "mike", email="mike@example.com", email_verified=True, groups=["engineers", "oncall"]
    )
    env = person_env(setup.root, "mike", server)

    def sign_in() -> None:
        context = new_context(browser)  # no provider session left: the login page each time
        try:
            _loopback_sign_in(server, provider, context.new_page(), env, "mike")
        finally:
            context.close()

    sign_in()
    assert _whoami(server, env)["groups"] == ["engineers", "oncall"]
    changes = len(server.audit_data("user.groups_changed", user="mike"))

    provider.remove_group("mike", "oncall")
    sign_in()
    # The second sign-in (the same key, enrolled again) carries the provider's groups of now.
    assert _whoami(server, env)["groups"] == ["engineers"]
    changed = server.audit_data("user.groups_changed", user="mike")
    assert len(changed) == changes + 1
    assert changed[-1]["before"] == ["engineers", "oncall"]
    assert changed[-1]["after"] == ["engineers"]
    enrolled = server.audit_data("key.enrolled", user="mike")
    assert [e["groups"] for e in enrolled] == [["engineers", "oncall"], ["engineers"]]
    assert enrolled[0]["fingerprint"] == enrolled[1]["fingerprint"]


def test_a_revoked_enrolment_is_refused_at_once(setup: Setup, page: Any) -> None:
    server, provider = setup.server, setup.provider
    provider.set_account(
        "lena", email="lena@example.com", email_verified=True, groups=["engineers"]
    )
    env = person_env(setup.root, "lena", server)
    _loopback_sign_in(server, provider, page, env, "lena")
    (enrolled,) = server.audit_data("key.enrolled", user="lena")
    fingerprint = enrolled["fingerprint"]
    listed = json.loads(server.admin("user", "enrolments", "lena", "--json").stdout)
    assert fingerprint in json.dumps(listed)

    server.admin("user", "enrolments", "lena", "--revoke", fingerprint)
    r = run([server.jit_ssh, "api", "get", "/v1/whoami"], env)
    assert r.returncode != 0, r.stdout
    assert server.audit_data("key.removed", user="lena")
    assert "unknown_key" in r.stderr, r.stderr
    (row,) = [
        line
        for line in server.admin("user", "enrolments", "lena").stdout.splitlines()
        if line.startswith(fingerprint)
    ]
    assert "revoked" in row.split()


def test_a_sign_in_aborted_on_the_device_page_fails_the_cli(setup: Setup, page: Any) -> None:
    server = setup.server
    env = person_env(setup.root, "alice-abort", server)
    cli = CliRun(server.jit_ssh, ["sso", "login", "--headless"], env)
    try:
        uri, code = device_code(cli)
        page.goto(uri)
        page.fill('input[name="user_code"]', code)
        with page.expect_navigation():
            page.click('button[form="op.deviceInputForm"]')
        # "[ Abort ]" on the provider's confirmation page.
        with page.expect_navigation():
            page.click('button[name="abort"]')
        assert cli.finish() == 1, cli.output()
    finally:
        cli.stop()
    assert "denied" in cli.output().lower() or "sso_" in cli.output(), cli.output()
    assert not (_config_dir(env) / "config.toml").exists() or "user" not in tomllib.loads(
        (_config_dir(env) / "config.toml").read_text()
    )


# --------------------------------------------------------------------------- device flow


def test_sso_login_headless_uses_the_device_flow(setup: Setup, page: Any) -> None:
    server, provider = setup.server, setup.provider
    provider.set_account(
        "frank", email="frank@example.com", email_verified=True, groups=["engineers", "oncall"]
    )
    env = person_env(setup.root, "frank-device", server)
    cli = CliRun(server.jit_ssh, ["sso", "login", "--headless"], env)
    try:
        uri, code = device_code(cli)
        assert uri.startswith(provider.issuer + "/device")
        # The CLI polls while the person signs in on another device.
        assert cli.proc.poll() is None, cli.output()
        complete_device_flow(page, uri, code, "frank")
        assert cli.finish() == 0, cli.output()
    finally:
        cli.stop()
    who = _whoami(server, env)
    assert who["user"] == "frank"
    assert sorted(who["groups"]) == ["engineers", "oncall"]
    assert server.audit_data("sso.signed_in", user="frank", kind="device")
    (enrolled,) = server.audit_data("key.enrolled", user="frank")
    assert enrolled["source"] == "sso"


# --------------------------------------------------------------------------- expiry


def _end_enrolments(server: SsoServer, user: str) -> None:
    """Move ``user``'s SSO enrolments' end a second into the past, in the server's database."""
    from sqlalchemy import create_engine, select, update

    from server.models import SshKey, User

    engine = create_engine(f"sqlite:///{server.data_dir / 'jit-ssh.sqlite3'}")
    try:
        with engine.begin() as conn:
            uid = conn.execute(select(User.id).where(User.name == user)).scalar_one()
            changed = conn.execute(
                update(SshKey)
                .where(SshKey.user_id == uid, SshKey.expires_at.is_not(None))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            ).rowcount
        assert changed >= 1, f"{user} has no SSO enrolment"
    finally:
        engine.dispose()


def test_an_expired_enrolment_is_refused_and_login_signs_in_again(setup: Setup, page: Any) -> None:
    server, provider = setup.server, setup.provider
    provider.set_account(
        "gina", email="gina@example.com", email_verified=True, groups=["engineers"]
    )
    env = person_env(setup.root, "gina", server)
    _loopback_sign_in(server, provider, page, env, "gina")
    expires = _whoami(server, env)["enrolment_expires_at"]

    _end_enrolments(server, "gina")
    r = run([server.jit_ssh, "api", "get", "/v1/whoami"], env)
    assert r.returncode != 0
    assert "enrolment_expired" in r.stderr + r.stdout, r.stderr
    assert "jit-ssh sso login" in r.stderr + r.stdout, r.stderr

    # `jit-ssh login` sees the ended enrolment and signs in again before asking (with no
    # DISPLAY, by the device flow; a browser URL is followed as well).
    page.context.clear_cookies()  # a real person's provider session may have ended too
    cli = CliRun(
        server.jit_ssh,
        ["login", "demo", "--for", "30m", "--reason", "INC-7: after re-enrolment", "--no-wait"],
        env,
    )
    try:
        signed = cli.wait_for(rf"(?P<url>{CLI_PAGE})|\b(?P<code>[A-Z0-9]{{4}}-[A-Z0-9]{{4}})\b")
        if signed.group("url"):
            page.goto(signed.group("url"))
            complete_provider_login(page, "gina")
        else:
            uri, code = device_code(cli)
            complete_device_flow(page, uri, code, "gina")
        assert cli.finish() == 0, cli.output()
    finally:
        cli.stop()
    assert "Request " in cli.output()
    # A second enrolment, ending later than the first.
    enrolments = server.audit_data("key.enrolled", user="gina")
    assert len(enrolments) == 2
    assert enrolments[1]["expires_at"] > expires
