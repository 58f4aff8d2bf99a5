"""Issue 12, point 4: ``jit-ssh login``'s wait is informative and survives an outage.

Against the real app (the fixtures of :mod:`tests.test_cli_engineer`): through
``httpx.WSGITransport`` for what the screen shows, and served on a real socket
on 127.0.0.1 (werkzeug) for an outage (the server is shut down and started
again on the same port) and for SIGTERM (the CLI in a subprocess).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from werkzeug.serving import BaseWSGIServer, make_server

from client import waiting
from client.access import access_name
from client.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main
from client.errors import BadServerAnswer
from client.verify import check_request_answer

from .support import free_port
from .test_cli_engineer import (  # noqa: F401 (fixtures)
    TARGET,
    Run,
    Server,
    home,
    jit,
    keys,
    keys_dir,
    server,
    sleeps,
)

ID = "0000000000000001"


def _approve(server: Server, comment: str, by: str = "bob") -> Callable[[], None]:
    return lambda: server.call(by, "POST", f"/v1/requests/{ID}/approve", {"comment": comment})


# --------------------------------------------------------------------------- what the wait shows


def test_the_wait_shows_deadline_approvers_approvals_comments_and_who_approved(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    server.submit = "pending"
    server.script[ID] = [None, _approve(server, "go ahead, watch the replica")]
    r = jit("login", TARGET, "--for", "1h", "--poll", "0")
    assert r.code == EXIT_OK, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == f"Request {ID} for {TARGET} (1h): pending"
    assert lines[1] == f"Approve at: https://jit.example.com/requests/{ID}"
    assert re.fullmatch(r"Lapses unanswered at \d\d:\d\d \S+ \(in (59m\d+s|1h)\)\.", lines[2])
    # alice is an approver too, but never of her own request: only bob may approve it.
    assert lines[3] == "Needs 1 approval from group approvers; may approve now: bob."
    assert re.fullmatch(
        r'\+ approved by bob at \d\d:\d\d \S+ \(1/1\): "go ahead, watch the replica"', lines[4]
    )
    cert_until = re.fullmatch(
        r"Approved by bob; certificate valid until \d{4}-\d\d-\d\d \d\d:\d\d \S+ \((\S+)\)\.",
        lines[-1],
    )
    assert cert_until, lines[-1]
    record = (keys_dir(home) / f"{access_name(TARGET, ID)}.json").read_text()
    assert f'"valid_before": "{cert_until.group(1)}"' in record
    # Not a terminal: lines only, no spinner frames, no carriage returns.
    assert "\r" not in r.stderr and "waiting for approval" not in r.stderr


def test_on_a_terminal_news_goes_on_a_fresh_line_above_the_status_line(
    jit: Callable[..., Run], server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waiting, "_is_tty", lambda: True)
    server.submit = "pending"
    server.script[ID] = [None, None, _approve(server, "ok")]
    r = jit("login", TARGET, "--poll", "0")
    assert r.code == EXIT_OK, r.stderr
    assert "waiting for approval: 0/1 approvals" in r.stderr and ", lapses in " in r.stderr
    news = [line for line in r.stderr.split("\n") if "approved by bob at" in line]
    assert len(news) == 1
    # What was on the status line was wiped first: the news starts a line of its own.
    *frames, wipe, shown = news[0].split("\r")
    assert shown.startswith("+ approved by bob at")
    assert frames[-1].startswith("- waiting for approval") and wipe == " " * len(frames[-1])
    assert r.stderr.split("\n")[-2].startswith("Approved by bob; certificate valid until")


def test_resume_without_a_target_shows_the_same_and_files_the_access_under_its_target(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    server.submit = "pending"
    assert jit("login", TARGET, "--no-wait").code == EXIT_OK
    server.script[ID] = [None, _approve(server, "")]
    r = jit("login", "--resume", ID, "--poll", "0")
    assert r.code == EXIT_OK, r.stderr
    assert f"Request {ID} for {TARGET} (30m): pending" in r.stderr
    assert "Lapses unanswered at" in r.stderr and "may approve now: bob" in r.stderr
    assert "+ approved by bob at" in r.stderr
    assert (keys_dir(home) / f"{access_name(TARGET, ID)}-cert.pub").exists()


def test_resume_lists_the_approvals_so_far(jit: Callable[..., Run], server: Server) -> None:
    from server.admin import Admin

    Admin(server.app.extensions["jit_ssh"].service).add_user(
        "carol", groups=["approvers"], roles=["approver"]
    )
    _two_approvals(server)
    server.submit = "pending"
    assert jit("login", TARGET, "--no-wait").code == EXIT_OK
    _approve(server, "first look: fine")()
    r = jit("login", "--resume", ID, "--no-wait")
    assert r.code == EXIT_OK
    assert "Needs 2 approvals from group approvers; may approve now: carol." in r.stderr
    assert re.search(r'\+ approved by bob at .* \(1/2\): "first look: fine"', r.stderr)


def _two_approvals(server: Server) -> None:
    from .test_cli_engineer import POLICY

    path = Path(server.app.extensions["jit_ssh"].service.policy.path)
    path.write_text(POLICY.replace("approvals_required = 1", "approvals_required = 2"))
    server.app.extensions["jit_ssh"].service.policy.reload()


def test_login_without_target_or_resume_is_a_usage_error(jit: Callable[..., Run]) -> None:
    r = jit("login")
    assert r.code == EXIT_USAGE
    assert "give a TARGET, or --resume ID" in r.stderr


# --------------------------------------------------------------------------- errors leave the resume command


def test_a_bad_answer_mid_wait_prints_the_resume_command(
    jit: Callable[..., Run], server: Server
) -> None:
    server.submit = "pending"
    server.fail[f"GET /v1/requests/{ID}"] = httpx.Response(
        200, json={"id": "../admin", "state": "pending", "target": TARGET}
    )
    r = jit("login", TARGET, "--poll", "0")
    assert r.code == EXIT_FAILED
    assert f"Later: jit-ssh login {TARGET} --resume {ID}" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in r.stderr


def test_an_outage_past_the_deadline_gives_up_with_exit_4_and_the_resume_command(
    jit: Callable[..., Run], server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.submit = "pending"
    server.fail[f"GET /v1/requests/{ID}"] = httpx.ConnectError("[Errno 111] Connection refused")
    clock = iter(datetime.now(UTC) + timedelta(minutes=20 * i) for i in range(100))
    monkeypatch.setattr(waiting, "_now", lambda: next(clock))
    r = jit("login", TARGET, "--poll", "0")
    assert r.code == EXIT_UNREACHABLE, r.stderr
    assert "server unreachable (" in r.stderr and "(the request lapses then)" in r.stderr
    assert f"server still unreachable, and request {ID} lapsed unanswered at" in r.stderr
    assert f"Later: jit-ssh login {TARGET} --resume {ID}" in r.stderr
    assert "Traceback" not in r.stderr
    assert server.state(ID) == "pending"


def test_a_proxy_answering_502_for_a_while_is_an_outage_not_the_end(
    jit: Callable[..., Run], server: Server
) -> None:
    server.submit = "pending"
    # The load balancer in front answers 502 for the first two polls, then the server is back.
    server.fail[f"GET /v1/requests/{ID}"] = httpx.Response(502, text="<html>Bad Gateway</html>")
    inner = server.handle
    polls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == f"/v1/requests/{ID}":
            polls["n"] += 1
            if polls["n"] == 3:
                del server.fail[f"GET /v1/requests/{ID}"]
                _approve(server, "")()
        return inner(request)

    r = jit("login", TARGET, "--poll", "0", transport=httpx.MockTransport(handle))
    assert r.code == EXIT_OK, r.stderr
    assert "server unreachable (" in r.stderr and "[http_502]" in r.stderr
    assert "still unreachable; retrying in 2s" in r.stderr
    assert "server is back" in r.stderr and "+ approved by bob" in r.stderr


# --------------------------------------------------------------------------- a real outage


class _RealServer:
    """The app on a real socket on 127.0.0.1, which can be stopped and started again on
    the same port (a restart: connections are refused in between)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self._server: BaseWSGIServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def real(server: Server) -> Iterator[_RealServer]:
    r = _RealServer(server.app)
    r.start()
    yield r
    r.stop()


