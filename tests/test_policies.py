"""policies: loading, validation (every problem, with its line and field), versions."""

from __future__ import annotations

import ast
import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest

import policies
from ca.errors import JitSshError
from policies import InvalidPolicy, PolicyProblem, load_demo_policy, load_policy, parse_policy
from policies._lines import key_lines, line_of
from server.errors import http_status

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """\
[targets.web]
principals = ["deploy@web"]

[[rules]]
name = "r"
targets = ["web"]
groups = ["eng"]
max_duration = "1h"
approver_groups = ["sre"]
"""


def problems_of(text: str) -> tuple[PolicyProblem, ...]:
    with pytest.raises(InvalidPolicy) as info:
        parse_policy(text, source="p.toml")
    return info.value.problems


def line_number(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in text")


# -- the demo policy ------------------------------------------------------------


def test_demo_policy_loads_and_has_the_documented_shape() -> None:
    policy = load_demo_policy()
    assert policy == load_policy(policies.demo_policy_path())
    assert [t.name for t in policy.targets] == ["demo"]
    demo = policy.target("demo")
    assert demo is not None
    assert demo.principals == ("jit-demo@demo",)
    assert demo.login_users == ("jit-demo",)
    access = policy.rule("demo-access")
    assert access is not None
    assert access.groups == {"engineers", "oncall"}
    assert access.max_duration == timedelta(hours=1)
    assert access.approvals_required == 1
    assert access.approver_groups == {"approvers"}
    assert access.auto_approve is not None
    assert access.auto_approve.groups == {"oncall"}
    assert access.auto_approve.max_duration == timedelta(minutes=15)
    glass = policy.rule("demo-break-glass")
    assert glass is not None and glass.break_glass and glass.reason_required
    assert re.fullmatch(r"[0-9a-f]{64}", policy.version)


def test_demo_policy_path_is_inside_the_package() -> None:
    path = policies.demo_policy_path()
    assert path.name == "demo.toml" and path.is_file()
    assert path.parent == Path(policies.__file__).parent


def test_docs_example_is_a_valid_policy() -> None:
    text = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert blocks, "docs/policies.md should hold a complete TOML example"
    for block in blocks:
        policy = parse_policy(block, source="docs/policies.md")
        assert policy.rules


def test_docs_list_every_rule_key() -> None:
    from policies import loader

    text = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    for key in (*loader._RULE_KEYS, *loader._TARGET_KEYS, *loader._AUTO_KEYS):
        assert f"`{key}`" in text, key


def test_minimal_policy_fills_in_defaults() -> None:
    policy = parse_policy(MINIMAL)
    rule = policy.rules[0]
    assert rule.default_duration == rule.max_duration == timedelta(hours=1)
    assert rule.approvals_required == 1
    assert rule.reason_required is True
    assert rule.extensions == ("permit-pty",)
    assert rule.pending_ttl == timedelta(hours=1)
    assert rule.claim_window == timedelta(minutes=15)
    assert rule.approvers_may_shorten is True
    assert rule.break_glass is False
    assert rule.source_address == () and rule.force_command is None
    assert policy.target("web") is not None and policy.target("nope") is None


def test_policy_without_rules_is_valid_and_denies_everything() -> None:
    policy = parse_policy('[targets.web]\nprincipals = ["deploy@web"]\n')
    assert policy.rules == ()


def test_extensions_and_options_are_normalised() -> None:
    text = MINIMAL + (
        'extensions = ["permit-user-rc", "permit-pty"]\n'
        'source_address = ["192.0.2.7", "10.0.0.0/8", "2001:db8::/32"]\n'
        'force_command = "/bin/true"\n'
    )
    rule = parse_policy(text).rules[0]
    assert rule.extensions == ("permit-pty", "permit-user-rc")
    assert rule.source_address == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32")
    assert rule.force_command == "/bin/true"


def test_empty_extensions_grant_none() -> None:
    assert parse_policy(MINIMAL + "extensions = []\n").rules[0].extensions == ()


def test_one_second_durations_are_allowed() -> None:
    text = MINIMAL.replace('max_duration = "1h"', 'max_duration = "1s"')
    assert parse_policy(text).rules[0].max_duration == timedelta(seconds=1)


# -- versions -------------------------------------------------------------------


def test_version_ignores_comments_whitespace_and_order() -> None:
    base = parse_policy(MINIMAL)
    reformatted = (
        "# a comment\n\n"
        "[targets.web]   # trailing comment\n"
        "principals = [ 'deploy@web' ]\n\n\n"
        "[[rules]]\n"
        'approver_groups = ["sre"]\n'
        'max_duration = "60m"\n'
        'groups = ["eng"]\n'
        'targets = ["web"]\n'
        'name = "r"\n'
        "approvals_required = 1\n"
    )
    assert parse_policy(reformatted).version == base.version


def test_version_ignores_order_within_name_lists() -> None:
    a = parse_policy(MINIMAL.replace('groups = ["eng"]', 'groups = ["eng", "ops"]'))
    b = parse_policy(MINIMAL.replace('groups = ["eng"]', 'groups = ["ops", "eng"]'))
    assert a.version == b.version
    assert a == b


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('max_duration = "1h"', 'max_duration = "59m"'),
        ('groups = ["eng"]', 'groups = ["eng", "ops"]'),
        (
            'approver_groups = ["sre"]',
            'approver_groups = ["sre"]\napprovals_required = 2\napprover_users = ["x"]',
        ),
        ('principals = ["deploy@web"]', 'principals = ["root@web"]'),
        ('name = "r"', 'name = "r2"'),
    ],
)
def test_version_changes_with_meaning(old: str, new: str) -> None:
    assert old in MINIMAL
    assert parse_policy(MINIMAL.replace(old, new)).version != parse_policy(MINIMAL).version


