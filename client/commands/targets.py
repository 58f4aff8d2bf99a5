"""``jit-ssh targets``: what the caller may request, for how long, and who approves.

The server answers for the caller (``GET /v1/targets?mine=1``, a signed call):
only the targets some rule lets them request, each with the rule that decides
their requests there (the first that names them, as ``login`` would be
decided), and their break-glass rule where one applies.
"""

from __future__ import annotations

import json

import click

from ._connect import connect, connection_options, duration_text, explained

__all__ = ["targets"]


def _names(kind: str, names: tuple[str, ...]) -> str:
    return f"{kind}{'s' if len(names) > 1 else ''} {', '.join(names)}" if names else ""


def _approval_text(access: object) -> str:
    from client.verify import TargetAccess

    assert isinstance(access, TargetAccess)
    n = access.approvals_required
    who = " or ".join(
        p
        for p in (
            _names("group", access.approver_groups),
            _names("user", access.approver_users),
        )
        if p
    )
    text = f"needs {n} approval{'s' if n != 1 else ''}" + (f" from {who}" if who else "")
    if access.auto_approve_seconds is not None:
        window = f", {access.auto_approve_window}" if access.auto_approve_window else ""
        text += (
            f"; auto-approved for you up to {duration_text(access.auto_approve_seconds)}{window}"
        )
    return text


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of prose.")
@connection_options
@explained
def targets(as_json: bool, server: str | None, user: str | None, identity: str | None) -> None:
    """The targets you may request: for how long, and who approves.

    Asks the server, which judges by the current policy and your groups.
    """
    from ca.names import check_target
    from client.verify import check_target_list

    api_client, _ = connect(server, user, identity)
    with api_client:
        answer = api_client.get("/v1/targets", query={"mine": "1"})
    known = check_target_list(answer)
    for name in known:
        # Each name is printed into a command line (jit-ssh login NAME): only a valid one.
        check_target(name, field="the server's target name")
    mine = [t for t in known.values() if t.access is not None or t.break_glass is not None]
    if as_json:
        rows = []
        for t in mine:
            rows.append(
                {
                    "name": t.name,
                    "description": t.description,
                    "principals": list(t.principals),
                    "login_users": list(t.login_users),
                    "access": None if t.access is None else _access_json(t.access),
                    "break_glass": None if t.break_glass is None else _access_json(t.break_glass),
                }
            )
        click.echo(json.dumps({"targets": rows}, indent=2))
        return
    if not mine:
        click.echo("No target you may request: no rule of the policy names you or your groups.")
        click.echo("  Ask an admin which group you need (jit-ssh admin user add NAME --group G).")
        return
    for t in mine:
        click.echo(f"{t.name}" + (f"  {t.description}" if t.description else ""))
        a = t.access
        if a is not None:
            click.echo(
                f"  up to {duration_text(a.max_duration_seconds)} "
                f"(default {duration_text(a.default_duration_seconds)}); {_approval_text(a)}"
                + ("; a reason is required" if a.reason_required else "")
                + (f" matching '{a.reason_pattern}'" if a.reason_pattern else "")
            )
            click.echo(
                f"  jit-ssh login {t.name} --for {duration_text(a.default_duration_seconds)}"
            )
        if t.break_glass is not None:
            b = t.break_glass
            click.echo(
                f"  break-glass: up to {duration_text(b.max_duration_seconds)}, self-approved "
                f"and reviewed afterwards: jit-ssh login {t.name} --break-glass --reason ..."
            )


def _access_json(a: object) -> dict[str, object]:
    from dataclasses import asdict

    from client.verify import TargetAccess

    assert isinstance(a, TargetAccess)
    d = asdict(a)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
