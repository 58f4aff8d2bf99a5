"""Helpers shared by the subcommands: options, passphrases, the clock."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from client.config import resolve_data_dir

__all__ = ["data_dir_option", "get_data_dir", "read_passphrase", "utcnow", "write_file"]

PASSPHRASE_ENV = "JIT_SSH_CA_PASSPHRASE"


def utcnow() -> datetime:
    """The one place the client reads the clock (tests may patch this)."""
    return datetime.now(UTC)


def _set_data_dir(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value:
        ctx.meta["jit_ssh.data_dir"] = value
    return value


def data_dir_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--data-dir`` accepted on the subcommand too (``jit-ssh ca init --data-dir X``)."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        expose_value=False,
        is_eager=True,
        callback=_set_data_dir,
        help="Data directory holding the CA keys (default: $JIT_SSH_DATA_DIR, else ~/.local/share/jit-ssh).",
    )(f)


def get_data_dir(ctx: click.Context) -> Path:
    explicit = ctx.meta.get("jit_ssh.data_dir")
    if explicit:
        return resolve_data_dir(explicit)
    return resolve_data_dir(ctx.find_root().params.get("data_dir"))


def read_passphrase(passphrase_file: str | None) -> bytes | None:
    """The CA key passphrase: from ``--passphrase-file``, else ``$JIT_SSH_CA_PASSPHRASE``, else none."""
    if passphrase_file:
        data = Path(passphrase_file).read_bytes()
        # Files written by `echo` end in a newline that is not part of the passphrase.
        data = data.rstrip(b"\r\n")
        if not data:
            raise click.ClickException(f"{passphrase_file} is empty")
        return data
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env.encode("utf-8")
    return None


def write_file(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644) -> None:
    """Write atomically: a temporary file beside ``path``, then rename over it."""
    p = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, p)
