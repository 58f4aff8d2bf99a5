"""``jit-ssh login``'s wait for an approval: what it shows, and how it outlives an outage.

While a request is pending the engineer sees its id and approval URL, when it
lapses unanswered, who may approve it, who has approved so far, and each
approver's comment as it arrives. On a terminal one status line updates in
place; anything new (an approval, a comment, an outage, the server's return)
goes on a fresh line above it. Without a terminal (a pipe, a log) only the
changes are printed, one line each, never a spinner frame.

A server that stops answering is asked again with a capped exponential
backoff (1 s doubling to 30 s, with a little jitter) until the request's own
deadline (``pending_until``): after it the request has lapsed anyway. That
deadline is the first one the server gave: a later answer may bring it
nearer, never push it out, so a server cannot keep the client retrying an
outage for ever. Whenever
the wait ends with the request still pending (the deadline passed during an
outage, an error, Ctrl-C, SIGTERM) the command to pick it up again is printed.

Exit codes of an interrupted wait: 130 Ctrl-C, 143 SIGTERM (128 + the
signal, as a shell reports them), 4 the server stayed unreachable past the
deadline; any other error keeps its own code.
"""

from __future__ import annotations

import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from ca.errors import JitSshError
from client.errors import EXIT_INTERRUPTED, EXIT_UNREACHABLE, describe, exit_code_for

if TYPE_CHECKING:
    from client.http import ApiClient
    from client.verify import Approval, RequestView

__all__ = [
    "EXIT_TERMINATED",
    "BACKOFF_START",
    "BACKOFF_CAP",
    "wait_for_decision",
    "resume_command",
    "approvers_text",
    "wait_header",
    "extension_line",
]

#: SIGTERM (128 + 15), as a shell reports it.
EXIT_TERMINATED = 128 + signal.SIGTERM
#: The first wait after the server failed to answer, in seconds; doubled each time up to the cap.
BACKOFF_START = 1.0
BACKOFF_CAP = 30.0
#: How long an outage is retried when the server never said when the request lapses.
_UNKNOWN_DEADLINE = timedelta(minutes=10)
_SPINNER = "|/-\\"


class _Terminated(BaseException):
    """SIGTERM arrived during the wait (raised from the handler, like KeyboardInterrupt)."""


def resume_command(req: RequestView) -> str:
    if req.answer.get("extends") is not None:
        # An extension is fetched for the access's own key: `login --resume` would make a new one.
        return f"jit-ssh extend --resume {req.id}"
    return f"jit-ssh login {req.target} --resume {req.id}"


def extension_line(req: RequestView) -> str | None:
    """``Extension of request ID: adds 30m, 1h30m in all.`` for an extension, else None."""
    from client.commands._connect import duration_text
    from client.verify import check_extension

    try:
        ext = check_extension(req)
    except JitSshError:
        return None
    if ext is None:
        return None
    return (
        f"Extension of request {ext.of}: adds {duration_text(ext.added_seconds)}, "
        f"{duration_text(ext.total_seconds)} in all."
    )


def _now() -> datetime:
    from client.clock import utcnow

    return utcnow()


def _clock(t: datetime) -> str:
    """A time for the screen: local, to the minute, with its zone (``10:32 UTC``)."""
    local = t.astimezone()
    return f"{local:%H:%M} {local.tzname() or ''}".rstrip()


def _left(until: datetime, now: datetime) -> str:
    from client.commands._connect import duration_text

    seconds = int((until - now).total_seconds())
    return duration_text(max(seconds, 0)) if seconds > 0 else "now"


def approvers_text(req: RequestView) -> str:
    """Who may approve ``req``: ``1 approval from group approvers (bob, carol)``."""
    n = req.approvals_required
    need = f"{n} approval{'s' if n != 1 else ''}"
    a = req.approvers
    if a is None:
        return need
    who = [f"group {g}" for g in a.groups] + [f"user {u}" for u in a.users]
    text = f"{need} from {' or '.join(who)}" if who else need
    if a.eligible:
        more = a.eligible_total - len(a.eligible)
        names = ", ".join(a.eligible) + (f" and {more} more" if more > 0 else "")
        text += f"; may approve now: {names}"
    elif a.eligible_total == 0:
        # With single sign-on an approver's account exists only after their first sign-in.
        text += (
            "; nobody may approve it now: no account with the approver role is in them yet "
            "(ask an admin, or, with single sign-on, an approver to sign in to the web form once)"
        )
    return text


def _approval_line(a: Approval, got: int, required: int) -> str:
    at = f" at {_clock(a.at)}" if a.at is not None else ""
    if a.decision == "approve":
        line = f"+ approved by {a.approver or 'an approver'}{at} ({got}/{required})"
    else:
        line = f"- {a.decision} by {a.approver or 'an approver'}{at}"
    if a.comment:
        line += f': "{a.comment}"'
    return line


def wait_header(req: RequestView, now: datetime) -> list[str]:
    """The lines shown when a wait starts (after the request id and URL)."""
    lines = []
    extension = extension_line(req)
    if extension is not None:
        lines.append(extension)
    if req.pending_until is not None:
        lines.append(
            f"Lapses unanswered at {_clock(req.pending_until)} (in {_left(req.pending_until, now)})."
        )
    lines.append(f"Needs {approvers_text(req)}.")
    got = 0
    for a in req.approvals:
        got += a.decision == "approve"
        lines.append(_approval_line(a, got, req.approvals_required))
    return lines


def _is_tty() -> bool:
    """Whether stderr is a terminal (tests patch this)."""
    return sys.stderr.isatty()


