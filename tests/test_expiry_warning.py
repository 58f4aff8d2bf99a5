"""Issue 14, point 4 on the engineer's side: before a certificate's valid_before, by the rule's
``warn_before`` (default 5 minutes), ``jit-ssh status`` marks the access and ``jit-ssh ssh``
warns on stderr as it starts the session, each with the command that extends it.

Against the real app (the fixtures of :mod:`tests.test_cli_engineer`), whose rule here says
``warn_before = "10m"``: the lead time comes from the server, is kept in the access record
when the certificate is fetched, and the warning needs no server. The client's clock
(:mod:`client.clock`) is the test's: no sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.cli import EXIT_OK, EXIT_UNREACHABLE
from client.errors import BadServerAnswer
from client.verify import check_request_answer

from . import test_cli_engineer
from .test_cli_engineer import (  # noqa: F401 (fixtures)
    TARGET,
    Run,
    Server,
    access,
    home,
    jit,
    keys,
    server,
    sleeps,
)
from .test_several_accesses import _fake_ssh, execs  # noqa: F401 (fixture)

REQ = "0000000000000001"
HINT = f'extend: jit-ssh extend {REQ} --for 30m --reason "..."'


@pytest.fixture(autouse=True)
def _ten_minute_lead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test policy's rule warns 10 minutes ahead (not the default 5): the server says so."""
    policy = test_cli_engineer.POLICY.replace(
        'claim_window = "15m"\n', 'claim_window = "15m"\nwarn_before = "10m"\n'
    )
    assert policy != test_cli_engineer.POLICY
    monkeypatch.setattr(test_cli_engineer, "POLICY", policy)


class Clock:
    """The client's clock, set by the test."""

    def __init__(self) -> None:
        self.now: datetime | None = None

    def __call__(self) -> datetime:
        assert self.now is not None, "set clock.now first"
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _record_file(home: Path) -> Path:
    return Path(f"{access(home, TARGET, REQ)}.json")


def _valid_before(home: Path) -> datetime:
    end = json.loads(_record_file(home).read_text())["valid_before"]
    return datetime.fromisoformat(end.replace("Z", "+00:00"))


def _login_then_clock(
    jit: Callable[..., Run], home: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> datetime:
    """Log in (30 minutes, auto-approved) on the real clock; from then on the test's clock
    drives the client. Returns the certificate's valid_before."""
    r = jit("login", TARGET, "--for", "30m")
    assert r.code == EXIT_OK, r.stderr
    monkeypatch.setattr("client.clock.utcnow", clock)
    monkeypatch.setattr("client.access.utcnow", clock)
    return _valid_before(home)


def _ssh(jit: Callable[..., Run], **kw: Any) -> Run:
    return jit("ssh", TARGET, "-o", "StrictHostKeyChecking=yes", **kw)


def _offline() -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: (_ for _ in ()).throw(httpx.ConnectError("down")))


# --------------------------------------------------------------------------------- lead time


