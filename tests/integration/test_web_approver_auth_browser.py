"""A rule's ``approver_auth = "totp"`` on the request page, in Debian's Chromium (Playwright)
against ``jit-ssh serve``: at a phone's width (390 px) the page says what the rule needs,
why this session does not qualify and links to signing in again, the buttons greyed out,
without scrolling sideways; an approver who signed in with a code approves with a click.

The conventions (server, people, sessions, the sideways-scroll check) are those of
tests/integration/test_web_browser.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from server.totp import totp

from .e2e_helpers import end_process, jit_ssh_command
from .test_web_browser import (
    DESKTOP,
    LONG_REASON,
    PASSWORD,
    PHONE,
    Server,
    Session,
    assert_fits_a_phone,
    browser,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.integration

TARGET = "payments-ledger-vault-eu-west-1"

POLICY = f"""\
[targets."{TARGET}"]
principals = ["deploy@{TARGET}"]
login_users = ["deploy"]

[[rules]]
name = "ledger-vault-totp"
description = "The ledger's key vault: approvers must have signed in with a one-time code."
targets = ["{TARGET}"]
groups = ["engineers"]
max_duration = "1h"
default_duration = "30m"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = true
pending_ttl = "30m"
claim_window = "10m"
approver_auth = "totp"
"""


class TotpServer(Server):
    policy_text = POLICY


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = TotpServer(tmp_path_factory.mktemp("web-approver-auth"), jit_ssh_command())
    s.policy.write_text(POLICY)
    s.add_person("alice", "--group", "engineers")
    for name in ("tina", "erin"):
        s.add_person(
            name,
            "--group",
            "approvers",
            "--role",
            "requester",
            "--role",
            "approver",
            password=PASSWORD[name],
        )
    s.start()
    try:
        yield s
    finally:
        end_process(s.proc, group=True)


def test_the_totp_notice_and_the_sign_in_again_link_fit_a_phone(
    browser: Any,
    server: Server,
) -> None:
    req = server.api("alice").submit(TARGET, "30m", LONG_REASON)
    s = Session(browser, server, PHONE)
    try:
        page = s.page
        s.login("tina", f"/requests/{req['id']}")
        notice = page.locator("p.approver-auth")
        text = notice.inner_text()
        assert "This rule needs approvals signed in with a TOTP code." in text
        assert "Your account has no TOTP code set up" in text
        link = notice.locator("a:has-text('Sign in again')")
        assert link.get_attribute("href") == f"/login?next=/requests/{req['id']}&again=1"
        assert notice.is_visible() and link.is_visible()
        assert page.locator("button.approve-button").is_disabled()
        assert page.locator("button.deny-button").is_disabled()
        assert_fits_a_phone(page, "request, approver_auth not met")
        s.shot("web-request-approver-auth-phone.png")
        # The link is the login form again, though tina is signed in.
        link.click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == "Sign in again"
        assert_fits_a_phone(page, "sign in again")
    finally:
        s.close()
    assert server.api("alice").get(req["id"])["state"] == "pending"


def test_an_approver_signed_in_with_a_code_approves(
    browser: Any,
    server: Server,
) -> None:
    out = server.admin("user", "totp", "erin")
    secret = re.search(r"secret: (\S+)", out).group(1)  # type: ignore[union-attr]
    req = server.api("alice").submit(TARGET, "30m", "INC-5: rotate the vault key")
    s = Session(browser, server, DESKTOP)
    try:
        page = s.page
        page.goto(f"/requests/{req['id']}")
        page.fill("#username", "erin")
        page.fill("#password", PASSWORD["erin"])
        page.click("button:has-text('Log in')")
        assert page.url == server.url + "/login/code"
        page.fill("#code", totp(secret, datetime.now(UTC)))
        page.click("button:has-text('Continue')")
        assert page.url == server.url + f"/requests/{req['id']}"
        assert "Your session qualifies." in page.locator("p.approver-auth").inner_text()
        page.click("button.approve-button")
        assert "Approved:" in page.locator(".flash-ok").inner_text()
    finally:
        s.close()
    assert server.api("alice").get(req["id"])["state"] == "approved"
