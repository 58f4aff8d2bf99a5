"""The ``jit-ssh`` command.

Subcommand groups live in ``client.commands.<name>`` and are imported only when
they run, so ``jit-ssh --help`` stays fast and never pulls in the server.

Exit codes: see :mod:`client.errors` (also shown in ``jit-ssh --help``).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from .errors import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, run

__all__ = [
    "main",
    "cli",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_NOT_FOUND",
    "EXIT_UNREACHABLE",
]


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
    "targets": (
        "client.commands.targets",
        "targets",
        "What you may request: targets, for how long, who approves.",
    ),
    "status": ("client.commands.engineer", "status", "Your active access and pending requests."),
    "done": ("client.commands.engineer", "done", "End access early (revoke, remove the key)."),
    "extend": (
        "client.commands.engineer",
        "extend",
        "Add time to a running access (same key, new certificate).",
    ),
    "requests": ("client.commands.engineer", "requests_cmd", "Your request history."),
    "pending": ("client.commands.approver", "pending", "Requests waiting for your approval."),
    "approve": ("client.commands.approver", "approve", "Approve a request."),
    "deny": ("client.commands.approver", "deny", "Deny a request."),
    "ssh": ("client.commands.engineer", "ssh", "Log in if needed, then ssh with the certificate."),
    "config": ("client.commands.engineer", "config", "Your client settings."),
    "api": ("client.commands.api", "api", "Make one signed API call (for scripts)."),
    "serve": ("client.commands.service", "serve", "Run the CA service (gunicorn)."),
    "db": ("client.commands.service", "db", "Database schema management."),
    "admin": (
        "client.commands.service",
        "admin",
        "Manage users, keys and passwords on the server.",
    ),
    "sso": (
        "client.commands.sso",
        "sso",
        "Sign in with the identity provider (single sign-on) to enrol this machine's key.",
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
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
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


def main(argv: list[str] | None = None, *, meta: dict[str, Any] | None = None) -> None:
    """Entry point: one clear line on stderr for every expected error, never a traceback
    (:func:`client.errors.run`).

    ``meta`` seeds the click context's ``meta`` (tests inject an HTTP transport).
    """
    run(lambda: cli.main(args=argv, prog_name="jit-ssh", standalone_mode=False, meta=meta))
