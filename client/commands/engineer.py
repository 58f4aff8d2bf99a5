"""The engineer's commands: login, status, done, extend, requests, ssh and config.
They talk to the server over HTTP only (approvers' commands: :mod:`.approver`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ca.errors import JitSshError
from client.errors import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    Failure,
    NothingFound,
    ToolMissing,
    describe,
    exit_code_for,
    failure_for,
    fix_for,
)

from ._connect import (
    checked,
    checked_list,
    connect,
    connection_options,
    duration_text,
    explain,
    explained,
    list_requests,
)

if TYPE_CHECKING:
    from client.http import ApiClient
    from client.settings import ClientSettings
    from client.verify import RequestView, VerifiedCertificate

__all__ = ["login", "status", "done", "extend", "requests_cmd", "ssh", "config"]


def _iso(t: datetime) -> str:
    """A certificate time as the server writes it: ``2026-01-01T10:00:00Z``."""

    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- login


def _typed_duration(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A duration a person typed is checked before anything is sent: ``--for 30`` (no unit) is
    refused here, with the accepted forms, instead of becoming a 30-second request."""
    if value is not None:
        from ca import parse_duration

        parse_duration(value, field=f"--{param.name}" if param.name != "duration" else "--for")
    return value


@click.command()
@click.argument("target", required=False)
@click.option(
    "--for",
    "duration",
    callback=_typed_duration,
    help="How long, e.g. 30m, 1h (default: config default_duration, else the policy's default).",
)
@click.option(
    "--reason", "-r", default="", help="Why you need access (some policies require a ticket)."
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="Return after submitting; pick the certificate up later with --resume.",
)
@click.option(
    "--resume",
    "resume_id",
    help="Pick up an earlier request ID (wait for it, then get the certificate); TARGET may be left out.",
)
@click.option(
    "--break-glass",
    is_flag=True,
    help="Self-approved emergency access (where policy allows; reviewed afterwards).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON result instead of prose.")
@click.option(
    "--poll", type=float, default=1.0, show_default=True, help="Seconds between status checks."
)
@connection_options
@explained
def login(
    target: str | None,
    duration: str | None,
    reason: str,
    no_wait: bool,
    resume_id: str | None,
    break_glass: bool,
    as_json: bool,
    poll: float,
    server: str | None,
    user: str | None,
    identity: str | None,
) -> None:
    """Request access to TARGET and wait for approval; then get a certificate.

    Makes a fresh Ed25519 key for this access in ~/.ssh/jit-ssh/, submits a
    signed request, shows the approval URL and waits: when the request lapses
    unanswered, who may approve it, each approval and comment as it comes. A
    server outage meanwhile is retried until the request lapses. On approval
    the certificate is written beside the key, added to ssh-agent for exactly
    its remaining validity, and ~/.ssh/jit-ssh/config gets a Host block for
    TARGET. `jit-ssh login --resume ID` picks up a request left pending.

    With a server that signs people in (single sign-on), no enrolled key here, or a key
    whose enrolment ended, runs `jit-ssh sso login` first, then goes on with the request.

    Exit codes: 0 certificate issued (or submitted, with --no-wait); 1 denied,
    refused by policy, expired or cancelled; 4 server unreachable (past the
    request's deadline, while waiting); 130 Ctrl-C and 143 SIGTERM while
    waiting (the request stays pending; the resume command is printed).
    """
    from ca.names import check_target
    from client.access import new_key_pair
    from client.waiting import wait_for_decision

    if target is None and not resume_id:
        raise click.UsageError("give a TARGET, or --resume ID to pick up an earlier request")
    if target is not None:
        check_target(target, field="target")
    from client.commands.sso import sign_in_if_needed

    # Single sign-on: no key or no user here yet, and the server signs people in.
    again = sign_in_if_needed(server, user, identity)
    if again is not None:
        user, identity = again
    api_client, settings = connect(server, user, identity)
    with contextlib.ExitStack() as clients:
        clients.enter_context(api_client)

        def enrolled(call: Callable[[ApiClient], Any]) -> Any:
            """``call``; when the server does not know the key or its enrolment ended, and it
            signs people in, the sign-in first and then ``call`` again, in this command."""
            nonlocal api_client, settings
            try:
                return call(api_client)
            except JitSshError as e:
                fixed = sign_in_if_needed(server, user, identity, refused=e)
                if fixed is None:
                    raise
                api_client, settings = connect(server, *fixed)
            clients.enter_context(api_client)
            return call(api_client)

        if resume_id:
            req = checked(enrolled(lambda api: api.get(f"/v1/requests/{resume_id}")))
            if target is None:
                # The key, certificate and ssh_config block are filed under the
                # target's name: only a valid one.
                target = check_target(req.target, field="the server's target")
            elif req.target != target:
                # The key, certificate and ssh_config block are filed under
                # TARGET: a mismatch would put another target's access there.
                raise Failure(
                    f"request {resume_id} is for target {req.target!r}, not {target!r}: "
                    f"jit-ssh login {req.target} --resume {resume_id}"
                )
            if not as_json and req.state == "pending":
                _say_submitted(req)
        else:
            assert target is not None
            body: dict[str, Any] = {"target": target, "reason": reason}
            want = duration or settings.default_duration
            if want:
                body["duration"] = want
            if break_glass:
                body["break_glass"] = True
            try:
                req = checked(enrolled(lambda api: api.post("/v1/requests", body)))
            except JitSshError as e:
                if e.code not in ("not_found", "policy_denied", "invalid_input"):
                    raise
                guess = _close_target(api_client, target)
                if guess is None:
                    raise
                raise _did_you_mean(e, guess) from None
            if not as_json:
                _say_submitted(req)
        if no_wait and req.state == "pending":
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "request_id": req.id,
                            "state": req.state,
                            "approval_url": req.approval_url,
                        }
                    )
                )
            else:
                from client.clock import utcnow
                from client.waiting import wait_header

                for line in wait_header(req, utcnow()):
                    click.echo(line, err=True)
                click.echo(
                    f"Not waiting. Later: jit-ssh login {target} --resume {req.id}", err=True
                )
            return
        req = wait_for_decision(api_client, req, poll=poll, quiet=as_json)
        if req.state != "approved" and not (req.state == "issued" and resume_id):
            _report_end(req, as_json)
        # One key per request: another access, to this target or another, is left alone.
        key_path, pub = (
            new_key_pair(target, req.id)
            if req.state == "approved" or not _have_key(target, req.id)
            else (_key_path(target, req.id), _pub(target, req.id))
        )
        # As sent: client.verify checks every value of it strictly before anything is printed or written.
        cert = api_client.post(
            f"/v1/requests/{req.id}/certificate", {"public_key": pub}, printable=False
        )
        verified = _verify(api_client, target, req, cert, pub)
        _install(verified, key_path, settings, as_json, warn_before=req.warn_before_seconds)
        if not as_json:
            click.echo(_granted_line(req, verified), err=True)


