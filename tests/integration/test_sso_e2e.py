"""Single sign-on, the whole way: no enrolled key, no password, and real sshd at the end.

Real processes only: the test OpenID provider (oidc-provider on 127.0.0.1), ``jit-ssh serve``
with an ``[sso]`` table naming it, a throwaway sshd set up by ``jit-ssh host setup``, the
installed ``jit-ssh`` with a fresh HOME, and Debian's Chromium driven by Playwright.

1. alice, known only to the provider, runs ``jit-ssh login demo --for 30m --reason ...``: the
   server has SSO and her key is unknown, so the CLI signs her in first, in the browser it
   opens (``$BROWSER``; Chromium follows the URL to jit-ssh's confirmation page and presses
   "Continue"), catching the redirect on its loopback port; then it submits and waits.
2. bob, an approver whose groups come from the provider, opens the approval link, signs in
   with SSO (no password), sees which groups the decision used and where they came from,
   and approves.
3. alice's login gets the certificate, and sshd accepts it.

Without sshd, root, node, Chromium or Playwright this skips and says why; under CI=true it
fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ca import parse_certificate
from tests.oidc_support import (
    OidcProvider,
    chromium,
    complete_provider_login,
    new_context,
    provider_factory,
)

from .conftest import LOGIN_USER, Tools
from .e2e_helpers import HostSshd, jit_ssh_command, run
from .sso_helpers import CliRun, SsoServer, browser_recorder, person_env, sign_in_on_the_web

pytestmark = pytest.mark.integration

TARGET = "demo"
PRINCIPAL = f"{LOGIN_USER}@{TARGET}"
POLICY = f"""\
[targets.{TARGET}]
principals = ["{PRINCIPAL}"]
login_users = ["{LOGIN_USER}"]

[[rules]]
name = "engineers"
targets = ["{TARGET}"]
groups = ["engineers"]
max_duration = "1h"
default_duration = "30m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = true
pending_ttl = "30m"
claim_window = "10m"
"""


def _readme_sso_table() -> dict[str, Any]:
    """The ``[sso]`` table of the README's "Try it locally", as a newcomer saves it, without
    the keys that name the README's provider (this test starts its own) and its button."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    block = re.search(r"```toml\n(# sso-demo\.toml.*?)```", readme, re.S)
    assert block, "the README's sso-demo.toml block is gone"
    table = dict(tomllib.loads(block.group(1))["sso"])
    for key in ("issuer", "client_secret_file", "display_name"):
        table.pop(key)
    assert table.get("approver_groups") == ["approvers"], table
    return table


@dataclass
class World:
    server: SsoServer
    provider: OidcProvider
    host: HostSshd
    root: Path


@pytest.fixture(scope="module")
def world(openssh: Tools, login_user: str) -> Iterator[World]:
    # mkdtemp under /tmp, 0755: the login user must read the principals host setup writes.
    root = Path(tempfile.mkdtemp(prefix="jitssh-sso-e2e-"))
    os.chmod(root, 0o755)
    # The README's own [sso] table (its provider address and secret file swapped for this
    # test's), and no local passwords: bob's approver role comes from approver_groups.
    server = SsoServer(
        root / "server",
        jit_ssh_command(),
        policy_text=POLICY,
        sso={**_readme_sso_table(), "password_login": False},
    )
    host = HostSshd(root / "host", login_user, openssh)
    host.dir.mkdir(parents=True)
    try:
        with provider_factory(root / "oidc") as start:
            provider = server.start_with(start)
            # Neither alice nor bob is a jit-ssh user yet: who they are, their groups and
            # bob's approver role come from the provider at sign-in.
            host.prepare()
            host.setup_from(server, target=TARGET)
            host.start()
            yield World(server, provider, host, root)
    finally:
        host.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _provider_url(cli: CliRun, opened: Path, server: SsoServer) -> str:
    """The sign-in URL: the one the CLI opened in the "browser" (our $BROWSER recorder),
    else the one it printed: jit-ssh's confirmation page, which continues to the provider."""

    page = re.compile(rf"{re.escape(server.url)}/sso/cli/[A-Za-z0-9_-]{{43}}")

    def found() -> str | None:
        if opened.exists():
            for line in opened.read_text().splitlines():
                if page.fullmatch(line.strip()):
                    return line.strip()
        m = page.search("".join(cli.stdout + cli.stderr))
        return m.group(0) if m else None

    deadline = time.monotonic() + 30
    while (url := found()) is None:
        if cli.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"jit-ssh login opened no provider sign-in URL (exit {cli.proc.poll()});\n"
                f"{cli.output()}",
                pytrace=False,
            )
        time.sleep(0.1)
    return url


