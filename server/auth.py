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
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker

from ca import request_signing as rs
from ca.sshsig import InvalidSignature, verify

from .db import transaction
from .errors import AuthFailed, BadSignature, ClockSkew, ReplayedNonce, UnknownKey, UserDisabled
from .models import Nonce, SshKey, User, UserGroup, UserRole

__all__ = ["authenticate", "nonce_expiry", "REPLICA_CLOCK_DRIFT"]

_MAX_SIG_HEADER = 24 * 1024
# Built once (building a statement costs about as much as running it).
# The key's user with its groups and roles, in one round trip (outer joins;
# a user has a handful of each).
_USERS = User.__table__
_KEYS = SshKey.__table__
_GROUPS = UserGroup.__table__
_ROLES = UserRole.__table__
_ACCOUNT = (
    select(_USERS, _GROUPS.c.name.label("group_name"), _ROLES.c.role.label("role_name"))
    .select_from(
        _KEYS.join(_USERS, _USERS.c.id == _KEYS.c.user_id)
        .outerjoin(_GROUPS, _GROUPS.c.user_id == _USERS.c.id)
        .outerjoin(_ROLES, _ROLES.c.user_id == _USERS.c.id)
    )
    .where(_KEYS.c.fingerprint == bindparam("fingerprint"), _KEYS.c.removed_at.is_(None))
)
_USER_COLUMNS = tuple(c.key for c in _USERS.columns)
# Core, on the session's connection: a replay hits the primary key.
_INSERT_NONCE = insert(Nonce.__table__)


#: How far apart two replicas' clocks may be. A nonce is kept this much longer
#: than its call can be accepted, because the replica that sweeps it may run
#: ahead of the one that would accept its replay.
REPLICA_CLOCK_DRIFT = timedelta(seconds=120)


def nonce_expiry(timestamp: int, max_clock_skew: int) -> datetime:
    """When a call's nonce may be forgotten: once the call itself can no longer be accepted.

    The timestamp check compares whole seconds (``int(now)``), so a call stamped
    ``t`` is accepted until just before ``t + max_clock_skew + 1``, whatever the
    moment the server first saw it: a call stamped ``max_clock_skew`` ahead of
    the server's clock stays acceptable for twice the skew. Counted from the
    call's own timestamp, then, not from its arrival, plus the replicas' drift.
    """
    return datetime.fromtimestamp(timestamp + max_clock_skew + 1, timezone.utc) + REPLICA_CLOCK_DRIFT


def authenticate(
    sessions: sessionmaker[Session],
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    headers: Mapping[str, str],
    now: datetime,
    max_clock_skew: int,
    on_failure: Callable[[AuthFailed, str | None], None] | None = None,
) -> User:
    """Return the calling :class:`User`, or raise an :class:`AuthFailed` subclass."""
    claimed = headers.get(rs.HEADER_USER)
    try:
        return _authenticate(sessions, method, path, query, body, headers, now, max_clock_skew)
    except AuthFailed as e:
        if on_failure is not None:
            # The audit log refuses an actor with control characters: pass on only a
            # name that could be a user's, or the failure would go unrecorded.
            on_failure(e, claimed if _plausible_user(claimed) else None)
        raise


def _plausible_user(user: Any) -> bool:
    return isinstance(user, str) and 0 < len(user) <= 64 and user.isprintable()


def _authenticate(
    sessions: sessionmaker[Session],
    method: str,
    path: str,
    query: str,
    body: bytes,
    headers: Mapping[str, str],
    now: datetime,
    max_clock_skew: int,
) -> User:
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
        message = rs.signing_message(method=method, path=path, query=query, body=body, timestamp=int(ts), nonce=nonce, user=user)
    except ValueError:
        raise AuthFailed("the call cannot be signed as sent", field="authorization") from None
    try:
        signer = verify(message, blob, namespace=rs.NAMESPACE)
    except InvalidSignature as e:
        raise BadSignature(f"bad signature: {e}", field=rs.HEADER_SIGNATURE) from None

    with transaction(sessions) as s:
        conn = s.connection()
        rows = conn.execute(_ACCOUNT, {"fingerprint": signer.fingerprint}).all()
        if not rows or rows[0].name != user:
            raise UnknownKey(f"key {signer.fingerprint} is not enrolled for user {user!r}", field=rs.HEADER_SIGNATURE)
        if rows[0].disabled:
            raise UserDisabled(f"user {user!r} is disabled", field=rs.HEADER_USER)
        try:
            conn.execute(
                _INSERT_NONCE,
                {"nonce": nonce, "key_fingerprint": signer.fingerprint,
                 "expires_at": nonce_expiry(int(ts), max_clock_skew)},
            )
        except IntegrityError:
            raise ReplayedNonce("this call was already made once (replayed nonce)", field=rs.HEADER_NONCE) from None
        # Forget nonces whose call can no longer pass the timestamp check on any
        # replica (see nonce_expiry). About one call in 256 sweeps, so no one
        # second makes every call wait on it.
        if secrets.randbelow(256) == 0:
            s.execute(delete(Nonce).where(Nonce.expires_at < now))
    return _detached_user(rows)


def _detached_user(rows: Any) -> User:
    """The :class:`User` (with groups and roles) from the rows of ``_ACCOUNT``,
    as if loaded by a session now closed: built from the row, without the
    ORM's loading machinery (which costs more than the query)."""
    first = rows[0]
    account = User(**{k: getattr(first, k) for k in _USER_COLUMNS})
    account.groups = [UserGroup(user_id=account.id, name=n) for n in sorted({r.group_name for r in rows} - {None})]
    account.roles = [UserRole(user_id=account.id, role=n) for n in sorted({r.role_name for r in rows} - {None})]
    for obj in (account, *account.groups, *account.roles):
        make_transient_to_detached(obj)
    return account


