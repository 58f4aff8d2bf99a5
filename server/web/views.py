"""The pages. Views parse forms and render; ``server.services`` decides and writes.

Every service error becomes a message on the page (with the error's HTTP
status), never a 500. The buttons shown are a convenience: the service
refuses a forged POST all the same (a requester's own request, an approver
the policy does not name, a second decision by the same approver).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import ParamSpec
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

import policies
from ca import format_duration, parse_duration
from ca.errors import JitSshError
from server.deps import deps
from server.errors import NotFound, PasswordLoginDisabled, http_status
from server.models import AccessRequest, ApprovalDecision, RequestState, Role, User
from server.services import MayDecide, NotDecidable
from server.services.requests import FRESH_SSO, ApprovalContext
from server.services.validation import check_serial

from . import auth, queries
from .forms import ActionForm, ApproveForm, DenyForm, LoginForm, RevokeForm, TotpForm

__all__ = ["web", "safe_next"]

log = logging.getLogger("jit_ssh.web")

web = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/web/static",
)

#: Shorter grants an approver may pick (where the policy lets approvers shorten).
_SHORTER = (300, 600, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 12 * 3600)

_EVENT_NAMES = {
    "request.created": "Requested",
    "request.approval": "Approval",
    "request.approved": "Approved",
    "request.denied": "Denied",
    "request.cancelled": "Cancelled",
    "request.expired": "Expired",
    "request.ended": "Access ended",
    "request.refused": "Refused by the current policy",
    "certificate.issued": "Certificate issued",
    "certificate.fetched_again": "Certificate fetched again",
    "certificate.revoked": "Certificate revoked",
}


# ---------------------------------------------------------------------------- plumbing


def _settings() -> auth.WebSettings:
    settings = current_app.extensions["jit_ssh.web"]
    assert isinstance(settings, auth.WebSettings)
    return settings


def _secret() -> bytes:
    key = current_app.secret_key
    return key if isinstance(key, bytes) else str(key).encode()


def safe_next(target: object) -> str:
    """``target`` if it is a path on this site, else ``/``: never an open redirect."""
    if not isinstance(target, str) or not target or len(target) > 2000:
        return "/"
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _text(value: str | None) -> str:
    # Browsers send CRLF line breaks from a textarea; the service accepts \n only.
    return (value or "").replace("\r\n", "\n").replace("\r", "\n")


def _is_approver(user: User) -> bool:
    return user.has_role(Role.APPROVER)


def _sees_everything(user: User) -> bool:
    return user.has_role(Role.APPROVER) or user.has_role(Role.ADMIN)


P = ParamSpec("P")


def login_required(
    view: Callable[P, ResponseReturnValue],
) -> Callable[P, ResponseReturnValue]:
    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
        if g.get("user") is None:
            # Back to this page after logging in (a GET), or to the page a form was on.
            target = (
                request.full_path if request.method == "GET" else request.form.get("next") or "/"
            )
            if target.endswith("?"):
                target = target[:-1]
            return redirect(url_for("web.login", next=safe_next(target)), 303)
        return view(*args, **kwargs)

    return wrapper


@web.before_request
def _load_user() -> None:
    g.user = None
    if request.endpoint == "web.static":
        return
    g.sign_in = None
    sid = session.get("sid")
    if sid is None:
        return
    user, g.sign_in, why = auth.load_web_session(deps(), _settings(), sid)
    if user is None:
        session.pop("sid", None)
        if why == "idle":
            minutes = int(_settings().idle_timeout.total_seconds() // 60)
            flash(f"You were logged out after {minutes} minutes without activity.", "info")
        elif why in ("max_age", "changed"):
            flash("Your session has ended. Log in again.", "info")
    g.user = user


@web.app_template_filter("duration")
def _duration_filter(seconds: float | timedelta | None) -> str:
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    return format_duration(int(seconds or 0))


@web.app_template_filter("relative")
def _relative(seconds: float) -> str:
    """A rough duration for 'ago' and 'in': 45s, 12 min, 3 h 5 min, 2 d."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    return f"{s // 86400} d"


@web.app_template_filter("ago")
def _ago(seconds: float) -> str:
    return "just now" if seconds < 10 else f"{_relative(seconds)} ago"


@web.app_template_filter("utc")
def _utc(t: datetime | None) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S UTC")


@web.app_template_filter("short_date")
def _short_date(t: datetime | None) -> str:
    """Date and minute, short enough for a phone's line: 2026-12-02 14:05 UTC."""
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M UTC")


@web.app_template_filter("short_utc")
def _short_utc(t: datetime | None) -> str:
    return "" if t is None else t.strftime("%H:%M UTC")


@web.app_context_processor
def _context() -> dict[str, object]:
    user = g.get("user")
    return {
        "current_user": user,
        "is_approver": bool(user is not None and _is_approver(user)),
        "action_form": ActionForm,
    }


# ---------------------------------------------------------------------------- errors


def _error_page(status: int, message: str) -> tuple[str, int]:
    return render_template("web/error.html", status=status, message=message), status


@web.errorhandler(CSRFError)
def _csrf_error(e: CSRFError) -> ResponseReturnValue:
    log.warning("refused a POST to %s: %s", request.path, e.description)
    return _error_page(
        400,
        "This form was not accepted: it has expired or did not come from this site. "
        "Go back, reload the page and try again.",
    )


@web.errorhandler(JitSshError)
def _jit_error(e: JitSshError) -> ResponseReturnValue:
    return _error_page(http_status(e), str(e))


@web.errorhandler(HTTPException)
def _http_error(e: HTTPException) -> ResponseReturnValue:
    if e.code is not None and e.code < 400:
        return e
    return _error_page(e.code or 500, e.description or e.name)


@web.errorhandler(DBAPIError)
def _db_error(e: DBAPIError) -> ResponseReturnValue:
    log.error("database error: %s", str(e).splitlines()[0][:300])
    return _error_page(
        503, "The database is unavailable; nothing was changed. Try again in a moment."
    )


@web.errorhandler(Exception)
def _bug(e: Exception) -> ResponseReturnValue:
    log.exception("unhandled error on %s", request.path)
    return _error_page(500, "An internal error occurred; it was logged.")


# ---------------------------------------------------------------------------- login


@web.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    form = LoginForm()
    nxt = safe_next(request.values.get("next"))
    # ``again=1``: a signed-in user signs in anew (a rule's approver_auth asks for a TOTP
    # code or a fresh single sign-on); the new session replaces this one.
    again = request.args.get("again") == "1"
    if g.user is not None and request.method == "GET" and not again:
        return redirect(nxt)
    status = 200
    if request.method == "POST":
        if form.validate():
            try:
                result = auth.check_password(
                    deps(),
                    _settings(),
                    _secret(),
                    form.username.data,
                    form.password.data,
                    remote=request.remote_addr or "",
                )
            except auth.LoginFailed as e:
                flash(str(e), "error")
                status = 401
            except PasswordLoginDisabled as e:
                flash(str(e), "error")
                status = http_status(e)
            else:
                # A fresh session: nothing from before the login (a planted
                # cookie, an old CSRF token) carries over, and a session this
                # browser held (signing in again) ends on the server too.
                auth.end_session(deps(), session.get("sid"))
                session.clear()
                if isinstance(result, auth.PreAuth):
                    session["pre_auth"] = {
                        "uid": result.user_id,
                        "token": result.token,
                        "at": int(deps().clock().timestamp()),
                        "next": nxt,
                    }
                    return redirect(url_for("web.login_totp"), 303)
                session["sid"] = result
                return redirect(nxt, 303)
        else:
            flash("Enter your user name and password.", "error")
            status = 400
    form.next.data = nxt
    form.password.data = ""
    sso = deps().config.sso
    # With password_login = false the form is for break-glass admins only, behind a link
    # (the server refuses anyone else's password all the same: check_password_allowed).
    show_password = sso is None or sso.password_login or request.args.get("break_glass") == "1"
    return render_template(
        "web/login.html", form=form, sso=sso, show_password=show_password, next=nxt, again=again
    ), status


@web.route("/login/code", methods=["GET", "POST"])
def login_totp() -> ResponseReturnValue:
    pre = session.get("pre_auth")
    now = deps().clock()
    if (
        not isinstance(pre, dict)
        or now.timestamp() - pre.get("at", 0) > _settings().totp_within.total_seconds()
    ):
        session.pop("pre_auth", None)
        flash("Log in with your password first.", "info")
        return redirect(url_for("web.login"), 303)
    form = TotpForm()
    status = 200
    if request.method == "POST":
        if form.validate():
            try:
                sid = auth.check_totp(
                    deps(),
                    _settings(),
                    _secret(),
                    pre.get("uid"),
                    pre.get("token"),
                    form.code.data,
                    remote=request.remote_addr or "",
                    via="sso" if pre.get("via") == "sso" else "password",
                )
            except auth.LoginFailed as e:
                flash(str(e), "error")
                status = 401
            else:
                nxt = safe_next(pre.get("next"))
                session.clear()
                session["sid"] = sid
                return redirect(nxt, 303)
        else:
            flash("Enter the 6-digit code.", "error")
            status = 400
    form.code.data = ""
    return render_template("web/totp.html", form=form), status


@web.post("/logout")
def logout() -> ResponseReturnValue:
    auth.end_session(deps(), session.get("sid"))
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("web.login"), 303)