def _run_cli(args: list[str], env: dict[str, str]) -> Run:
    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _):
        try:
            main(args)
            code = EXIT_OK
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else EXIT_FAILED
        return Run(code, out.getvalue().decode(), err.getvalue().decode())


def test_a_server_restart_mid_wait_is_retried_with_backoff_then_the_wait_goes_on(
    home: Path,
    keys: dict[str, tuple[Path, str]],
    server: Server,
    real: _RealServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.submit = "pending"
    backoff: list[float] = []
    polls = {"n": 0, "after": 0}

    def sleep(seconds: float) -> None:
        # Who sleeps says what it is: the wait's poll, its outage backoff, or one call's retry.
        caller = sys._getframe(1).f_code.co_name
        if caller == "wait_for_decision":
            polls["n"] += 1
            if polls["n"] == 2:
                real.stop()
            if backoff:
                polls["after"] += 1
                if polls["after"] == 1:
                    _approve(server, "back online, go ahead")()
        elif caller == "_poll":
            backoff.append(seconds)
            if len(backoff) == 3:
                real.start()

    monkeypatch.setattr(time, "sleep", sleep)
    env = {
        "JIT_SSH_SERVER": real.url,
        "JIT_SSH_USER": "alice",
        "JIT_SSH_IDENTITY": str(keys["alice"][0]),
    }
    r = _run_cli(["login", TARGET, "--poll", "0.01"], env)
    assert r.code == EXIT_OK, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    out = [line for line in lines if "retrying in" in line]
    assert re.fullmatch(
        # The server going away mid-call resets that connection; later calls are refused.
        r"server unreachable \((cannot reach .*Connection refused.*|\S+: \[Errno 104\] "
        r"Connection reset by peer) \[server_unreachable\]\); "
        r"retrying in 1s until \d\d:\d\d \S+ \(the request lapses then\)",
        out[0],
    ), out
    assert [re.search(r"retrying in (\d+)s", line).group(1) for line in out] == ["1", "2", "4"]  # type: ignore[union-attr]
    assert out[1].startswith("still unreachable; retrying in 2s until")
    # 1 s doubling, with at most a tenth of jitter.
    assert [int(b) for b in backoff] == [1, 2, 4] and all(
        d <= b <= d * 1.1 for d, b in zip((1, 2, 4), backoff, strict=True)
    )
    back = lines.index(next(line for line in lines if line.startswith("server is back")))
    assert back == lines.index(out[-1]) + 1
    assert re.fullmatch(r'\+ approved by bob at .*: "back online, go ahead"', lines[back + 1])
    assert lines[-1].startswith("Approved by bob; certificate valid until")
    assert (keys_dir(home) / f"{access_name(TARGET, ID)}-cert.pub").exists()


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_mid_wait_prints_the_resume_command_and_exits_143(
    home: Path, keys: dict[str, tuple[Path, str]], server: Server, real: _RealServer
) -> None:
    server.submit = "pending"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JIT_SSH_")},
        "HOME": str(home),
        "JIT_SSH_SERVER": real.url,
        "JIT_SSH_USER": "alice",
        "JIT_SSH_IDENTITY": str(keys["alice"][0]),
    }
    env.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from client.cli import main; main()", "login", TARGET],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stderr is not None
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("Needs 1 approval"):
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = "".join(seen) + rest
    assert proc.returncode == 128 + signal.SIGTERM == waiting.EXIT_TERMINATED, stderr
    assert (
        f"Terminated; request {ID} is left pending. Later: jit-ssh login {TARGET} --resume {ID}"
        in stderr
    )
    assert "Traceback" not in stderr
    assert server.state(ID) == "pending"


