"""``jit-ssh sso check``: test the server's ``[sso]`` table against the OpenID provider.

Run on the server (it reads the server TOML and the client secret file), before or beside
``jit-ssh serve``. It prints one line per finding and, under each problem, how to fix it.
Exit 0 when all is well, 1 when something must be fixed, 4 when the provider cannot be reached.

The server package is imported only when the command runs, and never Flask or the database.
``client.commands.sso`` attaches :func:`check` to the ``jit-ssh sso`` group.
"""

from __future__ import annotations

from typing import Any

import click

from client.errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, Failure

from ._admin import DEFAULT_BIND, config_option, server_config

__all__ = ["check"]

_LABEL_WIDTH = 8


@click.command("check")
@config_option
@click.option(
    "--bind",
    default=DEFAULT_BIND,
    show_default=True,
    help="The address `jit-ssh serve` listens on: the server's URL when base_url is unset.",
)
@click.pass_context
def check(ctx: click.Context, config_path: str | None, bind: str) -> None:
    """Fetch the provider's discovery document and keys; say what is wrong.

    Checks the issuer, https endpoints, the code flow with PKCE S256, the signing algorithms
    and keys, the device endpoint, the client secret file and the client credentials, and
    prints the redirect URI to register at the provider.
    """
    from server.sso.check import Level, check_provider

    cfg = server_config(ctx, config_path)
    if cfg.sso is None:
        where = f" in {config_path}" if config_path else ""
        raise Failure(
            f"single sign-on is not configured: no [sso] table{where} "
            "(see docs/server-config.md, `sso`)"
        )
    transport: Any = ctx.meta.get("jit_ssh.transport")
    # As `jit-ssh serve` does: without base_url, the server's URL is its own address.
    base_url = cfg.base_url or f"http://{bind}"
    findings = check_provider(cfg.sso, base_url, transport=transport)
    click.echo(f"single sign-on with {cfg.sso.issuer} (client {cfg.sso.client_id})")
    if not cfg.base_url:
        click.echo(
            f"{'note':<{_LABEL_WIDTH}} base_url is not set: the server's URL is {base_url}, "
            "where `jit-ssh serve` listens (set base_url when people reach it elsewhere)"
        )
    for f in findings:
        label = f.level.value
        click.echo(f"{label:<{_LABEL_WIDTH}} {f.what}")
        if f.fix and f.level is not Level.OK:
            what = "note" if f.level is Level.INFO else "fix"
            click.echo(f"{'':<{_LABEL_WIDTH}} {what}: {f.fix}")
    problems = [f for f in findings if not f.ok]
    if any(f.unreachable for f in findings):
        click.echo("the provider could not be reached", err=True)
        ctx.exit(EXIT_UNREACHABLE)
    if problems:
        n = len(problems)
        click.echo(f"{n} problem{'s' if n != 1 else ''} to fix", err=True)
        ctx.exit(EXIT_FAILED)
    click.echo("all good: the server can sign people in with this provider")
    ctx.exit(EXIT_OK)
