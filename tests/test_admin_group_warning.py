"""``admin user add --group enginers`` warns that no rule names that group (issue 12, point 5).

A group no rule of the policy names grants nothing: most likely a typo. The admin commands that
set groups (``user add``, ``user set-groups``) say so on stderr, name the closest group the policy
does name and list them all; the user is still added (a group may come before the policy change
that uses it), and the command exits 0. Against the demo policy a first start writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from client.cli import cli

DEMO_GROUPS = "approvers, engineers, oncall"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"JIT_SSH_DATA_DIR": str(tmp_path / "data"), "JIT_SSH_CONFIG": ""}


def _groups(runner: CliRunner, env: dict[str, str], name: str) -> list[str]:
    r = runner.invoke(cli, ["admin", "user", "list", "--json"], env=env)
    assert r.exit_code == 0, r.output
    users = {u["name"]: u for u in json.loads(r.stdout)}
    return list(users[name]["groups"])


def test_a_misspelt_group_is_warned_about_and_the_user_still_added(env: dict[str, str]) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["admin", "user", "add", "dan", "--group", "enginers"], env=env)
    assert r.exit_code == 0, r.output
    assert (
        "warning: no rule of the policy names the group 'enginers' (did you mean 'engineers'?); "
        f"the groups it names: {DEMO_GROUPS}"
    ) in r.stderr
    assert "dan" in r.stdout
    assert _groups(runner, env, "dan") == ["enginers"]


def test_set_groups_warns_too_and_names_every_unknown_group_once(env: dict[str, str]) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["admin", "user", "add", "erin"], env=env).exit_code == 0
    r = runner.invoke(
        cli,
        [
            "admin",
            "user",
            "set-groups",
            "erin",
            "--group",
            "oncall",
            "--group",
            "aprovers",
            "--group",
            "finance",
            "--group",
            "finance",
        ],
        env=env,
    )
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: no rule of the policy names the group 'aprovers' (did you mean 'approvers'?); "
        f"the groups it names: {DEMO_GROUPS}",
        # Nothing close: no suggestion, the list still says what exists.
        f"warning: no rule of the policy names the group 'finance'; the groups it names: {DEMO_GROUPS}",
    ]
    assert _groups(runner, env, "erin") == ["aprovers", "finance", "oncall"]


def test_groups_the_policy_names_give_no_warning(env: dict[str, str]) -> None:
    runner = CliRunner()
    r = runner.invoke(
        cli,
        # A requester group, an approver group and an auto-approved group: all named.
        ["admin", "user", "add", "fay", "--group", "engineers", "--group", "approvers"],
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert "warning" not in r.stderr
    r = runner.invoke(cli, ["admin", "user", "set-groups", "fay", "--group", "oncall"], env=env)
    assert r.exit_code == 0 and "warning" not in r.stderr
    # No group at all: nothing to warn about.
    r = runner.invoke(cli, ["admin", "user", "set-groups", "fay"], env=env)
    assert r.exit_code == 0 and r.stderr == ""


def test_a_group_only_an_auto_approval_names_is_known(tmp_path: Path) -> None:
    from policies import parse_policy
    from server.admin import policy_groups

    policy = parse_policy(
        """
[targets.db]
principals = ["root@db"]

[[rules]]
name = "db"
targets = ["db"]
users = ["gus"]
max_duration = "1h"
default_duration = "30m"
approver_groups = ["dba-leads"]

[rules.auto_approve]
groups = ["dba-oncall"]
max_duration = "15m"
"""
    )
    assert policy_groups(policy) == {"dba-leads", "dba-oncall"}