# ---------------------------------------------------------------------------- pages


def _summary(req: AccessRequest, now: datetime) -> dict[str, object]:
    decision = req.stored_decision()
    approvals = [a for a in req.approvals if a.decision == ApprovalDecision.APPROVE]
    return {
        "id": req.id,
        "state": req.state,
        "requester": req.requester.name,
        "target": req.target,
        "principals": list(decision.principals),
        "reason": req.reason,
        "requested_seconds": req.requested_seconds,
        "granted_seconds": req.granted_seconds,
        "created_at": req.created_at,
        "age": (now - req.created_at).total_seconds(),
        "pending_until": req.pending_until,
        "lapses_in": (req.pending_until - now).total_seconds(),
        "approvals": len({a.approver_id for a in approvals}),
        "required": req.approvals_required,
        # Who answered, in order: "approved by bob", "denied by carol: reason".
        "deciders": [
            queries.Decider(name=a.approver.name, decision=a.decision, comment=a.comment or "")
            for a in req.approvals
        ],
        "deny_reason": req.deny_reason,
        "break_glass": req.break_glass,
        "auto_approved": req.auto_approved,
        # An extension of a running access: what it adds, and the whole access it makes.
        "extension": deps().service.extension_info(req),
    }


@web.get("/")
@login_required
def index() -> ResponseReturnValue:
    user: User = g.user
    if not _is_approver(user):
        return redirect(url_for("web.mine"))
    now = deps().clock()
    rows = deps().service.list(user, pending_for_me=True)
    return render_template("web/pending.html", items=[_summary(r, now) for r in rows], now=now)


