"""A real OpenID provider for the tests, and the browser steps through its pages.

``tests/oidc/provider.mjs`` is oidc-provider (the certified Node.js implementation) with one
confidential client, ``jit-ssh``, PKCE S256 required, the device flow on, and its own
development login page (any password; the login name picks the account). This module:

* :func:`node_available` / :func:`require_provider`: Node.js and the locked npm package, or a
  skip with the reason (a failure under CI=true, where nothing may skip);
* :class:`OidcProvider`: one running provider (``.issuer``, ``.client_id``,
  ``.client_secret``, ``.secret_file``) whose accounts a test changes at run time
  (:meth:`OidcProvider.set_account`, :meth:`OidcProvider.remove_group`): the provider reads
  its accounts file on every sign-in;
* :func:`provider_factory`: a context manager yielding ``start(redirect_uris=[...])``, for a
  module-scoped fixture (the redirect URI must be known before the provider starts);
* Playwright steps: :func:`complete_provider_login` (the login page, and the consent page
  if it ever shows) and :func:`complete_device_flow` (the provider's ``/device`` pages).

Every process is started on 127.0.0.1 and ended by its own pid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import IN_CI
from tests.support import free_port

#: The folder of provider.mjs and its package-lock.json.
OIDC_DIR = Path(__file__).resolve().parent / "oidc"
PROVIDER_SCRIPT = OIDC_DIR / "provider.mjs"
CLIENT_ID = "jit-ssh"
#: oidc-provider 9 needs Node.js 20 or later (it prefers 22; 20 works, with a warning).
MIN_NODE_MAJOR = 20
#: Seconds one start of the provider may take to print "ready" (usually under one). Twice in
#: CI a start printed nothing for longer than 20 s while the next one was at once ready: a
#: start that hangs is stopped and made again, up to START_ATTEMPTS times.
START_TIMEOUT = 15
START_ATTEMPTS = 3
#: Milliseconds any one browser step may take.
STEP_TIMEOUT_MS = 15_000

#: The accounts the provider knows when a test gives none: the groups of policies/demo.toml
#: (engineers request, approvers approve).
DEFAULT_ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {
        "email": "alice@example.com",
        "email_verified": True,
        "groups": ["engineers"],
        "preferred_username": "alice",
        "name": "Alice Example",
    },
    "bob": {
        "email": "bob@example.com",
        "email_verified": True,
        "groups": ["approvers"],
        "preferred_username": "bob",
        "name": "Bob Example",
    },
}

_npm_lock = threading.Lock()


def _skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; under CI=true fail instead (as tests/integration/conftest.py)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: integration tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def _node_major(node: str) -> int | None:
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        return int(out.lstrip("v").split(".")[0])
    except ValueError:
        return None


def node_available() -> bool:
    """True when ``node`` (Node.js >= 20) is on PATH."""
    node = shutil.which("node")
    if node is None:
        return False
    major = _node_major(node)
    return major is not None and major >= MIN_NODE_MAJOR


def require_provider() -> str:
    """The path of ``node``, with the locked oidc-provider installed under tests/oidc.

    CI installs it (``.ci/run``: ``npm ci --prefix tests/oidc``); locally a missing
    node_modules is installed once with ``npm ci``. Anything missing: a skip with the reason,
    a failure under CI=true."""
    node = shutil.which("node")
    if node is None:
        _skip_or_fail("node is not installed (Debian: apt-get install nodejs npm)")
    assert node is not None
    major = _node_major(node)
    if major is None or major < MIN_NODE_MAJOR:
        _skip_or_fail(f"oidc-provider needs Node.js >= {MIN_NODE_MAJOR}; {node} is {major}")
    with _npm_lock:
        if not (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
            npm = shutil.which("npm")
            if npm is None:
                _skip_or_fail(
                    "tests/oidc/node_modules is missing and npm is not installed "
                    "(Debian: apt-get install npm; then npm ci --prefix tests/oidc)"
                )
            assert npm is not None
            try:
                r = subprocess.run(
                    [npm, "ci", "--prefix", str(OIDC_DIR), "--no-audit", "--no-fund"],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
            except subprocess.TimeoutExpired:
                _skip_or_fail("npm ci --prefix tests/oidc took longer than 300 s")
            else:
                if r.returncode != 0:
                    _skip_or_fail(
                        f"npm ci --prefix tests/oidc failed: {(r.stderr or r.stdout)[-800:]}"
                    )
    return node


# --------------------------------------------------------------------------- the provider


@dataclass
class OidcProvider:
    """One running provider.mjs on 127.0.0.1."""

    directory: Path
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str = "client_secret_basic"
    client_id: str = CLIENT_ID
    port: int = 0
    client_secret: str = field(default="", repr=False)
    proc: subprocess.Popen[str] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secret_file(self) -> Path:
        return self.directory / "client-secret"

    @property
    def accounts_file(self) -> Path:
        return self.directory / "accounts.json"

    @property
    def log(self) -> Path:
        return self.directory / "provider.log"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- accounts (the provider reads the file on every sign-in)

    def accounts(self) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = json.loads(self.accounts_file.read_text())
        return data

    def write_accounts(self, accounts: dict[str, dict[str, Any]]) -> None:
        # Replaced atomically: the provider never reads half a file.
        tmp = self.accounts_file.with_name(f".{self.accounts_file.name}.tmp")
        tmp.write_text(json.dumps(accounts, indent=2))
        os.replace(tmp, self.accounts_file)

    def set_account(self, name: str, **claims: Any) -> None:
        """Create account ``name`` or change its claims (the others are kept).

        ``preferred_username`` defaults to ``name`` for a new account; a claim given as
        None is removed."""
        accounts = self.accounts()
        record = accounts.get(name, {"preferred_username": name})
        for key, value in claims.items():
            if value is None:
                record.pop(key, None)
            else:
                record[key] = value
        accounts[name] = record
        self.write_accounts(accounts)

    def remove_account(self, name: str) -> None:
        accounts = self.accounts()
        accounts.pop(name, None)
        self.write_accounts(accounts)

    def add_group(self, name: str, group: str) -> None:
        groups = list(self.accounts()[name].get("groups", []))
        if group not in groups:
            groups.append(group)
        self.set_account(name, groups=groups)

    def remove_group(self, name: str, group: str) -> None:
        groups = [g for g in self.accounts()[name].get("groups", []) if g != group]
        self.set_account(name, groups=groups)

    # -- process

    def start(self, node: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.client_secret:
            import secrets

            self.client_secret = secrets.token_urlsafe(32)
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.client_secret + "\n")
        if not self.accounts_file.exists():
            self.write_accounts(DEFAULT_ACCOUNTS)
        last = ""
        waited: list[str] = []
        for _attempt in range(START_ATTEMPTS):
            self.port = free_port()
            argv = [
                node,
                str(PROVIDER_SCRIPT),
                "--port",
                str(self.port),
                "--client-secret-file",
                str(self.secret_file),
                "--accounts",
                str(self.accounts_file),
                "--token-endpoint-auth-method",
                self.token_endpoint_auth_method,
            ]
            for uri in self.redirect_uris:
                argv += ["--redirect-uri", uri]
            env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
            # Node looks for oidc-provider in tests/oidc/node_modules, beside the script.
            with open(self.log, "a") as log:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=OIDC_DIR,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
            started = time.monotonic()
            line = self._first_line(START_TIMEOUT)
            if line == f"ready {self.issuer}":
                # Keep reading stdout so a chatty provider never blocks on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return
            alive = self.proc.poll() is None
            waited.append(
                f"port {self.port}: {time.monotonic() - started:.1f} s, "
                + (f"still running, first line {line!r}" if alive else f"exited {self.proc.poll()}")
            )
            self.stop()
            last = self.log_text()[-3000:]
            if not alive and "EADDRINUSE" not in last and "address already in use" not in last:
                break  # it failed by itself: starting it again would fail the same way
        pytest.fail(
            f"the OpenID provider did not start ({'; '.join(waited)}); its log:\n{last}",
            pytrace=False,
        )

    def _first_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(
            target=lambda: result.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        return result[0].strip() if result else ""

    def _drain(self) -> None:
        proc = self.proc
        if proc is None or proc.stdout is None:
            return
        try:
            for _line in proc.stdout:
                pass
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- HTTP

    def discovery(self) -> dict[str, Any]:
        import httpx

        r = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def server_toml(self, **overrides: Any) -> str:
        """An ``[sso]`` table for a jit-ssh server TOML that uses this provider (an override of
        None leaves that key out: the server's default)."""
        values: dict[str, Any] = {
            "issuer": self.issuer,
            "client_id": self.client_id,
            "client_secret_file": str(self.secret_file),
            "display_name": "Test provider",
            "scopes": ["openid", "email", "profile", "groups"],
            "username_claim": "preferred_username",
            "groups_claim": "groups",
        }
        values.update(overrides)
        lines = ["[sso]"]
        for key, value in values.items():
            if value is None:
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"no TOML form for {value!r}")


