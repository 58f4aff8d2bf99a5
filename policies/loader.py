"""Read a policy file, validate all of it, and build a :class:`~policies.Policy`.

Validation never stops at the first mistake: every problem is collected, each
with the file, the line (found by :mod:`policies._lines`) and the field, and
raised together as one :class:`~policies.PolicyError`. Unknown keys are errors
(a misspelt ``max_duraton`` must not silently fall back to a default).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
import unicodedata
from collections.abc import Callable
from datetime import time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ca.certs import (
    MAX_DURATION as CA_MAX_DURATION,
)
from ca.certs import (
    MAX_FORCE_COMMAND,
    MAX_PRINCIPALS,
    MAX_SOURCE_ADDRESSES,
    validate_principals,
    validate_source_address,
)
from ca.durations import format_duration, parse_duration
from ca.errors import InvalidDuration, InvalidName, InvalidPrincipal, InvalidSourceAddress
from ca.names import check_login_user, check_principal, check_target

from . import _lines
from .errors import InvalidPolicy, PolicyProblem
from .model import (
    APPROVER_AUTH,
    DEFAULT_EXTENSIONS,
    EXTENSIONS,
    WEEKDAYS,
    AutoApproval,
    Policy,
    Rule,
    Target,
    TimeWindow,
)

__all__ = ["load_policy", "parse_policy", "demo_policy_path", "load_demo_policy"]

# Limits come from the CA (ca.certs), so that nothing a policy allows is then
# refused at signing time: at most MAX_PRINCIPALS principals per target,
# access durations up to CA_MAX_DURATION (24h), and so on.
#: How long a request may wait for approval or to be claimed, at most.
_MAX_WAIT = timedelta(days=7)
_MAX_APPROVALS = 16
_MAX_FILE_BYTES = 1024 * 1024

_TOP_KEYS = ("description", "targets", "rules")
_TARGET_KEYS = ("description", "principals", "login_users")
_RULE_KEYS = (
    "name",
    "description",
    "targets",
    "users",
    "groups",
    "default_duration",
    "max_duration",
    "approvals_required",
    "approver_users",
    "approver_groups",
    "auto_approve",
    "reason_required",
    "reason_pattern",
    "pending_ttl",
    "claim_window",
    "extensions",
    "force_command",
    "source_address",
    "approvers_may_shorten",
    "break_glass",
    "warn_before",
    "chat_approval",
    "slack_channel",
    "approver_auth",
    "extension_allowance",
)
_AUTO_KEYS = ("groups", "users", "max_duration", "hours", "days", "timezone")

# Rule names appear in key IDs and messages. Target names, principals and login
# users are checked by ca.names, the same functions the CA and the client use.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# User and group names as the service stores them.
_PERSON = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}")
_HOURS = re.compile(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)\s*$")

DEFAULT_PENDING_TTL = timedelta(hours=1)
DEFAULT_CLAIM_WINDOW = timedelta(minutes=15)
DEFAULT_WARN_BEFORE = timedelta(minutes=5)
# A Slack channel: its id (C0123ABCD, G..., or a user's D...) or a #name as Slack allows one.
_SLACK_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,20}|#[a-z0-9][a-z0-9_-]{0,79}")

T = TypeVar("T")
_Path = tuple[str | int, ...]
_MISSING = object()


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate the policy file at ``path``.

    Raises :class:`~policies.PolicyError` listing every problem found, including
    a file that cannot be read or is not UTF-8.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read(_MAX_FILE_BYTES + 1)
    except OSError as e:
        raise InvalidPolicy(
            [PolicyProblem(name, None, None, f"cannot read the file: {e.strerror or e}")]
        ) from None
    if len(data) > _MAX_FILE_BYTES:
        raise InvalidPolicy(
            [PolicyProblem(name, None, None, f"file is larger than {_MAX_FILE_BYTES} bytes")]
        )
    return _parse_bytes(data, name)


def parse_policy(text: str, *, source: str = "<string>") -> Policy:
    """Validate the policy in ``text``; ``source`` names it in error messages."""
    return _Loader(text, source).load()


def demo_policy_path() -> Path:
    """Path of the demo policy shipped inside this package (``policies/demo.toml``)."""
    return Path(str(resources.files(__package__).joinpath("demo.toml")))


def load_demo_policy() -> Policy:
    """The demo policy, read through :mod:`importlib.resources` (works from a wheel too)."""
    data = resources.files(__package__).joinpath("demo.toml").read_bytes()
    return _parse_bytes(data, str(demo_policy_path()))


def _parse_bytes(data: bytes, name: str) -> Policy:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InvalidPolicy([PolicyProblem(name, line, None, "file is not valid UTF-8")]) from None
    return _Loader(text, name).load()


def _field(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else f'"{part}"'
            out += f".{text}" if out else text
    return out


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _name_problem(check: Callable[[str], str]) -> Callable[[str], str | None]:
    """A :mod:`ca.names` check as the loader's "why not, or None" callback."""

    def problem(value: str) -> str | None:
        try:
            check(value)
        except (InvalidPrincipal, InvalidName) as e:
            return e.message
        return None

    return problem