def _say_submitted(req: RequestView) -> None:
    click.echo(
        f"Request {req.id} for {req.target} ({duration_text(req.duration_seconds)}): {req.state}",
        err=True,
    )
    if req.state == "pending":
        click.echo(f"Approve at: {req.approval_url}", err=True)


def _granted_line(req: RequestView, verified: VerifiedCertificate) -> str:
    """The last line: who approved, and until when the certificate is valid."""
    by = req.approved_by
    if by:
        who = f"Approved by {', '.join(by)}"
    elif req.answer.get("break_glass") is True:
        who = "Self-approved (break-glass, reviewed afterwards)"
    elif req.answer.get("auto_approved") is True:
        who = "Auto-approved by the policy"
    else:
        who = "Approved"
    until = verified.certificate.valid_before
    local = until.astimezone()
    return f"{who}; certificate valid until {local:%Y-%m-%d %H:%M} {local.tzname() or ''} ({_iso(until)})."


def _close_target(api_client: ApiClient, target: str) -> str | None:
    """The target the server knows that ``target`` most likely misspells, if any."""
    from difflib import get_close_matches

    try:
        answer = api_client.get("/v1/targets")
    except JitSshError:
        return None  # the suggestion is a courtesy: the server's own error stands
    rows = answer.get("targets") if isinstance(answer, dict) else None
    names = [
        t["name"] for t in rows or () if isinstance(t, dict) and isinstance(t.get("name"), str)
    ]
    if target in names:
        return None
    from ca.names import check_target

    for guess in get_close_matches(target, names, n=1, cutoff=0.6):
        try:
            # The name goes into a printed command line: only a valid target name.
            return check_target(guess, field="target")
        except JitSshError:
            return None
    return None


def _did_you_mean(error: JitSshError, guess: str) -> Failure:
    """The server's refusal, its code and exit code kept, with the likely target."""
    return failure_for(error, note=f"did you mean {guess!r}? jit-ssh login {guess}")


def _key_path(target: str, request_id: str) -> Path:
    from client.access import key_path_for

    return key_path_for(target, request_id)


def _have_key(target: str, request_id: str) -> bool:
    return _key_path(target, request_id).exists()


def _pub(target: str, request_id: str) -> str:
    key = _key_path(target, request_id)
    return key.with_name(key.name + ".pub").read_text().strip()


def _report_end(req: RequestView, as_json: bool) -> NoReturn:
    state = req.state
    if as_json:
        click.echo(
            json.dumps({"request_id": req.id, "state": state, "deny_reason": req.deny_reason})
        )
        raise click.exceptions.Exit(EXIT_FAILED)
    if state == "denied":
        by = ", ".join(req.denied_by)
        raise Failure(
            f"request {req.id} was denied by {by or 'an approver'}: {req.deny_reason or '(no reason given)'}"
        )
    if state == "expired":
        if req.deny_reason:
            # The server ended it early, and says why (its target left the policy).
            raise Failure(f"request {req.id} expired: {req.deny_reason}")
        raise Failure(f"request {req.id} expired before it was approved or claimed")
    raise Failure(f"request {req.id} is {state}")


def _verify(
    api_client: ApiClient, target: str, req: RequestView, answer: Any, pub: str
) -> VerifiedCertificate:
    """The server's certificate, checked against the key just made and the CA keys it publishes;
    on any mismatch one clear error, and nothing written (client.verify)."""
    from client.verify import describe_refusal, fetch_ca_keys, verify_issued

    try:
        return verify_issued(
            answer, public_key=pub, ca_keys=fetch_ca_keys(api_client), request=req, target=target
        )
    except JitSshError as e:
        if e.code in ("server_unreachable",):
            raise
        raise Failure(describe_refusal(e)) from None


