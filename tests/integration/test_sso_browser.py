"""Approvers sign in to the web form with single sign-on, in a real browser.

``jit-ssh serve`` with an ``[sso]`` table naming the test OpenID provider
(``tests/oidc/provider.mjs``, oidc-provider on 127.0.0.1) and ``password_login = false``
with one break-glass admin. Debian's Chromium, driven by Playwright, goes from jit-ssh's
``/login`` through "Sign in with Test provider" and the provider's real login page back to
jit-ssh, signed in. Checked on the server: the user created on first sign-in, groups replaced
from the claim with ``user.groups_changed`` in the audit log, a group removed at the provider
gone at the next sign-in, a replayed callback refused, and local passwords refused to all but
the break-glass admin.

Without node, the locked npm package, Chromium or Playwright these tests skip and say why;
under CI=true they fail instead.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.oidc_support import (
    OidcProvider,
    chromium,
    complete_provider_login,
    new_context,
    provider_factory,
)

from .e2e_helpers import jit_ssh_command, run
from .sso_helpers import DISPLAY_NAME, SsoServer, sign_in_on_the_web

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
BREAK_GLASS = "root-admin"
BREAK_GLASS_PASSWORD = "root-admin's long break-glass password"
BOB_PASSWORD = "bob's long local password"


@pytest.fixture(scope="module")
def server() -> Iterator[SsoServer]:
    root = Path(tempfile.mkdtemp(prefix="jitssh-sso-web-"))
    s = SsoServer(
        root / "server",
        jit_ssh_command(),
        policy_text=POLICY,
        sso={
            "password_login": False,
            "break_glass_admins": [BREAK_GLASS],
            "allowed_email_domains": ["example.com"],
            # Moving local users to SSO: bob below is linked at his first sign-in.
            "link_by_name": True,
        },
    )
    try:
        with provider_factory(root / "oidc") as start:
            s.start_with(start)
            # bob exists before SSO, with a local group and a local password (to be linked,
            # his groups replaced, his password refused); root-admin may still use one.
            s.admin("user", "add", "bob", "--role", "approver", "--group", "legacy-approvers")
            s.set_password("bob", BOB_PASSWORD)
            s.admin("user", "add", BREAK_GLASS, "--role", "admin", "--role", "approver")
            s.set_password(BREAK_GLASS, BREAK_GLASS_PASSWORD)
            yield s
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def provider(server: SsoServer) -> OidcProvider:
    assert server.provider is not None
    return server.provider


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh context: no cookie of jit-ssh or of the provider from an earlier test."""
    context = new_context(browser)
    yield context.new_page()
    context.close()


def _groups(server: SsoServer, name: str) -> list[str]:
    user = server.user(name)
    assert user is not None, f"{name} is not a jit-ssh user"
    return sorted(user["groups"])


# --------------------------------------------------------------------------- the login page


def test_the_login_page_offers_sso_and_no_password_form(server: SsoServer, page: Any) -> None:
    page.goto(server.url + "/login")
    sso = page.get_by_role("button", name=f"Sign in with {DISPLAY_NAME}").or_(
        page.get_by_role("link", name=f"Sign in with {DISPLAY_NAME}")
    )
    assert sso.count() == 1
    # password_login = false: no password field for anyone to type into.
    assert page.locator('input[type="password"]').count() == 0


# --------------------------------------------------------------------------- sign-in


def test_first_sign_in_creates_the_user_with_the_provider_groups(
    server: SsoServer, provider: OidcProvider, page: Any
) -> None:
    provider.set_account(
        "carol", email="carol@example.com", email_verified=True, groups=["approvers"]
    )
    assert server.user("carol") is None

    sign_in_on_the_web(page, server, "carol")

    assert _groups(server, "carol") == ["approvers"]
    carol = server.user("carol")
    assert carol is not None and carol["groups_source"] == "sso"
    assert carol["email"] == "carol@example.com"
    assert carol["roles"] == ["requester"]  # as `admin user add` gives; approver_groups unset
    (created,) = server.audit_data("user.created", user="carol")
    assert created["source"] == "sso"
    signed_in = server.audit_data("sso.signed_in", user="carol")
    assert signed_in and signed_in[-1]["kind"] == "web"
    assert signed_in[-1]["issuer"] == provider.issuer
    assert signed_in[-1]["groups"] == ["approvers"]
    # A second sign-in finds the same user: no second user.created.
    page.context.clear_cookies()
    sign_in_on_the_web(page, server, "carol")
    assert len(server.audit_data("user.created", user="carol")) == 1


def test_sign_in_links_an_existing_user_and_replaces_the_local_groups(
    server: SsoServer, provider: OidcProvider, page: Any
) -> None:
    assert _groups(server, "bob") == ["legacy-approvers"]

    sign_in_on_the_web(page, server, "bob")

    assert server.audit_data("user.sso_linked", user="bob")
    assert _groups(server, "bob") == ["approvers"]
    assert server.user("bob")["groups_source"] == "sso"  # type: ignore[index]
    (changed,) = server.audit_data("user.groups_changed", user="bob")
    assert changed["before"] == ["legacy-approvers"]
    assert changed["after"] == ["approvers"]
    assert changed["source"] == "sso"
    assert changed["issuer"] == provider.issuer
    # bob keeps his approver role: the pending list is his home page.
    assert page.get_by_role("link", name="Pending for me").count() == 1


