"""The admin context for the commands that work straight on the server's database.

``@with_admin()`` gives a command the ``--config`` option and an :class:`AdminHandle`:
the server's configuration, resolved as ``serve`` resolves it, and the
:class:`server.context.AdminContext` built from it (engine, sessions, audit log,
keyring, services) with no Flask. Every ``admin`` and ``audit`` command and the
``ca`` commands that write rows use it. The server is imported only when a
command runs: the engineer's client never loads it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from server.config import ServerConfig
    from server.context import AdminContext

__all__ = ["AdminHandle", "config_option", "server_config", "warn_unnamed_groups", "with_admin"]

F = TypeVar("F", bound=Callable[..., Any])

#: Where `jit-ssh serve` listens unless told (and so the server's URL when base_url is unset).
DEFAULT_BIND = "127.0.0.1:8022"

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="JIT_SSH_CONFIG",
    help="Server configuration file (TOML; default $JIT_SSH_CONFIG).",
)


def server_config(ctx: click.Context, config_path: str | None) -> ServerConfig:
    """The server's configuration, resolved as every command resolves it
    (server.config.resolve_config: flag > environment > TOML file > default)."""
    from server.config import resolve_config

    flag = ctx.meta.get("jit_ssh.data_dir") or ctx.find_root().params.get("data_dir")
    return resolve_config(config_path, data_dir=flag, env=os.environ)


class AdminHandle:
    """The configuration at once, the admin context on first use (then kept until the command ends)."""

    def __init__(self, ctx: click.Context, config_path: str | None, *, create: bool) -> None:
        self._click = ctx
        self._config_path = config_path
        self._create = create
        self._config: ServerConfig | None = None
        self._context: AdminContext | None = None

    @property
    def config(self) -> ServerConfig:
        if self._config is None:
            self._config = server_config(self._click, self._config_path)
        return self._config

    def open(self, *, passphrase_file: str | None = None) -> AdminContext:
        """The admin context. Without ``create``, a default SQLite database that does not
        exist is refused (``DatabaseUnavailable``): creating an empty one would record into a
        database no server reads."""
        if self._context is not None:
            return self._context
        from server.context import open_context

        cfg = self.config
        if passphrase_file:
            cfg = replace(cfg, ca_passphrase_file=Path(passphrase_file))
        if not self._create:
            cfg = replace(cfg, bootstrap=False)
            _require_database(cfg.resolved_database_url)
        self._context = open_context(cfg, say=lambda m: click.echo(m, err=True))
        return self._context

    @property
    def context(self) -> AdminContext:
        return self.open()

    def close(self) -> None:
        if self._context is not None:
            self._context.close()
            self._context = None


def _require_database(url: str) -> None:
    from server.db import is_sqlite
    from server.errors import DatabaseUnavailable

    if not is_sqlite(url):
        return
    from sqlalchemy.engine import make_url

    path = make_url(url).database
    if not path or path == ":memory:" or not Path(path).exists():
        raise DatabaseUnavailable(
            f"no database at {path} (configure the server's with --config, $JIT_SSH_CONFIG or "
            "$JIT_SSH_DATABASE_URL; `jit-ssh serve` creates the default one on first start)",
            field="database",
        )


def with_admin(*, create: bool = True, lazy: bool = False) -> Callable[[F], F]:
    """Add ``--config`` and pass an :class:`AdminHandle` as the command's first argument
    (after ``ctx`` with ``click.pass_context`` below it).

    The context is opened before the command runs, unless ``lazy`` (the command opens it
    with ``admin.open()`` when it needs it, e.g. after checking its input). ``create``: a
    first start creates the data directory, keys and database, as ``serve`` would; without
    it, a missing database is refused.
    """

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def run(*args: Any, config_path: str | None, **kwargs: Any) -> Any:
            handle = AdminHandle(click.get_current_context(), config_path, create=create)
            try:
                if not lazy:
                    handle.open()
                return f(handle, *args, **kwargs)
            finally:
                handle.close()

        return config_option(run)  # type: ignore[return-value]

    return decorate


def warn_unnamed_groups(admin: AdminHandle, groups: tuple[str, ...]) -> None:
    """Warn (on stderr; the command still succeeds) about each of ``groups`` that no rule of
    the server's policy names: ``--group enginers`` grants nothing."""
    from server.admin import Admin

    for warning in Admin(admin.context.service).group_warnings(groups):
        click.echo(f"warning: {warning}", err=True)
