"""Issue 12, point 5: ``jit-ssh targets`` lists what the caller may request, for how long and
who approves, judged by the server for the caller (``GET /v1/targets?mine=1``). Over the real
app, with the fixtures of :mod:`tests.test_cli_engineer`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.cli import EXIT_FAILED, EXIT_OK
from client.errors import BadServerAnswer
from client.verify import check_target_list

from .support import signed_headers
from .test_cli_engineer import (  # noqa: F401 (fixtures)
    POLICY,
    SERVER,
    Run,
    Server,
    home,
    jit,
    keys,
    server,
    sleeps,
)

#: The test policy, plus a target only DBAs may request and a break-glass rule for on-call.
WIDER = (
    POLICY
    + """
[targets.vault]
description = "The secrets store"
principals = ["root@vault"]
login_users = ["root"]

[[rules]]
name = "dba"
targets = ["vault"]
groups = ["dba"]
max_duration = "15m"
default_duration = "5m"
approvals_required = 2
approver_groups = ["security"]
approver_users = ["bob"]
reason_pattern = '\\bINC-\\d+\\b'

[[rules]]
name = "glass"
break_glass = true
targets = ["prod-db"]
groups = ["oncall"]
max_duration = "30m"
"""
)


def _policy(server: Server, text: str) -> None:
    holder = server.app.extensions["jit_ssh"].service.policy
    Path(holder.path).write_text(text)
    holder.reload()


def test_targets_lists_what_i_may_request_for_how_long_and_who_approves(
    jit: Callable[..., Run], server: Server
) -> None:
    _policy(server, WIDER)
    server.submit = "pending"  # alice: engineers only
    r = jit("targets")
    assert r.code == EXIT_OK, r.stderr
    lines = r.stdout.splitlines()
    at = lines.index("prod-db")
    assert lines[at + 1] == "  up to 2h (default 30m); needs 1 approval from group approvers"
    assert lines[at + 2] == "  jit-ssh login prod-db --for 30m"
    # Policy-aware: vault is for DBAs only, and alice is not on call (no break glass).
    assert "vault" not in r.stdout and "break-glass" not in r.stdout
    assert [line for line in lines if not line.startswith(" ")] == [
        "other",
        "other-target",
        "prod-db",
    ]


def test_targets_says_auto_approval_and_break_glass_where_they_apply_to_me(
    jit: Callable[..., Run], server: Server
) -> None:
    _policy(server, WIDER)  # alice is on call (the fixture's default)
    r = jit("targets")
    assert r.code == EXIT_OK, r.stderr
    block = r.stdout.split("prod-db\n")[1]
    assert "needs 1 approval from group approvers; auto-approved for you up to 2h" in block
    assert (
        "  break-glass: up to 30m, self-approved and reviewed afterwards: "
        "jit-ssh login prod-db --break-glass --reason ..." in block
    )


def test_targets_for_a_dba_shows_the_reason_pattern_and_every_approver(
    jit: Callable[..., Run], server: Server
) -> None:
    from server.admin import Admin

    _policy(server, WIDER)
    Admin(server.app.extensions["jit_ssh"].service).set_groups("alice", ["dba"])
    r = jit("targets")
    assert r.code == EXIT_OK, r.stderr
    assert r.stdout.splitlines() == [
        "vault  The secrets store",
        "  up to 15m (default 5m); needs 2 approvals from group security or user bob; "
        "a reason is required matching '\\bINC-\\d+\\b'",
        "  jit-ssh login vault --for 5m",
    ]


def test_targets_json(jit: Callable[..., Run], server: Server) -> None:
    _policy(server, WIDER)
    r = jit("targets", "--json")
    assert r.code == EXIT_OK, r.stderr
    rows = {t["name"]: t for t in json.loads(r.stdout)["targets"]}
    assert set(rows) == {"prod-db", "other", "other-target"}
    prod = rows["prod-db"]
    assert prod["principals"] == ["root@prod-db"] and prod["login_users"] == ["root"]
    assert prod["access"] == {
        "rule": "engineers",
        "max_duration_seconds": 7200,
        "default_duration_seconds": 1800,
        "approvals_required": 1,
        "approver_groups": ["approvers"],
        "approver_users": [],
        "auto_approve_seconds": 7200,
        "auto_approve_window": None,
        "reason_required": False,
        "reason_pattern": None,
    }
    assert prod["break_glass"]["rule"] == "glass" and prod["break_glass"]["approvals_required"] == 0
    assert rows["other"]["break_glass"] is None


def test_targets_with_no_rule_for_me_says_so(jit: Callable[..., Run], server: Server) -> None:
    from server.admin import Admin

    Admin(server.app.extensions["jit_ssh"].service).set_groups("alice", ["interns"])
    r = jit("targets")
    assert r.code == EXIT_OK
    assert r.stdout.startswith("No target you may request")
    assert json.loads(jit("targets", "--json").stdout) == {"targets": []}


def test_targets_asks_the_server_with_a_signed_call(
    jit: Callable[..., Run], server: Server
) -> None:
    assert jit("targets").code == EXIT_OK
    assert server.paths() == ["GET /v1/targets?mine=1"]


# --------------------------------------------------------------------------- the server side


def _get(server: Server, path: str, user: str | None = None) -> httpx.Response:
    path_only, _, query = path.partition("?")
    headers = (
        {}
        if user is None
        else signed_headers(server.keys[user], user, "GET", path_only, b"", query)
    )
    with httpx.Client(transport=httpx.WSGITransport(app=server.app), base_url=SERVER) as c:
        return c.get(path, headers=headers)


def test_the_unsigned_list_is_unchanged_for_host_setup(server: Server) -> None:
    _policy(server, WIDER)
    resp = _get(server, "/v1/targets")
    assert resp.status_code == 200
    rows = resp.json()["targets"]
    assert [t["name"] for t in rows] == ["other", "other-target", "prod-db", "vault"]
    assert all(set(t) == {"name", "description", "principals", "login_users"} for t in rows)
    assert "user" not in resp.json()


def test_mine_needs_a_signed_call(server: Server) -> None:
    resp = _get(server, "/v1/targets?mine=1")
    assert resp.status_code == 401
    assert "targets" not in resp.json()


def test_mine_is_for_the_caller(server: Server) -> None:
    _policy(server, WIDER)
    resp = _get(server, "/v1/targets?mine=1", user="bob")  # bob: approvers only
    assert resp.status_code == 200
    assert resp.json() == {
        "policy_version": resp.json()["policy_version"],
        "targets": [],
        "user": "bob",
    }


# --------------------------------------------------------------------------- a hostile server


def _row(**access: Any) -> dict[str, Any]:
    good: dict[str, Any] = {
        "rule": "engineers",
        "max_duration_seconds": 3600,
        "default_duration_seconds": 900,
        "approvals_required": 1,
        "approver_groups": ["approvers"],
        "approver_users": [],
        "auto_approve": None,
        "reason_required": False,
        "reason_pattern": None,
    }
    good.update(access)
    return {"targets": [{"name": "db", "principals": ["root@db"], "access": good}]}


@pytest.mark.parametrize(
    "access, field",
    [
        ({"rule": None}, "rule"),
        ({"rule": "a b"}, "rule"),
        ({"max_duration_seconds": "1h"}, "max_duration_seconds"),
        ({"max_duration_seconds": -1}, "max_duration_seconds"),
        ({"max_duration_seconds": 10**12}, "max_duration_seconds"),
        ({"default_duration_seconds": True}, "default_duration_seconds"),
        ({"approvals_required": 1.5}, "approvals_required"),
        ({"approver_groups": "approvers"}, "approver_groups"),
        ({"approver_groups": ["ok", "bad\x1b[2J"]}, "approver_groups"),
        ({"approver_users": ["x" * 65]}, "approver_users"),
        ({"auto_approve": "yes"}, "auto_approve"),
        ({"auto_approve": {"max_duration_seconds": "15m"}}, "auto_approve"),
        ({"auto_approve": {"max_duration_seconds": 900, "window": "\x1b]0;pwned\x07"}}, "window"),
        ({"reason_required": "no"}, "reason_required"),
        ({"reason_pattern": "x" * 1001}, "reason_pattern"),
        ({"reason_pattern": "INC\u202e"}, "reason_pattern"),
    ],
)
def test_hostile_target_access_is_refused_naming_the_field(
    access: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadServerAnswer) as e:
        check_target_list(_row(**access))
    assert field in str(e.value), str(e.value)


def test_a_hostile_description_or_access_kind_is_refused() -> None:
    for bad in (
        {"targets": [{"name": "db", "description": "\x1b[2Jhi"}]},
        {"targets": [{"name": "db", "description": "x" * 1001}]},
        {"targets": [{"name": "db", "access": ["engineers"]}]},
        {"targets": [{"name": "db", "break_glass": True}]},
    ):
        with pytest.raises(BadServerAnswer):
            check_target_list(bad)


def test_a_target_name_that_is_not_one_is_refused_by_the_command(
    jit: Callable[..., Run], server: Server
) -> None:
    answer = _row()
    answer["targets"][0]["name"] = "-oProxyCommand=x"
    server.fail["GET /v1/targets"] = httpx.Response(200, json=answer)
    r = jit("targets")
    assert r.code == EXIT_FAILED
    assert "-oProxyCommand" not in r.stdout
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
