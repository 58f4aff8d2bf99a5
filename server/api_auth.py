"""Authentication of the signed ``/v1`` calls, for the API blueprint.

A view marked :func:`signed` runs only for a caller whose request signature
checks out (``server.auth``); the caller is then ``g.user``. Each failure is
counted and audited (``server.auth.report_failure``) before the 401 goes out.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import Request, g, request

from server.auth import SigningKey, authenticate_key, report_failure
from server.deps import Deps, deps
from server.errors import AuthFailed
from server.models import User

__all__ = ["authenticate_request", "authenticate_request_key", "signed"]

P = ParamSpec("P")
R = TypeVar("R")


def authenticate_request(d: Deps, req: Request) -> User:
    """The calling user of ``req``, or an :class:`AuthFailed` (recorded)."""
    return authenticate_request_key(d, req)[0]


def authenticate_request_key(d: Deps, req: Request) -> tuple[User, SigningKey]:
    """:func:`authenticate_request`, with the enrolled key that signed ``req``."""
    body = req.get_data(cache=True)

    def failed(err: AuthFailed, claimed: str | None) -> None:
        # Counted, and audited once per kind and time window (see record_failure).
        report_failure(
            d.service.sessions,
            now=d.clock(),
            code=err.code,
            claimed_user=claimed,
            data={"path": req.path[:200], "remote": (req.remote_addr or "")[:64]},
            writer=d.audit,
        )

    return authenticate_key(
        d.service.sessions,
        method=req.method,
        path=req.path,
        query=req.query_string.decode("latin-1"),
        body=body,
        headers=req.headers,
        now=d.clock(),
        max_clock_skew=d.config.max_clock_skew,
        on_failure=failed,
    )


def signed(view: Callable[P, R]) -> Callable[P, R]:
    """Require a signed call; the caller is ``g.user``, the key it signed with ``g.signing_key``."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        g.user, g.signing_key = authenticate_request_key(deps(), request)
        return view(*args, **kwargs)

    return wrapper