def test_version_depends_on_rule_order() -> None:
    second = '\n[[rules]]\nname = "s"\ntargets = ["web"]\ngroups = ["ops"]\nmax_duration = "5m"\napprover_users = ["a"]\n'
    one = parse_policy(MINIMAL + second)
    swapped = MINIMAL.replace("[[rules]]", second.strip() + "\n\n[[rules]]", 1)
    two = parse_policy(swapped)
    assert [r.name for r in two.rules] == ["s", "r"]
    assert one.version != two.version


def test_version_is_sha256_of_canonical_json() -> None:
    import hashlib
    import json

    policy = load_demo_policy()
    canonical = policy.canonical_json()
    assert json.loads(canonical) == policy.to_dict()
    assert policy.version == hashlib.sha256(canonical.encode()).hexdigest()


def test_source_is_not_part_of_equality_or_version() -> None:
    a = parse_policy(MINIMAL, source="a.toml")
    b = parse_policy(MINIMAL, source="b.toml")
    assert a == b and a.version == b.version and a.source == "a.toml"


# -- problems, each with a line and a field ----------------------------------


def _broken(old: str, new: str) -> str:
    assert old in MINIMAL, old
    return MINIMAL.replace(old, new)


# (name, policy text, expected field, message fragment, text on the expected line)
BROKEN: list[tuple[str, str, str | None, str, str]] = [
    ("unknown top key", MINIMAL + "\n[extra]\nx = 1\n", "extra", "unknown key 'extra'", "[extra]"),
    (
        "unknown target key",
        _broken('principals = ["deploy@web"]', 'principals = ["deploy@web"]\ncolour = "red"'),
        "targets.web.colour",
        "unknown key",
        "colour",
    ),
    (
        "unknown rule key with hint",
        _broken('max_duration = "1h"', 'max_duraton = "1h"'),
        "rules[0].max_duraton",
        "did you mean 'max_duration'",
        "max_duraton",
    ),
    (
        "wrong type string",
        _broken('max_duration = "1h"', "max_duration = 3600"),
        "rules[0].max_duration",
        "must be a string",
        "max_duration",
    ),
    (
        "wrong type list",
        _broken('groups = ["eng"]', 'groups = "eng"'),
        "rules[0].groups",
        "must be an array",
        "groups",
    ),
    (
        "wrong type bool",
        _broken(
            'approver_groups = ["sre"]', 'approver_groups = ["sre"]\napprovals_required = true'
        ),
        "rules[0].approvals_required",
        "must be an integer, not a boolean",
        "approvals_required",
    ),
    (
        "wrong type in list",
        _broken('groups = ["eng"]', 'groups = ["eng", 7]'),
        "rules[0].groups[1]",
        "must be a string",
        "groups",
    ),
    (
        "bad duration",
        _broken('max_duration = "1h"', 'max_duration = "1hour"'),
        "rules[0].max_duration",
        "not a duration",
        "max_duration",
    ),
    (
        "zero duration",
        _broken('max_duration = "1h"', 'max_duration = "0s"'),
        "rules[0].max_duration",
        "longer than 0",
        "max_duration",
    ),
    (
        "duration over the CA cap",
        _broken('max_duration = "1h"', 'max_duration = "2d"'),
        "rules[0].max_duration",
        "CA's limit",
        "max_duration",
    ),
    (
        "default over max",
        _broken('max_duration = "1h"', 'max_duration = "1h"\ndefault_duration = "2h"'),
        "rules[0].default_duration",
        "must not be longer than max_duration",
        "default_duration",
    ),
    (
        "missing max_duration",
        _broken('max_duration = "1h"\n', ""),
        "rules[0].max_duration",
        "is required",
        "[[rules]]",
    ),
    (
        "missing principals",
        _broken('principals = ["deploy@web"]', 'description = "x"'),
        "targets.web.principals",
        "is required",
        "[targets.web]",
    ),
    (
        "empty principals",
        _broken('principals = ["deploy@web"]', "principals = []"),
        "targets.web.principals",
        "at least one principal",
        "principals",
    ),
    (
        "principal with space",
        _broken('principals = ["deploy@web"]', 'principals = ["deploy@web", "bad one"]'),
        "targets.web.principals[1]",
        "whitespace",
        "principals",
    ),
    (
        "principal with comma",
        _broken('principals = ["deploy@web"]', 'principals = ["a,b"]'),
        "targets.web.principals[0]",
        "comma",
        "principals",
    ),
    (
        "principal with control char",
        _broken('principals = ["deploy@web"]', 'principals = ["a\\u0007b"]'),
        "targets.web.principals[0]",
        "control",
        "principals",
    ),
    (
        "principal too long",
        _broken('principals = ["deploy@web"]', f'principals = ["{"x" * 256}"]'),
        "targets.web.principals[0]",
        "longer than 255",
        "principals",
    ),
    (
        "too many principals",
        _broken(
            'principals = ["deploy@web"]',
            "principals = [" + ", ".join(f'"p{i}"' for i in range(257)) + "]",
        ),
        "targets.web.principals",
        "at most 256",
        "principals",
    ),
    (
        "duplicate principal",
        _broken('principals = ["deploy@web"]', 'principals = ["a", "a"]'),
        "targets.web.principals[1]",
        "listed twice",
        "principals",
    ),
    (
        "bad login user",
        _broken(
            'principals = ["deploy@web"]', 'principals = ["deploy@web"]\nlogin_users = ["no body"]'
        ),
        "targets.web.login_users[0]",
        "not a valid user name",
        "login_users",
    ),
    (
        "bad target name",
        MINIMAL.replace("[targets.web]", '[targets."we b"]').replace(
            'targets = ["web"]', 'targets = ["we b"]'
        ),
        'targets."we b"',
        "target name",
        "[targets",
    ),
    ("no targets", "[targets]\n", "targets", "defines no targets", "[targets]"),
    ("targets missing", '[[rules]]\nname = "r"\n', "targets", "is required", None),  # type: ignore[list-item]
    (
        "rule names unknown target",
        _broken('targets = ["web"]', 'targets = ["web", "nope"]'),
        "rules[0].targets[1]",
        "no target named 'nope'",
        "targets =",
    ),
    (
        "rule with no targets",
        _broken('targets = ["web"]', "targets = []"),
        "rules[0].targets",
        "at least one target",
        "targets =",
    ),
    (
        "rule names nobody",
        _broken('groups = ["eng"]', "groups = []"),
        "rules[0]",
        "names nobody",
        "[[rules]]",
    ),
    (
        "rule without approvers",
        _broken('approver_groups = ["sre"]', ""),
        "rules[0]",
        "names no approvers",
        "[[rules]]",
    ),
    (
        "too few approver users",
        _broken('approver_groups = ["sre"]', 'approver_users = ["a"]\napprovals_required = 2'),
        "rules[0].approvals_required",
        "only 1",
        "approvals_required",
    ),
    (
        "zero approvals",
        _broken('approver_groups = ["sre"]', 'approver_groups = ["sre"]\napprovals_required = 0'),
        "rules[0].approvals_required",
        "between 1 and 16",
        "approvals_required",
    ),
    (
        "bad regex",
        _broken(
            'approver_groups = ["sre"]', "approver_groups = [\"sre\"]\nreason_pattern = 'INC-(\\d+'"
        ),
        "rules[0].reason_pattern",
        "not a valid regular expression",
        "reason_pattern",
    ),
    (
        "pattern without reason",
        _broken(
            'approver_groups = ["sre"]',
            "approver_groups = [\"sre\"]\nreason_pattern = 'x'\nreason_required = false",
        ),
        "rules[0].reason_required",
        "pattern needs a reason",
        "reason_required",
    ),
    (
        "bad CIDR",
        _broken(
            'approver_groups = ["sre"]',
            'approver_groups = ["sre"]\nsource_address = ["10.0.0.0/8", "10.0.0.300"]',
        ),
        "rules[0].source_address[1]",
        "not an address or CIDR",
        "source_address",
    ),
    (
        "CIDR with host bits",
        _broken(
            'approver_groups = ["sre"]',
            'approver_groups = ["sre"]\nsource_address = ["10.0.0.1/8"]',
        ),
        "rules[0].source_address[0]",
        "host bits set",
        "source_address",
    ),
    (
        "empty source_address",
        _broken('approver_groups = ["sre"]', 'approver_groups = ["sre"]\nsource_address = []'),
        "rules[0].source_address",
        "at least one",
        "source_address",
    ),
    (
        "unknown extension",
        _broken(
            'approver_groups = ["sre"]',
            'approver_groups = ["sre"]\nextensions = ["permit-x11-forwarding"]',
        ),
        "rules[0].extensions[0]",
        "did you mean 'permit-X11-forwarding'",
        "extensions",
    ),
    (
        "empty force_command",
        _broken('approver_groups = ["sre"]', 'approver_groups = ["sre"]\nforce_command = " "'),
        "rules[0].force_command",
        "must not be empty",
        "force_command",
    ),
    (
        "force_command with newline",
        _broken('approver_groups = ["sre"]', 'approver_groups = ["sre"]\nforce_command = "a\\nb"'),
        "rules[0].force_command",
        "control characters",
        "force_command",
    ),
    (
        "pending_ttl too long",
        _broken('approver_groups = ["sre"]', 'approver_groups = ["sre"]\npending_ttl = "8d"'),
        "rules[0].pending_ttl",
        "longest a request may wait",
        "pending_ttl",
    ),
    (
        "duplicate rule name",
        MINIMAL + MINIMAL[MINIMAL.index("[[rules]]") :],
        "rules[1].name",
        "already named 'r'",
        None,
    ),  # type: ignore[list-item]
    (
        "rules as a table",
        MINIMAL.replace("[[rules]]", "[rules]"),
        "rules",
        "array of tables",
        "[rules]",
    ),
    (
        "bad rule name",
        _broken('name = "r"', 'name = "r r"'),
        "rules[0].name",
        "rule name",
        "name =",
    ),
    (
        "bad group name",
        _broken('groups = ["eng"]', 'groups = ["e ng"]'),
        "rules[0].groups[0]",
        "group name",
        "groups",
    ),
    (
        "break-glass with approvers",
        _broken('approver_groups = ["sre"]', 'approver_groups = ["sre"]\nbreak_glass = true'),
        "rules[0].approver_groups",
        "self-approved",
        "approver_groups",
    ),
    (
        "break-glass without reason",
        _broken('approver_groups = ["sre"]', "break_glass = true\nreason_required = false"),
        "rules[0].reason_required",
        "always requires a reason",
        "reason_required",
    ),
    (
        "auto over rule max",
        MINIMAL + '[rules.auto_approve]\ngroups = ["eng"]\nmax_duration = "2h"\n',
        "rules[0].auto_approve.max_duration",
        "rule's max_duration",
        'max_duration = "2h"',
    ),
    (
        "auto names nobody",
        MINIMAL + '[rules.auto_approve]\nmax_duration = "5m"\n',
        "rules[0].auto_approve",
        "names nobody",
        "[rules.auto_approve]",
    ),
    (
        "auto unknown key",
        MINIMAL + '[rules.auto_approve]\ngroups = ["eng"]\nmax_duration = "5m"\nwindow = "x"\n',
        "rules[0].auto_approve.window",
        "unknown key",
        "window",
    ),
    (
        "auto bad hours",
        MINIMAL + '[rules.auto_approve]\ngroups = ["eng"]\nmax_duration = "5m"\nhours = "9-17"\n',
        "rules[0].auto_approve.hours",
        "local time range",
        "hours",
    ),
    (
        "auto empty hours",
        MINIMAL
        + '[rules.auto_approve]\ngroups = ["eng"]\nmax_duration = "5m"\nhours = "09:00-09:00"\n',
        "rules[0].auto_approve.hours",
        "empty range",
        "hours",
    ),
    (
        "auto bad day",
        MINIMAL
        + '[rules.auto_approve]\ngroups = ["eng"]\nmax_duration = "5m"\ndays = ["mon", "funday"]\n',
        "rules[0].auto_approve.days[1]",
        "not a day",
        "days",
    ),
    (
        "auto bad zone",
        MINIMAL
        + '[rules.auto_approve]\ngroups = ["eng"]\nmax_duration = "5m"\nhours = "09:00-17:00"\ntimezone = "Mars/Olympus"\n',
        "rules[0].auto_approve.timezone",
        "unknown time zone",
        "timezone",
    ),
    (
        "auto zone alone",
        MINIMAL + '[rules.auto_approve]\ngroups = ["eng"]\nmax_duration = "5m"\ntimezone = "UTC"\n',
        "rules[0].auto_approve.timezone",
        "no effect",
        "timezone",
    ),
]