class _Loader:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.problems: list[PolicyProblem] = []
        self.lines: dict[_lines.Path, int] = {}

    # -- reporting -------------------------------------------------------

    def problem(self, path: _Path, message: str) -> None:
        line = _lines.line_of(self.lines, path)
        self.problems.append(PolicyProblem(self.source, line, _field(path) or None, message))

    # -- typed getters (each reports its own problem and returns a fallback) --

    def known_keys(self, table: dict[str, Any], allowed: tuple[str, ...], path: _Path) -> None:
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else f"; known keys: {', '.join(allowed)}"
                )
                self.problem(path + (key,), f"unknown key {key!r}{suggestion}")

    def get(
        self,
        table: dict[str, Any],
        key: str,
        path: _Path,
        kind: type,
        default: Any = _MISSING,
    ) -> Any:
        """``table[key]`` if it has the right type; a problem and ``None`` otherwise."""
        value = table.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                self.problem(path + (key,), "is required")
                return None
            return default
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            want = {
                str: "a string",
                bool: "true or false",
                int: "an integer",
                list: "an array",
                dict: "a table",
            }[kind]
            self.problem(path + (key,), f"must be {want}, not {_type_name(value)}")
            return None
        return value

    def string_list(
        self,
        table: dict[str, Any],
        key: str,
        path: _Path,
        check: Callable[[str], str | None],
        *,
        required: bool = False,
    ) -> tuple[str, ...] | None:
        value = self.get(table, key, path, list, _MISSING if required else [])
        if value is None:
            return None
        out: list[str] = []
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.problem(path + (key, i), f"must be a string, not {_type_name(item)}")
                ok = False
                continue
            why = check(item)
            if why:
                self.problem(path + (key, i), why)
                ok = False
            elif item in out:
                self.problem(path + (key, i), f"{item!r} is listed twice")
                ok = False
            else:
                out.append(item)
        return tuple(out) if ok else None

    def duration(
        self,
        table: dict[str, Any],
        key: str,
        path: _Path,
        default: Any = _MISSING,
        *,
        limit: timedelta = CA_MAX_DURATION,
        limit_why: str = "the CA's limit for any certificate",
    ) -> timedelta | None:
        value = self.get(table, key, path, str, default)
        if value is None or isinstance(value, timedelta):
            return value
        try:
            # The policy format documents a bare number as seconds ("30").
            result = parse_duration(value, field=key, bare_seconds=True)
        except InvalidDuration as e:
            self.problem(path + (key,), e.message)
            return None
        except (ValueError, OverflowError):
            # Defensive: an earlier ca.durations let these escape for odd digit strings.
            self.problem(path + (key,), f"{value!r} is not a duration like '90s', '15m' or '1h30m'")
            return None
        if result > limit:
            self.problem(path + (key,), f"{value!r} is over {format_duration(limit)}, {limit_why}")
            return None
        return result

    # -- the document ----------------------------------------------------

    def load(self) -> Policy:
        try:
            data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as e:
            msg = str(e)
            m = _TOML_POSITION.search(msg)
            line: int | None = None
            if m:
                msg = msg[: m.start()]
                if m.group(1):
                    line = int(m.group(1))
                    msg += f" (column {m.group(2)})"
                else:
                    line = max(1, self.text.count("\n") + (0 if self.text.endswith("\n") else 1))
                    msg += " (at end of file)"
            raise InvalidPolicy(
                [PolicyProblem(self.source, line, None, f"not valid TOML: {msg}")]
            ) from None
        self.lines = _lines.key_lines(self.text)

        self.known_keys(data, _TOP_KEYS, ())
        description = self.get(data, "description", (), str, "") or ""
        targets = self.targets(data)
        # Rules are checked against every target *named*, valid or not, so that one
        # broken target does not hide a rule's reference to a target that is missing.
        declared = data.get("targets")
        rules = self.rules(data, set(declared) if isinstance(declared, dict) and declared else None)
        if self.problems:
            # In file order, as a reader fixes them; problems without a line first.
            raise InvalidPolicy(sorted(self.problems, key=lambda p: p.line or 0))
        assert targets is not None and rules is not None
        return Policy(targets=targets, rules=rules, description=description, source=self.source)

    def targets(self, data: dict[str, Any]) -> tuple[Target, ...] | None:
        table = self.get(data, "targets", (), dict)
        if table is None:
            return None
        if not table:
            self.problem(("targets",), "defines no targets; add one such as [targets.prod-db]")
            return None
        out: list[Target] = []
        ok = True
        for name, body in table.items():
            path: _Path = ("targets", name)
            why = _name_problem(check_target)(name)
            if why:
                self.problem(path, why)
                ok = False
            if not isinstance(body, dict):
                self.problem(path, f"must be a table, not {_type_name(body)}")
                ok = False
                continue
            target = self.target(name, body, path)
            if target is None:
                ok = False
            else:
                out.append(target)
        return tuple(sorted(out, key=lambda t: t.name)) if ok else None

    def target(self, name: str, body: dict[str, Any], path: _Path) -> Target | None:
        n = len(self.problems)
        self.known_keys(body, _TARGET_KEYS, path)
        description = self.get(body, "description", path, str, "")
        principals = self.string_list(
            body, "principals", path, _name_problem(check_principal), required=True
        )
        if principals is not None:
            if not principals:
                self.problem(
                    path + ("principals",),
                    "must list at least one principal, such as 'root@prod-db'",
                )
            elif len(principals) > MAX_PRINCIPALS:
                self.problem(
                    path + ("principals",),
                    f"lists {len(principals)} principals; at most {MAX_PRINCIPALS} fit one certificate",
                )
            else:
                # The CA's own check has the last word, should it ever grow stricter.
                try:
                    validate_principals(principals)
                except InvalidPrincipal as e:
                    self.problem(path + ("principals",), e.message)

        login_users = self.string_list(body, "login_users", path, _name_problem(check_login_user))
        if len(self.problems) > n:
            return None
        assert principals is not None and login_users is not None
        return Target(
            name=name,
            principals=tuple(sorted(principals)),
            login_users=tuple(sorted(login_users)),
            description=description,
        )

    def rules(self, data: dict[str, Any], target_names: set[str] | None) -> tuple[Rule, ...] | None:
        value = data.get("rules", [])
        if isinstance(value, dict):
            self.problem(
                ("rules",),
                "must be an array of tables: write each rule under its own [[rules]] header",
            )
            return None
        if not isinstance(value, list):
            self.problem(
                ("rules",), f"must be an array of tables ([[rules]]), not {_type_name(value)}"
            )
            return None
        out: list[Rule] = []
        names: set[str] = set()
        ok = True
        for i, body in enumerate(value):
            path: _Path = ("rules", i)
            if not isinstance(body, dict):
                self.problem(path, f"must be a table ([[rules]]), not {_type_name(body)}")
                ok = False
                continue
            name = body.get("name")
            if isinstance(name, str):
                if name in names:
                    self.problem(
                        path + ("name",),
                        f"another rule is already named {name!r}; rule names must be unique",
                    )
                    ok = False
                names.add(name)
            rule = self.rule(body, path, target_names)
            if rule is None:
                ok = False
                continue
            out.append(rule)
        return tuple(out) if ok else None

    def rule(self, body: dict[str, Any], path: _Path, target_names: set[str] | None) -> Rule | None:
        n = len(self.problems)
        self.known_keys(body, _RULE_KEYS, path)

        name = self.get(body, "name", path, str)
        if name is not None and not _NAME.fullmatch(name):
            self.problem(
                path + ("name",),
                f"rule name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        description = self.get(body, "description", path, str, "")

        targets = self.string_list(body, "targets", path, lambda t: None, required=True)
        if targets is not None:
            if not targets:
                self.problem(path + ("targets",), "must name at least one target")
            elif target_names is not None:
                for i, t in enumerate(targets):
                    if t not in target_names:
                        known = ", ".join(sorted(target_names))
                        self.problem(
                            path + ("targets", i), f"no target named {t!r} (targets: {known})"
                        )

        def person(kind: str) -> Callable[[str], str | None]:
            def check(value: str) -> str | None:
                if _PERSON.fullmatch(value):
                    return None
                return (
                    f"{kind} name {value!r} must be 1-64 letters, digits, '_', '.', '@', '+' or '-'"
                )

            return check

        users = self.string_list(body, "users", path, person("user"))
        groups = self.string_list(body, "groups", path, person("group"))
        if users is not None and groups is not None and not users and not groups:
            self.problem(path, "names nobody: list the users or groups that may request access")

        max_duration = self.duration(body, "max_duration", path)
        default_duration = self.duration(body, "default_duration", path, None)
        if (
            max_duration is not None
            and default_duration is not None
            and default_duration > max_duration
        ):
            self.problem(path + ("default_duration",), "must not be longer than max_duration")

        break_glass = self.get(body, "break_glass", path, bool, False)
        approver_users = self.string_list(body, "approver_users", path, person("user"))
        approver_groups = self.string_list(body, "approver_groups", path, person("group"))
        approvals = self.get(body, "approvals_required", path, int, 1)
        auto = self.auto_approve(body, path, max_duration)
        reason_required = self.get(body, "reason_required", path, bool, None)
        pattern = self.pattern(body, path)

        if break_glass:
            # A break-glass rule is self-approved: approver settings would be dead text
            # that a reviewer might believe in, so they are refused.
            for key in ("approvals_required", "approver_users", "approver_groups", "auto_approve"):
                if key in body:
                    self.problem(
                        path + (key,), "a break-glass rule is self-approved; remove this key"
                    )
            if reason_required is False:
                self.problem(
                    path + ("reason_required",), "a break-glass rule always requires a reason"
                )
            approvals = 0
        else:
            if approvals is not None and not 1 <= approvals <= _MAX_APPROVALS:
                self.problem(
                    path + ("approvals_required",),
                    f"must be between 1 and {_MAX_APPROVALS}; use [rules.auto_approve] to grant access without approvers",
                )
            if approver_users is not None and approver_groups is not None:
                if not approver_users and not approver_groups:
                    self.problem(
                        path,
                        "names no approvers: list approver_users or approver_groups (or set break_glass = true)",
                    )
                elif (
                    not approver_groups
                    and approvals is not None
                    and len(approver_users) < approvals
                ):
                    self.problem(
                        path + ("approvals_required",),
                        f"needs {approvals} distinct approvers but approver_users lists only {len(approver_users)}",
                    )
        if pattern is not None and reason_required is False:
            self.problem(
                path + ("reason_required",),
                "is false, but reason_pattern is set: a pattern needs a reason to check",
            )

        why = "the longest a request may wait"
        pending_ttl = self.duration(
            body, "pending_ttl", path, DEFAULT_PENDING_TTL, limit=_MAX_WAIT, limit_why=why
        )
        claim_window = self.duration(
            body, "claim_window", path, DEFAULT_CLAIM_WINDOW, limit=_MAX_WAIT, limit_why=why
        )

        def extension_problem(e: str) -> str | None:
            if e in EXTENSIONS:
                return None
            hint = difflib.get_close_matches(e, sorted(EXTENSIONS), n=1)
            more = (
                f"; did you mean {hint[0]!r}?"
                if hint
                else f"; allowed: {', '.join(sorted(EXTENSIONS))}"
            )
            return f"unknown extension {e!r}{more}"

        extensions = self.string_list(body, "extensions", path, extension_problem)
        if "extensions" not in body:
            extensions = DEFAULT_EXTENSIONS

        force_command = self.get(body, "force_command", path, str, None)
        if force_command is not None:
            if not force_command.strip():
                self.problem(
                    path + ("force_command",),
                    "must not be empty; leave it out to allow any command",
                )
            elif any(unicodedata.category(c) == "Cc" for c in force_command):
                self.problem(
                    path + ("force_command",),
                    "must not contain control characters such as newlines",
                )
            elif len(force_command) > MAX_FORCE_COMMAND:
                self.problem(
                    path + ("force_command",), f"is longer than {MAX_FORCE_COMMAND} characters"
                )

        source_address = self.source_address(body, path)
        may_shorten = self.get(body, "approvers_may_shorten", path, bool, True)

        warn_before = self.duration(
            body,
            "warn_before",
            path,
            DEFAULT_WARN_BEFORE,
            limit=CA_MAX_DURATION,
            limit_why="the longest certificate",
        )
        chat_approval = self.get(body, "chat_approval", path, bool, False)
        slack_channel = self.get(body, "slack_channel", path, str, None)
        if slack_channel is not None and not _SLACK_CHANNEL.fullmatch(slack_channel):
            self.problem(
                path + ("slack_channel",),
                f"{slack_channel[:90]!r} is not a Slack channel: give its id (C0123ABCD) or #name",
            )
        approver_auth = self.get(body, "approver_auth", path, str, "any")
        if approver_auth is not None and approver_auth not in APPROVER_AUTH:
            self.problem(
                path + ("approver_auth",),
                f"{approver_auth[:40]!r} is not one of {', '.join(APPROVER_AUTH)}",
            )
        if chat_approval and approver_auth not in (None, "any"):
            self.problem(
                path + ("chat_approval",),
                f"is true, but approver_auth = {approver_auth!r} asks for a sign-in that a chat "
                "button cannot prove; approvals from chat are refused for this rule",
            )
        extension_allowance = self.duration(
            body,
            "extension_allowance",
            path,
            None,
            limit=CA_MAX_DURATION,
            limit_why="the longest certificate",
        )
        if break_glass and chat_approval:
            self.problem(
                path + ("chat_approval",), "is true on a break-glass rule, which has no approvers"
            )

        if len(self.problems) > n:
            return None
        assert name is not None and targets is not None and users is not None and groups is not None
        assert max_duration is not None and approvals is not None and extensions is not None
        assert (
            approver_users is not None
            and approver_groups is not None
            and source_address is not None
        )
        assert pending_ttl is not None and claim_window is not None
        return Rule(
            name=name,
            description=description,
            targets=tuple(sorted(targets)),
            users=frozenset(users),
            groups=frozenset(groups),
            max_duration=max_duration,
            default_duration=default_duration if default_duration is not None else max_duration,
            approvals_required=approvals,
            approver_users=frozenset(approver_users),
            approver_groups=frozenset(approver_groups),
            auto_approve=auto,
            # Deny by default here too: a reason is required unless the rule says otherwise.
            reason_required=reason_required is not False,
            reason_pattern=pattern,
            pending_ttl=pending_ttl,
            claim_window=claim_window,
            extensions=tuple(sorted(extensions)),
            force_command=force_command,
            source_address=source_address,
            approvers_may_shorten=may_shorten,
            break_glass=break_glass,
            warn_before=warn_before if warn_before is not None else DEFAULT_WARN_BEFORE,
            chat_approval=bool(chat_approval),
            slack_channel=slack_channel,
            approver_auth=approver_auth if approver_auth in APPROVER_AUTH else "any",
            extension_allowance=extension_allowance,
        )

    def pattern(self, body: dict[str, Any], path: _Path) -> re.Pattern[str] | None:
        text = self.get(body, "reason_pattern", path, str, None)
        if text is None:
            return None
        if not text:
            self.problem(
                path + ("reason_pattern",), "must not be empty; leave it out to accept any reason"
            )
            return None
        try:
            return re.compile(text)
        except re.error as e:
            where = f" at position {e.pos}" if e.pos is not None else ""
            self.problem(
                path + ("reason_pattern",), f"is not a valid regular expression: {e.msg}{where}"
            )
            return None

    def source_address(self, body: dict[str, Any], path: _Path) -> tuple[str, ...] | None:
        if "source_address" not in body:
            return ()
        value = self.get(body, "source_address", path, list)
        if value is None:
            return None
        if not value:
            self.problem(
                path + ("source_address",),
                "must list at least one address or CIDR; leave it out to allow any",
            )
            return None
        if len(value) > MAX_SOURCE_ADDRESSES:
            self.problem(
                path + ("source_address",),
                f"lists {len(value)} entries; the CA takes at most {MAX_SOURCE_ADDRESSES}",
            )
            return None
        out: list[str] = []
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.problem(
                    path + ("source_address", i), f"must be a string, not {_type_name(item)}"
                )
                ok = False
                continue
            try:
                # strict: "10.0.0.1/8" is more likely a typo than a wish for 10.0.0.0/8.
                network = ipaddress.ip_network(item.strip(), strict=True)
            except ValueError as e:
                self.problem(
                    path + ("source_address", i), f"{item!r} is not an address or CIDR: {e}"
                )
                ok = False
                continue
            if str(network) in out:
                self.problem(path + ("source_address", i), f"{item!r} is listed twice")
                ok = False
                continue
            out.append(str(network))
        if not ok:
            return None
        try:
            validate_source_address(out)
        except InvalidSourceAddress as e:
            self.problem(path + ("source_address",), e.message)
            return None
        return tuple(sorted(out))

    def auto_approve(
        self, body: dict[str, Any], path: _Path, rule_max: timedelta | None
    ) -> AutoApproval | None:
        if "auto_approve" not in body:
            return None
        table = self.get(body, "auto_approve", path, dict)
        if table is None:
            return None
        path = path + ("auto_approve",)
        n = len(self.problems)
        self.known_keys(table, _AUTO_KEYS, path)

        def person(value: str) -> str | None:
            return (
                None
                if _PERSON.fullmatch(value)
                else f"name {value!r} must be 1-64 letters, digits, '_', '.', '@', '+' or '-'"
            )

        groups = self.string_list(table, "groups", path, person)
        users = self.string_list(table, "users", path, person)
        if groups is not None and users is not None and not groups and not users:
            self.problem(path, "names nobody: list the groups (or users) that are auto-approved")
        max_duration = self.duration(table, "max_duration", path)
        if max_duration is not None and rule_max is not None and max_duration > rule_max:
            self.problem(
                path + ("max_duration",), "must not be longer than the rule's max_duration"
            )
        window = self.window(table, path)
        if len(self.problems) > n:
            return None
        assert groups is not None and users is not None and max_duration is not None
        return AutoApproval(
            max_duration=max_duration,
            groups=frozenset(groups),
            users=frozenset(users),
            window=window,
        )

    def window(self, table: dict[str, Any], path: _Path) -> TimeWindow | None:
        hours = self.get(table, "hours", path, str, None)
        days_list = self.get(table, "days", path, list, None)
        tz = self.get(table, "timezone", path, str, None)
        if hours is None and days_list is None:
            if tz is not None:
                self.problem(path + ("timezone",), "has no effect without hours or days")
            return None
        start = end = None
        if hours is not None:
            m = _HOURS.fullmatch(hours.strip())
            bad = f"{hours!r} is not a local time range like '08:00-18:00'"
            if not m:
                self.problem(path + ("hours",), bad)
            else:
                h1, m1, h2, m2 = (int(g) for g in m.groups())
                if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
                    self.problem(path + ("hours",), bad)
                elif (h1, m1) == (h2 % 24, m2):
                    self.problem(
                        path + ("hours",), "is an empty range; leave hours out to allow all day"
                    )
                else:
                    start, end = time(h1, m1), time(h2 % 24, m2)
        days: tuple[int, ...] = tuple(range(7))
        if days_list is not None:
            picked: set[int] = set()
            for i, d in enumerate(days_list):
                day = _DAYS.get(d.lower()) if isinstance(d, str) else None
                if day is None:
                    self.problem(
                        path + ("days", i),
                        f"{d!r} is not a day; use mon, tue, wed, thu, fri, sat or sun",
                    )
                else:
                    picked.add(day)
            if not days_list:
                self.problem(
                    path + ("days",), "must name at least one day; leave it out to allow every day"
                )
            days = tuple(sorted(picked))
        zone = "UTC"
        if tz is not None:
            try:
                ZoneInfo(tz)
                zone = tz
            except (ZoneInfoNotFoundError, ValueError, OSError):
                self.problem(
                    path + ("timezone",),
                    f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin'",
                )
        return TimeWindow(start=start, end=end, timezone=zone, days=days)


_DAYS = {name: i for i, name in enumerate(WEEKDAYS)} | {
    name: i
    for i, name in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
}