def _install(
    verified: VerifiedCertificate,
    key_path: Path,
    settings: ClientSettings,
    as_json: bool,
    *,
    warn_before: int | None = None,
) -> None:
    """``warn_before``: the rule's expiry warning lead time as the server stated it (kept in
    the record, so ``status`` and ``ssh`` warn offline); None (an older server) keeps the default."""
    from client.access import (
        DEFAULT_WARN_BEFORE_SECONDS,
        AccessRecord,
        agent_add,
        load_accesses,
        remove_expired,
        save_access,
    )
    from client.clock import utcnow

    cert = verified.certificate
    target, login_user, principals = verified.target, verified.login_user, list(cert.principals)
    valid_before = _iso(cert.valid_before)
    record = AccessRecord(
        target=target,
        request_id=verified.request_id,
        serial=str(cert.serial),
        valid_after=_iso(cert.valid_after),
        valid_before=valid_before,
        principals=principals,
        login_user=login_user,
        server=settings.server or "",
        key_path=str(key_path),
        cert_path=str(key_path) + "-cert.pub",
        warn_before_seconds=DEFAULT_WARN_BEFORE_SECONDS if warn_before is None else warn_before,
    )
    save_access(record, verified.openssh)
    now = utcnow()
    # Keys whose window has passed are of no use to anyone: they go as new ones come.
    remove_expired(key_path.parent, now=now)
    left = record.seconds_left(now)
    in_agent = agent_add(str(key_path), left)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "request_id": verified.request_id,
                    "state": "issued",
                    "serial": str(cert.serial),
                    "valid_before": valid_before,
                    "seconds_left": left,
                    "key": str(key_path),
                    "certificate": record.cert_path,
                    "principals": principals,
                    "agent": in_agent,
                }
            )
        )
        return
    click.echo(
        f"Access granted to {target} until {valid_before} ({duration_text(left) if left else 'expired'}), serial {cert.serial}."
    )
    dest = f"{login_user}@{target}" if login_user else target
    click.echo(f"  ssh -i {key_path} -o CertificateFile={record.cert_path} {dest}")
    click.echo(
        f"  or: jit-ssh ssh {target}   (or `Include {key_path.parent}/config` in ~/.ssh/config, then: ssh {target})"
    )
    if in_agent:
        click.echo(f"  Key and certificate are in ssh-agent for {duration_text(left)}.")
    others = [
        r
        for r in load_accesses(key_path.parent)
        if r.target == target and r.request_id != record.request_id and r.seconds_left(now) > 0
    ]
    if others:
        ids = ", ".join(r.request_id for r in others)
        click.echo(
            f"  Your other access to {target} stays valid too (request {ids}); "
            f"jit-ssh ssh {target} uses the one with the most time left (--request ID picks one)."
        )
    click.echo("  End access early with: jit-ssh done " + verified.request_id)


# ---------------------------------------------------------------------- status / done


@click.command()
@click.option("--json", "as_json", is_flag=True)
@connection_options
def status(as_json: bool, server: str | None, user: str | None, identity: str | None) -> None:
    """Your valid accesses on this machine (request, target, login user, time left; several to one
    target side by side) and your pending requests."""
    from client.access import load_accesses
    from client.clock import utcnow

    now = utcnow()
    local = [r for r in load_accesses() if r.seconds_left(now) > 0]
    pending: list[RequestView] = []
    # Issued to you, valid on the server, and no key for it here (another machine's).
    elsewhere: list[tuple[RequestView, int]] = []
    problem: click.ClickException | None = None
    enrolment_ends: datetime | None = None
    try:
        api_client, _ = connect(server, user, identity)
        with api_client:
            mine = checked_list(api_client.get("/v1/requests", query={"mine": "1"}))
            enrolment_ends = _enrolment_ends(api_client)
        pending = [r for r in mine if r.state in ("pending", "approved")]
        revoked = {r.id for r in mine if r.state in ("revoked", "ended")}
        local = [_refreshed(r, mine) for r in local if r.request_id not in revoked]
        held = {r.request_id for r in local}
        elsewhere = [
            (r, left)
            for r in mine
            if r.state == "issued" and r.id not in held and (left := _server_left(r, now)) > 0
        ]
    except JitSshError as e:
        # Local accesses still print (useful offline), but the exit code and
        # the message say the server was not heard: never "nothing pending".
        problem = explain(e, server, user, identity)
    defaults = _ssh_defaults(local, now)
    if as_json:
        answer: dict[str, Any] = {
            "active": [
                {
                    "target": r.target,
                    "request_id": r.request_id,
                    "login_user": r.login_user,
                    "serial": r.serial,
                    "principals": r.principals,
                    "valid_before": r.valid_before,
                    "seconds_left": r.seconds_left(now),
                    # What `jit-ssh ssh TARGET` (and `ssh TARGET` through the Include) uses.
                    "ssh_default": r.request_id in defaults,
                    # Within the rule's warn_before of valid_before: time to extend it.
                    "expiring": r.expiring(now),
                    "warn_at": _iso(r.warn_at),
                }
                for r in local
            ],
            "pending": [
                {
                    "request_id": r.id,
                    "target": r.target,
                    "state": r.state,
                    "approvals": len(r.approved_by),
                    "approvals_required": r.approvals_required,
                }
                for r in pending
            ],
            "elsewhere": [
                {"request_id": r.id, "target": r.target, "seconds_left": left}
                for r, left in elsewhere
            ],
        }
        if enrolment_ends is not None:
            answer["enrolment_expires_at"] = _iso(enrolment_ends)
        if problem is not None:
            answer["error"] = {
                "code": getattr(problem, "code", "error"),
                "message": problem.format_message(),
            }
        click.echo(json.dumps(answer, indent=2))
        if problem is not None:
            problem.show()
            raise click.exceptions.Exit(problem.exit_code)
        return
    if problem is not None:
        for r in local:
            click.echo(_active_line(r, now, marked=_marked(local, r, defaults)))
            if r.expiring(now):
                click.echo("         " + _expiry_hint(r, now))
        click.echo(
            "(active accesses from this machine's records only: "
            "the server's revocations and pending requests are unknown)"
            if local
            else "(no active access recorded on this machine; the server's requests are unknown)",
            err=True,
        )
        raise problem
    if not local and not pending and not elsewhere:
        click.echo("No active access and no pending requests.")
    for r in local:
        click.echo(_active_line(r, now, marked=_marked(local, r, defaults)))
        if r.expiring(now):
            click.echo("         " + _expiry_hint(r, now))
    for other, left in elsewhere:
        click.echo(
            f"issued   {other.target:<16} {duration_text(left):>8} left  request {other.id}  "
            f"no key on this machine (jit-ssh done {other.id} revokes it)"
        )
    for p in pending:
        click.echo(
            f"{p.state:<8} {p.target:<16} {len(p.approved_by)}/{p.approvals_required} approvals  request {p.id}"
        )
    if enrolment_ends is not None:
        from client.sso import until_text

        click.echo(
            f"This key is enrolled by single sign-on until {until_text(enrolment_ends, now)} "
            "(jit-ssh sso login renews it)."
        )


