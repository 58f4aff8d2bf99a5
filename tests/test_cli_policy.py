"""`jit-ssh policy check / explain / demo`, through click's CliRunner and the installed command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from client.cli import cli
from policies import demo_policy_path, load_demo_policy

DEMO = str(demo_policy_path())
DEMO_TEXT = demo_policy_path().read_text(encoding="utf-8")
JIT_SSH = Path(sys.executable).parent / "jit-ssh"
# A Monday, 10:00 UTC: the demo policy has no time windows, but tests never read the clock.
AT = "2026-03-02T10:00:00Z"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def explain(*args: str) -> Result:
    return run("policy", "explain", DEMO, "--at", AT, *args)


def explain_json(*args: str) -> tuple[int, dict]:
    result = explain("--json", *args)
    return result.exit_code, json.loads(result.stdout)


def broken_copy(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """The demo policy with one line changed, and that line's number."""
    assert DEMO_TEXT.count(old) == 1, old
    text = DEMO_TEXT.replace(old, new)
    line = text[: text.index(new)].count("\n") + 1
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path, line


# -- check ------------------------------------------------------------------------


def test_check_passes_on_the_demo_policy() -> None:
    result = run("policy", "check", DEMO)
    assert result.exit_code == 0, result.output
    assert f"{DEMO}: ok" in result.stdout
    assert load_demo_policy().version in result.stdout
    assert "demo-access" in result.stdout and "demo-break-glass (break-glass)" in result.stdout


def test_check_fails_with_the_line_on_a_broken_copy(tmp_path: Path) -> None:
    path, line = broken_copy(tmp_path, 'max_duration = "1h"', 'max_duration = "1 hour"')
    result = run("policy", "check", str(path))
    assert result.exit_code == 1
    assert f"{path}:{line}: rules[0].max_duration: " in result.stdout
    assert "1 problem found" in result.stderr


def test_check_lists_every_problem(tmp_path: Path) -> None:
    text = DEMO_TEXT.replace('principals = ["jit-demo@demo"]', 'principals = ["jit demo"]')
    text = text.replace(
        'targets = ["demo"]\n# Who may ask', 'targets = ["demo", "prod"]\n# Who may ask'
    )
    text = text.replace(
        'groups = ["oncall"]\nmax_duration = "15m"', 'groups = ["oncall"]\nmax_duration = "2h"'
    )
    text = text.replace("approvals_required = 1", "approvals_required = 0")
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    lines = text.splitlines()

    def at(needle: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if needle in line)

    two_hours = 'max_duration = "2h"'
    result = run("policy", "check", str(path))
    assert result.exit_code == 1
    out = result.stdout.splitlines()
    assert out == [
        f"{path}:{at('jit demo')}: targets.demo.principals[0]: principal 'jit demo' must not contain whitespace",
        f"{path}:{at('prod')}: rules[0].targets[1]: no target named 'prod' (targets: demo)",
        f"{path}:{at('approvals_required = 0')}: rules[0].approvals_required: must be between 1 and 16; "
        "use [rules.auto_approve] to grant access without approvers",
        f"{path}:{at(two_hours)}: rules[0].auto_approve.max_duration: must not be longer than the rule's max_duration",
    ]
    assert "4 problems found" in result.stderr


def test_check_reports_toml_syntax_errors_with_their_line(tmp_path: Path) -> None:
    path, line = broken_copy(tmp_path, 'name = "demo-access"', 'name = "demo-access')
    result = run("policy", "check", str(path))
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{path}:{line}: not valid TOML")


def test_check_unknown_key(tmp_path: Path) -> None:
    path, line = broken_copy(
        tmp_path, "approvers_may_shorten = true", "approvers_may_shorten = true\napprover = 1"
    )
    result = run("policy", "check", str(path))
    assert result.exit_code == 1
    assert f"{path}:{line + 1}: rules[0].approver: unknown key 'approver'" in result.stdout


def test_check_missing_file(tmp_path: Path) -> None:
    result = run("policy", "check", str(tmp_path / "nope.toml"))
    assert result.exit_code == 1
    assert "cannot read the file" in result.stdout