def test_a_group_removed_at_the_provider_is_gone_at_the_next_sign_in(
    server: SsoServer, provider: OidcProvider, browser: Any
) -> None:
    provider.set_account(
        "dave", email="dave@example.com", email_verified=True, groups=["approvers", "engineers"]
    )
    first = new_context(browser)
    try:
        sign_in_on_the_web(first.new_page(), server, "dave")
    finally:
        first.close()
    assert _groups(server, "dave") == ["approvers", "engineers"]
    before = len(server.audit_data("user.groups_changed", user="dave"))

    provider.remove_group("dave", "approvers")
    # Nothing changes at jit-ssh until dave signs in again...
    assert _groups(server, "dave") == ["approvers", "engineers"]
    second = new_context(browser)
    try:
        sign_in_on_the_web(second.new_page(), server, "dave")
    finally:
        second.close()
    # ... then the claim wins, and the audit log says what changed.
    assert _groups(server, "dave") == ["engineers"]
    changes = server.audit_data("user.groups_changed", user="dave")
    assert len(changes) == before + 1
    assert changes[-1]["before"] == ["approvers", "engineers"]
    assert changes[-1]["after"] == ["engineers"]
    assert changes[-1]["source"] == "sso"


def test_an_unchanged_sign_in_records_no_group_change(
    server: SsoServer, provider: OidcProvider, browser: Any
) -> None:
    provider.set_account("erin", email="erin@example.com", email_verified=True, groups=["x1"])
    counts = []
    for _ in range(2):
        context = new_context(browser)
        try:
            sign_in_on_the_web(context.new_page(), server, "erin")
        finally:
            context.close()
        counts.append(len(server.audit_data("user.groups_changed", user="erin")))
    # Both sign-ins are recorded; the second one changed no group, so it logged no change.
    assert len(server.audit_data("sso.signed_in", user="erin")) == 2
    assert counts[1] == counts[0]
    assert _groups(server, "erin") == ["x1"]


def test_a_replayed_callback_is_refused(server: SsoServer, page: Any) -> None:
    callbacks: list[str] = []
    page.on(
        "request",
        lambda r: callbacks.append(r.url) if r.url.startswith(server.redirect_uri + "?") else None,
    )
    sign_in_on_the_web(page, server, "bob")
    assert len(callbacks) == 1
    # The same code and state again, even from the same browser: the flow is used up.
    response = page.goto(callbacks[0])
    assert response is not None and response.status == 400
    assert "no longer valid" in page.inner_text("main")
    refused = server.audit_data("sso.refused", code="sso_flow_unknown")
    assert refused


def test_a_callback_with_a_made_up_state_is_refused(server: SsoServer, page: Any) -> None:
    response = page.goto(f"{server.redirect_uri}?code=made-up&state={'A' * 32}")
    assert response is not None and response.status == 400
    assert page.locator('input[type="password"]').count() == 0
    # Not signed in.
    assert page.locator("header .me").count() == 0


def test_an_unknown_account_at_the_provider_never_reaches_jit_ssh(
    server: SsoServer, page: Any
) -> None:
    from tests.oidc_support import ProviderLoginRefused

    page.goto(server.url + "/login")
    page.get_by_role("button", name=f"Sign in with {DISPLAY_NAME}").or_(
        page.get_by_role("link", name=f"Sign in with {DISPLAY_NAME}")
    ).click()
    with pytest.raises(ProviderLoginRefused):
        complete_provider_login(page, "mallory")
    assert server.user("mallory") is None


# --------------------------------------------------------------------------- refusals


def _refused_sign_in(page: Any, server: SsoServer, login: str) -> tuple[int, str]:
    """Start a web sign-in, pass the provider as ``login``: (the status of jit-ssh's answer at
    /sso/callback, the text of its page). The browser must not end up signed in."""
    statuses: list[int] = []
    page.on(
        "response",
        lambda r: statuses.append(r.status) if r.url.startswith(server.redirect_uri) else None,
    )
    page.goto(server.url + "/login")
    page.get_by_role("link", name=f"Sign in with {DISPLAY_NAME}").or_(
        page.get_by_role("button", name=f"Sign in with {DISPLAY_NAME}")
    ).click()
    complete_provider_login(page, login)
    page.wait_for_load_state()
    assert statuses, f"the browser never came back to {server.redirect_uri}: {page.url}"
    assert page.locator("header .me").count() == 0, "signed in after a refusal"
    return statuses[-1], page.inner_text("main")


def test_an_unverified_email_is_refused_where_domains_are_restricted(
    server: SsoServer, provider: OidcProvider, page: Any
) -> None:
    provider.set_account(
        "henry", email="henry@example.com", email_verified=False, groups=["approvers"]
    )
    status, text = _refused_sign_in(page, server, "henry")
    assert status == 401, text
    assert "verified" in text.lower(), text
    assert server.user("henry") is None
    assert server.audit_data("sso.refused", code="sso_email_unverified")