StartProvider = Callable[..., OidcProvider]


@contextmanager
def provider_factory(directory: Path) -> Iterator[StartProvider]:
    """Yield ``start(redirect_uris=[...], accounts=None, token_endpoint_auth_method=...)``;
    every provider it started is stopped on exit."""
    node = require_provider()
    started: list[OidcProvider] = []
    counter = iter(range(1, 10_000))

    def start(
        redirect_uris: Sequence[str],
        *,
        accounts: dict[str, dict[str, Any]] | None = None,
        token_endpoint_auth_method: str = "client_secret_basic",
    ) -> OidcProvider:
        provider = OidcProvider(
            directory / f"provider-{next(counter)}",
            tuple(redirect_uris),
            token_endpoint_auth_method=token_endpoint_auth_method,
        )
        provider.directory.mkdir(parents=True)
        provider.write_accounts(DEFAULT_ACCOUNTS if accounts is None else accounts)
        started.append(provider)
        provider.start(node)
        return provider

    try:
        yield start
    finally:
        for provider in started:
            provider.stop()


@pytest.fixture(scope="module")
def oidc_provider_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartProvider]:
    """Module-scoped ``start(redirect_uris=[...])`` (import it into a test module to use it)."""
    with provider_factory(tmp_path_factory.mktemp("oidc")) as start:
        yield start