def _refreshed(record: Any, mine: list[RequestView]) -> Any:
    """``record`` with its warning lead time as the server states it now (a policy change
    reaches it); the record's own when the server does not say or it cannot be written."""
    from client.access import refresh_warn_before

    seen = next((r.warn_before_seconds for r in mine if r.id == record.request_id), None)
    if seen is None:
        return record
    try:
        return refresh_warn_before(record, seen)
    except (OSError, JitSshError):
        return record


def _expiry_hint(record: Any, now: datetime) -> str:
    """The warning for an access within its lead time: how long it has left, and the
    command that extends it (the request id is checked, so it may go into a command line)."""
    return (
        f"expires in {duration_text(record.seconds_left(now))}; extend: "
        f'jit-ssh extend {record.request_id} --for 30m --reason "..."'
    )


def _enrolment_ends(api_client: ApiClient) -> datetime | None:
    """When the key's single sign-on enrolment ends (``GET /v1/whoami``), or None: an admin
    enrolled it, or the server does not say."""
    from client.verify import check_whoami

    try:
        return check_whoami(api_client.get("/v1/whoami", printable=False)).enrolment_expires_at
    except JitSshError:
        return None


def _server_left(req: RequestView, now: datetime) -> int:
    """Seconds left of the request's certificate as the server states it (0 if it states none)."""
    shown = req.answer.get("certificate")
    end = shown.get("valid_before") if isinstance(shown, dict) else None
    if not isinstance(end, str) or len(end) > 40:
        return 0
    try:
        return max(
            0, int((datetime.fromisoformat(end.replace("Z", "+00:00")) - now).total_seconds())
        )
    except (ValueError, TypeError):
        return 0


def _marked(records: list[Any], record: Any, defaults: set[str]) -> bool:
    """Whether ``record`` is marked as ssh's choice: among several accesses to its target."""
    several = sum(r.target == record.target for r in records) > 1
    return several and record.request_id in defaults


def _ssh_defaults(records: list[Any], now: datetime) -> set[str]:
    from client.access import best_access

    return {
        best.request_id
        for target in {r.target for r in records}
        if (best := best_access(records, target, now)) is not None
    }


def _active_line(r: Any, now: datetime, *, marked: bool = False) -> str:
    return (
        f"active   {r.target:<16} {','.join(r.principals):<28} "
        f"{duration_text(r.seconds_left(now)):>8} left  request {r.request_id}  "
        f"login {r.login_user or '-'}  serial {r.serial}"
        + ("  (jit-ssh ssh's default)" if marked else "")
    )


@click.command()
@click.argument("request_id", required=False)
@click.option("--all", "end_all", is_flag=True, help="End every valid access on this machine.")
@click.option("--reason", default="done", show_default=True, help="Recorded with the revocation.")
@connection_options
@explained
def done(
    request_id: str | None,
    end_all: bool,
    reason: str,
    server: str | None,
    user: str | None,
    identity: str | None,
) -> None:
    """End access early: revoke the certificate, then remove key and certificate from agent and disk.

    REQUEST_ID ends that access (a target name ends the target's access, if only one is
    valid); --all ends every valid access on this machine; with neither, the one valid access,
    and when there are several, none: they are listed, to name one or use --all.

    Exit codes: 0 ended (revoked now, or already revoked on the server, which is said, and
    removed here); 1 several accesses and none named, or the server refused; 3 nothing to end
    (no such access, or the server had already revoked one this machine holds no key for);
    4 server unreachable (nothing is removed here).
    """
    from client.access import load_accesses, remove_expired
    from client.clock import utcnow

    if end_all and request_id:
        raise click.UsageError("give REQUEST_ID or --all, not both")
    now = utcnow()
    # An access whose window has passed needs no revocation: its files just go.
    remove_expired(now=now)
    records = [r for r in load_accesses() if r.seconds_left(now) > 0]
    if request_id and not end_all:
        chosen = [r for r in records if request_id in (r.request_id, r.name_id)] or [
            r for r in records if r.target == request_id
        ]
    else:
        chosen = records
    if not chosen and request_id:
        # No key for it here: the server knows its serial.
        _revoke_remote(request_id, reason, server, user, identity)
        return
    if not chosen:
        raise NothingFound("no local access to end")
    if len(chosen) > 1 and not end_all:
        what = f"to {request_id} " if request_id else ""
        listing = "\n".join("  " + _active_line(r, now) for r in chosen)
        raise Failure(
            f"{len(chosen)} accesses {what}are valid on this machine; nothing was ended:\n"
            f"{listing}\n"
            f"  fix: name the one to end (jit-ssh done {chosen[0].request_id}), "
            "or end them all: jit-ssh done --all"
        )
    api_client, _ = connect(server, user, identity)
    with api_client:
        for r in chosen:
            _end_one(api_client, r, reason)
    click.echo("Hosts refuse the certificate once they sync the KRL (jit-ssh host sync-krl).")


def _already_revoked(req: RequestView, serial: str) -> bool:
    """Whether the server's view of the request says this certificate is revoked already."""
    cert = req.certificate
    if cert is None or str(cert.serial) != serial:
        return False
    shown = req.answer.get("certificate")
    return req.state == "revoked" or (isinstance(shown, dict) and shown.get("revoked") is True)


def _revocation_text(answer: Any) -> str:
    """ " by NAME at TIME" from the server's revoke answer, each part only if it is plainly one."""
    text = ""
    if isinstance(answer, dict):
        by, at = answer.get("revoked_by"), answer.get("revoked_at")
        if isinstance(by, str) and re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", by):
            text += f" by {by}"
        if isinstance(at, str) and re.fullmatch(r"[0-9T:.+Z-]{10,40}", at):
            text += f" at {at}"
    return text