def test_no_key_sign_in_approve_with_sso_and_sshd_accepts_the_certificate(
    world: World, browser: Any
) -> None:
    server, host = world.server, world.host
    assert server.user("alice") is None

    # alice has a display (so the loopback flow, not the device flow) and a "browser" that
    # records what the CLI opens.
    browser_cmd, opened = browser_recorder(world.root / "alice-browser")
    env = person_env(world.root, "alice", server, DISPLAY=":99", BROWSER=browser_cmd)
    login = CliRun(
        server.jit_ssh,
        ["login", TARGET, "--for", "30m", "--reason", "INC-4242: replica lag", "--poll", "0.3"],
        env,
    )
    alice_ctx = new_context(browser)
    bob_ctx = new_context(browser)
    try:
        # 1. alice signs in at the provider; the CLI catches the redirect and enrols its key.
        alice_page = alice_ctx.new_page()
        alice_page.goto(_provider_url(login, opened, server))
        # Through the provider's real login and consent pages.
        assert complete_provider_login(alice_page, "alice"), "the consent page was not shown"
        assert alice_page.url.startswith("http://127.0.0.1:"), alice_page.url
        assert "/callback?" in alice_page.url, alice_page.url
        approve_url = login.wait_for(r"Approve at: (\S+)").group(1)
        request_id = approve_url.rstrip("/").rsplit("/", 1)[-1]
        assert login.proc.poll() is None, login.output()
        user = server.user("alice")
        assert user is not None and user["groups"] == ["engineers"]
        (enrolled,) = server.audit_data("key.enrolled", user="alice")
        assert enrolled["source"] == "sso"

        # 2. bob opens the link, signs in with SSO (password_login is off), and approves.
        bob_page = bob_ctx.new_page()
        path = approve_url.removeprefix(server.url)
        assert path.startswith("/requests/"), approve_url
        assert sign_in_on_the_web(bob_page, server, "bob", path=path), "no consent page"
        details = bob_page.locator("main").inner_text()
        assert "engineers" in details
        assert "provider" in details.lower(), details  # where alice's groups came from
        bob_page.click("button.approve-button")
        assert "Approved" in bob_page.locator(".flash-ok").inner_text()

        # 3. alice's login gets its certificate; sshd accepts it.
        assert login.finish() == 0, login.output()
        assert f"Access granted to {TARGET}" in "".join(login.stdout)
    finally:
        login.stop()
        alice_ctx.close()
        bob_ctx.close()

    keys = Path(env["HOME"]) / ".ssh" / "jit-ssh"
    key, cert_path = keys / f"{TARGET}+{request_id}", keys / f"{TARGET}+{request_id}-cert.pub"
    cert = parse_certificate(cert_path.read_text())
    assert cert.principals == (PRINCIPAL,)
    assert cert.key_id == f"jit-ssh:req={request_id}:user=alice:by=bob"
    assert (cert.valid_before - cert.valid_after).total_seconds() == 30 * 60

    mark = host.log_mark()
    ran = host.ssh_with(key, cert_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == LOGIN_USER
    host.wait_for_log(
        rf"Accepted publickey for {LOGIN_USER} from 127\.0\.0\.1 port \d+ ssh2: ED25519-CERT \S+ "
        rf"ID {re.escape(cert.key_id)} \(serial {cert.serial}\)",
        mark,
    )
    # The request records the groups its decision used, and that they came from the provider.
    shown = run([server.jit_ssh, "api", "get", f"/v1/requests/{request_id}"], env)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["groups_used"] == ["engineers"]
    assert record["groups_source"] == "sso"
    # The audit log has both sign-ins.
    assert server.audit_data("sso.signed_in", user="alice", kind="cli")
    assert server.audit_data("sso.signed_in", user="bob", kind="web")