# --------------------------------------------------------------------------- the server's view


def test_the_request_view_names_who_may_still_approve(server: Server) -> None:
    from server.admin import Admin

    admin = Admin(server.app.extensions["jit_ssh"].service)
    admin.add_user("carol", groups=["approvers"], roles=["approver"])
    admin.add_user("dave", groups=["approvers"], roles=["requester"])  # no approver role
    admin.add_user("erin", groups=["others"], roles=["approver"])  # not in the rule's groups
    admin.add_user("gone", groups=["approvers"], roles=["approver"])
    admin.set_disabled("gone")
    server.submit = "pending"
    created = server.call("alice", "POST", "/v1/requests", {"target": TARGET, "duration": "10m"})
    assert created["approvers"]["groups"] == ["approvers"]
    view = server.call("alice", "GET", f"/v1/requests/{ID}")
    eligible = view["approvers"]["eligible"]
    assert "bob" in eligible and "carol" in eligible
    assert not {"alice", "dave", "erin", "gone"} & set(eligible)
    assert view["approvers"]["eligible_total"] == len(eligible)
    assert view["pending_until"] and view["approvals"] == []
    # Who decided may not decide again: bob is no longer listed after his approval.
    _two_approvals(server)
    view = server.call("alice", "GET", f"/v1/requests/{ID}")
    server.call("bob", "POST", f"/v1/requests/{ID}/approve", {"comment": "fine by me"})
    view = server.call("alice", "GET", f"/v1/requests/{ID}")
    assert view["state"] == "pending", view
    assert "bob" not in view["approvers"]["eligible"]
    assert [(a["approver"], a["comment"]) for a in view["approvals"]] == [("bob", "fine by me")]
    assert view["approvals"][0]["at"].endswith("Z")
    # No longer pending: the field is gone (nobody approves it any more).
    server.call("alice", "POST", f"/v1/requests/{ID}/cancel")
    assert "approvers" not in server.call("alice", "GET", f"/v1/requests/{ID}")


