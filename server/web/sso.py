"""Single sign-on for the web pages: ``GET /sso/login`` starts a sign-in at the provider,
``GET /sso/callback`` is where the provider sends the browser back (the one redirect URI,
``{base_url}/sso/callback``, for the web and the CLI's loopback flows alike).

A web sign-in completes only in the browser that started it: the state is also kept in
the (signed, HttpOnly, SameSite=Lax) session cookie, which the provider's top-level
redirect back carries, so a link with someone else's state cannot sign this browser in
as someone else. The session it starts is an ordinary web session
(:func:`server.web.auth.sso_session`); a user with a TOTP secret is still asked for a code.
"""

from __future__ import annotations

from datetime import datetime

from flask import current_app, g, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from ca.errors import JitSshError
from server.deps import deps
from server.models import User
from server.services.sso import CliSignIn
from server.sso_api import report_refusal

from . import auth
from .views import safe_next, web

__all__ = ["sso_login", "sso_callback", "STATE_KEY"]

#: The session cookie's key for the state of the sign-in this browser started.
STATE_KEY = "sso_state"


def _settings() -> auth.WebSettings:
    settings = current_app.extensions["jit_ssh.web"]
    assert isinstance(settings, auth.WebSettings)
    return settings


def _secret() -> bytes:
    key = current_app.secret_key
    return key if isinstance(key, bytes) else str(key).encode()


@web.get("/sso/login")
def sso_login() -> ResponseReturnValue:
    d = deps()
    sso = d.sso()
    nxt = request.args.get("next") or "/"
    if g.get("user") is not None:
        return redirect(safe_next(nxt), 303)
    try:
        flow = sso.begin_web(nxt)
    except JitSshError as e:
        report_refusal(d, request, e, kind="web")
        raise
    session[STATE_KEY] = flow.flow
    return redirect(flow.authorize_url, 303)


@web.get("/sso/callback")
def sso_callback() -> ResponseReturnValue:
    d = deps()
    sso = d.sso()
    args = request.args
    remote = request.remote_addr or ""

    def start_session(s: Session, user: User, now: datetime) -> object:
        return auth.sso_session(s, d, _settings(), _secret(), user, remote=remote, now=now)

    try:
        result = sso.complete_callback(
            state=args.get("state"),
            code=args.get("code"),
            error=args.get("error"),
            issuer=args.get("iss"),
            browser_state=session.get(STATE_KEY),
            start_session=start_session,
        )
    except JitSshError as e:
        report_refusal(d, request, e, kind="web")
        raise
    if isinstance(result, CliSignIn):
        if result.refusal is not None:
            report_refusal(d, request, result.refusal, kind="cli")
        # To the CLI's listener on this machine (http://127.0.0.1:<port>/callback).
        return redirect(result.redirect, 303)
    started = result.session
    nxt = safe_next(result.next_url)
    # A fresh session: nothing from before the sign-in carries over.
    session.clear()
    if isinstance(started, auth.PreAuth):
        session["pre_auth"] = {
            "uid": started.user_id,
            "token": started.token,
            "at": int(d.clock().timestamp()),
            "next": nxt,
            "via": "sso",
        }
        return redirect(url_for("web.login_totp"), 303)
    assert isinstance(started, str)
    session["sid"] = started
    return redirect(nxt, 303)
