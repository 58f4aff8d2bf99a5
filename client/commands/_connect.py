"""What every command that talks to the server shares: the connection options, the
signed client built from the settings, and the checked, typed views of requests."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ca.errors import JitSshError

if TYPE_CHECKING:
    from client.http import ApiClient
    from client.settings import ClientSettings
    from client.signing import Signer
    from client.verify import RequestView

__all__ = [
    "connection_options",
    "explain",
    "explained",
    "connect",
    "make_signer",
    "checked",
    "checked_list",
    "duration_text",
    "request_line",
    "list_requests",
]


def connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--identity",
        "-i",
        help="Private key enrolled for API calls (default from config; ssh-agent if it holds it).",
    )(f)
    f = click.option(
        "--user", "-u", help="Your jit-ssh user name (default from config or $JIT_SSH_USER)."
    )(f)
    f = click.option("--server", "-s", help="Server URL (default from config or $JIT_SSH_SERVER).")(
        f
    )
    return f


#: Failures of the settings, the key or the caller's enrolment: each gets a "fix:" line.
#: (Unreachable and clock skew keep their one line: the message says it all.)
_EXPLAINED = frozenset(
    {
        "unknown_key",
        "auth_failed",
        "bad_signature",
        "user_disabled",
        "key_file_error",
        "passphrase_required",
        "bad_passphrase",
        "agent_error",
        "agent_unavailable",
        "agent_key_not_found",
    }
)


def explain(
    error: JitSshError, server: str | None, user: str | None, identity: str | None
) -> click.ClickException:
    """``error`` as one failure that says what is wrong, how to fix it (with the user and
    key of the settings), and exits with the code :func:`client.errors.exit_code_for` gives."""
    from client.errors import failure_for
    from client.settings import load_settings

    try:
        settings = load_settings(server=server, user=user, identity=identity)
        user, identity = settings.user or user, settings.identity or identity
    except JitSshError:
        pass
    return failure_for(error, user=user, identity=identity)


def explained(f: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose settings, key and enrolment failures say how to fix them."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except JitSshError as e:
            if e.code not in _EXPLAINED:
                raise
            raise explain(
                e, kwargs.get("server"), kwargs.get("user"), kwargs.get("identity")
            ) from None

    return wrapper


def connect(
    server: str | None, user: str | None, identity: str | None, *, signed: bool = True
) -> tuple[ApiClient, ClientSettings]:
    """The settings (flags > environment > config file) and the CLI's one HTTP client built
    from them, signing every call with the enrolled key unless ``signed`` is false."""
    from client.settings import load_settings

    from ._common import open_api

    settings = load_settings(server=server, user=user, identity=identity)
    # Before the key: without a config file, "run jit-ssh config init" is the
    # fix, not "no ssh-agent".
    url = settings.need("server")
    name = settings.need("user") if signed else settings.user
    signer = None
    if signed:

        def ask() -> bytes | None:
            if not sys.stdin.isatty():
                return None
            return (
                click.prompt(
                    "Passphrase for your key", hide_input=True, default="", show_default=False
                ).encode()
                or None
            )

        signer = make_signer(settings.identity, settings.use_agent, ask)
    api_client = open_api(
        url,
        user=name,
        signer=signer,
        ca_bundle=settings.ca_bundle,
        timeout=settings.timeout,
    )
    return api_client, settings


def make_signer(identity: str | None, use_agent: bool, ask: Callable[[], bytes | None]) -> Signer:
    """ssh-agent when it runs and holds the key; else the key file itself."""
    from client.signing import AgentError, signer_from_identity

    can_file = (
        identity is not None
        and not identity.startswith("SHA256:")
        and Path(identity).is_file()
        and not identity.endswith(".pub")
    )
    if use_agent and os.environ.get("SSH_AUTH_SOCK"):
        try:
            return signer_from_identity(identity, use_agent=True, passphrase=ask)
        except AgentError:
            if not can_file:
                raise
    return signer_from_identity(
        identity, use_agent=False if can_file or not use_agent else True, passphrase=ask
    )


def duration_text(seconds: int) -> str:
    from ca.durations import format_duration

    return format_duration(seconds)


def checked(answer: Any) -> RequestView:
    """A request answer, checked field by field before it is read (client.verify)."""
    from client.verify import check_request_answer

    return check_request_answer(answer)


def checked_list(answer: Any) -> list[RequestView]:
    from client.verify import check_request_list

    return check_request_list(answer)


def request_line(r: RequestView) -> str:
    got = len(r.approved_by)
    reason = r.reason.replace("\n", " ")
    if len(reason) > 40:
        reason = reason[:39] + "…"
    line = (
        f"{r.id}  {r.state:<9} {r.requester:<12} {r.target:<14} {duration_text(r.duration_seconds):>7} "
        f"{got}/{r.approvals_required}  {r.created_at[:19]}  {reason}"
    )
    from client.verify import check_extension

    try:
        ext = check_extension(r)
    except JitSshError:
        ext = None  # a list is shown even when one row's extension view is odd
    if ext is not None:
        # Approvers see it is an extension, and the whole access it makes.
        line += (
            f"\n    extension of {ext.of}: adds {duration_text(ext.added_seconds)}, "
            f"{duration_text(ext.total_seconds)} in all"
        )
    if r.state in ("denied", "expired") and r.deny_reason:
        # Why it ended without a certificate: an approver's reason, or the server's.
        line += f"\n    {r.state}: {r.deny_reason.replace(chr(10), ' ')}"
    return line


def list_requests(
    query: dict[str, str],
    empty: str,
    as_json: bool,
    server: str | None,
    user: str | None,
    identity: str | None,
) -> None:
    api_client, _ = connect(server, user, identity)
    with api_client:
        rows = checked_list(api_client.get("/v1/requests", query=query))
    if as_json:
        click.echo(json.dumps([r.answer for r in rows], indent=2))
        return
    for r in rows:
        click.echo(request_line(r))
    if not rows:
        click.echo(empty)
