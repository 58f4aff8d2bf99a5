"""Web logins and sessions for approvers (and requesters looking at their own requests).

Passwords are argon2id hashes (``server.admin.password_hasher``). Failed
attempts slow the answers down, then lock the name for a while. An account
keeps its count on the user row (``failed_logins``, ``locked_until``; an
admin's ``set-password`` clears both); a name that matches no account gets
the same treatment from ``login_throttle``, keyed by an HMAC of the name, and
the same argon2 work against a dummy hash: the answer, its wording and its
timing do not tell whether the account exists, has a password, is disabled
or is locked.

A session is a random id in the (signed) Flask session cookie; the database
keeps its SHA-256 (``web_sessions``), so logging out ends it everywhere and a
database dump holds no usable session. A session ends after ``idle_timeout``
without a request, after ``max_age`` in any case, and when the user is
disabled or their password or TOTP secret changes (the ``auth_stamp``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ca.errors import JitSshError
from server import totp as totp_mod
from server.admin import MAX_PASSWORD, password_hasher
from server.auth import log_failure, record_failure
from server.db import CommitThenRaise, transaction
from server.deps import Deps
from server.errors import PasswordLoginDisabled
from server.models import LoginThrottle, User, WebSession

__all__ = [
    "WebSettings",
    "LoginFailed",
    "PreAuth",
    "check_password",
    "check_totp",
    "load_session",
    "load_web_session",
    "SignIn",
    "end_session",
    "auth_stamp",
    "sso_session",
    "check_password_allowed",
]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}")


class LoginFailed(JitSshError):
    """One message for every failed login, whatever the cause (see the module docstring)."""

    code = "login_failed"

    def __init__(self) -> None:
        super().__init__(
            "Login failed: wrong user name, password or code. After repeated failures a name is locked "
            "for a while; ask an admin if you are locked out.",
            field="username",
        )


@dataclass
class WebSettings:
    """Knobs of the web login; tests shorten them or replace ``sleep``."""

    idle_timeout: timedelta = timedelta(minutes=30)
    max_age: timedelta = timedelta(hours=12)
    #: Failures answered at once; each one after that waits longer (0.5 s, 1 s, 2 s, ... up to max_delay).
    free_failures: int = 2
    max_delay: float = 4.0
    lock_after: int = 10
    lock_for: timedelta = timedelta(minutes=15)
    #: Time allowed between the password and the TOTP code.
    totp_within: timedelta = timedelta(minutes=5)
    sleep: Callable[[float], None] = time.sleep

    def delay(self, failures: int) -> float:
        if failures <= self.free_failures:
            return 0.0
        return float(min(0.5 * 2 ** (failures - self.free_failures - 1), self.max_delay))


@dataclass(frozen=True)
class SignIn:
    """How the current web session signed in: a rule's ``approver_auth`` is judged on it
    (``server.services.requests.ApprovalContext``)."""

    #: "password" or "sso" (a session from before migration 0010 counts as "password").
    via: str
    #: Whether a TOTP code was given.
    totp: bool
    #: When the session started (for "signed in by single sign-on within the last 15 minutes").
    at: datetime


@dataclass(frozen=True)
class PreAuth:
    """The password was right; a TOTP code is still needed."""

    user_id: int
    #: An HMAC of the user's auth stamp: the code is accepted only if the
    #: password and secret are still those the password step saw.
    token: str


def auth_stamp(user: User) -> str:
    """Changes whenever the password or the TOTP secret does (ending every session)."""
    material = f"{user.password_hash or ''}\0{user.totp_secret or ''}".encode()
    return hashlib.sha256(material).hexdigest()


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8", "surrogatepass")).hexdigest()


_dummy: dict[str, str] = {}
_dummy_lock = threading.Lock()


def _dummy_hash() -> str:
    # A real argon2id hash of a random password, made once per process, so an
    # unknown name costs the same argon2 work as a known one.
    with _dummy_lock:
        if "h" not in _dummy:
            _dummy["h"] = password_hasher().hash(secrets.token_urlsafe(24))
        return _dummy["h"]


def _verify_password(stored: str | None, password: str) -> bool:
    try:
        return password_hasher().verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _pre_token(secret_key: bytes, user: User) -> str:
    return hmac.new(
        secret_key, b"pre-auth\0" + auth_stamp(user).encode(), hashlib.sha256
    ).hexdigest()


def _name_hash(secret_key: bytes, name: str) -> str:
    return hmac.new(
        secret_key, b"login-throttle\0" + name.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()


def _counter(
    s: Session, user: User | None, secret_key: bytes, name: str, now: datetime
) -> User | LoginThrottle:
    """What counts failures for this name: the user row, or the throttle row for an unknown name."""
    if user is not None:
        return user
    key = _name_hash(secret_key, name)
    row = s.execute(
        select(LoginThrottle).where(LoginThrottle.name_hash == key).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        row = LoginThrottle(name_hash=key, failed_logins=0, locked_until=None, updated_at=now)
        s.add(row)
        try:
            with s.begin_nested():
                s.flush()
        except IntegrityError:
            # Another attempt with the same name inserted it first.
            row = s.execute(
                select(LoginThrottle).where(LoginThrottle.name_hash == key).with_for_update()
            ).scalar_one()
    return row


def _locked(counter: User | LoginThrottle, now: datetime) -> bool:
    if counter.locked_until is not None and counter.locked_until <= now:
        # The lock has run out: start counting afresh.
        counter.locked_until = None
        counter.failed_logins = 0
    return counter.locked_until is not None


def _fail(
    s: Session,
    ext: Deps,
    settings: WebSettings,
    counter: User | LoginThrottle,
    user: User | None,
    *,
    locked: bool,
    why: str,
    stage: str,
    remote: str,
    now: datetime,
) -> float:
    """Count a failure (unless already locked), audit it; return how long to wait before answering."""
    if not locked:
        counter.failed_logins = (counter.failed_logins or 0) + 1
        if counter.failed_logins >= settings.lock_after:
            counter.locked_until = now + settings.lock_for
    if isinstance(counter, LoginThrottle):
        counter.updated_at = now
    # As for the API (server.auth.record_failure): a log line each, counted, and an audit
    # event for the first of its kind per window, under no actor (a failed login proves
    # nobody's identity). The attempt that locks an account is a kind of its own.
    claimed = user.name if user is not None else None  # never a typed name that matches no account
    code = "web_lockout" if not locked and counter.locked_until is not None else f"web_{why}"
    data = {
        "via": "web",
        "stage": stage,
        "why": why,
        "failures": counter.failed_logins,
        "locked": counter.locked_until is not None,
        "remote": remote[:64],
    }
    log_failure(now=now, code=code, claimed_user=claimed, data=data)
    record_failure(
        s,
        now=now,
        code=code,
        claimed_user=claimed,
        data=data,
        writer=ext.audit,
    )
    return settings.max_delay if locked else settings.delay(counter.failed_logins)


def _start(
    s: Session,
    ext: Deps,
    settings: WebSettings,
    user: User,
    *,
    remote: str,
    totp_used: bool,
    now: datetime,
    via: str = "password",
) -> str:
    user.failed_logins = 0
    user.locked_until = None
    sid = secrets.token_urlsafe(32)
    s.add(
        WebSession(
            id_hash=_sid_hash(sid),
            user_id=user.id,
            created_at=now,
            last_seen_at=now,
            auth_stamp=auth_stamp(user),
            via=via,
            totp_used=totp_used,
        )
    )
    # Housekeeping while we hold a transaction anyway: sessions past their idle
    # timeout, and throttle rows for unknown names untouched for longer than any lock lasts.
    s.execute(delete(WebSession).where(WebSession.last_seen_at < now - settings.idle_timeout))
    s.execute(
        delete(LoginThrottle).where(
            LoginThrottle.updated_at < now - max(settings.lock_for, timedelta(days=1))
        )
    )
    ext.audit.record(
        s,
        type="web.login",
        now=now,
        actor=user.name,
        data={"totp": totp_used, "remote": remote[:64], "via": via},
    )
    return sid


def sso_session(
    s: Session,
    ext: Deps,
    settings: WebSettings,
    secret_key: bytes,
    user: User,
    *,
    remote: str,
    now: datetime,
) -> str | PreAuth:
    """A web sign-in through single sign-on, in the sign-in's transaction ``s``: a new
    session id, or :class:`PreAuth` when the user also needs their TOTP code (the
    provider vouched for who they are; a code an admin set up is asked all the same)."""
    if user.totp_secret:
        return PreAuth(user_id=user.id, token=_pre_token(secret_key, user))
    return _start(s, ext, settings, user, remote=remote, totp_used=False, now=now, via="sso")


def check_password_allowed(ext: Deps, name: object) -> None:
    """With ``password_login = false`` only ``break_glass_admins`` may use a local password:
    anyone else is refused, whatever the password (and before it is even checked)."""
    sso = ext.config.sso
    if sso is None or sso.password_login:
        return
    if isinstance(name, str) and name in sso.break_glass_admins:
        return
    raise PasswordLoginDisabled(
        "local passwords are turned off on this server (password_login_disabled): use "
        f"single sign-on, 'Sign in with {sso.display_name}'",
        field="password",
    )


def check_password(
    ext: Deps,
    settings: WebSettings,
    secret_key: bytes,
    name: object,
    password: object,
    *,
    remote: str = "",
) -> str | PreAuth:
    """A new session id, or :class:`PreAuth` when the user also needs a TOTP code.

    Raises :class:`LoginFailed` (after the slow-down) for every failure, and
    :class:`PasswordLoginDisabled` when passwords are off for this name.
    """
    check_password_allowed(ext, name)
    now = ext.clock()
    name = name if isinstance(name, str) else ""
    password = password if isinstance(password, str) else ""
    well_formed = bool(_NAME.fullmatch(name)) and 0 < len(password) <= MAX_PASSWORD
    stored = None
    if well_formed:
        with transaction(ext.service.sessions) as s:
            u = s.execute(select(User).where(User.name == name)).scalar_one_or_none()
            stored = u.password_hash if u is not None else None
    # argon2 runs outside any transaction: it takes tens of milliseconds, and
    # SQLite transactions hold the database's write lock.
    ok = _verify_password(stored, password[:MAX_PASSWORD])
    new_hash = (
        password_hasher().hash(password)
        if ok and password_hasher().check_needs_rehash(stored or "")
        else None
    )
    delay = 0.0
    try:
        with transaction(ext.service.sessions) as s:
            user = (
                s.execute(
                    select(User).where(User.name == name).with_for_update(of=User)
                ).scalar_one_or_none()
                if well_formed
                else None
            )
            counter = _counter(s, user, secret_key, name[:256], now)
            locked = _locked(counter, now)
            why = None
            if user is None:
                why = "unknown_user" if well_formed else "malformed"
            elif locked:
                why = "locked"
            elif user.disabled:
                why = "disabled"
            elif user.password_hash is None:
                why = "no_password"
            elif not ok or user.password_hash != stored:
                # (A password changed between the check and now counts as a failure.)
                why = "wrong_password"
            if why is not None:
                delay = _fail(
                    s,
                    ext,
                    settings,
                    counter,
                    user,
                    locked=locked,
                    why=why,
                    stage="password",
                    remote=remote,
                    now=now,
                )
                raise CommitThenRaise(LoginFailed())
            assert user is not None
            if new_hash is not None:
                user.password_hash = new_hash
            if user.totp_secret:
                # The count is cleared only when the code is right too: a known
                # password must not buy unlimited guesses at the code.
                return PreAuth(user_id=user.id, token=_pre_token(secret_key, user))
            return _start(s, ext, settings, user, remote=remote, totp_used=False, now=now)
    except LoginFailed:
        settings.sleep(delay)
        raise


def check_totp(
    ext: Deps,
    settings: WebSettings,
    secret_key: bytes,
    user_id: object,
    token: object,
    code: object,
    *,
    remote: str = "",
    via: str = "password",
) -> str:
    """The second step: a new session id, or :class:`LoginFailed` (after the slow-down).
    ``via``: how the first step was passed ("password" or "sso"), for the audit event."""
    now = ext.clock()
    delay = 0.0
    try:
        with transaction(ext.service.sessions) as s:
            user = None
            if isinstance(user_id, int) and isinstance(token, str):
                user = s.execute(
                    select(User).where(User.id == user_id).with_for_update(of=User)
                ).scalar_one_or_none()
            if user is None:
                raise LoginFailed()
            locked = _locked(user, now)
            step = None
            why = None
            if locked:
                why = "locked"
            elif user.disabled:
                why = "disabled"
            elif (
                not user.totp_secret
                or not isinstance(token, str)
                or not hmac.compare_digest(_pre_token(secret_key, user), token)
            ):
                why = "changed"
            else:
                step = totp_mod.verify(user.totp_secret, code, now, last_step=user.totp_last_step)
                if step is None:
                    why = "wrong_code"
            if why is not None:
                delay = _fail(
                    s,
                    ext,
                    settings,
                    user,
                    user,
                    locked=locked,
                    why=why,
                    stage="totp",
                    remote=remote,
                    now=now,
                )
                raise CommitThenRaise(LoginFailed())
            user.totp_last_step = step
            return _start(s, ext, settings, user, remote=remote, totp_used=True, now=now, via=via)
    except LoginFailed:
        settings.sleep(delay)
        raise


def load_session(ext: Deps, settings: WebSettings, sid: object) -> tuple[User | None, str | None]:
    """The session's user (groups and roles loaded), or ``(None, why)`` when it has ended."""
    user, _sign_in, why = load_web_session(ext, settings, sid)
    return user, why


