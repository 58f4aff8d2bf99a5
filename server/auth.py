"""Who is calling: verify a signed API call (see ``ca.request_signing``).

Checks, in order: the four headers are there and well formed; the timestamp
is within ``max_clock_skew`` of the server's clock; the SSHSIG signature over
the canonical message verifies; the key that signed is enrolled, not removed,
and belongs to the user named; the user is not disabled; the nonce was never
seen (a primary-key insert, so two replicas cannot both accept it).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

from sqlalchemy import Row, Table, bindparam, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker
from sqlalchemy.sql.dml import ReturningInsert

from ca import request_signing as rs
from ca.sshsig import InvalidSignatureError, VerifiedSignature, verify

from . import audit
from .db import transaction
from .errors import (
    AuthFailed,
    BadSignature,
    ClockSkew,
    EnrolmentExpired,
    ReplayedNonce,
    UnknownKey,
    UserDisabled,
)
from .models import AuthFailureCount, Nonce, SshKey, User, UserGroup, UserRole

__all__ = [
    "authenticate_key",
    "verify_signed_call",
    "verify_possession",
    "POSSESSION_USER",
    "SignedCall",
    "SigningKey",
    "nonce_expiry",
    "REPLICA_CLOCK_DRIFT",
    "report_failure",
    "record_failure",
    "log_failure",
]

log = logging.getLogger("jit_ssh.auth")
#: Every failed authentication, one JSON line each (for a SIEM).
FAILURE_LOG = logging.getLogger("jit_ssh.auth.failed")
#: Failed authentications are counted per window of this length...
FAILURE_WINDOW = timedelta(minutes=5)
#: ... and at most this many ``auth.failed`` audit events are written per window.
MAX_FAILURE_EVENTS = 20
#: Counter rows are kept this long.
FAILURE_RETENTION = timedelta(days=30)
_FAILURES = cast(Table, AuthFailureCount.__table__)

_MAX_SIG_HEADER = 24 * 1024
# Built once (building a statement costs about as much as running it).
# The key's user with its groups and roles, in one round trip (outer joins;
# a user has a handful of each).
_USERS = User.__table__
_KEYS = SshKey.__table__
_GROUPS = UserGroup.__table__
_ROLES = UserRole.__table__
_ACCOUNT = (
    select(
        _USERS,
        _GROUPS.c.name.label("group_name"),
        _ROLES.c.role.label("role_name"),
        # An SSO enrolment's end is checked in the same query (no second round trip).
        _KEYS.c.source.label("key_source"),
        _KEYS.c.expires_at.label("key_expires_at"),
    )
    .select_from(
        _KEYS.join(_USERS, _USERS.c.id == _KEYS.c.user_id)
        .outerjoin(_GROUPS, _GROUPS.c.user_id == _USERS.c.id)
        .outerjoin(_ROLES, _ROLES.c.user_id == _USERS.c.id)
    )
    .where(_KEYS.c.fingerprint == bindparam("fingerprint"), _KEYS.c.removed_at.is_(None))
)
_USER_COLUMNS = tuple(c.key for c in _USERS.columns)
# Core, on the session's connection: a replay hits the primary key.
_INSERT_NONCE = insert(cast(Table, Nonce.__table__))


#: How far apart two replicas' clocks may be. A nonce is kept this much longer
#: than its call can be accepted, because the replica that sweeps it may run
#: ahead of the one that would accept its replay.
REPLICA_CLOCK_DRIFT = timedelta(seconds=120)


class _Headers(Protocol):
    """A request's headers (a dict, or Werkzeug's ``Headers``): only ``get`` is used."""

    def get(self, key: str) -> str | None: ...


def nonce_expiry(timestamp: int, max_clock_skew: int) -> datetime:
    """When a call's nonce may be forgotten: once the call itself can no longer be accepted.

    The timestamp check compares whole seconds (``int(now)``), so a call stamped
    ``t`` is accepted until just before ``t + max_clock_skew + 1``, whatever the
    moment the server first saw it: a call stamped ``max_clock_skew`` ahead of
    the server's clock stays acceptable for twice the skew. Counted from the
    call's own timestamp, then, not from its arrival, plus the replicas' drift.
    """
    return datetime.fromtimestamp(timestamp + max_clock_skew + 1, UTC) + REPLICA_CLOCK_DRIFT


def authenticate_key(
    sessions: sessionmaker[Session],
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    headers: _Headers,
    now: datetime,
    max_clock_skew: int,
    on_failure: Callable[[AuthFailed, str | None], None] | None = None,
) -> tuple[User, SigningKey]:
    """The calling :class:`User` and the enrolled key that signed the call, or an
    :class:`AuthFailed` subclass (raised after ``on_failure`` has seen it)."""
    claimed = headers.get(rs.HEADER_USER)
    try:
        return _authenticate(sessions, method, path, query, body, headers, now, max_clock_skew)
    except AuthFailed as e:
        if on_failure is not None:
            # The audit log refuses an actor with control characters: pass on only a
            # name that could be a user's, or the failure would go unrecorded.
            on_failure(e, claimed if _plausible_user(claimed) else None)
        raise


def report_failure(
    sessions: sessionmaker[Session],
    *,
    now: datetime,
    code: str,
    claimed_user: str | None,
    data: Mapping[str, object],
    writer: audit.AuditWriter,
    event_type: str = "auth.failed",
) -> None:
    """Report one failed API authentication: a JSON line in the server log (always, for
    a SIEM), then :func:`record_failure` in a transaction of its own. Never raises: a
    database that cannot count the failure must not hide the failure itself."""
    log_failure(now=now, code=code, claimed_user=claimed_user, data=data, event_type=event_type)
    try:
        with transaction(sessions) as s:
            record_failure(
                s,
                now=now,
                code=code,
                claimed_user=claimed_user,
                data=data,
                writer=writer,
                event_type=event_type,
            )
    except Exception:
        log.exception("could not record an authentication failure")


def log_failure(
    *,
    now: datetime,
    code: str,
    claimed_user: str | None,
    data: Mapping[str, object],
    event_type: str = "auth.failed",
) -> None:
    FAILURE_LOG.warning(
        json.dumps(
            {
                "type": event_type,
                "at": now.isoformat(),
                "code": code,
                "claimed_user": claimed_user,
                "data": dict(data),
            },
            sort_keys=True,
            default=str,
        )
    )


def record_failure(
    session: Session,
    *,
    now: datetime,
    code: str,
    claimed_user: str | None,
    data: Mapping[str, object],
    writer: audit.AuditWriter,
    event_type: str = "auth.failed",
) -> int:
    """Count one failed authentication in ``auth_failures``, in the caller's transaction;
    return how many of its kind (claimed user and code) this window has seen.
    ``event_type``: the audit event's type (``sso.refused`` for a refused single sign-on,
    counted and capped with the rest).

    Only the first of its kind in a window becomes an ``auth.failed`` audit event,
    and at most :data:`MAX_FAILURE_EVENTS` per window in all: anyone can send failing
    calls, and must not be able to grow the hash chain at will. The event's actor is
    nobody (the caller proved no identity); the name the call claimed is
    ``data.claimed_user``, a claim, never an actor.
    """
    window = datetime.fromtimestamp(
        int(now.timestamp())
        // int(FAILURE_WINDOW.total_seconds())
        * int(FAILURE_WINDOW.total_seconds()),
        UTC,
    )
    claimed = claimed_user if _plausible_user(claimed_user) else None
    # Only a name that is an account gets a counter and an event of its own: a
    # made-up name per call would otherwise grow the table at will, and use up
    # the window's events so that an attack on a real account went unaudited.
    # Failures claiming no account are counted together under "".
    if (
        claimed is not None
        and session.execute(select(User.id).where(User.name == claimed)).first() is None
    ):
        claimed = None
    n = _count(session, window, claimed or "", code, now)
    if n == 1:
        events = _count(session, window, "", "", now)
        # Per real account and code, the first failure of a window is always
        # audited (bounded by the accounts there are); the cap bounds the rest.
        if claimed is not None or events <= MAX_FAILURE_EVENTS:
            writer.record(
                session,
                type=event_type,
                now=now,
                actor=None,
                data={
                    **data,
                    "code": code,
                    "claimed_user": claimed,
                    "window_start": window.isoformat(),
                    "window_seconds": int(FAILURE_WINDOW.total_seconds()),
                    "more_counted_in": "auth_failures",
                },
            )
        elif events == MAX_FAILURE_EVENTS + 1:
            log.warning(
                "more than %d kinds of failed authentication since %s: the rest of this window is "
                "counted in auth_failures only, not in the audit log",
                MAX_FAILURE_EVENTS,
                window.isoformat(),
            )
    if secrets.randbelow(256) == 0:
        session.execute(
            delete(AuthFailureCount).where(AuthFailureCount.window_start < now - FAILURE_RETENTION)
        )
    return n


def _count(session: Session, window: datetime, claimed: str, code: str, now: datetime) -> int:
    """Add one to a counter row (made at 0 if missing); the new count. One statement,
    so concurrent failures on several replicas each get their own number."""
    row = {
        "window_start": window,
        "claimed_user": claimed,
        "code": code,
        "count": 1,
        "first_at": now,
        "last_at": now,
    }
    key = [_FAILURES.c.window_start, _FAILURES.c.claimed_user, _FAILURES.c.code]
    # The same upsert in each dialect's spelling (each has its own Insert class).
    stmt: ReturningInsert[int]
    if session.get_bind().dialect.name == "postgresql":
        pg = postgresql.insert(_FAILURES).values(row)
        stmt = pg.on_conflict_do_update(
            index_elements=key,
            set_={"count": _FAILURES.c.count + 1, "last_at": pg.excluded.last_at},
        ).returning(_FAILURES.c.count)
    else:
        lite = sqlite.insert(_FAILURES).values(row)
        stmt = lite.on_conflict_do_update(
            index_elements=key,
            set_={"count": _FAILURES.c.count + 1, "last_at": lite.excluded.last_at},
        ).returning(_FAILURES.c.count)
    session.flush()
    return int(session.connection().execute(stmt).scalar_one())


def _plausible_user(user: object) -> bool:
    return isinstance(user, str) and 0 < len(user) <= 64 and user.isprintable()


@dataclass(frozen=True)
class SignedCall:
    """A call whose signature verified (:func:`verify_signed_call`): the user header it
    named, the key that signed it, and its nonce and timestamp (not yet recorded)."""

    user: str
    signer: VerifiedSignature
    nonce: str
    timestamp: int


@dataclass(frozen=True)
class SigningKey:
    """The enrolled key a call was signed with: how it was enrolled, and until when."""

    fingerprint: str
    source: str
    expires_at: datetime | None


def verify_signed_call(
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    headers: _Headers,
    now: datetime,
    max_clock_skew: int,
) -> SignedCall:
    """Check the four headers and the SSHSIG signature over the canonical message, and
    nothing about who the key belongs to: both the enrolled-key authentication and the
    proof of possession of the single sign-on calls (:func:`verify_possession`) start here."""
    user = headers.get(rs.HEADER_USER)
    ts = headers.get(rs.HEADER_TIMESTAMP)
    nonce = headers.get(rs.HEADER_NONCE)
    sig = headers.get(rs.HEADER_SIGNATURE)
    if not (user and ts and nonce and sig):
        raise AuthFailed(
            f"sign the call: headers {rs.HEADER_USER}, {rs.HEADER_TIMESTAMP}, {rs.HEADER_NONCE} and "
            f"{rs.HEADER_SIGNATURE} are required",
            field="authorization",
        )
    if not _plausible_user(user):
        raise AuthFailed("the user header is malformed", field=rs.HEADER_USER)
    # isascii(): str.isdigit() is also true for '²' or '٣', which int() refuses or reads.
    if not (ts.isascii() and ts.isdigit()) or len(ts) > 12:
        raise AuthFailed("the timestamp must be Unix seconds", field=rs.HEADER_TIMESTAMP)
    if not rs.NONCE_PATTERN.fullmatch(nonce):
        raise AuthFailed("the nonce must be 22 to 64 URL-safe characters", field=rs.HEADER_NONCE)
    skew = int(ts) - int(now.timestamp())
    if abs(skew) > max_clock_skew:
        raise ClockSkew(
            f"the call's timestamp is {abs(skew)} s {'ahead of' if skew > 0 else 'behind'} the server's clock "
            f"(at most {max_clock_skew} s allowed); check the client's clock (NTP)",
            field=rs.HEADER_TIMESTAMP,
        )
    if len(sig) > _MAX_SIG_HEADER:
        raise BadSignature("the signature header is too large", field=rs.HEADER_SIGNATURE)
    try:
        blob = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("the signature is not base64", field=rs.HEADER_SIGNATURE) from None
    try:
        message = rs.signing_message(
            method=method,
            path=path,
            query=query,
            body=body,
            timestamp=int(ts),
            nonce=nonce,
            user=user,
        )
    except ValueError:
        raise AuthFailed("the call cannot be signed as sent", field="authorization") from None
    try:
        signer = verify(message, blob, namespace=rs.NAMESPACE)
    except InvalidSignatureError as e:
        raise BadSignature(f"bad signature: {e}", field=rs.HEADER_SIGNATURE) from None
    return SignedCall(user=user, signer=signer, nonce=nonce, timestamp=int(ts))


def _record_nonce(s: Session, call: SignedCall, *, now: datetime, max_clock_skew: int) -> None:
    """Insert the call's nonce (a replay hits the primary key), in ``s``'s transaction."""
    try:
        s.connection().execute(
            _INSERT_NONCE,
            {
                "nonce": call.nonce,
                "key_fingerprint": call.signer.fingerprint,
                "expires_at": nonce_expiry(call.timestamp, max_clock_skew),
            },
        )
    except IntegrityError:
        raise ReplayedNonce(
            "this call was already made once (replayed nonce)", field=rs.HEADER_NONCE
        ) from None
    # Forget nonces whose call can no longer pass the timestamp check on any
    # replica (see nonce_expiry). About one call in 256 sweeps, so no one
    # second makes every call wait on it.
    if secrets.randbelow(256) == 0:
        s.execute(delete(Nonce).where(Nonce.expires_at < now))


#: The user header of the single sign-on calls (start, finish, poll): the key need not be
#: enrolled, so the call names nobody. No user can be called "-" (a name starts with a
#: letter, digit or '_'), so such a call never authenticates as anyone elsewhere.
POSSESSION_USER = "-"


def verify_possession(
    sessions: sessionmaker[Session],
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    headers: _Headers,
    now: datetime,
    max_clock_skew: int,
    on_failure: Callable[[AuthFailed, str | None], None] | None = None,
) -> VerifiedSignature:
    """The key that signed a single sign-on call (user header ``-``), its nonce recorded;
    or an :class:`AuthFailed`. The caller compares the key with the one the call is about."""
    try:
        call = verify_signed_call(
            method=method,
            path=path,
            query=query,
            body=body,
            headers=headers,
            now=now,
            max_clock_skew=max_clock_skew,
        )
        if call.user != POSSESSION_USER:
            raise AuthFailed(
                f"sign this call with the user header {rs.HEADER_USER}: {POSSESSION_USER}",
                field=rs.HEADER_USER,
            )
        with transaction(sessions) as s:
            _record_nonce(s, call, now=now, max_clock_skew=max_clock_skew)
    except AuthFailed as e:
        if on_failure is not None:
            on_failure(e, None)
        raise
    return call.signer


def _authenticate(
    sessions: sessionmaker[Session],
    method: str,
    path: str,
    query: str,
    body: bytes,
    headers: _Headers,
    now: datetime,
    max_clock_skew: int,
) -> tuple[User, SigningKey]:
    call = verify_signed_call(
        method=method,
        path=path,
        query=query,
        body=body,
        headers=headers,
        now=now,
        max_clock_skew=max_clock_skew,
    )
    user, signer = call.user, call.signer
    with transaction(sessions) as s:
        conn = s.connection()
        rows = conn.execute(_ACCOUNT, {"fingerprint": signer.fingerprint}).all()
        if not rows or rows[0].name != user:
            raise UnknownKey(
                f"key {signer.fingerprint} is not enrolled for user {user!r}",
                field=rs.HEADER_SIGNATURE,
            )
        if rows[0].disabled:
            raise UserDisabled(f"user {user!r} is disabled", field=rs.HEADER_USER)
        expires_at = rows[0].key_expires_at
        if expires_at is not None:
            # The driver's value (naive on SQLite): read as the column type would.
            expires_at = _as_utc(expires_at)
            if expires_at <= now:
                raise EnrolmentExpired(
                    f"your single sign-on enrolment of key {signer.fingerprint} ended at "
                    f"{expires_at.isoformat().replace('+00:00', 'Z')}; run `jit-ssh sso login`",
                    field=rs.HEADER_SIGNATURE,
                )
        _record_nonce(s, call, now=now, max_clock_skew=max_clock_skew)
    key = SigningKey(
        fingerprint=signer.fingerprint, source=str(rows[0].key_source), expires_at=expires_at
    )
    return _detached_user(rows), key


def _as_utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _detached_user(rows: Sequence[Row[tuple[object, ...]]]) -> User:
    """The :class:`User` (with groups and roles) from the rows of ``_ACCOUNT``,
    as if loaded by a session now closed: built from the row, without the
    ORM's loading machinery (which costs more than the query)."""
    first = rows[0]
    account = User(**{k: getattr(first, k) for k in _USER_COLUMNS})
    account.groups = [
        UserGroup(user_id=account.id, name=n) for n in sorted({r.group_name for r in rows} - {None})
    ]
    account.roles = [
        UserRole(user_id=account.id, role=n) for n in sorted({r.role_name for r in rows} - {None})
    ]
    for obj in (account, *account.groups, *account.roles):
        make_transient_to_detached(obj)
    return account