@pytest.mark.parametrize(
    ("text", "field", "fragment", "on_line"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_each_problem_names_line_and_field(
    text: str, field: str, fragment: str, on_line: str | None
) -> None:
    found = problems_of(text)
    matching = [p for p in found if p.field == field and fragment in p.message]
    assert matching, f"no problem for {field} containing {fragment!r} in {[str(p) for p in found]}"
    problem = matching[0]
    assert problem.file == "p.toml"
    if on_line is not None:
        assert problem.line == line_number(text, on_line), str(problem)
    assert str(problem).startswith("p.toml:" if problem.line else "p.toml: ")


def test_duplicate_rule_name_points_at_the_second_name() -> None:
    text = MINIMAL + MINIMAL[MINIMAL.index("[[rules]]") :]
    (problem,) = problems_of(text)
    second = [i for i, line in enumerate(text.splitlines(), 1) if line.startswith('name = "r"')][1]
    assert problem.line == second


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a = \n", 1, "Invalid value"),
        ('[targets.web]\nprincipals = ["a"\n\n[x]\n', 4, ""),
        ('[targets.web]\nprincipals = ["a"]\n[targets.web]\nprincipals = ["b"]\n', 3, "twice"),
        ('x = "unterminated\n', 1, ""),
        ('[targets.web]\nprincipals = ["a"]\nprincipals = ["b"]\n', 3, ""),
    ],
)
def test_toml_syntax_errors_have_a_line(text: str, line: int, fragment: str) -> None:
    (problem,) = problems_of(text)
    assert problem.line == line
    assert problem.message.startswith("not valid TOML")
    assert fragment in problem.message


