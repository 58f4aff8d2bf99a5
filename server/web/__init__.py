"""The approver's web pages: blueprint ``web``.

Server-rendered Jinja with one small stylesheet and no JavaScript, usable on a
phone. ``/login`` (password, then a TOTP code where an admin set one up),
``/`` the pending list ("Pending for me"), ``/requests/<id>`` one request
with its policy rule, its audit trail and the Approve and Deny forms,
``/active`` the certificates valid now (with Revoke, confirmed on
``/certificates/<serial>/revoke``), ``/mine`` the requester's own requests
and who decided them, ``/decided`` an approver's decisions.

Safety: CSRF tokens on every POST (Flask-WTF), sessions held server-side
(:mod:`server.web.auth`) behind an HttpOnly, SameSite=Lax cookie (Secure over
https) with an idle timeout, CSP without scripts, X-Frame-Options DENY,
Referrer-Policy same-origin, and Jinja's autoescaping for every text a user
typed.
"""

from __future__ import annotations

# The single sign-on pages (/sso/login, /sso/callback) are routes of the same blueprint.
from . import sso as _sso  # noqa: F401
from .auth import LoginFailed, WebSettings
from .setup import (
    SessionInterface,
    load_or_create_secret_key,
    secret_key_path,
    set_security_headers,
)
from .views import safe_next, web

__all__ = [
    "web",
    "WebSettings",
    "LoginFailed",
    "SessionInterface",
    "load_or_create_secret_key",
    "secret_key_path",
    "set_security_headers",
    "safe_next",
]