def test_lists_carry_no_approvers_field(server: Server) -> None:
    server.submit = "pending"
    server.call("alice", "POST", "/v1/requests", {"target": TARGET, "duration": "10m"})
    rows = server.call("alice", "GET", "/v1/requests?mine=1")["requests"]
    assert len(rows) == 1 and "approvers" not in rows[0]


# --------------------------------------------------------------------------- a hostile server


def _answer(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": ID,
        "state": "pending",
        "target": TARGET,
        "approvals_required": 1,
        "pending_until": "2026-12-02T10:32:00Z",
        "approvals": [
            {
                "approver": "bob",
                "decision": "approve",
                "comment": "ok",
                "at": "2026-12-02T10:00:00Z",
            }
        ],
        "approvers": {
            "groups": ["approvers"],
            "users": [],
            "eligible": ["carol"],
            "eligible_total": 1,
        },
    }
    base.update(changes)
    return base


def test_a_good_view_is_typed() -> None:
    view = check_request_answer(_answer())
    assert view.pending_until == datetime(2026, 12, 2, 10, 32, tzinfo=UTC)
    assert view.approvals[0].comment == "ok" and view.approvals[0].at is not None
    assert view.approvers is not None and view.approvers.eligible == ("carol",)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"pending_until": 12}, "pending_until"),
        ({"pending_until": "soon"}, "pending_until"),
        ({"pending_until": "2026-12-02T10:32:00"}, "pending_until"),
        ({"approvals": [{"approver": "bob", "decision": "approve", "comment": 7}]}, "comment"),
        (
            {"approvals": [{"approver": "bob", "decision": "approve", "comment": "x" * 1001}]},
            "comment",
        ),
        (
            {"approvals": [{"approver": "bob", "decision": "approve", "comment": "ok\x1b[2J"}]},
            "comment",
        ),
        (
            {"approvals": [{"approver": "bob", "decision": "approve", "comment": "\u202eevom"}]},
            "comment",
        ),
        ({"approvals": [{"approver": "bob\x1b]0;x", "decision": "approve"}]}, "approver"),
        ({"approvals": [{"approver": "bob", "decision": "approve", "at": "yesterday"}]}, "time"),
        ({"approvals": [{"approver": "bob", "decision": "approve"}] * 300}, "approvals"),
        ({"approvers": "bob"}, "approvers"),
        ({"approvers": {"eligible": "bob"}}, "approvers.eligible"),
        ({"approvers": {"eligible": ["bob carol"]}}, "approvers.eligible"),
        ({"approvers": {"eligible": ["x" * 65]}}, "approvers.eligible"),
        ({"approvers": {"eligible": ["a"] * 257}}, "approvers.eligible"),
        ({"approvers": {"groups": [1]}}, "approvers.groups"),
        ({"approvers": {"eligible": ["bob"], "eligible_total": "1"}}, "eligible_total"),
        ({"approvers": {"eligible": ["bob"], "eligible_total": True}}, "eligible_total"),
        ({"approvers": {"eligible": ["bob", "carol"], "eligible_total": 1}}, "eligible_total"),
    ],
)
def test_hostile_wait_fields_are_refused_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadServerAnswer) as e:
        check_request_answer(_answer(**changes))
    assert field in str(e.value), str(e.value)