def test_every_problem_is_reported_in_file_order() -> None:
    text = (
        "[targets.web]\n"  # 1
        'principals = ["bad one"]\n'  # 2
        "colour = 1\n"  # 3
        "\n"
        "[[rules]]\n"  # 5
        'name = "r"\n'  # 6
        'targets = ["nope"]\n'  # 7
        'groups = ["eng"]\n'  # 8
        'max_duration = "forever"\n'  # 9
        'approver_groups = ["sre"]\n'  # 10
        "reason_pattern = '('\n"  # 11
        'source_address = ["300.1.1.1"]\n'  # 12
    )
    found = problems_of(text)
    assert [p.line for p in found] == [2, 3, 7, 9, 11, 12]
    assert {p.field for p in found} == {
        "targets.web.principals[0]",
        "targets.web.colour",
        "rules[0].targets[0]",
        "rules[0].max_duration",
        "rules[0].reason_pattern",
        "rules[0].source_address[0]",
    }


def test_policy_error_is_a_jit_ssh_error_with_code_and_first_problem() -> None:
    with pytest.raises(InvalidPolicy) as info:
        parse_policy("[targets.web]\nprincipals = []\nx = 1\n", source="p.toml")
    err = info.value
    assert isinstance(err, JitSshError)
    assert err.code == "invalid_policy"
    assert http_status(err) == 400
    assert (err.file, err.line, err.field) == ("p.toml", 2, "targets.web.principals")
    assert str(err).startswith("p.toml:2: targets.web.principals: ")
    assert str(err).endswith("(and 1 more problem)")


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidPolicy) as info:
        load_policy(tmp_path / "missing.toml")
    assert "cannot read" in str(info.value)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'description = "ok"\ndescription2 = "caf\xe9"\n')
    with pytest.raises(InvalidPolicy) as info:
        load_policy(bad)
    assert info.value.line == 2 and "UTF-8" in str(info.value)