@web.get("/mine")
@login_required
def mine() -> ResponseReturnValue:
    now = deps().clock()
    rows = deps().service.list(g.user, mine=True)
    return render_template("web/mine.html", items=[_summary(r, now) for r in rows], now=now)


@web.get("/active")
@login_required
def active() -> ResponseReturnValue:
    user: User = g.user
    now = deps().clock()
    everyone = _sees_everything(user)
    certs = queries.active_certificates(
        deps().service.sessions, now, requester_id=None if everyone else user.id
    )
    return render_template(
        "web/active.html", certs=certs, now=now, everyone=everyone, revoke_form=RevokeForm()
    )


#: How many of the requester's other requests the request page lists.
RECENT = 10
#: Decisions per page of "Decided by me".
DECIDED_PAGE = 50


#: What the request page says when the Approve and Deny forms are not shown.
_WHY_NOT = {
    NotDecidable.OWN_REQUEST: "This is your own request: another approver must decide.",
    NotDecidable.NOT_PENDING: "",
    NotDecidable.NOT_APPROVER: "You are not an approver.",
    NotDecidable.ALREADY_DECIDED: "You have already decided on this request.",
}


def _why_not(answer: MayDecide) -> str:
    """Why the forms are not shown (the service refuses a forged POST all the same)."""
    if answer.allowed or answer.why_not is None:
        return ""
    if answer.why_not is NotDecidable.POLICY:
        text = "; ".join(answer.reasons)
        return text[:1].upper() + text[1:] + "."
    return _WHY_NOT[answer.why_not]


