"""The client's exit codes, its errors, and the one handler that turns an error into both.

Exit codes (also shown in ``jit-ssh --help``)::

    0    success
    1    the request was refused or failed (bad input, policy, verification)
    2    usage error (unknown option, missing argument)
    3    not found / nothing to do
    4    the server or a local tool could not be reached
    130  interrupted (Ctrl-C)

``host sync-krl`` adds 4 (the installed KRL is stale), 5 (the server's KRL is
older than the installed one) and 6 (the server's KRL was refused).

Errors the client raises on its own, beside those of :mod:`ca.errors`; each
code is its class's name in snake_case (a trailing ``_error`` dropped)::

    JitSshError
    ├── ApiError                  the server's own code  a problem answer (RFC 9457)
    ├── BadServerAnswer           "bad_server_answer"    not what the call expects
    │   └── RedirectRefused       "redirect_refused"     a 3xx: never followed
    ├── ServerUnreachable         "server_unreachable"
    ├── InsecureServerURL         "insecure_server_url"
    └── InvalidApiPath            "invalid_api_path"

(and, in their own modules: ``InvalidSettings``, ``InvalidAccessRecord``,
``CertificateMismatch``, the signers' ``SignerError`` tree).

:class:`Failure` and its subclasses are the ``click.ClickException`` s a
command raises to stop with one ``error: ...`` line and an exit code.
:func:`run` is the handler: every expected error becomes one line on stderr
and its exit code, never a traceback.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import IO, Any, NoReturn

import click

from ca.errors import JitSshError

__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_NOT_FOUND",
    "EXIT_UNREACHABLE",
    "EXIT_KRL_STALE",
    "EXIT_KRL_OLDER",
    "EXIT_KRL_REFUSED",
    "EXIT_INTERRUPTED",
    "ApiError",
    "BadServerAnswer",
    "RedirectRefused",
    "ServerUnreachable",
    "InsecureServerURL",
    "InvalidApiPath",
    "Failure",
    "NothingFound",
    "ToolMissing",
    "Unreachable",
    "failure_for",
    "exit_code_for",
    "describe",
    "enrolment_end",
    "fix_for",
    "run",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNREACHABLE = 4
#: ``host sync-krl``: the installed KRL could not be refreshed for longer than --max-age.
EXIT_KRL_STALE = 4
#: ``host sync-krl``: the server's KRL is older than the installed one, which is kept.
EXIT_KRL_OLDER = 5
#: ``host sync-krl``: the server's KRL was refused; the installed one is kept.
EXIT_KRL_REFUSED = 6
#: Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130

#: Error codes that mean "could not reach it", not "it said no".
_UNREACHABLE_CODES = frozenset({"server_unreachable", "database_unavailable"})


# --------------------------------------------------------------------------- errors


class ApiError(JitSshError):
    """The server answered with a problem (RFC 9457); ``code`` is the server's code."""

    code = "api_error"

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        field: str | None = None,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(detail, field=field)
        self.status = status
        self.code = code
        self.body = body or {}


class BadServerAnswer(JitSshError):
    """The server's answer is not what the call expects (no JSON object, empty, too large,
    a field of the wrong kind)."""

    code = "bad_server_answer"


class RedirectRefused(BadServerAnswer):
    """The server answered with a redirect; jit-ssh never follows one."""

    code = "redirect_refused"


class ServerUnreachable(JitSshError):
    code = "server_unreachable"


class InsecureServerURL(JitSshError):
    code = "insecure_server_url"


class InvalidApiPath(JitSshError):
    code = "invalid_api_path"


# --------------------------------------------------------------------------- click exceptions


class Failure(click.ClickException):
    """Stop the command: ``error: MESSAGE`` on stderr, exit 1 (a subclass says otherwise)."""

    exit_code = EXIT_FAILED

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=file is None, file=file)


class NothingFound(Failure):
    """Nothing to act on (no local access, no such request): exit 3."""

    exit_code = EXIT_NOT_FOUND


class ToolMissing(Failure):
    """A local tool the command runs (OpenSSH's ``ssh``) is not installed: exit 4."""

    exit_code = EXIT_UNREACHABLE


class Unreachable(Failure):
    """The server could not be reached: exit 4."""

    exit_code = EXIT_UNREACHABLE


# --------------------------------------------------------------------------- the handler


def exit_code_for(error: JitSshError) -> int:
    """The exit code of an error that reached the top: 4 unreachable, 3 not found, else 1."""
    if error.code in _UNREACHABLE_CODES:
        return EXIT_UNREACHABLE
    if error.code == "not_found":
        return EXIT_NOT_FOUND
    return EXIT_FAILED


_ENDED_AT = re.compile(
    r"ended at (\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d))"
)


