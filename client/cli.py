"""The ``jit-ssh`` command.

Subcommand groups live in ``client.commands.<name>`` and are imported only when
they run, so ``jit-ssh --help`` stays fast and never pulls in the server.

Exit codes (also shown in ``jit-ssh --help``):

    0  success
    1  the request was refused or failed (bad input, policy, verification)
    2  usage error (unknown option, missing argument)
    3  not found / nothing to do
    4  the server or a local tool could not be reached
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

__all__ = [
    "main",
    "cli",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_NOT_FOUND",
    "EXIT_UNREACHABLE",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNREACHABLE = 4

# name -> (module, attribute, one-line help). The help is repeated here so that
# `jit-ssh --help` can list the groups without importing them.
_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "ca": ("client.commands.ca", "ca", "Create, show and use the CA keys in the data directory."),
    "cert": ("client.commands.cert", "cert", "Inspect and verify OpenSSH certificates."),
    "krl": ("client.commands.krl", "krl", "Build and inspect OpenSSH key revocation lists."),
    "host": ("client.commands.host", "host", "Set up a host's sshd to trust the CA."),
    "policy": (
        "client.commands.policy",
        "policy",
        "Check policy files and explain their decisions.",
    ),
    "login": (
        "client.commands.engineer",
        "login",
        "Request access to a target and get a certificate.",
    ),
    "status": ("client.commands.engineer", "status", "Your active access and pending requests."),
    "done": ("client.commands.engineer", "done", "End access early (revoke, remove the key)."),
    "requests": ("client.commands.engineer", "requests_cmd", "Your request history."),
    "pending": ("client.commands.engineer", "pending", "Requests waiting for your approval."),
    "approve": ("client.commands.engineer", "approve", "Approve a request."),
    "deny": ("client.commands.engineer", "deny", "Deny a request."),
    "ssh": ("client.commands.engineer", "ssh", "Log in if needed, then ssh with the certificate."),
    "config": ("client.commands.engineer", "config", "Your client settings."),
    "api": ("client.commands.engineer", "api", "Make one signed API call (for scripts)."),
    "serve": ("client.commands.service", "serve", "Run the CA service (gunicorn)."),
    "db": ("client.commands.service", "db", "Database schema management."),
    "admin": (
        "client.commands.service",
        "admin",
        "Manage users, keys and passwords on the server.",
    ),
    "audit": ("client.commands.service", "audit", "Export and verify the audit log."),
}


class _RootContext(click.Context):
    """The root context; ``meta=`` seeds ``ctx.meta``, which every subcommand's
    context shares. Tests inject ``{"jit_ssh.transport": httpx.MockTransport(...)}``
    this way, through ``CliRunner.invoke(cli, args, meta=...)`` or ``main(args, meta=...)``."""

    def __init__(self, *args: Any, meta: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if meta:
            self._meta.update(meta)


class _LazyGroup(click.Group):
    context_class = _RootContext

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_SUBCOMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _SUBCOMMANDS:
            module, attr, _ = _SUBCOMMANDS[cmd_name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _SUBCOMMANDS[name][2]) for name in sorted(_SUBCOMMANDS)]
        rows += [
            (name, cmd.get_short_help_str(60))
            for name, cmd in sorted(self.commands.items())
            if name not in _SUBCOMMANDS
        ]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


class Config:
    """What every subcommand can reach through ``ctx.obj``."""

    def __init__(self, data_dir: str | None) -> None:
        self._data_dir = data_dir

    @property
    def data_dir(self) -> Any:
        from .config import resolve_data_dir

        return resolve_data_dir(self._data_dir)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Exit codes: 0 ok; 1 refused or failed; 2 usage error; 3 not found; "
        "4 server or tool unreachable."
    ),
)
@click.option(
    "--data-dir",
    envvar="JIT_SSH_DATA_DIR",
    type=click.Path(file_okay=False),
    help="Where the CA keys live (default: $JIT_SSH_DATA_DIR, else ~/.local/share/jit-ssh).",
)
@click.version_option(package_name="jit-ssh")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None) -> None:
    """jit-ssh: just-in-time SSH access with short-lived OpenSSH certificates."""
    ctx.obj = Config(data_dir)


def _describe(e: Exception) -> str:
    code = getattr(e, "code", "")
    if code == "clock_skew":
        return f"clock skew too large: {e} [clock_skew]"
    if code == "policy_denied":
        # The server's detail usually spells the reasons out already
        # ("request denied by policy: <reasons>"); add only what it left out.
        body = getattr(e, "body", None) or {}
        reasons = body.get("reasons") if isinstance(body, dict) else None
        text = str(e).removeprefix("request denied by policy: ")
        missing = [r for r in reasons or () if isinstance(r, str) and r not in text]
        extra = f": {'; '.join(missing)}" if missing else ""
        return f"refused by policy: {text}{extra} [policy_denied]"
    return f"{e} [{code}]"


def main(argv: list[str] | None = None, *, meta: dict[str, Any] | None = None) -> None:
    """Entry point: one clear line on stderr for every expected error, never a traceback.

    ``meta`` seeds the click context's ``meta`` (tests inject an HTTP transport).
    """
    from ca.errors import JitSshError

    try:
        rv = cli.main(args=argv, prog_name="jit-ssh", standalone_mode=False, meta=meta)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except JitSshError as e:
        click.echo(f"error: {_describe(e)}", err=True)
        sys.exit(
            EXIT_UNREACHABLE
            if e.code in ("server_unreachable", "database_unavailable")
            else EXIT_NOT_FOUND
            if e.code == "not_found"
            else EXIT_FAILED
        )
    except OSError as e:
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        click.echo(f"error: {e.strerror or e}{where}", err=True)
        sys.exit(EXIT_FAILED)
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("JIT_SSH_DEBUG"):
            raise
        click.echo(
            f"error: internal error ({type(e).__name__}: {e}); rerun with JIT_SSH_DEBUG=1 for details",
            err=True,
        )
        sys.exit(EXIT_FAILED)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)