def _duration_choices(req: AccessRequest, decision: policies.Decision) -> list[tuple[str, str]]:
    asked = req.requested_seconds
    choices = [("", f"{format_duration(asked)} (as asked)")]
    if decision.approvers_may_shorten:
        choices += [(str(s), format_duration(s)) for s in reversed(_SHORTER) if s < asked]
    return choices


#: Audit data not worth a line on the page (it stays in the log and its export).
_HIDDEN_KEYS = {
    "policy_version",
    "ca_fingerprint",
    "public_key_fingerprint",
    "key_id",
    "approvals",
    "required",
    "outcome",
    "approvals_required",
    "auto",
    "break_glass",
}


def trail_details(event: queries.TrailEvent) -> list[tuple[str, str]]:
    """An audit event's data as short (label, text) pairs; the template escapes both."""
    data = event.data
    out: list[tuple[str, str]] = []
    if "approvals" in data and "required" in data:
        out.append(("approvals", f"{data['approvals']} of {data['required']}"))
    for key, value in data.items():
        if key in _HIDDEN_KEYS or value is None or value == "" or value == []:
            continue
        label = key.replace("_", " ")
        if key.endswith("_seconds") and isinstance(value, int):
            label, text = label[: -len(" seconds")], format_duration(value)
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value)
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        out.append((label, text))
    return out


def _request_page(
    request_id: str,
    *,
    status: int = 200,
    approve_form: ApproveForm | None = None,
    deny_form: DenyForm | None = None,
) -> ResponseReturnValue:
    ext = deps()
    user: User = g.user
    now = ext.clock()
    req = ext.service.get(user, request_id)
    # Under the current policy: what an approval or fetch would narrow the request to.
    decision, policy_note = ext.service.current_grant(req)
    summary = {**_summary(req, now), "principals": list(decision.principals)}
    answer = ext.service.may_decide(user, req)
    approve_form = approve_form or ApproveForm(formdata=None)
    approve_form.duration.choices = _duration_choices(req, decision)
    deny_form = deny_form or DenyForm(formdata=None)
    cert = req.certificate
    cert_active = cert is not None and cert.revocation is None and cert.valid_before > now
    can_revoke = cert_active and (req.requester_id == user.id or _sees_everything(user))
    rule = ext.service.policy.get().rule(req.rule or "")
    needs = rule.approver_auth if rule is not None else "any"
    # The requester's context. Whoever may see this page (the requester, an approver or
    # an admin: ``service.get`` refused anyone else) may see every one of these requests.
    holds = queries.valid_access(
        ext.service.sessions,
        now,
        requester_id=req.requester_id,
        target=req.target,
        other_than=req.id,
    )
    recent = queries.recent_requests(
        ext.service.sessions, now, requester_id=req.requester_id, other_than=req.id, limit=RECENT
    )
    return render_template(
        "web/request.html",
        r=summary,
        req=req,
        decision=decision,
        policy_note=policy_note,
        rule_description=rule.description if rule is not None else "",
        own=req.requester_id == user.id,
        may_decide=answer.allowed,
        why_not=_why_not(answer),
        approver_auth_needs=_NEEDS.get(needs, ""),
        # What this session lacks for the rule, said beside the buttons (the service
        # refuses such a decision all the same), and where to sign in again.
        approver_auth_missing=_missing_sign_in(needs, user, now) if answer.allowed else "",
        sign_in_again=_sign_in_again_url(needs, req.id),
        approve_form=approve_form,
        deny_form=deny_form,
        revoke_form=RevokeForm(formdata=None),
        cancel=req.requester_id == user.id
        and req.state in (RequestState.PENDING, RequestState.APPROVED),
        cert=cert,
        cert_active=cert_active,
        can_revoke=can_revoke,
        trail=queries.audit_trail(ext.service.sessions, req.id),
        holds=holds,
        recent=recent,
        recent_limit=RECENT,
        event_names=_EVENT_NAMES,
        trail_details=trail_details,
        # The requester's groups the decision at submit used, and where they came from.
        groups_used=req.groups_used_list,
        now=now,
    ), status


