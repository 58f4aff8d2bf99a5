"""Fixtures for the web pages: the service tests' app (SQLite and PostgreSQL),
users with web passwords, and a test-client "browser" that logs in and sends
forms with their CSRF token, as a browser would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

# The service tests' fixtures, re-exported for the web tests (``X as X``: a deliberate re-export).
from tests.server.conftest import Caller
from tests.server.conftest import admin as admin
from tests.server.conftest import alice as alice
from tests.server.conftest import app as app
from tests.server.conftest import clock as clock
from tests.server.conftest import database_url as database_url
from tests.server.conftest import make_user as make_user
from tests.server.conftest import oncall as oncall

PASSWORD = "a long enough web password"

_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def csrf_token(html: str) -> str:
    m = _TOKEN.search(html)
    assert m, "no CSRF token on the page"
    return m.group(1) or m.group(2)


class Browser:
    """A Flask test client that posts forms the way the pages do."""

    def __init__(
        self, app: Any, name: str | None = None, *, base_url: str = "http://localhost"
    ) -> None:
        self.app = app
        self.name = name
        self.client = app.test_client()
        self.base_url = base_url

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, base_url=self.base_url, **kw)

    def token(self, page: str = "/login") -> str:
        resp = self.get(page, follow_redirects=True)
        assert resp.status_code == 200, (page, resp.status_code, resp.headers.get("Location"))
        return csrf_token(resp.get_data(as_text=True))

    def post(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        page: str | None = None,
        token: bool = True,
        **kw: Any,
    ) -> Any:
        """POST ``data`` plus the CSRF token from ``page`` (the page the form is on; default: ``path``'s page)."""
        data = dict(data or {})
        if token:
            data.setdefault("csrf_token", self.token(page or "/login"))
        return self.client.post(path, data=data, base_url=self.base_url, **kw)

    def login(self, name: str | None = None, password: str = PASSWORD, **extra: Any) -> Any:
        name = name or self.name
        return self.post("/login", {"username": name, "password": password, **extra})

    def text(self, resp: Any) -> str:
        return resp.get_data(as_text=True)


@pytest.fixture
def slept(app: Any) -> list[float]:
    """The web login's pauses, recorded instead of slept."""
    calls: list[float] = []
    app.extensions["jit_ssh.web"].sleep = calls.append
    return calls


@pytest.fixture
def web_user(app: Any, admin: Any, make_user: Any, slept: list[float]) -> Any:
    """A user with an enrolled key (a Caller) and a web password."""

    def make(
        name: str, groups: tuple[str, ...] = (), roles: tuple[str, ...] = ("requester",)
    ) -> Caller:
        caller = make_user(name, groups, roles)
        admin.set_password(name, PASSWORD)
        return caller

    return make


@pytest.fixture
def browser(app: Any) -> Any:
    def make(name: str | None = None, **kw: Any) -> Browser:
        return Browser(app, name, **kw)

    return make


@pytest.fixture
def approver(web_user: Any) -> Caller:
    return web_user("bob", ("approvers",), ("requester", "approver"))


@pytest.fixture
def approver2(web_user: Any) -> Caller:
    return web_user("carol", ("approvers", "engineers"), ("requester", "approver"))


@pytest.fixture
def requester(web_user: Any) -> Caller:
    return web_user("alice", ("engineers",))


@pytest.fixture
def bob_web(approver: Caller, browser: Any) -> Iterator[Browser]:
    b = browser("bob")
    resp = b.login()
    assert resp.status_code == 303, b.text(resp)
    yield b