# --------------------------------------------------------------------------- the browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def sync_playwright() -> Any:
    """Playwright's ``sync_playwright``, or a skip (a failure under CI=true)."""
    try:
        from playwright.sync_api import sync_playwright as sp
    except ImportError:
        _skip_or_fail("playwright for Python is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _skip_or_fail(f"{CHROMIUM} is not installed (Debian: apt-get install chromium)")
    return sp


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright."""
    sp = sync_playwright()
    with sp() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def loopback_only(context: Any) -> None:
    """Let a browser context reach 127.0.0.1 / [::1] only.

    oidc-provider's pages @import a web font from the internet; the tests never leave the
    machine, and a font that cannot load must not hold a page's load event."""

    def route(r: Any) -> None:
        host = urlsplit(r.request.url).hostname or ""
        if host in ("127.0.0.1", "::1", "localhost") or r.request.url.startswith(
            ("data:", "about:")
        ):
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)


def new_context(browser: Any, **options: Any) -> Any:
    """A browser context (its own cookies) that reaches loopback addresses only."""
    context = browser.new_context(**options)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    loopback_only(context)
    return context


class ProviderLoginRefused(AssertionError):
    """The provider showed its login page again: it knows no account of that name."""


def _on_login_page(page: Any) -> bool:
    return bool(page.locator('form input[name="prompt"][value="login"]').count())


def _on_consent_page(page: Any) -> bool:
    return bool(page.locator('form input[name="prompt"][value="consent"]').count())


#: jit-ssh's confirmation page of the CLI's sign-in (``/sso/cli/<token>``): its "Continue".
CLI_CONTINUE = "button.sso-continue"


def _on_cli_confirmation_page(page: Any) -> bool:
    return "/sso/cli/" in page.url and bool(page.locator(CLI_CONTINUE).count())


def continue_cli_sign_in(page: Any) -> str:
    """On jit-ssh's confirmation page of a CLI sign-in (the URL ``jit-ssh login`` opens):
    check it asks plainly, press "Continue to sign in with ...", and wait for the provider.
    Returns the page's text (the key's fingerprint and comment, where and when)."""
    text: str = page.locator("main").inner_text()
    assert "A jit-ssh client asks to enrol an SSH key as you" in text, text
    assert "Continue only if you just ran" in text, text
    button = page.locator(CLI_CONTINUE)
    assert button.inner_text().startswith("Continue to sign in with "), button.inner_text()
    with page.expect_navigation():
        button.click()
    page.wait_for_load_state()
    return text


def complete_provider_login(page: Any, login: str, password: str = "x") -> bool:
    """On the provider's login page (already open in ``page``): sign in as ``login``.

    A CLI's sign-in opens jit-ssh's confirmation page first: from there, "Continue"
    (:func:`continue_cli_sign_in`) leads to the provider. Fills the development login form
    and submits it; on the consent page that follows (the provider's own, once per browser
    session), grants the scopes. Returns, once the browser has left the provider (``page.url``
    is where it was sent), whether the consent page was passed. Raises
    :class:`ProviderLoginRefused` when the provider shows its login page again."""
    page.wait_for_load_state()
    if _on_cli_confirmation_page(page):
        continue_cli_sign_in(page)
    page.wait_for_selector('form input[name="prompt"][value="login"]', state="attached")
    page.fill('input[name="login"]', login)
    page.fill('input[name="password"]', password)
    with page.expect_navigation():
        page.click('button[type="submit"]')
    page.wait_for_load_state()
    consented = False
    if _on_consent_page(page):
        assert page.inner_text("body").startswith("Authorize"), "not the consent page"
        with page.expect_navigation():
            page.click('button[type="submit"]')
        page.wait_for_load_state()
        consented = True
    if _on_login_page(page):
        raise ProviderLoginRefused(f"the provider refused the login {login!r} (no such account)")
    return consented


def complete_device_flow(
    page: Any, verification_uri: str, user_code: str | None, login: str, password: str = "x"
) -> None:
    """Through the provider's device pages: enter ``user_code`` at ``verification_uri`` (or
    open a ``verification_uri_complete`` when ``user_code`` is None), confirm it, sign in
    as ``login``, and check the provider's success page."""
    page.goto(verification_uri)
    if user_code is not None:
        page.fill('input[name="user_code"]', user_code)
        with page.expect_navigation():
            page.click('button[form="op.deviceInputForm"]')
    # The confirmation page: the code the device shows, and Continue.
    page.wait_for_selector('form[id="op.deviceConfirmForm"]', state="attached")
    with page.expect_navigation():
        page.click('button[form="op.deviceConfirmForm"]:not([name="abort"])')
    page.wait_for_load_state()
    complete_provider_login(page, login, password)
    body = page.inner_text("body")
    assert "Sign-in Success" in body, f"the provider's device flow did not succeed: {body[:500]}"


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail saying ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(0.1)