def test_the_lead_time_comes_from_the_server_into_the_record(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    assert jit("login", TARGET, "--for", "30m").code == EXIT_OK
    assert json.loads(_record_file(home).read_text())["warn_before_seconds"] == 600
    view = server.call("alice", "GET", f"/v1/requests/{REQ}")
    assert view["warn_before_seconds"] == 600


def test_outside_the_lead_time_nothing_is_said(
    jit: Callable[..., Run],
    server: Server,
    home: Path,
    clock: Clock,
    execs: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_ssh(monkeypatch)
    end = _login_then_clock(jit, home, monkeypatch, clock)
    clock.now = end - timedelta(minutes=10, seconds=1)
    r = jit("status")
    assert r.code == EXIT_OK and r.stdout.startswith(f"active   {TARGET}")
    assert "expires in" not in r.stdout + r.stderr and "extend" not in r.stdout
    (entry,) = json.loads(jit("status", "--json").stdout)["active"]
    assert entry["expiring"] is False
    assert entry["warn_at"] == (end - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    s = _ssh(jit)
    assert s.code == EXIT_OK and len(execs) == 1
    assert s.stderr == "" and s.stdout == ""


def test_inside_the_lead_time_status_marks_it_with_the_extend_command(
    jit: Callable[..., Run],
    server: Server,
    home: Path,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    end = _login_then_clock(jit, home, monkeypatch, clock)
    # 7 minutes left: inside the rule's 10 (the default 5 would say nothing yet).
    clock.now = end - timedelta(minutes=7)
    r = jit("status")
    assert r.code == EXIT_OK
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"active   {TARGET}") and "7m left" in lines[0]
    assert lines[1].strip() == f"expires in 7m; {HINT}"
    clock.now = end - timedelta(minutes=3, seconds=12)
    assert f"expires in 3m12s; {HINT}" in jit("status").stdout
    (entry,) = json.loads(jit("status", "--json").stdout)["active"]
    assert entry["expiring"] is True and entry["seconds_left"] == 192
    assert entry["warn_at"] == (end - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Expired: no longer listed, nor warned about.
    clock.now = end
    assert "expires in" not in jit("status").stdout


def test_status_warns_offline_from_the_record(
    jit: Callable[..., Run],
    server: Server,
    home: Path,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    end = _login_then_clock(jit, home, monkeypatch, clock)
    clock.now = end - timedelta(minutes=2)
    r = jit("status", transport=_offline())
    assert r.code == EXIT_UNREACHABLE
    assert f"expires in 2m; {HINT}" in r.stdout
    js = jit("status", "--json", transport=_offline())
    assert json.loads(js.stdout)["active"][0]["expiring"] is True


def test_ssh_warns_on_stderr_only_and_without_the_server(
    jit: Callable[..., Run],
    server: Server,
    home: Path,
    clock: Clock,
    execs: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_ssh(monkeypatch)
    end = _login_then_clock(jit, home, monkeypatch, clock)
    clock.now = end - timedelta(minutes=4, seconds=30)
    calls = len(server.calls)
    r = _ssh(jit, transport=_offline())
    assert r.code == EXIT_OK and len(execs) == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"warning: your access to {TARGET} (request {REQ}) expires in 4m30s; {HINT}"
    ]
    assert len(server.calls) == calls
    # The session itself is what it always was.
    assert execs[0][1:3] == ["-i", str(access(home, TARGET, REQ))]


# ----------------------------------------------------------------------- the stored record


def _edit_record(home: Path, **change: Any) -> None:
    p = _record_file(home)
    data = json.loads(p.read_text())
    for k, v in change.items():
        if v is _DROP:
            del data[k]
        else:
            data[k] = v
    p.write_text(json.dumps(data))


_DROP = object()


def test_a_record_from_before_the_lead_time_warns_five_minutes_ahead(
    jit: Callable[..., Run],
    server: Server,
    home: Path,
    clock: Clock,
    execs: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_ssh(monkeypatch)
    end = _login_then_clock(jit, home, monkeypatch, clock)
    _edit_record(home, warn_before_seconds=_DROP)
    offline = _offline()
    clock.now = end - timedelta(minutes=7)
    r = jit("status", transport=offline)
    assert r.stdout.startswith(f"active   {TARGET}") and "expires in" not in r.stdout
    assert "warning" not in r.stderr
    clock.now = end - timedelta(minutes=4)
    assert f"expires in 4m; {HINT}" in jit("status", transport=offline).stdout
    assert "expires in 4m" in _ssh(jit, transport=offline).stderr


@pytest.mark.parametrize("hostile", ["600", True, -1, 10**12, 1.5, None, [600], {"s": 600}])
def test_a_hostile_lead_time_in_the_record_is_replaced_by_the_default(
    hostile: object,
    jit: Callable[..., Run],
    server: Server,
    home: Path,
    clock: Clock,
    execs: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_ssh(monkeypatch)
    end = _login_then_clock(jit, home, monkeypatch, clock)
    _edit_record(home, warn_before_seconds=hostile)
    offline = _offline()
    clock.now = end - timedelta(minutes=7)
    r = jit("status", "--json", transport=offline)
    # The access stays usable; its lead time is the default, and the record is named.
    (entry,) = json.loads(r.stdout)["active"]
    assert entry["expiring"] is False
    assert entry["warn_at"] == (end - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"{_record_file(home)}: warn_before_seconds" in r.stderr
    assert "warning 5 minutes before the access ends" in r.stderr
    clock.now = end - timedelta(minutes=4)
    s = _ssh(jit, transport=offline)
    assert s.code == EXIT_OK and len(execs) == 1
    assert f"expires in 4m; {HINT}" in s.stderr and s.stdout == ""


def test_status_refreshes_the_lead_time_from_the_server(
    jit: Callable[..., Run],
    server: Server,
    home: Path,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    end = _login_then_clock(jit, home, monkeypatch, clock)
    _edit_record(home, warn_before_seconds=60)
    clock.now = end - timedelta(minutes=7)
    # Offline, the record's own lead time stands.
    assert "expires in" not in jit("status", transport=_offline()).stdout
    # The server states the rule's 10 minutes: the record takes it.
    assert f"expires in 7m; {HINT}" in jit("status").stdout
    assert json.loads(_record_file(home).read_text())["warn_before_seconds"] == 600


# ------------------------------------------------------------------------ the server's answer


def _view(**extra: Any) -> dict[str, Any]:
    return {"id": REQ, "state": "issued", "target": TARGET, **extra}


def test_the_servers_lead_time_is_checked() -> None:
    assert check_request_answer(_view()).warn_before_seconds is None
    assert check_request_answer(_view(warn_before_seconds=None)).warn_before_seconds is None
    assert check_request_answer(_view(warn_before_seconds=600)).warn_before_seconds == 600
    for bad in ("600", True, -1, 24 * 3600 + 1, 1.5, [1]):
        with pytest.raises(BadServerAnswer) as e:
            check_request_answer(_view(warn_before_seconds=bad))
        assert e.value.field == "warn_before_seconds"