class _Screen:
    """stderr: one updating status line on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = _is_tty() and not quiet
        self._status = 0  # width of the status line now on screen

    def line(self, text: str, *, always: bool = False) -> None:
        """``text`` on its own line; with ``quiet`` (``--json``) only what is ``always`` shown."""
        if self.quiet and not always:
            return
        self.clear()
        click.echo(text, err=True)

    def status(self, text: str) -> None:
        if not self.tty:
            return
        pad = " " * max(self._status - len(text), 0)
        click.echo(f"\r{text}{pad}", nl=False, err=True)
        self._status = len(text)

    def clear(self) -> None:
        if self._status:
            click.echo("\r" + " " * self._status + "\r", nl=False, err=True)
            self._status = 0


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`_Terminated` in the wait (so the resume command is printed)."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise _Terminated()

    try:
        previous: Any = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave the signal alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for_decision(
    api_client: ApiClient,
    req: RequestView,
    *,
    poll: float,
    quiet: bool,
    fetch: Callable[[ApiClient, str], RequestView] | None = None,
) -> RequestView:
    """Poll until ``req`` leaves 'pending' and return it; see the module docstring."""
    if req.state != "pending":
        return req
    screen = _Screen(quiet)
    get = fetch or _fetch
    seen = len(req.approvals)
    frame = 0
    start = time.monotonic()
    limit = req.pending_until  # the first deadline the server gave; never pushed out
    with _sigterm_raises():
        try:
            for text in wait_header(req, _now()):
                screen.line(text)
            while req.state == "pending":
                if screen.tty:
                    screen.status(_status_text(req, frame, start))
                    frame += 1
                time.sleep(poll)
                req, seen = _poll(api_client, req, get, screen, seen, limit)
        except KeyboardInterrupt:
            screen.clear()
            _interrupted(api_client, req, screen)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except _Terminated:
            screen.clear()
            click.echo(
                f"Terminated; request {req.id} is left pending. Later: {resume_command(req)}",
                err=True,
            )
            raise click.exceptions.Exit(EXIT_TERMINATED) from None
        except (JitSshError, click.ClickException):
            screen.clear()
            click.echo(
                f"Stopped waiting; request {req.id} may still be pending. Later: {resume_command(req)}",
                err=True,
            )
            raise
    screen.clear()
    return req


def _fetch(api_client: ApiClient, request_id: str) -> RequestView:
    from client.commands._connect import checked

    return checked(api_client.get(f"/v1/requests/{request_id}"))


def _status_text(req: RequestView, frame: int, start: float) -> str:
    elapsed = int(time.monotonic() - start)
    text = (
        f"{_SPINNER[frame % 4]} waiting for approval: {len(req.approved_by)}/"
        f"{req.approvals_required} approvals, {elapsed // 60}:{elapsed % 60:02d} elapsed"
    )
    if req.pending_until is not None:
        text += f", lapses in {_left(req.pending_until, _now())}"
    return text


def _poll(
    api_client: ApiClient,
    req: RequestView,
    get: Callable[[ApiClient, str], RequestView],
    screen: _Screen,
    seen: int,
    limit: datetime | None = None,
) -> tuple[RequestView, int]:
    """One look at the request, an outage retried until its deadline (the nearer of the latest
    ``pending_until`` and ``limit``, the first one given); new approvals shown."""
    failures = 0
    down_since: datetime | None = None
    while True:
        try:
            fresh = get(api_client, req.id)
            break
        except JitSshError as e:
            if not _outage(e):
                raise
            now = _now()
            down_since = down_since or now
            given = [d for d in (req.pending_until, limit) if d is not None]
            deadline = min(given) if given else down_since + _UNKNOWN_DEADLINE
            if now >= deadline:
                screen.line(
                    f"server still unreachable, and request {req.id} lapsed unanswered at "
                    f"{_clock(deadline)}; giving up ({describe(e)})",
                    always=True,
                )
                raise
            delay = min(BACKOFF_CAP, BACKOFF_START * 2**failures)
            delay = min(delay + random.uniform(0, delay / 10), (deadline - now).total_seconds())
            what = f"server unreachable ({describe(e)})" if failures == 0 else "still unreachable"
            screen.line(
                f"{what}; retrying in {max(round(delay), 1)}s until {_clock(deadline)} "
                "(the request lapses then)",
                always=True,
            )
            failures += 1
            time.sleep(max(delay, 0.0))
    if down_since is not None:
        gone = int((_now() - down_since).total_seconds())
        screen.line(
            f"server is back (unreachable for {gone}s); still waiting for request {req.id}",
            always=True,
        )
    got = 0
    for i, a in enumerate(fresh.approvals):
        got += a.decision == "approve"
        if i >= seen:
            screen.line(_approval_line(a, got, fresh.approvals_required))
    return fresh, max(seen, len(fresh.approvals))


def _outage(e: JitSshError) -> bool:
    """Whether ``e`` means the server is not there for now (not that it said no): unreachable,
    or a proxy in front of it answering 502, 503 or 504 for it."""
    return exit_code_for(e) == EXIT_UNREACHABLE or getattr(e, "status", None) in (502, 503, 504)


def _interrupted(api_client: ApiClient, req: RequestView, screen: _Screen) -> None:
    """Ctrl-C: on a terminal, offer to cancel; else (or declined) leave it pending."""
    if not screen.quiet and sys.stdin.isatty():
        try:
            cancel = click.confirm("Cancel the request?", default=True, err=True)
        except (KeyboardInterrupt, click.Abort):
            cancel = False
        if cancel:
            try:
                api_client.post(f"/v1/requests/{req.id}/cancel", {})
            except JitSshError as e:
                click.echo(f"Could not cancel request {req.id}: {describe(e)}", err=True)
            else:
                click.echo(f"Request {req.id} cancelled.", err=True)
                return
    click.echo(f"Left pending. Later: {resume_command(req)}", err=True)