def enrolment_end(error: JitSshError) -> str | None:
    """When an ``enrolment_expired`` refusal says the enrolment ended, as ``2026-01-02 22:15
    UTC`` (from the problem's ``expires_at``, else its detail), or None."""
    from datetime import UTC, datetime

    body = getattr(error, "body", None) or {}
    stated = body.get("expires_at") if isinstance(body, dict) else None
    if not isinstance(stated, str):
        m = _ENDED_AT.search(str(error))
        stated = m.group(1) if m else None
    if not isinstance(stated, str) or len(stated) > 40:
        return None
    try:
        t = datetime.fromisoformat(stated.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def describe(error: JitSshError) -> str:
    """The one line the engineer reads for ``error``, its code in brackets."""
    code = error.code
    if code == "enrolment_expired":
        end = enrolment_end(error)
        ended = f"ended at {end}" if end else "has ended"
        return f"your single sign-on enrolment {ended}; run: jit-ssh sso login [enrolment_expired]"
    if code == "clock_skew":
        return f"clock skew too large: {error} [clock_skew]"
    if code == "policy_denied":
        # The server's detail usually spells the reasons out already
        # ("request denied by policy: <reasons>"); add only what it left out.
        body = getattr(error, "body", None) or {}
        reasons = body.get("reasons") if isinstance(body, dict) else None
        text = str(error).removeprefix("request denied by policy: ")
        missing = [r for r in reasons or () if isinstance(r, str) and r not in text]
        extra = f": {'; '.join(missing)}" if missing else ""
        return f"refused by policy: {text}{extra} [policy_denied]"
    return f"{error} [{code}]"


def fix_for(error: JitSshError, *, user: str | None = None, identity: str | None = None) -> str:
    """How to fix ``error`` (a connection, settings or authentication failure), or ""."""
    code = error.code
    who = user or "USER"
    if code == "invalid_settings" and "config init" not in str(error):
        return "check the config file (jit-ssh config show), or run: jit-ssh config init --force"
    if code in _UNREACHABLE_CODES:
        return "check the server URL (jit-ssh config show) and that the server runs; then retry"
    if code in ("unknown_key", "auth_failed"):
        pub = f"{identity}.pub" if identity and not identity.endswith(".pub") else identity
        return (
            "ask an admin to enrol it: "
            f"jit-ssh admin user add {who} --group engineers --ssh-key {pub or 'KEY.pub'} "
            "(or, where the server has single sign-on: jit-ssh sso login)"
        )
    if code in ("sso_flow_expired", "sso_flow_unknown", "sign_in_timed_out"):
        return "start again: jit-ssh sso login"
    if code == "sso_provider_error":
        return (
            "the server could not reach the identity provider, or could not read its answer: "
            "try again later; an admin can run: jit-ssh sso check"
        )
    if code == "sso_email_unverified":
        return "verify your email address at the identity provider, then: jit-ssh sso login"
    if code == "sso_domain_refused":
        return "sign in with an account in your organisation's email domain"
    if code in ("sso_token_invalid", "sso_bad_claim", "sso_redirect_refused", "sso_error"):
        return (
            "the server refused what the identity provider sent: ask an admin (jit-ssh sso check)"
        )
    if code == "sso_not_configured":
        return "this server has no single sign-on: ask an admin to enrol your key"
    if code == "sso_user_mismatch":
        return "one user per config file: fix `user`, or use another $XDG_CONFIG_HOME"
    if code == "bad_signature":
        return "the signature did not verify: check --identity (the key enrolled for you)"
    if code == "user_disabled":
        return f"{who} is disabled on the server: ask an admin"
    if code == "clock_skew":
        return "set this machine's clock right (NTP), then retry"
    if code in ("key_file_error", "passphrase_required", "bad_passphrase"):
        return "give your enrolled private key: --identity FILE, or identity in the config file"
    if code.startswith("agent_"):
        return "add your enrolled key to ssh-agent (ssh-add), or give --identity FILE"
    return ""


def failure_for(
    error: JitSshError,
    *,
    user: str | None = None,
    identity: str | None = None,
    note: str = "",
) -> Failure:
    """``error`` as the :class:`Failure` that says what is wrong and how to fix it (``note``
    adds a line), with the exit code :func:`exit_code_for` documents; ``.code`` is the
    error's code."""
    fix = fix_for(error, user=user, identity=identity)
    message = describe(error) + (f"\n  fix: {fix}" if fix else "") + (f"\n  {note}" if note else "")
    kind = {EXIT_UNREACHABLE: Unreachable, EXIT_NOT_FOUND: NothingFound}.get(
        exit_code_for(error), Failure
    )
    failure = kind(message)
    failure.code = error.code  # type: ignore[attr-defined]
    return failure


def run(invoke: Callable[[], Any]) -> NoReturn:
    """Run ``invoke`` (the click group in non-standalone mode) and exit: one clear line on
    stderr for every expected error, never a traceback (unless ``$JIT_SSH_DEBUG``)."""
    try:
        rv = invoke()
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except JitSshError as e:
        click.echo(f"error: {describe(e)}", err=True)
        sys.exit(exit_code_for(e))
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
