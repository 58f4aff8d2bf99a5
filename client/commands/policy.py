"""``jit-ssh policy``: check policy files and explain their decisions, offline.

Both commands read the file you name and never talk to a server, so they fit a
pre-commit hook or a CI job that reviews policy changes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from client.clock import utcnow
from client.errors import EXIT_FAILED

__all__ = ["policy"]


class _Duration(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2 on
    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        from ca.durations import parse_duration
        from ca.errors import InvalidDuration

        try:
            return parse_duration(value, field="--for")
        except InvalidDuration as e:
            self.fail(e.message, param, ctx)
        except (ValueError, OverflowError):
            self.fail(f"{value!r} is not a duration like '90s', '15m' or '1h30m'", param, ctx)


class _Moment(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2 on
    name = "ISO-TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            moment = value
        else:
            try:
                moment = datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(
                    f"{value!r} is not an ISO 8601 time such as 2026-03-02T09:30:00+01:00",
                    param,
                    ctx,
                )
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def _load(path: str) -> Any:
    """The policy at ``path``; on problems, list every one and exit 1."""
    from policies import InvalidPolicy, load_policy

    try:
        return load_policy(path)
    except InvalidPolicy as e:
        for problem in e.problems:
            click.echo(str(problem))
        count = len(e.problems)
        click.echo(f"{count} problem{'s' if count != 1 else ''} found in {path}", err=True)
        raise click.exceptions.Exit(EXIT_FAILED) from None


@click.group()
def policy() -> None:
    """Check policy files and explain their decisions.

    The format is described in docs/policies.md; `jit-ssh policy demo` prints
    the shipped demo policy, a complete commented example.
    """


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Validate the policy FILE.

    Exit 0 and print a summary (with the policy version) when it is valid.
    Otherwise exit 1 and print every problem found, one per line, as
    FILE:LINE: FIELD: MESSAGE.
    """
    pol = _load(file)
    rules = (
        ", ".join(r.name + (" (break-glass)" if r.break_glass else "") for r in pol.rules)
        or "none: every request is denied"
    )
    click.echo(f"{file}: ok")
    click.echo(f"  version  {pol.version}")
    click.echo(f"  targets  {len(pol.targets)}: {', '.join(t.name for t in pol.targets)}")
    click.echo(f"  rules    {len(pol.rules)}: {rules}")


_HEADLINES = {
    "denied": "DENIED",
    "needs_approval": "ALLOWED, once approved",
    "auto_approved": "ALLOWED, auto-approved",
    "break_glass": "ALLOWED, break-glass: self-approved, flagged for review afterwards",
}


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--user", "-u", "user", required=True, help="Who asks (a user name as the server knows it)."
)
@click.option(
    "--group", "-g", "groups", multiple=True, help="A group the user is in; repeat for each."
)
@click.option("--target", "-t", "target", required=True, help="The target asked for.")
@click.option(
    "--for",
    "duration",
    type=_Duration(),
    help="How long, e.g. 90s, 15m, 1h30m (default: the matching rule's default_duration).",
)
@click.option("--reason", default="", help="The reason the user would give.")
@click.option("--break-glass", is_flag=True, help="Ask as a break-glass request.")
@click.option(
    "--at",
    "at",
    type=_Moment(),
    help="Decide as of this ISO 8601 time (default: now; no offset means UTC). "
    "Matters for auto-approval windows.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as one JSON object.")
def explain(
    file: str,
    user: str,
    groups: tuple[str, ...],
    target: str,
    duration: timedelta | None,
    reason: str,
    break_glass: bool,
    at: datetime | None,
    as_json: bool,
) -> None:
    """Show what the policy FILE decides for one request, and why.

    \b
    Example:
      jit-ssh policy explain policy.toml --user alice --group engineers \\
          --target demo --for 30m --reason "INC-1234: replica lag"

    Exit 0 when the request would be allowed (auto-approved, break-glass, or
    once approved), 1 when it would be denied or the policy is invalid.
    """
    from ca.durations import format_duration
    from policies import AccessRequest, decide

    pol = _load(file)
    now = at if at is not None else utcnow()
    request = AccessRequest(
        requester=user,
        requester_groups=frozenset(groups),
        target=target,
        duration=duration,
        reason=reason,
        break_glass=break_glass,
    )
    decision = decide(pol, request, now)
    if as_json:
        body = decision.to_dict()
        body["at"] = _iso(now)
        click.echo(json.dumps(body, indent=2, sort_keys=True))
    else:
        _print_decision(decision, groups, now, format_duration)
    if not decision.allowed:
        raise click.exceptions.Exit(EXIT_FAILED)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _print_decision(decision: Any, groups: tuple[str, ...], now: datetime, fmt: Any) -> None:
    click.echo(_HEADLINES[decision.outcome.value])
    rows: list[tuple[str, str]] = [
        ("requester", f"{decision.requester} (groups: {', '.join(sorted(set(groups))) or 'none'})"),
        ("target", decision.target),
        ("at", _iso(now)),
    ]
    if decision.rule:
        rows.append(("rule", decision.rule))
    if decision.allowed:
        rows.append(("duration", fmt(decision.duration)))
        rows.append(("principals", ", ".join(decision.principals)))
        rows.append(("extensions", ", ".join(decision.extensions) or "none"))
        for name, value in decision.critical_options().items():
            rows.append((name, value))
        if decision.needs_approval:
            who = [f"group {g}" for g in decision.approver_groups] + [
                f"user {u}" for u in decision.approver_users
            ]
            rows.append(
                (
                    "approvals",
                    f"{decision.approvals_required} from {', '.join(who)} (never the requester)",
                )
            )
            rows.append(("pending", f"expires unapproved after {fmt(decision.pending_ttl)}"))
            shorten = "may" if decision.approvers_may_shorten else "may not"
            rows.append(("shorten", f"approvers {shorten} grant less time than asked"))
        rows.append(("claim", f"within {fmt(decision.claim_window)} of approval"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}")
    click.echo("why:")
    for reason in decision.reasons:
        click.echo(f"  - {reason}")
    click.echo(f"policy version {decision.policy_version}")


@policy.command()
@click.option(
    "--path", "show_path", is_flag=True, help="Print where the demo policy file is instead."
)
def demo(show_path: bool) -> None:
    """Print the demo policy shipped with jit-ssh (a complete, commented example).

    Start your own with: jit-ssh policy demo > policy.toml
    """
    from importlib import resources

    from policies import demo_policy_path

    if show_path:
        click.echo(str(demo_policy_path()))
        return
    click.echo(
        resources.files("policies").joinpath("demo.toml").read_text(encoding="utf-8"), nl=False
    )
