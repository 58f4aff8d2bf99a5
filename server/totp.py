"""Time-based one-time passwords (RFC 6238) for approvers' web logins: standard library only.

Codes are 6 digits, HMAC-SHA1, 30 second steps: what every authenticator app
(and ``oathtool --totp -b SECRET``) computes from a base32 secret. A code from
the step before or after the server's is accepted (a clock skew of up to 30 s
either way), and never the same step twice (RFC 6238 section 5.2: the
server keeps the last accepted step on the user row).

An admin turns it on for a user (``jit-ssh admin user totp NAME``), which
prints the secret and an ``otpauth://`` URI for the user's authenticator app;
from then on the web login asks for a code after the password.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import struct
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from sqlalchemy import select

if TYPE_CHECKING:
    from server.services import Service

__all__ = [
    "STEP_SECONDS",
    "DIGITS",
    "new_secret",
    "hotp",
    "totp",
    "time_step",
    "verify",
    "provisioning_uri",
    "set_totp",
]

STEP_SECONDS = 30
DIGITS = 6
#: Steps accepted either side of the server's own (RFC 6238 section 5.2 recommends one).
WINDOW = 1


def new_secret() -> str:
    """A fresh 160-bit secret (RFC 4226 recommends 160 bits), base32 without padding."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def _key(secret: str) -> bytes:
    s = secret.strip().replace(" ", "").upper()
    try:
        return base64.b32decode(s + "=" * (-len(s) % 8))
    except (ValueError, TypeError):
        raise ValueError("the TOTP secret must be base32") from None


def hotp(key: bytes, counter: int, *, digits: int = DIGITS, algorithm: str = "sha1") -> str:
    """RFC 4226: HMAC the 8-byte big-endian counter, take 31 bits at the offset the last nibble names."""
    mac = hmac.new(key, struct.pack(">Q", counter), algorithm).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def time_step(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def totp(secret: str, now: datetime) -> str:
    """The code an authenticator app shows at ``now`` for ``secret``."""
    return hotp(_key(secret), time_step(now))


def verify(secret: str, code: object, now: datetime, *, last_step: int | None = None) -> int | None:
    """The time step ``code`` matches (to store as the new ``last_step``), or None.

    Steps at or before ``last_step`` are never accepted, so a code that was
    used once (or an older one) cannot be replayed.
    """
    if not isinstance(code, str):
        return None
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    key = _key(secret)
    now_step = time_step(now)
    for step in range(now_step - WINDOW, now_step + WINDOW + 1):
        if last_step is not None and step <= last_step:
            continue
        # Compare in constant time; try every step in the window either way.
        if hmac.compare_digest(hotp(key, step), code):
            return step
    return None


def provisioning_uri(secret: str, user: str, *, issuer: str = "jit-ssh") -> str:
    """The ``otpauth://`` URI authenticator apps import (as a QR code or pasted)."""
    label = quote(f"{issuer}:{user}", safe=":@")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        }
    )
    return f"otpauth://totp/{label}?{query}"


def set_totp(
    service: Service, name: str, *, enabled: bool = True, actor: str = "admin-cli"
) -> str | None:
    """Turn TOTP on (a fresh secret, returned) or off for user ``name``.

    Either way every web session of that user ends (the session's auth stamp
    covers the secret) and an audit event records it; the secret itself is
    never written to the audit log.
    """
    from server.db import transaction
    from server.errors import NotFound
    from server.models import User

    secret = new_secret() if enabled else None
    now = service.now()
    with transaction(service.sessions) as s:
        user = s.execute(
            select(User).where(User.name == name).with_for_update(of=User)
        ).scalar_one_or_none()
        if user is None:
            raise NotFound(f"no user {name!r}", field="name")
        user.totp_secret = secret
        user.totp_last_step = None
        service.audit.record(
            s,
            type="user.totp_set" if enabled else "user.totp_removed",
            now=now,
            actor=actor,
            data={"user": name},
        )
    return secret
