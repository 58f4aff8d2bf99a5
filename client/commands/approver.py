"""The approver's commands: pending, approve and deny. They talk to the server over HTTP only."""

from __future__ import annotations

from typing import Any

import click

from client.errors import Failure

from ._connect import checked, connect, connection_options, explained, list_requests

__all__ = ["pending", "approve", "deny"]


@click.command()
@click.option("--json", "as_json", is_flag=True)
@connection_options
@explained
def pending(as_json: bool, server: str | None, user: str | None, identity: str | None) -> None:
    """Requests waiting for your approval."""
    list_requests(
        {"pending_for_me": "1"}, "Nothing waits for you.", as_json, server, user, identity
    )


@click.command()
@click.argument("request_id")
@click.option("--comment", default="", help="Recorded with the approval.")
@click.option(
    "--for", "duration", help="Grant less than was asked (where the policy allows), e.g. 15m."
)
@connection_options
@explained
def approve(
    request_id: str,
    comment: str,
    duration: str | None,
    server: str | None,
    user: str | None,
    identity: str | None,
) -> None:
    """Approve request REQUEST_ID."""
    api_client, _ = connect(server, user, identity)
    body: dict[str, Any] = {"comment": comment}
    if duration:
        body["duration"] = duration
    with api_client:
        r = checked(api_client.post(f"/v1/requests/{request_id}/approve", body))
    got = len(r.approved_by)
    click.echo(
        f"Request {r.id} ({r.requester} -> {r.target}): {r.state}, {got}/{r.approvals_required} approvals."
    )


@click.command()
@click.argument("request_id")
@click.option("--reason", required=True, help="Why (shown to the requester).")
@connection_options
@explained
def deny(
    request_id: str, reason: str, server: str | None, user: str | None, identity: str | None
) -> None:
    """Deny request REQUEST_ID."""
    api_client, _ = connect(server, user, identity)
    with api_client:
        r = checked(api_client.post(f"/v1/requests/{request_id}/deny", {"reason": reason}))
    if r.state != "denied":
        # A 200 that does not say "denied" is not a denial: never claim one.
        raise Failure(f"request {r.id} is {r.state} after the deny, not denied")
    click.echo(f"Request {r.id} denied.")