def test_an_email_outside_the_allowed_domains_is_refused(
    server: SsoServer, provider: OidcProvider, page: Any
) -> None:
    provider.set_account(
        "ivan", email="ivan@elsewhere.example.org", email_verified=True, groups=["approvers"]
    )
    status, text = _refused_sign_in(page, server, "ivan")
    assert status == 403, text
    assert server.user("ivan") is None
    assert server.audit_data("sso.refused", code="sso_domain_refused")


def test_a_name_held_by_another_identity_is_refused(
    server: SsoServer, provider: OidcProvider, browser: Any, page: Any
) -> None:
    # bob's name, linked to the provider's subject "bob", claimed by another subject.
    context = new_context(browser)
    try:
        sign_in_on_the_web(context.new_page(), server, "bob")
    finally:
        context.close()
    provider.set_account(
        "bob-impostor",
        preferred_username="bob",
        email="bob@example.com",
        email_verified=True,
        groups=["approvers", "admins"],
    )
    status, _text = _refused_sign_in(page, server, "bob-impostor")
    assert status == 401
    assert server.audit_data("sso.refused", code="sso_bad_claim")
    assert _groups(server, "bob") == ["approvers"]  # nothing of the impostor's claim


def test_a_disabled_user_cannot_sign_in(
    server: SsoServer, provider: OidcProvider, browser: Any, page: Any
) -> None:
    provider.set_account("judy", email="judy@example.com", email_verified=True, groups=["x2"])
    context = new_context(browser)
    try:
        sign_in_on_the_web(context.new_page(), server, "judy")
    finally:
        context.close()
    server.admin("user", "disable", "judy")
    status, _text = _refused_sign_in(page, server, "judy")
    assert status in (401, 403)
    assert server.audit_data("sso.refused", code="user_disabled")


def test_a_totp_code_is_still_asked_after_sso(
    server: SsoServer, provider: OidcProvider, browser: Any, page: Any
) -> None:
    from datetime import UTC, datetime

    from server.totp import totp

    provider.set_account("kim", email="kim@example.com", email_verified=True, groups=["approvers"])
    first = new_context(browser)
    try:
        sign_in_on_the_web(first.new_page(), server, "kim")
    finally:
        first.close()
    out = server.admin("user", "totp", "kim").stdout
    secret = re.search(r"secret: (\S+)", out).group(1)  # type: ignore[union-attr]

    page.goto(server.url + "/mine")
    page.get_by_role("link", name=f"Sign in with {DISPLAY_NAME}").or_(
        page.get_by_role("button", name=f"Sign in with {DISPLAY_NAME}")
    ).click()
    complete_provider_login(page, "kim")
    page.wait_for_load_state()
    # Signing in at the provider is not enough: the code comes next.
    assert page.url == server.url + "/login/code", page.url
    assert page.locator("header .me").count() == 0
    page.fill("#code", totp(secret, datetime.now(UTC)))
    page.click("button:has-text('Continue')")
    assert page.url == server.url + "/mine", page.url
    assert page.locator("header .me").inner_text().strip() == "kim"


# --------------------------------------------------------------------------- passwords


def _password_login(page: Any, server: SsoServer, name: str, password: str) -> int:
    """The break-glass form, reached from /login's link, filled and sent: the HTTP status of
    the answer to the POST (303 when it signed in and redirected)."""
    page.goto(server.url + "/login")
    page.get_by_role("link", name="Break-glass admin login").click()
    page.wait_for_load_state()
    page.fill("#username", name)
    page.fill("#password", password)
    with page.expect_navigation() as navigation:
        page.click("button:has-text('Log in')")
    response = navigation.value
    assert response is not None
    # The browser follows a redirect by itself: the POST's own answer is then the request
    # the final page was redirected from.
    posted = response.request.redirected_from
    if posted is not None:
        answer = posted.response()
        assert answer is not None
        return int(answer.status)
    return int(response.status)


def test_a_local_password_is_refused_when_password_login_is_off(
    server: SsoServer, page: Any
) -> None:
    status = _password_login(page, server, "bob", BOB_PASSWORD)
    assert status == 403
    assert "password" in page.inner_text("main").lower()
    page.goto(server.url + "/mine")
    assert "/login" in page.url  # still not signed in


def test_the_break_glass_admin_may_still_use_a_password(server: SsoServer, page: Any) -> None:
    # A wrong password is still wrong for the break-glass admin...
    assert _password_login(page, server, BREAK_GLASS, "not it") == 401
    # ... and the right one signs in.
    assert _password_login(page, server, BREAK_GLASS, BREAK_GLASS_PASSWORD) == 303
    assert page.locator("header .me").inner_text().strip() == BREAK_GLASS


def test_the_audit_log_with_the_sign_ins_still_verifies(server: SsoServer) -> None:
    """Every event the sign-ins wrote is in the hash chain: `jit-ssh audit verify` passes."""
    assert server.audit("sso.signed_in")
    r = run([server.jit_ssh, "audit", "verify"], server.env())
    assert r.returncode == 0, r.stdout + r.stderr
