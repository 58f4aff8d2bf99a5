"""The single sign-on API under ``/v1/sso`` (blueprint ``sso_api``); the CLI calls it.

``GET /v1/sso`` (unsigned) says whether the server has single sign-on. ``start``,
``finish`` and ``poll`` are signed like every ``/v1`` call, but with the user header
``-`` and by the key the sign-in is for, which need not be enrolled yet: the
signature is the proof that the caller holds that key (``server.auth.verify_possession``).
Views parse and serialise; ``server.services.sso`` decides and writes. Every refusal of
the flow is audited as ``sso.refused``, counted and capped (``server.auth.record_failure``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from flask import Blueprint, Request, request
from flask.typing import ResponseReturnValue

from ca.errors import JitSshError
from server.api import _body
from server.auth import report_failure, verify_possession
from server.deps import Deps, deps
from server.errors import AuthFailed, InvalidInput
from server.services.sso import Enrolment, PollWait

__all__ = ["sso_api", "report_refusal", "enrolment_to_dict"]

sso_api = Blueprint("sso_api", __name__, url_prefix="/v1")

T = TypeVar("T")


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


def report_refusal(d: Deps, req: Request, err: JitSshError, *, kind: str) -> None:
    """A refused single sign-on: a log line, counted, and an ``sso.refused`` audit event
    for the first of its kind per window (anyone can make a sign-in fail)."""
    report_failure(
        d.service.sessions,
        now=d.clock(),
        code=err.code,
        claimed_user=None,
        data={
            "field": err.field,
            "kind": kind,
            "path": req.path[:200],
            "remote": (req.remote_addr or "")[:64],
        },
        writer=d.audit,
        event_type="sso.refused",
    )


def _audited(d: Deps, kind: str, step: Callable[[], T]) -> T:
    try:
        return step()
    except AuthFailed:
        # The proof of possession failed: counted as a failed authentication already.
        raise
    except JitSshError as e:
        report_refusal(d, request, e, kind=kind)
        raise


def _signer(d: Deps) -> str:
    """The fingerprint of the key that signed this call (user header ``-``)."""

    def failed(err: AuthFailed, claimed: str | None) -> None:
        report_failure(
            d.service.sessions,
            now=d.clock(),
            code=err.code,
            claimed_user=None,
            data={"path": request.path[:200], "remote": (request.remote_addr or "")[:64]},
            writer=d.audit,
        )

    signer = verify_possession(
        d.service.sessions,
        method=request.method,
        path=request.path,
        query=request.query_string.decode("latin-1"),
        body=request.get_data(cache=True),
        headers=request.headers,
        now=d.clock(),
        max_clock_skew=d.config.max_clock_skew,
        on_failure=failed,
    )
    return signer.fingerprint


def _fields(body: dict[str, object], allowed: set[str], required: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)[:200]}", field=unknown[0][:64])
    for name in required:
        if name not in body:
            raise InvalidInput(f"{name} is required", field=name)


def enrolment_to_dict(e: Enrolment) -> dict[str, object]:
    return {
        "user": e.user,
        "groups": list(e.groups),
        "groups_source": e.groups_source,
        "fingerprint": e.fingerprint,
        "expires_at": _iso(e.expires_at),
    }


@sso_api.get("/sso")
def sso_info() -> ResponseReturnValue:
    settings = deps().config.sso
    if settings is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "display_name": settings.display_name,
        "device_flow": True,
        "enrolment_lifetime_seconds": int(settings.enrolment_lifetime.total_seconds()),
    }


@sso_api.post("/sso/start")
def start() -> ResponseReturnValue:
    d = deps()
    sso = d.sso()
    signer = _signer(d)
    body = _body()
    mode = body.get("mode")

    def run() -> dict[str, object]:
        if mode == "loopback":
            _fields(body, {"public_key", "mode", "loopback_port"}, ("public_key", "loopback_port"))
            flow = sso.begin_cli(
                body["public_key"],
                body["loopback_port"],
                signer=signer,
                remote=request.remote_addr or "",
            )
            return {
                "flow": flow.flow,
                "authorize_url": flow.authorize_url,
                "expires_at": _iso(flow.expires_at),
            }
        if mode == "device":
            _fields(body, {"public_key", "mode"}, ("public_key",))
            dev = sso.begin_device(body["public_key"], signer=signer)
            return {
                "flow": dev.flow,
                "user_code": dev.user_code,
                "verification_uri": dev.verification_uri,
                "verification_uri_complete": dev.verification_uri_complete,
                "interval": dev.interval,
                "expires_at": _iso(dev.expires_at),
            }
        raise InvalidInput("mode must be 'loopback' or 'device'", field="mode")

    return _audited(d, "cli" if mode == "loopback" else "device", run)


@sso_api.post("/sso/finish")
def finish() -> ResponseReturnValue:
    d = deps()
    sso = d.sso()
    signer = _signer(d)
    body = _body()

    def run() -> dict[str, object]:
        _fields(body, {"flow", "code"}, ("flow", "code"))
        return enrolment_to_dict(sso.finish_cli(body["flow"], body["code"], signer=signer))

    return _audited(d, "cli", run)


@sso_api.post("/sso/poll")
def poll() -> ResponseReturnValue:
    d = deps()
    sso = d.sso()
    signer = _signer(d)
    body = _body()

    def run() -> dict[str, object]:
        _fields(body, {"flow"}, ("flow",))
        answer = sso.poll_device(body["flow"], signer=signer)
        if isinstance(answer, PollWait):
            return {"status": answer.status, "interval": answer.interval}
        return {"status": "done", **enrolment_to_dict(answer)}

    return _audited(d, "device", run)