def _end_one(api_client: ApiClient, r: Any, reason: str) -> None:
    """Revoke one local access (the server's own view first: it may be revoked already), then
    remove its key and certificate from the agent and the disk."""
    from client.access import agent_remove, remove_access
    from client.http import ApiError

    try:
        view: RequestView | None = checked(api_client.get(f"/v1/requests/{r.request_id}"))
    except ApiError as e:
        if e.code != "not_found":
            raise
        view = None
    try:
        # Revoking a revoked certificate changes nothing and answers who revoked it, when.
        answer = api_client.post(f"/v1/certificates/{r.serial}/revoke", {"reason": reason})
    except ApiError as e:
        if e.code != "not_found":
            raise
        click.echo(f"Serial {r.serial} unknown to the server; removing it locally.", err=True)
    else:
        if view is not None and _already_revoked(view, r.serial):
            click.echo(
                f"Request {r.request_id} ({r.target}, serial {r.serial}) was already revoked"
                f"{_revocation_text(answer)}; removed its key and certificate here."
            )
        else:
            click.echo(f"Revoked serial {r.serial} ({r.target}, request {r.request_id}).")
    agent_remove(r.key_path)
    remove_access(r)


def _revoke_remote(
    request_id: str, reason: str, server: str | None, user: str | None, identity: str | None
) -> None:
    from client.http import ApiError

    api_client, settings = connect(server, user, identity)
    with api_client:
        try:
            req = checked(api_client.get(f"/v1/requests/{request_id}"))
        except ApiError as e:
            if e.code == "not_found":
                raise NothingFound(
                    f"no local access and no request {request_id!r} on the server"
                ) from None
            raise
        if req.requester != settings.user:
            # `done` ends the caller's own access. An approver or admin may see (and revoke)
            # anyone's request, but a pasted id must not end a colleague's access by mistake.
            raise Failure(
                f"request {request_id} is {req.requester}'s access to {req.target}, not yours: "
                "`jit-ssh done` ends only your own. To revoke someone else's certificate, use "
                "the request's web page (Revoke) or "
                f"`jit-ssh api POST /v1/certificates/SERIAL/revoke`."
            )
        cert = req.certificate
        if cert is None:
            raise NothingFound(
                f"request {request_id} has no certificate (it is {req.state}); "
                f"to withdraw a pending request: jit-ssh api POST /v1/requests/{request_id}/cancel"
            )
        already = _already_revoked(req, str(cert.serial))
        answer = api_client.post(f"/v1/certificates/{cert.serial}/revoke", {"reason": reason})
    if already:
        raise NothingFound(
            f"request {request_id} ({req.target}, serial {cert.serial}) was already revoked"
            f"{_revocation_text(answer)}; nothing to do (this machine holds no key for it)"
        )
    click.echo(
        f"Revoked serial {cert.serial} ({req.target}, request {request_id}); "
        "this machine holds no key for it (made on another machine, or already removed), "
        "so nothing was removed here."
    )
    click.echo("Hosts refuse the certificate once they sync the KRL (jit-ssh host sync-krl).")


# ------------------------------------------------------------------------------ extend


@click.command()
@click.argument("request_id", metavar="[ID]", required=False)
@click.option(
    "--for",
    "duration",
    callback=_typed_duration,
    help="How much time to add, e.g. 30m (required, unless --resume).",
)
@click.option("--reason", "-r", default="", help="Why you need more time.")
@click.option(
    "--no-wait",
    is_flag=True,
    help="Return after submitting; pick the certificate up later with --resume.",
)
@click.option(
    "--resume",
    "resume_id",
    metavar="EXT_ID",
    help="Pick up an earlier extension EXT_ID (wait for it, then get the certificate).",
)
@click.option(
    "--poll", type=float, default=1.0, show_default=True, help="Seconds between status checks."
)
@connection_options
@explained
def extend(
    request_id: str | None,
    duration: str | None,
    reason: str,
    no_wait: bool,
    resume_id: str | None,
    poll: float,
    server: str | None,
    user: str | None,
    identity: str | None,
) -> None:
    """Add time to a running access: jit-ssh extend [ID] --for 30m --reason TEXT.

    ID names the access (its request id, or its target when only one access to it is
    valid); with no ID, the one valid access on this machine. The extension is a request
    of its own, decided by the current policy (auto-approved within the rule's extension
    allowance, else by approvers again). Once it is approved the certificate is fetched
    for the SAME key, replaces the old one in place (same files, same ssh_config blocks)
    and the old serial is revoked. Sessions already open keep running: sshd checks a
    certificate only when a connection authenticates.

    Exit codes: 0 extended (or submitted, with --no-wait); 1 several accesses and none
    named, refused, denied, expired or cancelled; 3 no running access to extend;
    4 server unreachable.
    """
    from client.access import load_accesses
    from client.clock import utcnow
    from client.verify import check_extension
    from client.waiting import extension_line, wait_for_decision

    if resume_id is None and duration is None:
        raise click.UsageError("give --for DURATION: how much time to add")
    if resume_id is not None and (request_id or duration):
        raise click.UsageError("--resume EXT_ID picks up an extension: give no ID and no --for")
    now = utcnow()
    records = [r for r in load_accesses() if r.seconds_left(now) > 0]
    api_client, _settings = connect(server, user, identity)
    with api_client:
        if resume_id is not None:
            req = checked(api_client.get(f"/v1/requests/{resume_id}"))
            ext = check_extension(req)
            if ext is None:
                raise Failure(
                    f"request {req.id} is not an extension: jit-ssh login --resume {req.id}"
                )
            done_already = [r for r in records if r.request_id == req.id]
            if done_already:
                click.echo(
                    f"Request {req.id} already extends this machine's access to "
                    f"{done_already[0].target} (serial {done_already[0].serial}, until "
                    f"{done_already[0].valid_before})."
                )
                return
            record = _extended_record(records, ext.of, req.id)
        else:
            record = _access_to_extend(records, request_id, now)
            body: dict[str, Any] = {
                "extends": record.request_id,
                "duration": duration,
                "reason": reason,
            }
            req = checked(api_client.post("/v1/requests", body))
            ext = check_extension(req)
            if ext is None or ext.of != record.request_id:
                raise Failure(
                    f"the server's request {req.id} does not say it extends request "
                    f"{record.request_id}; nothing was changed here"
                )
        if req.target != record.target:
            raise Failure(
                f"the server's extension {req.id} is for target {req.target[:64]!r}, not "
                f"{record.target!r}; nothing was changed here"
            )
        click.echo(
            f"Extension {req.id} of request {record.request_id} ({record.target}): {req.state}",
            err=True,
        )
        if req.state == "pending":
            click.echo(f"Approve at: {req.approval_url}", err=True)
        if no_wait and req.state == "pending":
            line = extension_line(req)
            if line:
                click.echo(line, err=True)
            click.echo(f"Not waiting. Later: jit-ssh extend --resume {req.id}", err=True)
            return
        req = wait_for_decision(api_client, req, poll=poll, quiet=False)
        if req.state != "approved" and not (req.state == "issued" and resume_id):
            _report_end(req, False)
        pub = _pub_of(record)
        # As sent: client.verify checks every value of it strictly before anything is
        # printed or written; the certificate must certify the access's own key.
        answer = api_client.post(
            f"/v1/requests/{req.id}/certificate", {"public_key": pub}, printable=False
        )
        verified = _verify(api_client, record.target, req, answer, pub)
        _replace_certificate(record, verified, answer)