def test_load_policy_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(MINIMAL.replace('"1h"', '"1x"'))
    with pytest.raises(InvalidPolicy) as info:
        load_policy(path)
    assert info.value.file == str(path)
    assert info.value.line == line_number(MINIMAL, "max_duration")


# -- the line finder ------------------------------------------------------------


def test_key_lines_follow_tables_arrays_and_inline_tables() -> None:
    text = (
        "top = 1\n"  # 1
        "[a]\n"  # 2
        "b.c = [1,\n"  # 3
        "  2, # comment ] , [\n"  # 4
        '  "x]"]\n'  # 5
        "[[r]]\n"  # 6
        "s = '''\n"  # 7
        "[not.a.table]\n"  # 8
        "'''\n"  # 9
        "[r.sub]\n"  # 10
        "k = { p = 1, q = [3] }\n"  # 11
        "[[r]]\n"  # 12
        '"quoted key" = "v"\n'  # 13
        "[r.sub]\n"  # 14
        "k = 2\n"  # 15
    )
    lines = key_lines(text)
    assert lines[("top",)] == 1
    assert lines[("a",)] == 2
    assert lines[("a", "b", "c")] == 3
    assert lines[("a", "b", "c", 1)] == 4
    assert lines[("a", "b", "c", 2)] == 5
    assert lines[("r", 0)] == 6
    assert lines[("r", 0, "s")] == 7
    assert ("not",) not in lines
    assert lines[("r", 0, "sub")] == 10
    assert lines[("r", 0, "sub", "k", "q", 0)] == 11
    assert lines[("r", 1)] == 12
    assert lines[("r", 1, "quoted key")] == 13
    assert lines[("r", 1, "sub", "k")] == 15
    assert line_of(lines, ("r", 1, "sub", "missing")) == 14
    assert line_of(lines, ("nothing",)) is None


def test_key_lines_never_raise_on_odd_input() -> None:
    for text in ["[", "a = ", 'a = "', "[[a]]\n[[a.b]]\n[a.b.c]\nx=1", "\x00", "a = [1, 2"]:
        assert isinstance(key_lines(text), dict)


# -- purity -----------------------------------------------------------------------


def test_policies_imports_only_the_standard_library_and_ca() -> None:
    allowed_roots = set(sys.stdlib_module_names) | {"ca", "policies", "__future__"}
    for path in (REPO / "policies").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    continue
                module = node.module or ""
                roots = [module.split(".")[0]]
                if roots[0] == "ca":
                    # ca's private helpers stay private.
                    assert not any(a.name.startswith("_") for a in node.names), (path.name, module)
                    assert not any(part.startswith("_") for part in module.split(".")), (
                        path.name,
                        module,
                    )
            else:
                continue
            for root in roots:
                assert root in allowed_roots, f"{path.name} imports {root}"


def test_public_surface() -> None:
    for name in policies.__all__:
        assert hasattr(policies, name), name
    assert (REPO / "policies" / "py.typed").exists()
    assert (REPO / "policies" / "demo.toml").exists()