@web.get("/requests/<request_id>")
@login_required
def request_page(request_id: str) -> ResponseReturnValue:
    return _request_page(request_id)


#: What a rule's ``approver_auth`` asks of an approval, as the request page says it.
_NEEDS = {
    "totp": "This rule needs approvals signed in with a TOTP code.",
    "fresh_sso": (
        "This rule needs approvals signed in by single sign-on within the last "
        f"{int(FRESH_SSO.total_seconds() // 60)} minutes."
    ),
}


def _approval_context() -> ApprovalContext:
    """The web session's sign-in, for the service to judge the rule's ``approver_auth`` on."""
    sign_in: auth.SignIn | None = g.get("sign_in")
    if sign_in is None:
        return ApprovalContext(via="web")
    return ApprovalContext(
        via="web",
        totp=sign_in.totp,
        sso_at=sign_in.at if sign_in.via == "sso" else None,
    )


def _missing_sign_in(needs: str, user: User, now: datetime) -> str:
    """Why this session may not decide under ``needs`` (as the service judges it), or ""."""
    sign_in: auth.SignIn | None = g.get("sign_in")
    if needs == "totp" and not (sign_in is not None and sign_in.totp):
        if not user.totp_secret:
            return (
                "Your account has no TOTP code set up, so you cannot approve or deny this "
                f"request: ask an admin (jit-ssh admin user totp {user.name}), then sign in again."
            )
        return "This session was signed in without a TOTP code: sign in again to approve or deny."
    if needs == "fresh_sso":
        if deps().config.sso is None:
            return (
                "This server has no single sign-on configured, so nobody can approve or deny "
                "this rule's requests in the web form: ask an admin."
            )
        if sign_in is None or sign_in.via != "sso":
            return (
                "This session was not signed in by single sign-on: sign in again with it "
                "to approve or deny."
            )
        age = now - sign_in.at
        if age > FRESH_SSO:
            return (
                f"You signed in by single sign-on {int(age.total_seconds() // 60)} minutes ago: "
                "sign in again to approve or deny."
            )
    return ""


def _sign_in_again_url(needs: str, request_id: str) -> str | None:
    """A sign-in that replaces this session and comes back to the request's page: single
    sign-on for ``fresh_sso``, the login page (password or single sign-on, then the code)
    for ``totp``; None when no sign-in here can satisfy the rule."""
    back = url_for("web.request_page", request_id=request_id)
    if needs == "fresh_sso":
        if deps().config.sso is None:
            return None
        return url_for("web.sso_login", next=back, again=1)
    return url_for("web.login", next=back, again=1)


def _grant(value: str | None) -> timedelta | None:
    if not value:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return timedelta(seconds=int(value))
    return parse_duration(value, field="duration")


def _after_error(
    request_id: str,
    e: JitSshError,
    *,
    approve_form: ApproveForm | None = None,
    deny_form: DenyForm | None = None,
) -> ResponseReturnValue:
    flash(str(e), "error")
    return _request_page(
        request_id, status=http_status(e), approve_form=approve_form, deny_form=deny_form
    )


@web.post("/requests/<request_id>/approve")
@login_required
def approve(request_id: str) -> ResponseReturnValue:
    form = ApproveForm()
    if not form.validate():
        flash(next(iter(form.errors.values()))[0], "error")
        return _request_page(request_id, status=400, approve_form=form)
    try:
        req = deps().service.approve(
            g.user,
            request_id,
            comment=_text(form.comment.data),
            duration=_grant(form.duration.data),
            context=_approval_context(),
        )
    except JitSshError as e:
        return _after_error(request_id, e, approve_form=form)
    if req.state == RequestState.APPROVED:
        flash(
            f"Approved: {req.requester.name} can now get a certificate for {req.target} "
            f"({format_duration(req.granted_seconds)}).",
            "ok",
        )
    else:
        got = len({a.approver_id for a in req.approvals if a.decision == ApprovalDecision.APPROVE})
        flash(f"Your approval is recorded: {got} of {req.approvals_required}.", "ok")
    return redirect(url_for("web.request_page", request_id=req.id), 303)


