"""``jit-ssh api``: one signed API call, for scripts (like ``gh api``)."""

from __future__ import annotations

import json

import click

from ._connect import connect, connection_options

__all__ = ["api"]


@click.command()
@click.argument("method", type=click.Choice(["GET", "POST"], case_sensitive=False))
@click.argument("path")
@click.option("--data", "-d", help="JSON body for POST.")
@connection_options
def api(
    method: str,
    path: str,
    data: str | None,
    server: str | None,
    user: str | None,
    identity: str | None,
) -> None:
    """Make one signed API call and print the JSON answer (like `gh api`).

    Example: jit-ssh api POST /v1/requests -d '{"target": "demo", "duration": "5m"}'
    """
    body = None
    if data is not None:
        try:
            body = json.loads(data)
        except ValueError:
            raise click.BadParameter("not valid JSON", param_hint="--data") from None
    api_client, _ = connect(server, user, identity)
    split = path.split("?", 1)
    query = (
        dict(p.split("=", 1) for p in split[1].split("&") if "=" in p) if len(split) > 1 else None
    )
    with api_client:
        result = api_client.request(
            method.upper(),
            split[0],
            json_body=body if method.upper() == "POST" else None,
            query=query,
        )
    click.echo(json.dumps(result, indent=2))