def _access_to_extend(records: list[Any], wanted: str | None, now: datetime) -> Any:
    """The one running access ``wanted`` names (request id, or target), or the only one."""
    if wanted:
        chosen = [r for r in records if wanted in (r.request_id, r.name_id)] or [
            r for r in records if r.target == wanted
        ]
    else:
        chosen = records
    if not chosen:
        what = f" named {wanted!r}" if wanted else ""
        raise NothingFound(
            f"no running access{what} on this machine to extend\n"
            "  fix: jit-ssh status lists yours; jit-ssh login TARGET gets a new one"
        )
    if len(chosen) > 1:
        what = f"to {wanted} " if wanted else ""
        listing = "\n".join("  " + _active_line(r, now) for r in chosen)
        raise Failure(
            f"{len(chosen)} accesses {what}are valid on this machine; nothing was extended:\n"
            f"{listing}\n"
            f"  fix: name the one to extend: jit-ssh extend {chosen[0].request_id} --for ..."
        )
    return chosen[0]


def _extended_record(records: list[Any], of: str, ext_id: str) -> Any:
    """The local access extension ``ext_id`` extends (request ``of``)."""
    for r in records:
        if r.request_id == of:
            return r
    raise NothingFound(
        f"extension {ext_id} extends request {of}, and this machine holds no running "
        "access of that request (its key is on another machine, or it ended)"
    )


def _pub_of(record: Any) -> str:
    from ca.keys import parse_public_key

    pub = Path(record.key_path + ".pub").read_text().strip()
    parse_public_key(pub, field="the access's public key")
    return pub


def _replace_certificate(record: Any, verified: VerifiedCertificate, answer: Any) -> None:
    """Write the extension's (verified) certificate over the access's old one, atomically,
    under the same file names; the record now names the extension's request and serial."""
    from dataclasses import replace

    from client.access import agent_add, agent_holds, agent_remove, save_access
    from client.clock import utcnow
    from client.verify import check_replaces_serial

    cert = verified.certificate
    replaced = check_replaces_serial(answer)
    if replaced is None or str(replaced) != record.serial:
        raise Failure(
            f"refusing the certificate the server sent: it says it replaces serial "
            f"{replaced}, and this access's certificate is serial {record.serial}; "
            "nothing was written"
        )
    old_end = datetime.fromisoformat(record.valid_before.replace("Z", "+00:00"))
    if cert.valid_before <= old_end or str(cert.serial) == record.serial:
        raise Failure(
            "refusing the certificate the server sent: it does not run past the old one "
            f"({_iso(cert.valid_before)}, serial {cert.serial}); nothing was written"
        )
    new = replace(
        record,
        request_id=verified.request_id,
        serial=str(cert.serial),
        valid_after=_iso(cert.valid_after),
        valid_before=_iso(cert.valid_before),
        principals=list(cert.principals),
        login_user=verified.login_user,
        files_id=record.name_id,
    )
    # The agent holds the key with the OLD certificate: removed while that certificate's
    # file is still there (ssh-add -d removes the FILE-cert.pub it finds), added back
    # with the new one below.
    in_agent = agent_holds(record.key_path)
    if in_agent:
        agent_remove(record.key_path)
    save_access(new, verified.openssh)
    left = new.seconds_left(utcnow())
    if in_agent:
        in_agent = agent_add(record.key_path, left)
    click.echo(
        f"Extended {record.target} until {new.valid_before} ({duration_text(left)} left): "
        f"request {new.request_id}, serial {cert.serial}."
    )
    click.echo(f"  The old certificate (serial {replaced}) is revoked.")
    if in_agent:
        click.echo(f"  ssh-agent holds the new certificate, for {duration_text(left)}.")
    click.echo(
        "  Open sessions keep running; new connections use the new certificate "
        f"(jit-ssh ssh {record.target}, or ssh {record.target} through the Include)."
    )


# ---------------------------------------------------------------- requests / approvers


@click.command("requests")
@click.option("--json", "as_json", is_flag=True)
@connection_options
@explained
def requests_cmd(as_json: bool, server: str | None, user: str | None, identity: str | None) -> None:
    """Your request history."""
    list_requests({"mine": "1"}, "No requests yet.", as_json, server, user, identity)


# ------------------------------------------------------------------------------ ssh

#: StrictHostKeyChecking values that let ssh connect to a host whose key changed.
_NO_HOST_KEY_CHECK = frozenset({"no", "off", "false"})
_SSH_OPTION = re.compile(r"\s*([A-Za-z]+)\s*(?:=|\s)\s*(.*?)\s*")