@web.post("/requests/<request_id>/deny")
@login_required
def deny(request_id: str) -> ResponseReturnValue:
    form = DenyForm()
    if not form.validate():
        flash(next(iter(form.errors.values()))[0], "error")
        return _request_page(request_id, status=400, deny_form=form)
    try:
        req = deps().service.deny(
            g.user, request_id, reason=_text(form.reason.data), context=_approval_context()
        )
    except JitSshError as e:
        return _after_error(request_id, e, deny_form=form)
    flash(f"Denied: {req.requester.name} sees your reason.", "ok")
    return redirect(url_for("web.request_page", request_id=req.id), 303)


@web.post("/requests/<request_id>/cancel")
@login_required
def cancel(request_id: str) -> ResponseReturnValue:
    try:
        req = deps().service.cancel(g.user, request_id)
    except JitSshError as e:
        return _after_error(request_id, e)
    flash(f"Request {req.id} cancelled.", "ok")
    return redirect(url_for("web.request_page", request_id=req.id), 303)


def _revoke_page(
    serial: str, *, form: RevokeForm | None = None, status: int = 200
) -> ResponseReturnValue:
    """The confirmation before a revoke: what is revoked, for whom, until when."""
    user: User = g.user
    serial_no = check_serial(serial)
    cert = queries.certificate_to_revoke(deps().service.sessions, serial_no)
    # The rule of the request page: the requester, or an approver or admin. Anyone
    # else learns nothing, not even that the serial exists.
    if cert is None or not (
        (cert.requester_id is not None and cert.requester_id == user.id) or _sees_everything(user)
    ):
        raise NotFound(f"no certificate with serial {serial_no}", field="serial")
    now = deps().clock()
    if form is None:
        form = RevokeForm(formdata=None)
        form.next.data = safe_next(request.args.get("next") or url_for("web.active"))
    return render_template(
        "web/revoke.html",
        cert=cert,
        form=form,
        back=safe_next(form.next.data or url_for("web.active")),
        active=cert.revoked_by is None and cert.valid_before > now,
        now=now,
    ), status


@web.get("/certificates/<serial>/revoke")
@login_required
def revoke_confirm(serial: str) -> ResponseReturnValue:
    return _revoke_page(serial)


@web.post("/certificates/<serial>/revoke")
@login_required
def revoke(serial: str) -> ResponseReturnValue:
    form = RevokeForm()
    back = safe_next(form.next.data or url_for("web.active"))
    if not form.validate():
        # Not confirmed, or a reason too long: nothing is revoked, and the confirmation
        # is asked again with what was typed.
        for errors in form.errors.values():
            for message in errors:
                flash(message, "error")
        return _revoke_page(serial, form=form, status=400)
    try:
        rev = deps().service.revoke(g.user, serial, reason=_text(form.reason.data))
    except JitSshError as e:
        flash(str(e), "error")
        return redirect(back, 303)
    flash(
        f"Certificate {rev.serial} revoked. Hosts refuse it from their next revocation list sync.",
        "ok",
    )
    return redirect(back, 303)


# ---------------------------------------------------------------------------- decided by me


@web.get("/decided")
@login_required
def decided() -> ResponseReturnValue:
    user: User = g.user
    # Other people's requests and reasons: for those who may open their pages.
    if not _sees_everything(user):
        return _error_page(403, "Only approvers have decisions to list.")
    raw = request.args.get("page", "1")
    page = int(raw) if raw.isascii() and raw.isdigit() and 0 < len(raw) <= 6 else 0
    if page < 1:
        return _error_page(400, "page must be a whole number from 1.")
    now = deps().clock()
    rows, more = queries.decided_by(
        deps().service.sessions,
        now,
        approver_id=user.id,
        limit=DECIDED_PAGE,
        offset=(page - 1) * DECIDED_PAGE,
    )
    return render_template("web/decided.html", items=rows, page=page, more=more, now=now)
