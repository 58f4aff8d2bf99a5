"""Real processes for the single sign-on tests: a jit-ssh server whose ``[sso]`` table names
the test OpenID provider (``tests/oidc_support.py``), the installed CLI in subprocesses with
a fresh HOME and XDG directories, and browser steps through both.

* :class:`SsoServer`: ``jit-ssh serve`` (e2e_helpers' JitServer) on a port chosen before the
  provider starts, because the provider must know the redirect URI ``{base_url}/sso/callback``
  when it starts; the server TOML (``$JIT_SSH_CONFIG``) holds ``base_url`` and ``[sso]``;
* :class:`CliRun`: one ``jit-ssh`` command in the background whose output lines the test
  reads as they come (the sign-in URL, the device code);
* :func:`sign_in_on_the_web`: ``/login`` -> "Sign in with ..." -> the provider's login page ->
  back on jit-ssh, signed in.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.oidc_support import OidcProvider, StartProvider, complete_provider_login
from tests.support import free_port

from .e2e_helpers import COMMAND_TIMEOUT, JitServer, _base_env, _tail, end_process

#: What the tests' [sso] tables call the provider ("Sign in with Test provider").
DISPLAY_NAME = "Test provider"


class SsoServer(JitServer):
    """``jit-ssh serve`` with an ``[sso]`` table for a test provider it starts first."""

    home_name = "server-home"

    def __init__(
        self,
        root: Path,
        jit_ssh: str,
        *,
        policy_text: str,
        sso: dict[str, Any] | None = None,
        accounts: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(root, jit_ssh)
        self.policy_text = policy_text
        self.sso_overrides = {"display_name": DISPLAY_NAME, **(sso or {})}
        self.accounts = accounts
        self.config_path = root / "server.toml"
        self.provider: OidcProvider | None = None
        self._engine: Any = None

    @property
    def redirect_uri(self) -> str:
        return f"{self.url}/sso/callback"

    def env(self) -> dict[str, str]:
        return {**super().env(), "JIT_SSH_CONFIG": str(self.config_path)}

    def start_with(self, start_provider: StartProvider) -> OidcProvider:
        """Pick the server's port, start the provider with its redirect URI, then the server."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.policy.write_text(self.policy_text)
        self.port = free_port()
        self.provider = start_provider(redirect_uris=[self.redirect_uri], accounts=self.accounts)
        self.config_path.write_text(
            f"base_url = {json.dumps(self.url)}\n\n"
            + self.provider.server_toml(**self.sso_overrides)
        )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.jit_ssh, "serve", "--bind", f"127.0.0.1:{self.port}", "--workers", "1"],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if not self._wait_ready(timeout=30):
            self.stop()
            pytest.fail(
                f"jit-ssh serve (with [sso]) did not start; its log:\n{_tail(self.log)}",
                pytrace=False,
            )
        return self.provider

    # -- what the server recorded, read from its database (as `jit-ssh audit export` and
    # `admin user list` would, without a process start for each look)

    def _session(self) -> Any:
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session

        if self._engine is None:
            self._engine = create_engine(f"sqlite:///{self.data_dir / 'jit-ssh.sqlite3'}")
        return Session(self._engine)

    def audit(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The audit log's events in order (type, actor, data), of one type when given."""
        from sqlalchemy import select

        from server.models import AuditEvent

        query = select(AuditEvent).order_by(AuditEvent.id)
        if event_type is not None:
            query = query.where(AuditEvent.type == event_type)
        with self._session() as s:
            return [
                {"type": e.type, "actor": e.actor, "data": json.loads(e.data)}
                for e in s.scalars(query)
            ]

    def audit_data(self, event_type: str, **match: Any) -> list[dict[str, Any]]:
        """The ``data`` of each ``event_type`` event whose data has every ``match`` item."""
        found = []
        for event in self.audit(event_type):
            data = event.get("data") or {}
            if all(data.get(k) == v for k, v in match.items()):
                found.append(data)
        return found

    def user(self, name: str) -> dict[str, Any] | None:
        """User ``name`` as the server stores them (groups, roles, where the groups came from)."""
        from sqlalchemy import select

        from server.models import User

        with self._session() as s:
            u = s.scalars(select(User).where(User.name == name)).one_or_none()
            if u is None:
                return None
            return {
                "name": u.name,
                "groups": list(u.group_names),
                "roles": list(u.role_names),
                "groups_source": str(getattr(u.groups_source, "value", u.groups_source)),
                "email": u.email,
                "disabled": u.disabled,
            }

    def stop(self) -> None:
        super().stop()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def set_password(self, name: str, password: str) -> None:
        r = subprocess.run(
            [self.jit_ssh, "admin", "user", "set-password", name, "--password-stdin"],
            env=self.env(),
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- the CLI


def person_env(root: Path, name: str, server: JitServer, **extra: str) -> dict[str, str]:
    """A fresh person: their own HOME and XDG directories, only the server URL set.

    No DISPLAY or WAYLAND_DISPLAY (the CLI falls back to the device flow unless told
    otherwise) and no browser: ``BROWSER`` is set by the tests that want one."""
    home = root / f"home-{name}"
    for sub in ("", ".config", ".local/share", ".local/state", ".cache"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    return {
        **_base_env(),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "JIT_SSH_SERVER": server.url,
        **extra,
    }


def browser_recorder(directory: Path) -> tuple[str, Path]:
    """A ``$BROWSER`` command that writes the URL it is given to a file (Python's webbrowser
    runs it): the CLI "opens the browser" for real, and the test's Chromium goes there."""
    directory.mkdir(parents=True, exist_ok=True)
    urls = directory / "opened-urls"
    script = directory / "record-url"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{urls}"\n')
    os.chmod(script, 0o755)
    return f"{script} %s", urls


class CliRun:
    """``jit-ssh ARGS`` in the background; every output line is kept and can be waited for."""

    def __init__(self, jit_ssh: str, args: Sequence[str], env: dict[str, str]) -> None:
        self.args = [jit_ssh, *args]
        self.proc = subprocess.Popen(
            self.args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._seen: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)
            self._lines.put(line)

    def output(self) -> str:
        return f"stdout:\n{''.join(self.stdout)}\nstderr:\n{''.join(self.stderr)}"

    def wait_for(self, pattern: str, timeout: float = COMMAND_TIMEOUT) -> re.Match[str]:
        """The first output line (stdout or stderr) matching ``pattern`` (a regex)."""
        rx = re.compile(pattern)
        for line in self._seen:
            m = rx.search(line)
            if m:
                return m
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self._lines.empty():
                    break
                continue
            self._seen.append(line)
            m = rx.search(line)
            if m:
                return m
        pytest.fail(
            f"{' '.join(self.args[1:])} printed nothing matching /{pattern}/ "
            f"(exit {self.proc.poll()});\n{self.output()}",
            pytrace=False,
        )

    def finish(self, timeout: float = COMMAND_TIMEOUT) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(
                f"{' '.join(self.args[1:])} did not finish in {timeout} s;\n{self.output()}",
                pytrace=False,
            )
        for t in self._readers:
            t.join(timeout=5)
        return self.proc.returncode

    def stop(self) -> None:
        end_process(self.proc, group=True)


#: The URL a loopback sign-in opens: jit-ssh's confirmation page, never the provider's.
CLI_PAGE = r"https?://\S+?/sso/cli/[A-Za-z0-9_-]{43}"


def authorize_url(run: CliRun, timeout: float = COMMAND_TIMEOUT) -> str:
    """The sign-in URL the CLI printed (its loopback flow): jit-ssh's confirmation page
    ``{base_url}/sso/cli/<token>``, which continues to the provider."""
    return run.wait_for(rf"({CLI_PAGE})", timeout).group(1)


def device_code(run: CliRun, timeout: float = COMMAND_TIMEOUT) -> tuple[str, str]:
    """(verification URI, user code) from the CLI's device-flow instructions."""
    code = run.wait_for(r"\b([A-Z0-9]{4}-[A-Z0-9]{4})\b", timeout).group(1)
    uri = run.wait_for(r"(http://127\.0\.0\.1:\d+/device\S*)", timeout).group(1)
    return uri.rstrip(".,)"), code


# --------------------------------------------------------------------------- the web


def sign_in_on_the_web(
    page: Any, server: JitServer, login: str, path: str = "/", button: str = DISPLAY_NAME
) -> bool:
    """Open ``path`` on jit-ssh, be sent to /login, choose "Sign in with <button>", pass the
    provider's login (and consent) page as ``login``, and land back on ``path``, signed in.
    Returns whether the provider's consent page was passed."""
    page.goto(server.url + path)
    assert "/login" in page.url, page.url
    page.get_by_role("button", name=f"Sign in with {button}").or_(
        page.get_by_role("link", name=f"Sign in with {button}")
    ).click()
    consented = complete_provider_login(page, login)
    page.wait_for_load_state()
    landed = page.url.split("?")[0]
    assert landed.startswith(server.url + "/") and "/login" not in landed, page.url
    if path != "/":  # "/" itself sends a non-approver on to their own requests
        assert landed == server.url + path, page.url
    assert page.locator("header .me").inner_text().strip() == login
    return consented


def until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(0.1)