def _option(option: str) -> tuple[str, str]:
    """An ``-o`` option as (lower-case keyword, value), as ssh splits it ("Key=Value", "Key Value")."""
    m = _SSH_OPTION.fullmatch(option)
    return (m.group(1).lower(), m.group(2).strip('"').lower()) if m else ("", "")


def _host_key_checking(ssh_bin: str, args: list[str]) -> str | None:
    """The StrictHostKeyChecking ``ssh -G`` finds in the user's ssh_config for these arguments
    (``true``, ``false``, ``ask``, ``accept-new``), or None if ssh cannot say."""
    import subprocess

    try:
        shown = subprocess.run(
            [ssh_bin, "-G", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in shown.stdout.splitlines() if shown.returncode == 0 else ():
        name, _, value = line.partition(" ")
        if name == "stricthostkeychecking":
            return value.strip()
    return None


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--host", "host", help="Host to connect to (default: TARGET as a host name).")
@click.option("--port", "-p", type=int, help="SSH port.")
@click.option(
    "--login-user", "-l", help="Remote account (default: from the certificate's principal)."
)
@click.option(
    "--request",
    "request_id",
    metavar="ID",
    help="Use the access of this request (default: TARGET's with the most time left).",
)
@click.option(
    "--for", "duration", callback=_typed_duration, help="Duration, if a new access is needed."
)
@click.option("--reason", "-r", default="", help="Reason, if a new access is needed.")
@click.option(
    "--ssh-option",
    "-o",
    "ssh_options",
    multiple=True,
    metavar="OPTION",
    help="Passed to ssh as -o OPTION (repeatable), e.g. -o StrictHostKeyChecking=accept-new.",
)
@connection_options
@click.pass_context
@explained
def ssh(
    ctx: click.Context,
    target: str,
    command: tuple[str, ...],
    host: str | None,
    port: int | None,
    login_user: str | None,
    request_id: str | None,
    duration: str | None,
    reason: str,
    ssh_options: tuple[str, ...],
    server: str | None,
    user: str | None,
    identity: str | None,
) -> None:
    """Log in to TARGET if needed, then run OpenSSH with the certificate: jit-ssh ssh TARGET [-- COMMAND].

    With several accesses to TARGET, the one with the most time left (or --request ID's).
    ssh offers the certificate only: a host that refuses it ends the connection, with no
    password or keyboard-interactive prompt. Host keys are checked against your known_hosts
    as your ssh_config says, but never with StrictHostKeyChecking off: a changed host key is
    always refused, and a host not yet known is shown for you to confirm (ssh's "ask"), unless
    you chose accept-new or yes.

    ssh's exit status is this command's (255: ssh itself failed, e.g. the host refused the certificate).
    """
    import shutil

    from ca.names import check_hostname, check_login_user, check_target
    from client.access import SSH_AUTH_OPTIONS, best_access, load_accesses, ssh_path
    from client.clock import utcnow
    from client.verify import check_request_id

    # Checked before anything else (a login included): each value goes to ssh's argv.
    try:
        check_target(target, field="target")
        wanted_user = check_login_user(login_user, field="--login-user") if login_user else None
        dest_host = (
            check_hostname(host, field="--host") if host else check_hostname(target, field="target")
        )
        if request_id is not None:
            check_request_id(request_id, field="--request")
    except JitSshError as e:
        raise Failure(f"{e} [{e.code}]") from None
    for option in ssh_options:
        name, value = _option(option)
        if name == "stricthostkeychecking" and value in _NO_HOST_KEY_CHECK:
            raise Failure(
                f"-o {option}: jit-ssh ssh never connects without checking the host key "
                "(a changed key may be someone in the middle)\n"
                "  fix: -o StrictHostKeyChecking=accept-new trusts a host seen for the first "
                "time; if the host was really reinstalled: ssh-keygen -R HOST"
            )

    def current() -> Any:
        records = load_accesses()
        if request_id is None:
            return best_access(records, target, utcnow())
        return next(
            (
                r
                for r in records
                if r.request_id == request_id
                and r.target == target
                and r.seconds_left(utcnow()) > 0
            ),
            None,
        )

    record = current()
    if record is None and request_id is not None:
        # A named access is used or nothing: no new request in its place.
        raise NothingFound(
            f"no valid access of request {request_id} to {target} on this machine\n"
            f"  fix: jit-ssh status lists yours; without --request, jit-ssh ssh {target} "
            "uses the one with the most time left (or asks for a new one)"
        )
    if record is None:
        ctx.invoke(
            login,
            target=target,
            duration=duration,
            reason=reason,
            no_wait=False,
            resume_id=None,
            break_glass=False,
            as_json=False,
            poll=1.0,
            server=server,
            user=user,
            identity=identity,
        )
        record = current()
        if record is None:
            raise Failure("no certificate after login")
    ssh_bin = shutil.which("ssh")
    if not ssh_bin:
        raise ToolMissing("OpenSSH's ssh is not installed")
    if record.expiring(utcnow()):
        # stderr only: the session's (or the remote command's) stdout stays clean. From the
        # record alone: no call to the server before the session starts.
        click.echo(
            f"warning: your access to {target} (request {record.request_id}) "
            + _expiry_hint(record, utcnow()),
            err=True,
        )
    who = wanted_user or record.login_user
    try:
        argv = [
            ssh_bin,
            "-i",
            ssh_path(record.key_path, quote=False),
            "-o",
            f"CertificateFile={ssh_path(record.cert_path)}",
        ]
    except JitSshError as e:
        raise Failure(f"{e} [{e.code}]") from None
    # Before the user's own -o: ssh keeps the first value it gets for each option.
    for name, value in SSH_AUTH_OPTIONS:
        argv += ["-o", f"{name}={value}"]
    for option in ssh_options:
        argv += ["-o", option]
    if port:
        argv += ["-p", str(port)]
    # "--" ends ssh's options: OpenSSH parses options again after the
    # destination unless "--" came first, so a destination or a command
    # word starting with '-' (-oProxyCommand=...) would be an option.
    destination = ["--", f"{who}@{dest_host}" if who else dest_host]
    if not any(_option(o)[0] == "stricthostkeychecking" for o in ssh_options):
        # Until hosts have certificates, known_hosts is what proves the host: the user's
        # own setting stands (ask, yes, accept-new), except "off", which would let a
        # changed key through.
        effective = _host_key_checking(ssh_bin, [*argv[1:], *destination])
        if effective not in ("true", "ask", "accept-new"):
            argv += ["-o", "StrictHostKeyChecking=ask"]
            if effective == "false":
                click.echo(
                    f"note: your ssh_config turns StrictHostKeyChecking off for {dest_host}; "
                    "jit-ssh ssh checks the host key all the same (ask)",
                    err=True,
                )
    argv += destination
    argv += list(command)
    sys.stdout.flush()
    os.execv(ssh_bin, argv)


# --------------------------------------------------------------------------- config


@click.group()
def config() -> None:
    """Your client settings (~/.config/jit-ssh/config.toml)."""


def _interactive() -> bool:
    """Whether someone can answer prompts (tests patch this)."""
    return sys.stdin.isatty()


def _toml_string(value: str) -> str:
    # A JSON string literal is a valid TOML basic string (same escapes, \uXXXX
    # for the rest): a quote or backslash in a path or name cannot break the file.
    return json.dumps(value)


@config.command("init")
@click.option("--server", help="e.g. https://jit.example.com")
@click.option("--user", help="Your jit-ssh user name.")
@click.option("--identity", help="Your enrolled SSH private key file (default ~/.ssh/id_ed25519).")
@click.option("--default-duration", help="Duration when login gets no --for (default 30m).")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
def config_init(
    server: str | None,
    user: str | None,
    identity: str | None,
    default_duration: str | None,
    force: bool,
) -> None:
    """Walk through the settings and write the config file.

    Asks for whatever the options leave out; without a terminal (scripts),
    --server and --user are required and the rest take their defaults.
    """
    from ca import parse_duration
    from client.files import write_atomic
    from client.http import check_server_url
    from client.settings import config_path

    path = config_path()
    if path.exists() and not force:
        raise Failure(f"{path} exists; use --force to replace it")
    default_identity = str(Path.home() / ".ssh" / "id_ed25519")
    if _interactive():
        server = server or click.prompt("jit-ssh server URL")
        user = user or click.prompt("Your jit-ssh user name")
        identity = identity or click.prompt(
            "Your enrolled SSH key (private key file)", default=default_identity
        )
        default_duration = default_duration or click.prompt("Default duration", default="30m")
    else:
        missing = [flag for flag, value in (("--server", server), ("--user", user)) if not value]
        if missing:
            raise click.UsageError(f"no terminal to ask on: give {' and '.join(missing)}")
    assert server and user
    identity = identity or default_identity
    default_duration = default_duration or "30m"
    check_server_url(server)
    parse_duration(default_duration, field="default_duration")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"server = {_toml_string(server)}\nuser = {_toml_string(user)}\nidentity = {_toml_string(identity)}\n"
        f"use_agent = true\ndefault_duration = {_toml_string(default_duration)}\n"
    )
    write_atomic(path, text)
    click.echo(f"Wrote {path}.")
    _check_enrolment(server, user, identity)


def _check_enrolment(server: str, user: str, identity: str) -> None:
    """Ask the server who the key is (GET /v1/whoami): enrolled, not yet, or not reachable.
    The config is written whatever the answer."""
    pub = Path(identity).expanduser()
    pub = pub.with_name(pub.name + ".pub")
    enrol = f"  jit-ssh admin user add {user} --group engineers --ssh-key {pub if pub.exists() else 'KEY.pub'}"
    try:
        api_client, _ = connect(server, user, identity)
        with api_client:
            me = api_client.get("/v1/whoami")
    except JitSshError as e:
        if e.code in ("unknown_key", "auth_failed"):
            click.echo(f"The server does not know this key for {user}. Ask an admin to enrol it:")
            click.echo(enrol)
            return
        what = (
            f"could not reach {server}"
            if exit_code_for(e) == EXIT_UNREACHABLE
            else "could not check your key with the server"
        )
        click.echo(f"warning: {what}: {describe(e)}", err=True)
        fix = fix_for(e, user=user, identity=identity)
        if fix:
            click.echo(f"  fix: {fix}", err=True)
        click.echo("  The config is written all the same; check it with: jit-ssh status", err=True)
        if pub.exists():
            click.echo("If your key is not enrolled yet, ask an admin:", err=True)
            click.echo(enrol, err=True)
        return
    name = me.get("user") if isinstance(me, dict) else None
    groups = me.get("groups") if isinstance(me, dict) else None
    if not isinstance(name, str):
        click.echo("warning: the server's /v1/whoami answer names no user", err=True)
        return
    shown = ", ".join(g for g in groups or () if isinstance(g, str)) or "none"
    click.echo(f"Your key is enrolled as {name!r} (groups: {shown}). Try: jit-ssh status")


@config.command("show")
def config_show() -> None:
    """Print the effective settings, as TOML a config file may hold, and where they came from."""
    from dataclasses import asdict

    from client.settings import load_settings

    def toml_value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            # A literal string reads as written; one it cannot hold gets escapes.
            plain = "'" not in v and all(c == "\t" or (" " <= c and c != "\x7f") for c in v)
            return f"'{v}'" if plain else _toml_string(v)
        return repr(v)

    settings = asdict(load_settings())
    # Not a setting: a comment, so the output can be saved as a config file.
    click.echo(f"# source = {toml_value(settings.pop('source'))}")
    for k, v in settings.items():
        click.echo(f"# {k} is not set" if v is None else f"{k} = {toml_value(v)}")


# ------------------------------------------------------------------------------ api