# -- explain, the demo cases --------------------------------------------------------


def test_explain_engineer_needs_one_approval() -> None:
    code, body = explain_json(
        "--user", "alice", "--group", "engineers", "--target", "demo", "--for", "30m"
    )
    assert code == 0
    assert body["allowed"] is True and body["auto_approved"] is False
    assert body["approvals_required"] == 1
    assert body["approvers"] == {"groups": ["approvers"], "users": []}
    assert body["principals"] == ["jit-demo@demo"]
    assert body["duration_seconds"] == 1800
    assert body["rule"] == "demo-access"
    assert body["policy_version"] == load_demo_policy().version
    assert body["at"] == "2026-03-02T10:00:00Z"
    assert any("needs 1 approval" in r for r in body["reasons"])


def test_explain_oncall_is_auto_approved_up_to_15_minutes() -> None:
    code, body = explain_json("-u", "bob", "-g", "oncall", "-t", "demo", "--for", "15m")
    assert code == 0
    assert body["allowed"] is True and body["auto_approved"] is True
    assert body["approvals_required"] == 0 and body["duration_seconds"] == 900

    code, body = explain_json("-u", "bob", "-g", "oncall", "-t", "demo", "--for", "16m")
    assert code == 0
    assert body["auto_approved"] is False and body["approvals_required"] == 1
    assert any("over the auto-approval maximum of 15m" in r for r in body["reasons"])


def test_explain_over_the_maximum_is_denied_not_shortened() -> None:
    code, body = explain_json("-u", "alice", "-g", "engineers", "-t", "demo", "--for", "1h1s")
    assert code == 1
    assert (
        body["allowed"] is False and body["principals"] == [] and body["duration_seconds"] is None
    )
    assert any("1h1s is over the maximum of 1h" in r for r in body["reasons"])


def test_explain_one_second() -> None:
    code, body = explain_json("-u", "bob", "-g", "oncall", "-t", "demo", "--for", "1s")
    assert code == 0 and body["auto_approved"] and body["duration_seconds"] == 1


def test_explain_stranger_is_denied_by_default() -> None:
    code, body = explain_json("-u", "mallory", "-t", "demo", "--for", "5m")
    assert code == 1
    assert body["allowed"] is False and body["rule"] is None
    assert body["reasons"] == [
        "no rule lets 'mallory' (no groups) request target 'demo'; denied by default"
    ]


def test_explain_break_glass() -> None:
    code, body = explain_json(
        "-u",
        "bob",
        "-g",
        "oncall",
        "-t",
        "demo",
        "--for",
        "10m",
        "--break-glass",
        "--reason",
        "INC-1: nobody answers",
    )
    assert code == 0
    assert (
        body["break_glass"] is True
        and body["flagged_for_review"] is True
        and body["approvals_required"] == 0
    )


def test_explain_without_for_uses_the_rule_default() -> None:
    code, body = explain_json("-u", "bob", "-g", "oncall", "-t", "demo")
    assert code == 0 and body["duration_seconds"] == 900


def test_explain_is_readable_by_a_person() -> None:
    result = explain("-u", "alice", "-g", "engineers", "-t", "demo", "--for", "30m")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("ALLOWED, once approved\n")
    assert "principals  jit-demo@demo" in out
    assert "1 from group approvers (never the requester)" in out
    assert "why:\n  - rule 'demo-access' applies" in out
    assert f"policy version {load_demo_policy().version}" in out

    denied = explain("-u", "alice", "-g", "engineers", "-t", "demo", "--for", "2h")
    assert denied.exit_code == 1
    assert denied.stdout.startswith("DENIED\n")
    assert "principals" not in denied.stdout
    assert "2h is over the maximum of 1h" in denied.stdout