def test_a_server_pushing_its_deadline_out_cannot_keep_an_outage_retried_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile server answers now and then, each time with a later ``pending_until``, and is
    unreachable in between: the outage is retried only until the first deadline it gave."""
    from client.errors import ServerUnreachable

    start = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    first = start + timedelta(minutes=10)

    def view(pending_until: datetime) -> Any:
        return check_request_answer(
            {
                "id": ID,
                "state": "pending",
                "target": TARGET,
                "requester": "alice",
                "reason": "r",
                "created_at": "2026-12-02T10:00:00Z",
                "approval_url": None,
                "deny_reason": None,
                "duration_seconds": 1800,
                "approvals_required": 1,
                "approvals": [],
                "certificate": None,
                "pending_until": pending_until.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    now = {"t": start}
    calls = {"n": 0}

    def fetch(_client: Any, _id: str) -> Any:
        calls["n"] += 1
        if calls["n"] % 2 == 0:  # every other call: "still pending", a day later each time
            return view(now["t"] + timedelta(days=calls["n"]))
        raise ServerUnreachable("connection refused")

    def sleep(seconds: float) -> None:
        now["t"] += timedelta(seconds=max(seconds, 60))
        assert calls["n"] < 1000, "the wait never gave up"

    monkeypatch.setattr(waiting, "_now", lambda: now["t"])
    monkeypatch.setattr(waiting.time, "sleep", sleep)
    with pytest.raises(ServerUnreachable):
        waiting.wait_for_decision(None, view(first), poll=0, quiet=True, fetch=fetch)  # type: ignore[arg-type]
    assert now["t"] <= first + timedelta(minutes=2)


def test_with_no_eligible_approver_yet_the_wait_says_why_and_what_to_do() -> None:
    """With single sign-on an approver has no account until they sign in once: the wait says
    so, instead of only "ask an admin"."""
    from client.verify import Approvers

    req = waiting_view(Approvers(groups=("approvers",), users=(), eligible=(), eligible_total=0))
    text = waiting.approvers_text(req)
    assert text.startswith("1 approval from group approvers; nobody may approve it now")
    assert "an approver to sign in to the web form once" in text


def waiting_view(approvers: Any) -> Any:
    from dataclasses import replace

    view = check_request_answer(
        {
            "id": ID,
            "state": "pending",
            "target": TARGET,
            "requester": "alice",
            "reason": "r",
            "created_at": "2026-12-02T10:00:00Z",
            "approval_url": None,
            "deny_reason": None,
            "duration_seconds": 1800,
            "approvals_required": 1,
            "approvals": [],
            "certificate": None,
        }
    )
    return replace(view, approvers=approvers)