def load_web_session(
    ext: Deps, settings: WebSettings, sid: object
) -> tuple[User | None, SignIn | None, str | None]:
    """As :func:`load_session`, with how the session signed in (None when it has ended)."""
    if not isinstance(sid, str) or not 20 <= len(sid) <= 100:
        return None, None, None
    now = ext.clock()
    with transaction(ext.service.sessions) as s:
        row = s.get(WebSession, _sid_hash(sid))
        if row is None:
            return None, None, "ended"
        user = s.get(User, row.user_id)
        why = None
        if now - row.last_seen_at >= settings.idle_timeout:
            why = "idle"
        elif now - row.created_at >= settings.max_age:
            why = "max_age"
        elif user is None or user.disabled or auth_stamp(user) != row.auth_stamp:
            why = "changed"
        if why is not None:
            s.delete(row)
            return None, None, why
        assert user is not None
        # Write at most every 15 s: the idle timeout does not need more precision.
        if now - row.last_seen_at >= timedelta(seconds=15):
            row.last_seen_at = now
        _ = (user.group_names, user.role_names)
        sign_in = SignIn(
            via="sso" if row.via == "sso" else "password",
            totp=bool(row.totp_used),
            at=row.created_at,
        )
        return user, sign_in, None


def end_session(ext: Deps, sid: object) -> None:
    if not isinstance(sid, str) or not 20 <= len(sid) <= 100:
        return
    now = ext.clock()
    with transaction(ext.service.sessions) as s:
        row = s.get(WebSession, _sid_hash(sid))
        if row is None:
            return
        user = s.get(User, row.user_id)
        s.delete(row)
        ext.audit.record(
            s,
            type="web.logout",
            now=now,
            actor=user.name if user else None,
            data={},
        )