def test_explain_at_decides_auto_approval_windows(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        DEMO_TEXT.replace(
            'groups = ["oncall"]\nmax_duration = "15m"',
            'groups = ["oncall"]\nmax_duration = "15m"\nhours = "09:00-17:00"\ntimezone = "Europe/Berlin"',
        ),
        encoding="utf-8",
    )
    args = [
        "policy",
        "explain",
        str(path),
        "-u",
        "bob",
        "-g",
        "oncall",
        "-t",
        "demo",
        "--for",
        "5m",
        "--json",
    ]
    inside = json.loads(run(*args, "--at", "2026-03-02T10:00:00+01:00").stdout)
    outside = json.loads(run(*args, "--at", "2026-03-02T17:00:00+01:00").stdout)
    naive_utc = json.loads(run(*args, "--at", "2026-03-02T08:00:00").stdout)  # 09:00 in Berlin
    assert inside["auto_approved"] is True
    assert outside["auto_approved"] is False and outside["approvals_required"] == 1
    assert naive_utc["auto_approved"] is True and naive_utc["at"] == "2026-03-02T08:00:00Z"


def test_explain_on_a_broken_policy_lists_its_problems(tmp_path: Path) -> None:
    path, line = broken_copy(
        tmp_path,
        'groups = ["oncall"]\nmax_duration = "15m"',
        'groups = ["oncall"]\nmax_duration = "15x"',
    )
    result = run("policy", "explain", str(path), "-u", "a", "-t", "demo", "--for", "5m", "--json")
    assert result.exit_code == 1
    assert f"{path}:{line + 1}: rules[0].auto_approve.max_duration:" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--for", "5 minutes"], "Invalid value for '--for'"),
        (["--for", "0s"], "longer than 0 seconds"),
        (["--at", "yesterday"], "not an ISO 8601 time"),
    ],
)
def test_explain_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["policy", "explain", DEMO, "-u", "a", "-t", "demo", *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_explain_requires_user_and_target() -> None:
    result = CliRunner().invoke(cli, ["policy", "explain", DEMO, "--for", "5m"])
    assert result.exit_code == 2
    assert "--user" in result.stderr


def test_help_documents_exit_codes() -> None:
    result = run("policy", "explain", "--help")
    assert "Exit 0 when the request would be allowed" in result.stdout
    assert "1 when it would be denied" in result.stdout


# -- demo -----------------------------------------------------------------------


def test_demo_prints_the_demo_policy_and_its_path() -> None:
    assert run("policy", "demo").stdout == DEMO_TEXT
    assert run("policy", "demo", "--path").stdout.strip() == DEMO


# -- the installed command, as a new user runs it ------------------------------------


def _installed(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not JIT_SSH.exists():
        pytest.skip(f"{JIT_SSH} is not installed")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(JIT_SSH), *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


def test_installed_command_checks_and_explains(tmp_path: Path) -> None:
    # Run from an unrelated directory so the installed package is what gets imported.
    written = _installed("policy", "demo", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    (tmp_path / "policy.toml").write_text(written.stdout, encoding="utf-8")

    ok = _installed("policy", "check", "policy.toml", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert load_demo_policy().version in ok.stdout

    auto = _installed(
        "policy",
        "explain",
        "policy.toml",
        "--user",
        "bob",
        "--group",
        "oncall",
        "--target",
        "demo",
        "--for",
        "10m",
        "--json",
        cwd=tmp_path,
    )
    assert auto.returncode == 0, auto.stderr
    assert json.loads(auto.stdout)["auto_approved"] is True

    denied = _installed(
        "policy",
        "explain",
        "policy.toml",
        "--user",
        "alice",
        "--group",
        "engineers",
        "--target",
        "demo",
        "--for",
        "2h",
        cwd=tmp_path,
    )
    assert denied.returncode == 1
    assert denied.stdout.startswith("DENIED")

    text = written.stdout.replace(
        'max_duration = "1h"', 'max_duration = "1h"\nmax_duration2 = "1h"'
    )
    (tmp_path / "broken.toml").write_text(text, encoding="utf-8")
    line = text.splitlines().index('max_duration2 = "1h"') + 1
    broken = _installed("policy", "check", "broken.toml", cwd=tmp_path)
    assert broken.returncode == 1
    assert f"broken.toml:{line}: rules[0].max_duration2: unknown key" in broken.stdout
