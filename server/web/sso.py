"""Single sign-on for the web pages: ``GET /sso/login`` starts a sign-in at the provider,
``GET /sso/callback`` is where the provider sends the browser back (the one redirect URI,
``{base_url}/sso/callback``, for the web and the CLI's loopback flows alike).

A web sign-in completes only in the browser that started it: the state is also kept in
the (signed, HttpOnly, SameSite=Lax) session cookie, which the provider's top-level
redirect back carries, so a link with someone else's state cannot sign this browser in
as someone else. The session it starts is an ordinary web session
(:func:`server.web.auth.sso_session`); a user with a TOTP secret is still asked for a code.

The CLI's loopback sign-in opens ``/sso/cli/<token>`` (the ``authorize_url`` of
``POST /v1/sso/start``): a page of this server that says which key asks to be enrolled,
from where and when. "Continue" (a POST, once per flow) keeps the state in this browser's
session cookie, exactly as ``/sso/login`` does, then goes to the provider; the callback
accepts a cli flow only from that browser. A link handed to someone else (or read off
``ps``) thus shows them a page to refuse instead of enrolling the starter's key as them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import urlsplit

from flask import current_app, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from ca.errors import JitSshError
from server.deps import Deps, deps
from server.errors import SsoDenied
from server.models import User
from server.services.sso import CliSignIn, SsoService
from server.sso_api import report_refusal

from . import auth
from .forms import ActionForm
from .setup import CSP
from .views import safe_next, web

__all__ = [
    "sso_login",
    "sso_callback",
    "sso_cli",
    "sso_cli_continue",
    "sso_cli_cancel",
    "STATE_KEY",
]

#: The session cookie's key for the state of the sign-in this browser started.
STATE_KEY = "sso_state"


def _settings() -> auth.WebSettings:
    settings = current_app.extensions["jit_ssh.web"]
    assert isinstance(settings, auth.WebSettings)
    return settings


def _secret() -> bytes:
    key = current_app.secret_key
    return key if isinstance(key, bytes) else str(key).encode()


_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)


def _provider_origin(sso: SsoService) -> str | None:
    """The origin of the provider's authorization endpoint (from discovery; the issuer's
    when discovery is out of reach), as a CSP source, or None."""
    url: object = sso.settings.issuer
    metadata = getattr(sso.provider, "metadata", None)
    if callable(metadata):
        try:
            url = metadata().authorization_endpoint
        except JitSshError:
            pass
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin if _ORIGIN.fullmatch(origin) else None


def _csp_continuing_to(origin: str | None) -> str:
    """The pages' CSP, with the confirmation page's form allowed to end at the provider:
    browsers apply ``form-action`` to the redirect a form's POST answers with."""
    if origin is None:
        return CSP
    return CSP.replace("form-action 'self'", f"form-action 'self' {origin}")


@contextmanager
def _refusals_reported(d: Deps, kind: str) -> Iterator[None]:
    """A refused sign-in step is reported (log, count, ``sso.refused``), then answered as usual."""
    try:
        yield
    except JitSshError as e:
        report_refusal(d, request, e, kind=kind)
        raise


def _bind_to_this_browser(state: str) -> None:
    """Keep ``state`` in this browser's session cookie: the callback completes the flow
    only in a browser holding it (web and cli flows alike)."""
    session[STATE_KEY] = state


@web.get("/sso/login")
def sso_login() -> ResponseReturnValue:
    d = deps()
    sso = d.sso()
    nxt = request.args.get("next") or "/"
    # ``again=1``: a signed-in user signs in anew (a rule's approver_auth asks for a fresh
    # single sign-on); the callback's new session replaces this one.
    if g.get("user") is not None and request.args.get("again") != "1":
        return redirect(safe_next(nxt), 303)
    with _refusals_reported(d, "web"):
        flow = sso.begin_web(nxt)
    _bind_to_this_browser(flow.flow)
    return redirect(flow.authorize_url, 303)


@web.get("/sso/cli/<token>")
def sso_cli(token: str) -> ResponseReturnValue:
    """The confirmation page of the CLI's sign-in: which key, from where, and when."""
    d = deps()
    sso = d.sso()
    with _refusals_reported(d, "cli"):
        ask = sso.cli_confirmation(token)
    page = render_template(
        "web/sso_cli.html",
        ask=ask,
        token=token,
        display_name=sso.settings.display_name,
        form=ActionForm(),
    )
    return page, 200, {"Content-Security-Policy": _csp_continuing_to(_provider_origin(sso))}


@web.post("/sso/cli/<token>")
def sso_cli_continue(token: str) -> ResponseReturnValue:
    """ "Continue": this browser claims the flow (the first one only) and goes to the provider."""
    d = deps()
    sso = d.sso()
    with _refusals_reported(d, "cli"):
        opened = sso.open_cli(token)
    _bind_to_this_browser(opened.flow)
    return redirect(opened.authorize_url, 303)


@web.post("/sso/cli/<token>/cancel")
def sso_cli_cancel(token: str) -> ResponseReturnValue:
    """ "Cancel": the flow ends; nothing is enrolled."""
    d = deps()
    sso = d.sso()
    with _refusals_reported(d, "cli"):
        sso.cancel_cli(token)
    # Audited as a refusal: a cancelled request to enrol a key may be someone's phishing.
    report_refusal(
        d, request, SsoDenied("cancelled on the confirmation page", field="cancel"), kind="cli"
    )
    return render_template("web/sso_cli_cancelled.html")


@web.get("/sso/callback")
def sso_callback() -> ResponseReturnValue:
    d = deps()
    sso = d.sso()
    args = request.args
    remote = request.remote_addr or ""

    def start_session(s: Session, user: User, now: datetime) -> object:
        return auth.sso_session(s, d, _settings(), _secret(), user, remote=remote, now=now)

    with _refusals_reported(d, "web"):
        result = sso.complete_callback(
            state=args.get("state"),
            code=args.get("code"),
            error=args.get("error"),
            issuer=args.get("iss"),
            browser_state=session.get(STATE_KEY),
            start_session=start_session,
        )
    if isinstance(result, CliSignIn):
        if result.refusal is not None:
            report_refusal(d, request, result.refusal, kind="cli")
        # The state is spent: it has no more use in this browser.
        session.pop(STATE_KEY, None)
        # To the CLI's listener on this machine (http://127.0.0.1:<port>/callback).
        return redirect(result.redirect, 303)
    started = result.session
    nxt = safe_next(result.next_url)
    # A fresh session: nothing from before the sign-in carries over, and a session this
    # browser held (signing in again) ends on the server too.
    auth.end_session(d, session.get("sid"))
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
