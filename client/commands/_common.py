"""Helpers shared by the subcommands: options, the data directory, passphrases."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from client.config import resolve_data_dir

if TYPE_CHECKING:
    from client.http import ApiClient
    from client.signing import Signer

__all__ = ["data_dir_option", "get_data_dir", "open_api", "read_passphrase"]

PASSPHRASE_ENV = "JIT_SSH_CA_PASSPHRASE"


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


def open_api(
    server: str,
    *,
    user: str | None = None,
    signer: Signer | None = None,
    ca_bundle: str | None = None,
    timeout: float = 15.0,
    retries: int = 3,
) -> ApiClient:
    """The CLI's one HTTP client (:class:`client.http.ApiClient`: one URL check, TLS
    verified, no redirect followed, size-limited answers), for every command that talks to
    a server. Its transport is the one tests inject as ``meta["jit_ssh.transport"]``."""
    from client.http import ApiClient

    ctx = click.get_current_context(silent=True)
    transport = ctx.meta.get("jit_ssh.transport") if ctx is not None else None
    return ApiClient(
        server=server,
        user=user,
        signer=signer,
        transport=transport,
        ca_bundle=ca_bundle,
        timeout=timeout,
        retries=retries,
    )
