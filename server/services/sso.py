"""Single sign-on flows: a browser's web login, and the CLI's key enrolment (loopback
redirect or device grant), from the flow's start to the user and key rows they write.

Every flow is a row of ``sso_flows``, keyed by the SHA-256 of its id, which is also the
OAuth ``state``. The provider is called outside any transaction (SQLite's transactions
hold the database's write lock), so a flow moves in short transactions, each taking the
flow's row lock first:

    begin_web / begin_cli        a row with a fresh state, nonce and PKCE verifier (S256);
                                 web: the browser goes to the provider's authorize URL;
                                 cli: to this server's confirmation page first
    open_cli                     cli: "Continue" on the confirmation page, once (``opened_at``):
                                 the browser gets the state and goes to the provider
    begin_device                 the provider's device authorization, kept on the row
    complete_callback            the provider sent the browser back: the flow is CLAIMED
                                 (``used_at``, once; a replayed state finds it taken), then
                                 the code is exchanged and the ID token checked (nonce
                                 included), then the user is signed in: web, into a web
                                 session; cli, a one-time finish code for the loopback
    finish_cli                   the CLI redeems the finish code, signed by the flow's key:
                                 the key is enrolled (once: ``done_at``)
    poll_device                  the CLI polls, signed by the flow's key; the provider's
                                 token signs the user in and enrols the key in one go

Signing in finds the user by their provider identity (``sso_subject``, the SHA-256 of
issuer and ``sub``), else by name when that user has no provider identity yet (linked),
else creates them; a name held by another identity is refused. The user's groups become
the claim's (``groups_source`` "sso"), a change audited as ``user.groups_changed``. Each
step is one transaction with its audit events. Refusals are errors with stable codes
(``server.errors``); the views audit them as ``sso.refused``, counted and capped as failed
authentications are (``server.auth.record_failure``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urlsplit

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ca import parse_public_key
from ca.errors import JitSshError
from server.db import CommitThenRaise, transaction
from server.errors import (
    BadSignature,
    InvalidInput,
    InvalidState,
    KeyRevoked,
    NotFound,
    SsoBadClaim,
    SsoBusy,
    SsoDenied,
    SsoFlowExpired,
    SsoFlowUnknown,
    SsoNameTaken,
    SsoRedirectRefused,
    UserDisabled,
)
from server.models import (
    GroupsSource,
    KeySource,
    Role,
    SshKey,
    SsoFlow,
    SsoFlowKind,
    User,
    UserGroup,
    UserRole,
)

if TYPE_CHECKING:
    from server.services import Service
    from server.sso.identity import SsoIdentity
    from server.sso.settings import SsoSettings

__all__ = [
    "FLOW_LIFETIME",
    "SsoDenied",
    "SsoService",
    "OidcProviderLike",
    "StartedFlow",
    "StartedDevice",
    "Enrolment",
    "PollWait",
    "WebSignIn",
    "CliSignIn",
    "CliConfirmation",
    "OpenedCli",
    "EnrolmentInfo",
    "list_enrolments",
    "revoke_enrolments",
    "check_flow_id",
    "check_open_token",
    "check_next_url",
    "check_loopback_port",
    "sso_subject",
]

#: A flow must be completed within this from its start.
FLOW_LIFETIME = timedelta(minutes=10)
#: Flows are kept this long past their end (then swept), for a look in the database.
_FLOW_RETENTION = timedelta(hours=1)
#: Sign-ins in progress at most (anyone may start one): past it, starts answer 429 sso_busy.
MAX_OPEN_FLOWS = 10_000
#: ``secrets.token_urlsafe(24)``: 32 URL-safe characters, 192 random bits.
_FLOW_ID = re.compile(r"[A-Za-z0-9_-]{32}")
#: ``secrets.token_urlsafe(32)``: 43 URL-safe characters.
_FINISH_CODE = re.compile(r"[A-Za-z0-9_-]{43}")
#: The token of a cli flow's confirmation page (``/sso/cli/<token>``): as a finish code.
_OPEN_TOKEN = _FINISH_CODE
# An authorization code as providers write them: printable ASCII (RFC 6749's VSCHAR).
_AUTH_CODE = re.compile(r"[\x20-\x7e]{1,2048}")
_ERROR_CODE = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]{1,128}")
MIN_LOOPBACK_PORT = 1024
MAX_NEXT_URL = 2000
#: The device grant's poll interval when the provider names none (RFC 8628, 3.2).
_DEFAULT_INTERVAL = 5
_MAX_INTERVAL = 60


class OidcProviderLike(Protocol):
    """What the flows use of :class:`server.sso.oidc.OidcProvider`."""

    def authorization_url(
        self, state: str, nonce: str, code_challenge: str, redirect_uri: str
    ) -> str: ...

    def exchange_code(self, code: str, code_verifier: str, redirect_uri: str) -> Any: ...

    def device_authorization(self) -> Any: ...

    def poll_device_token(self, device_code: str) -> Any: ...

    def validate_id_token(self, raw: str, *, nonce: str | None, now: datetime) -> Any: ...


@dataclass(frozen=True)
class StartedFlow:
    flow: str
    authorize_url: str
    expires_at: datetime


@dataclass(frozen=True)
class StartedDevice:
    flow: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: int
    expires_at: datetime


@dataclass(frozen=True)
class Enrolment:
    """A key enrolled by signing in (the finish answer)."""

    user: str
    groups: tuple[str, ...]
    groups_source: str
    fingerprint: str
    #: None when the key was already an admin's enrolment (which does not expire).
    expires_at: datetime | None


@dataclass(frozen=True)
class PollWait:
    """The device grant is not done yet: poll again after ``interval`` seconds."""

    status: str  # "pending" or "slow_down"
    interval: int


@dataclass(frozen=True)
class WebSignIn:
    """A web flow's callback: who signed in, where to go, and what started their session."""

    user: str
    next_url: str
    #: What the caller's ``start_session`` returned (in the same transaction).
    session: object


@dataclass(frozen=True)
class CliSignIn:
    """A cli flow's callback: where the browser goes next (the CLI's loopback listener),
    with a finish code, or with the refusal's code (``refusal``)."""

    redirect: str
    refusal: JitSshError | None = None


@dataclass(frozen=True)
class CliConfirmation:
    """What the confirmation page of a cli flow (``/sso/cli/<token>``) shows: the key a
    client asks to enrol, where and when it asked."""

    key_type: str
    fingerprint: str
    comment: str
    started_from: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class OpenedCli:
    """A cli flow continued in a browser: its state (to keep in that browser's session
    cookie) and the provider's authorization URL to send the browser to."""

    flow: str
    authorize_url: str


@dataclass(frozen=True)
class EnrolmentInfo:
    """One of a user's API keys, as ``jit-ssh admin user enrolments`` lists it."""

    fingerprint: str
    key_type: str
    comment: str
    source: str
    created_at: datetime
    expires_at: datetime | None
    groups: tuple[str, ...]
    #: "active", "expired" or "revoked".
    state: str


# ---------------------------------------------------------------------------- boundary checks


def check_flow_id(value: object, field: str = "flow") -> str:
    """A flow id (or OAuth state) as this server makes them, else :class:`SsoFlowUnknown`."""
    if not isinstance(value, str) or not _FLOW_ID.fullmatch(value):
        raise SsoFlowUnknown(f"{field} is not a sign-in flow this server started", field=field)
    return value


def check_open_token(value: object) -> str:
    """The token of a confirmation page's URL (``/sso/cli/<token>``), else
    :class:`SsoFlowUnknown`."""
    if not isinstance(value, str) or not _OPEN_TOKEN.fullmatch(value):
        raise SsoFlowUnknown(
            "this sign-in link is not one this server gave out; run `jit-ssh login` again",
            field="token",
        )
    return value


def _open_key(token: str) -> Fernet:
    # The token's 256 random bits, hashed with a label of their own (the row keeps the
    # token's plain SHA-256 to find the flow by).
    digest = hashlib.sha256(b"jit-ssh sso cli open state\n" + token.encode("ascii")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _seal_state(token: str, flow_id: str) -> str:
    return _open_key(token).encrypt(flow_id.encode("ascii")).decode("ascii")


def _unseal_state(token: str, sealed: str | None) -> str:
    try:
        value = _open_key(token).decrypt((sealed or "").encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError):
        raise SsoFlowUnknown("no such sign-in flow", field="token") from None
    return check_flow_id(value, "token")


def _check_finish_code(value: object) -> str:
    if not isinstance(value, str) or not _FINISH_CODE.fullmatch(value):
        raise SsoFlowUnknown("code is not this flow's finish code", field="code")
    return value


def check_next_url(value: object) -> str:
    """Where a web sign-in returns to: a path on this site, never another site."""
    if value is None or value == "":
        return "/"
    if not isinstance(value, str) or len(value) > MAX_NEXT_URL:
        raise SsoRedirectRefused("next must be a path on this site", field="next")
    if (
        not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value)
    ):
        raise SsoRedirectRefused(
            "next must be a path on this site (starting with one '/')", field="next"
        )
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        raise SsoRedirectRefused("next must be a path on this site", field="next")
    return value


def check_loopback_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SsoRedirectRefused(
            "loopback_port must be the port (a number) the CLI listens on", field="loopback_port"
        )
    if not MIN_LOOPBACK_PORT <= value <= 65535:
        raise SsoRedirectRefused(
            f"loopback_port must be between {MIN_LOOPBACK_PORT} and 65535, not {value}",
            field="loopback_port",
        )
    return value


def sso_subject(issuer: str, subject: str) -> str:
    """``users.sso_subject``: who a user is at the provider, as the SHA-256 of issuer and sub."""
    from server.sso.identity import subject_key

    return subject_key(issuer, subject)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("ascii")).hexdigest()


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _code_challenge(verifier: str) -> str:
    """PKCE S256 (RFC 7636, 4.2), through Authlib."""
    from server.sso.oidc import code_challenge

    return code_challenge(verifier)


def _key_revoked(fingerprint: str) -> KeyRevoked:
    return KeyRevoked(
        f"key {fingerprint} was removed on this server (by an admin, or its single sign-on "
        "enrolment was revoked) and cannot be enrolled again; sign in with a new key",
        field="public_key",
    )


def _id_token(tokens: Any) -> str:
    raw = getattr(tokens, "id_token", None)
    if not isinstance(raw, str) or not raw:
        from server.errors import SsoProviderError

        raise SsoProviderError("the provider's token answer has no ID token", field="id_token")
    return raw


# ---------------------------------------------------------------------------- the flows


class SsoService:
    """The flows, over the service's database and audit log and one OpenID provider."""

    def __init__(
        self,
        service: Service,
        settings: SsoSettings,
        provider: OidcProviderLike,
        *,
        base_url: str,
    ) -> None:
        self.service = service
        self.settings = settings
        self.provider = provider
        self.redirect_uri = settings.redirect_uri(base_url)
        self.base_url = base_url.rstrip("/")

    # ---- plumbing

    def _tx(self) -> Any:
        return transaction(self.service.sessions)

    def _record(
        self, s: Session, type: str, now: datetime, *, actor: str | None, data: dict[str, object]
    ) -> None:
        self.service.audit.record(s, type=type, now=now, actor=actor, data=data)

    @staticmethod
    def _lock_flow(s: Session, flow_id: str) -> SsoFlow | None:
        return s.execute(
            select(SsoFlow).where(SsoFlow.id_hash == _hash(flow_id)).with_for_update()
        ).scalar_one_or_none()

    def _new_flow(self, s: Session, now: datetime, **values: Any) -> str:
        # Anyone may start a sign-in: a bound on the flows in progress keeps a flood of
        # starts from filling the table (or calling the provider) without end.
        open_flows = s.execute(
            select(func.count()).select_from(SsoFlow).where(SsoFlow.expires_at >= now)
        ).scalar_one()
        if open_flows >= MAX_OPEN_FLOWS:
            s.execute(delete(SsoFlow).where(SsoFlow.expires_at < now))
            raise CommitThenRaise(
                SsoBusy(
                    f"more than {MAX_OPEN_FLOWS} sign-ins are in progress; try again in a minute",
                    field="flow",
                )
            )
        flow_id = secrets.token_urlsafe(24)
        s.add(
            SsoFlow(
                id_hash=_hash(flow_id),
                created_at=now,
                expires_at=values.pop("expires_at", now + FLOW_LIFETIME),
                **values,
            )
        )
        # Housekeeping while the transaction is open anyway: flows long over.
        if secrets.randbelow(16) == 0:
            s.execute(delete(SsoFlow).where(SsoFlow.expires_at < now - _FLOW_RETENTION))
        return flow_id

    def _key_of_call(self, public_key: object, signer_fingerprint: str) -> Any:
        if not isinstance(public_key, str):
            raise InvalidInput("public_key must be an OpenSSH public key line", field="public_key")
        key = parse_public_key(public_key, field="public_key")
        if not hmac.compare_digest(key.fingerprint, signer_fingerprint):
            raise BadSignature(
                "sign this call with the key in public_key (proof of possession)",
                field="public_key",
            )
        self._refuse_removed_key(key.fingerprint)
        return key

    def _refuse_removed_key(self, fingerprint: str) -> None:
        """A key an admin removed, or whose enrolment an admin revoked, is refused at the
        start, before the provider is asked (:meth:`_enrol` checks again at the end)."""
        with self._tx() as s:
            removed = s.execute(
                select(SshKey.id).where(
                    SshKey.fingerprint == fingerprint, SshKey.removed_at.is_not(None)
                )
            ).first()
        if removed is not None:
            raise _key_revoked(fingerprint)

    # ---- start

    def begin_web(self, next_url: object) -> StartedFlow:
        """A browser's sign-in: the flow row, and the provider URL to send the browser to."""
        target = check_next_url(next_url)
        return self._begin(SsoFlowKind.WEB, next_url=target)

    def begin_cli(
        self, public_key: object, loopback_port: object, *, signer: str, remote: str = ""
    ) -> StartedFlow:
        """The CLI's loopback sign-in for ``public_key`` (which signed the call: ``signer``),
        started from address ``remote``.

        ``authorize_url`` is this server's confirmation page ``{base_url}/sso/cli/<token>``,
        not the provider's: the person sees which key asks to be enrolled, and the browser
        that continues from there is the only one the callback accepts (login CSRF: a
        provider URL handed to someone else would sign them in for the starter's key)."""
        port = check_loopback_port(loopback_port)
        key = self._key_of_call(public_key, signer)
        from server.sso.oidc import new_code_verifier, new_nonce

        now = self.service.now()
        token = secrets.token_urlsafe(32)
        with self._tx() as s:
            flow_id = self._new_flow(
                s,
                now,
                kind=SsoFlowKind.CLI,
                nonce=new_nonce(),
                code_verifier=new_code_verifier(),
                loopback_port=port,
                public_key=key.openssh,
                key_fingerprint=key.fingerprint,
                open_token_hash=_hash(token),
                started_from=remote[:64],
            )
            row = s.get(SsoFlow, _hash(flow_id))
            assert row is not None
            row.open_state = _seal_state(token, flow_id)
        return StartedFlow(
            flow=flow_id,
            authorize_url=f"{self.base_url}/sso/cli/{token}",
            expires_at=now + FLOW_LIFETIME,
        )

    # ---- the confirmation page of a cli flow

    def _open_flow(self, s: Session, token: str, now: datetime, *, lock: bool) -> SsoFlow:
        """The cli flow of a confirmation page's token, if it can still be continued."""
        q = select(SsoFlow).where(SsoFlow.open_token_hash == _hash(token))
        flow = s.execute(q.with_for_update() if lock else q).scalar_one_or_none()
        if flow is None or flow.kind != SsoFlowKind.CLI:
            raise SsoFlowUnknown(
                "this sign-in link is not one this server gave out; run `jit-ssh login` again",
                field="token",
            )
        if flow.opened_at is not None:
            raise SsoFlowUnknown(
                "this sign-in link was already used in another browser; run `jit-ssh login` "
                "again (and stop the one waiting, with Ctrl-C)",
                field="token",
            )
        if flow.used_at is not None or flow.done_at is not None:
            raise SsoFlowUnknown(
                "this sign-in link was cancelled or has ended; run `jit-ssh login` again",
                field="token",
            )
        if now >= flow.expires_at:
            raise SsoFlowExpired(
                "this sign-in link expired (a sign-in must be done within 10 minutes); run "
                "`jit-ssh login` again",
                field="token",
            )
        return flow

    def cli_confirmation(self, token: object) -> CliConfirmation:
        """What the confirmation page shows (nothing changes)."""
        tok = check_open_token(token)
        with self._tx() as s:
            flow = self._open_flow(s, tok, self.service.now(), lock=False)
            key = parse_public_key(flow.public_key or "", field="public_key")
            return CliConfirmation(
                key_type=key.key_type,
                fingerprint=key.fingerprint,
                comment=key.comment,
                started_from=flow.started_from or "",
                created_at=flow.created_at,
                expires_at=flow.expires_at,
            )

    def open_cli(self, token: object) -> OpenedCli:
        """ "Continue" on the confirmation page: the first browser to continue claims the
        flow (``opened_at``, once); the caller keeps the state in that browser's session."""
        tok = check_open_token(token)
        now = self.service.now()
        with self._tx() as s:
            flow = self._open_flow(s, tok, now, lock=True)
            flow_id = _unseal_state(tok, flow.open_state)
            flow.opened_at = now
            nonce, verifier = flow.nonce or "", flow.code_verifier or ""
        url = self.provider.authorization_url(
            flow_id, nonce, _code_challenge(verifier), self.redirect_uri
        )
        return OpenedCli(flow=flow_id, authorize_url=url)

    def cancel_cli(self, token: object) -> None:
        """ "Cancel" on the confirmation page: the flow ends, nothing is enrolled; the CLI's
        wait ends with its time (nobody's finish code comes)."""
        tok = check_open_token(token)
        now = self.service.now()
        with self._tx() as s:
            flow = self._open_flow(s, tok, now, lock=True)
            flow.used_at = now
            flow.done_at = now

    def _begin(self, kind: SsoFlowKind, **values: Any) -> StartedFlow:
        now = self.service.now()
        from server.sso.oidc import new_code_verifier, new_nonce

        nonce = new_nonce()
        verifier = new_code_verifier()
        with self._tx() as s:
            flow_id = self._new_flow(
                s, now, kind=kind, nonce=nonce, code_verifier=verifier, **values
            )
        url = self.provider.authorization_url(
            flow_id, nonce, _code_challenge(verifier), self.redirect_uri
        )
        return StartedFlow(flow=flow_id, authorize_url=url, expires_at=now + FLOW_LIFETIME)

    def begin_device(self, public_key: object, *, signer: str) -> StartedDevice:
        """The CLI's headless sign-in (RFC 8628) for ``public_key``."""
        key = self._key_of_call(public_key, signer)
        grant = self.provider.device_authorization()
        now = self.service.now()
        interval = grant.interval if isinstance(grant.interval, int) else _DEFAULT_INTERVAL
        interval = min(max(interval, 1), _MAX_INTERVAL)
        lifetime = FLOW_LIFETIME
        if isinstance(grant.expires_in, int) and 0 < grant.expires_in:
            lifetime = min(lifetime, timedelta(seconds=grant.expires_in))
        expires_at = now + lifetime
        with self._tx() as s:
            flow_id = self._new_flow(
                s,
                now,
                kind=SsoFlowKind.DEVICE,
                public_key=key.openssh,
                key_fingerprint=key.fingerprint,
                device_code=grant.device_code,
                poll_interval=interval,
                expires_at=expires_at,
            )
        return StartedDevice(
            flow=flow_id,
            user_code=grant.user_code,
            verification_uri=grant.verification_uri,
            verification_uri_complete=grant.verification_uri_complete,
            interval=interval,
            expires_at=expires_at,
        )

    # ---- the browser comes back

    def complete_callback(
        self,
        *,
        state: object,
        code: object,
        error: object = None,
        issuer: object = None,
        browser_state: object = None,
        start_session: Callable[[Session, User, datetime], object] | None = None,
    ) -> WebSignIn | CliSignIn:
        """The provider's redirect back (``/sso/callback``), for a web or a cli flow.

        ``browser_state``: the state this browser holds (its pre-login cookie): a web
        flow completes only in the browser that started it, a cli flow only in the one
        that continued from its confirmation page. ``start_session(s, user,
        now)``: starts the web session, in the sign-in's transaction. Raises for a
        refused web flow; a refused cli flow answers a :class:`CliSignIn` to the
        loopback with the refusal's code instead (the CLI says what went wrong).
        """
        flow_id = check_flow_id(state, "state")
        now = self.service.now()
        with self._tx() as s:
            flow = self._lock_flow(s, flow_id)
            if flow is None or flow.kind == SsoFlowKind.DEVICE:
                raise SsoFlowUnknown("no such sign-in flow", field="state")
            if flow.used_at is not None:
                raise SsoFlowUnknown(
                    "this sign-in link is no longer valid: it was already used once (a replayed "
                    "state); start again",
                    field="state",
                )
            kind = SsoFlowKind(flow.kind)
            # Both kinds complete only in the browser holding the state: a web flow's
            # started it (/sso/login), a cli flow's continued from its confirmation page.
            # A foreign browser changes nothing: the flow stays its own browser's.
            bound = isinstance(browser_state, str) and hmac.compare_digest(browser_state, flow_id)
            if kind == SsoFlowKind.WEB and not bound:
                raise SsoFlowUnknown(
                    "this sign-in was not started in this browser; start again from the login page",
                    field="state",
                )
            if kind == SsoFlowKind.CLI and not (bound and flow.opened_at is not None):
                raise SsoFlowUnknown(
                    "this sign-in was not continued from jit-ssh's confirmation page in this "
                    "browser; open the link `jit-ssh login` printed",
                    field="state",
                )
            port = flow.loopback_port
            nonce, verifier = flow.nonce or "", flow.code_verifier or ""
            # Claimed, once, before the provider is asked: whatever follows, this
            # state is spent.
            flow.used_at = now
            refusal: JitSshError | None = None
            if now >= flow.expires_at:
                refusal = SsoFlowExpired(
                    "this sign-in took longer than 10 minutes; start again", field="state"
                )
            elif error is not None:
                text = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "error"
                refusal = SsoDenied(f"the provider refused the sign-in: {text}", field="error")
            elif issuer is not None and issuer != self.settings.issuer:
                # RFC 9207: an authorization response names its issuer; another one's
                # response (a mix-up) is refused.
                from server.errors import SsoTokenInvalid

                refusal = SsoTokenInvalid(
                    "the authorization response names another issuer", field="iss"
                )
            elif not isinstance(code, str) or not _AUTH_CODE.fullmatch(code):
                refusal = InvalidInput("the provider's answer has no usable code", field="code")
            if refusal is not None:
                if kind == SsoFlowKind.CLI:
                    assert port is not None
                    return CliSignIn(
                        redirect=self._loopback(port, flow_id, error=refusal.code), refusal=refusal
                    )
                raise CommitThenRaise(refusal)
        assert isinstance(code, str)
        try:
            tokens = self.provider.exchange_code(code, verifier, self.redirect_uri)
            claims = self.provider.validate_id_token(
                _id_token(tokens), nonce=nonce, now=self.service.now()
            )
            identity = self._identity(claims)
            if kind == SsoFlowKind.WEB:
                return self._web_sign_in(flow_id, identity, start_session)
            return self._cli_signed_in(flow_id, identity)
        except JitSshError as e:
            if kind == SsoFlowKind.CLI:
                assert port is not None
                return CliSignIn(redirect=self._loopback(port, flow_id, error=e.code), refusal=e)
            raise

    def _identity(self, claims: Any) -> SsoIdentity:
        from server.sso.identity import identity_from_claims

        return identity_from_claims(claims, self.settings)

    @staticmethod
    def _loopback(port: int, flow_id: str, **query: str) -> str:
        # Only ever this host and path: the port was checked at the start.
        return f"http://127.0.0.1:{port}/callback?" + urlencode({"flow": flow_id, **query})

    def _web_sign_in(
        self,
        flow_id: str,
        identity: SsoIdentity,
        start_session: Callable[[Session, User, datetime], object] | None,
    ) -> WebSignIn:
        now = self.service.now()
        with self._tx() as s:
            flow = self._lock_flow(s, flow_id)
            if flow is None or flow.done_at is not None:
                raise SsoFlowUnknown("no such sign-in flow", field="state")
            user = self._sign_in(s, identity, SsoFlowKind.WEB, now)
            flow.user_id = user.id
            flow.done_at = now
            started = start_session(s, user, now) if start_session is not None else None
            return WebSignIn(user=user.name, next_url=flow.next_url or "/", session=started)

    def _cli_signed_in(self, flow_id: str, identity: SsoIdentity) -> CliSignIn:
        now = self.service.now()
        finish = secrets.token_urlsafe(32)
        with self._tx() as s:
            flow = self._lock_flow(s, flow_id)
            if flow is None or flow.done_at is not None or flow.loopback_port is None:
                raise SsoFlowUnknown("no such sign-in flow", field="state")
            user = self._sign_in(s, identity, SsoFlowKind.CLI, now)
            flow.user_id = user.id
            flow.finish_code_hash = _hash(finish)
            return CliSignIn(redirect=self._loopback(flow.loopback_port, flow_id, code=finish))

    # ---- the CLI finishes

    def finish_cli(self, flow_id: object, code: object, *, signer: str) -> Enrolment:
        """Enrol the cli flow's key, for the user its callback signed in. Once; only with
        the finish code, and only in a call signed by the key that started the flow."""
        fid = check_flow_id(flow_id)
        finish = _check_finish_code(code)
        now = self.service.now()
        with self._tx() as s:
            flow = self._lock_flow(s, fid)
            if (
                flow is None
                or flow.kind != SsoFlowKind.CLI
                or flow.finish_code_hash is None
                or flow.done_at is not None
                or flow.user_id is None
                or not hmac.compare_digest(flow.finish_code_hash, _hash(finish))
                or not hmac.compare_digest(flow.key_fingerprint or "", signer)
            ):
                raise SsoFlowUnknown(
                    "no sign-in flow of this key waits for this code (each code is used once)",
                    field="flow",
                )
            if now >= flow.expires_at:
                flow.done_at = now
                raise CommitThenRaise(
                    SsoFlowExpired(
                        "this sign-in took longer than 10 minutes; start again", field="flow"
                    )
                )
            flow.done_at = now
            user = s.execute(
                select(User).where(User.id == flow.user_id).with_for_update(of=User)
            ).scalar_one()
            if user.disabled:
                raise UserDisabled(f"user {user.name!r} is disabled", field="user")
            return self._enrol(s, user, flow, now)

    # ---- the device grant

    def poll_device(self, flow_id: object, *, signer: str) -> Enrolment | PollWait:
        """One poll of a device flow: wait (pending, slow_down) or the enrolment, once."""
        fid = check_flow_id(flow_id)
        now = self.service.now()
        with self._tx() as s:
            flow = self._lock_flow(s, fid)
            if (
                flow is None
                or flow.kind != SsoFlowKind.DEVICE
                or flow.used_at is not None
                or flow.done_at is not None
                or not hmac.compare_digest(flow.key_fingerprint or "", signer)
            ):
                raise SsoFlowUnknown("no device sign-in of this key is in progress", field="flow")
            if now >= flow.expires_at:
                flow.used_at = now
                raise CommitThenRaise(
                    SsoFlowExpired(
                        "the device code expired before the sign-in; start again", field="flow"
                    )
                )
            interval = flow.poll_interval or _DEFAULT_INTERVAL
            if flow.polled_at is not None and now < flow.polled_at + timedelta(seconds=interval):
                # Faster than the provider allows: not passed on.
                return PollWait("slow_down", interval)
            flow.polled_at = now
            device_code = flow.device_code or ""
        try:
            answer = self.provider.poll_device_token(device_code)
        except JitSshError as e:
            self._spend_unless_transient(fid, e)
            raise
        if not hasattr(answer, "id_token") and hasattr(answer, "slow_down"):
            if answer.slow_down:
                with self._tx() as s:
                    flow = self._lock_flow(s, fid)
                    if flow is not None:
                        # RFC 8628, 3.5: each slow_down adds 5 seconds to the interval.
                        flow.poll_interval = min(
                            (flow.poll_interval or interval) + 5, _MAX_INTERVAL
                        )
                        interval = flow.poll_interval
                return PollWait("slow_down", interval)
            return PollWait("pending", interval)
        try:
            claims = self.provider.validate_id_token(
                _id_token(answer), nonce=None, now=self.service.now()
            )
            identity = self._identity(claims)
        except JitSshError as e:
            self._spend_unless_transient(fid, e)
            raise
        now = self.service.now()
        with self._tx() as s:
            flow = self._lock_flow(s, fid)
            if flow is None or flow.used_at is not None or flow.done_at is not None:
                raise SsoFlowUnknown("no device sign-in of this key is in progress", field="flow")
            flow.used_at = now
            flow.done_at = now
            user = self._sign_in(s, identity, SsoFlowKind.DEVICE, now)
            flow.user_id = user.id
            return self._enrol(s, user, flow, now)

    def _spend_unless_transient(self, flow_id: str, err: JitSshError) -> None:
        """A refused answer ends the flow (a provider out of reach does not: poll again)."""
        from server.errors import SsoProviderError

        if type(err) is SsoProviderError:
            return
        now = self.service.now()
        with self._tx() as s:
            flow = self._lock_flow(s, flow_id)
            if flow is not None and flow.used_at is None:
                flow.used_at = now

    # ---- users, groups, keys

    def _sign_in(self, s: Session, identity: SsoIdentity, kind: SsoFlowKind, now: datetime) -> User:
        """Find (or link, or create) the user of ``identity``, refresh their groups from the
        claim, and record the sign-in: in ``s``, with the audit events."""
        settings = self.settings
        subject = sso_subject(identity.issuer, identity.subject)
        user = s.execute(
            select(User).where(User.sso_subject == subject).with_for_update(of=User)
        ).scalar_one_or_none()
        if user is None:
            user = s.execute(
                select(User).where(User.name == identity.name).with_for_update(of=User)
            ).scalar_one_or_none()
            if user is not None:
                if user.sso_subject is not None:
                    raise SsoBadClaim(
                        f"the user name {identity.name!r} belongs to another single sign-on "
                        "identity; ask an admin",
                        field=settings.username_claim,
                    )
                self._may_link(user, settings.username_claim)
                user.sso_subject = subject
                self._record(
                    s,
                    "user.sso_linked",
                    now,
                    actor=user.name,
                    data={"user": user.name, "issuer": identity.issuer},
                )
            else:
                user = self._create(s, identity, subject, now)
        if user.disabled:
            raise UserDisabled(f"user {user.name!r} is disabled", field="user")
        # Only an email the provider verified is kept: Slack (and anything else) names users by
        # it. One no longer verified is forgotten rather than kept from an earlier sign-in.
        if user.email != _verified_email(identity):
            user.email = _verified_email(identity)
        if settings.groups_claim:
            self._set_groups(s, user, identity, now)
            if settings.approver_groups:
                self._set_approver_role(s, user, identity, now)
        self._record(
            s,
            "sso.signed_in",
            now,
            actor=user.name,
            data={
                "user": user.name,
                "kind": str(kind),
                "issuer": identity.issuer,
                "groups": list(user.group_names),
            },
        )
        return user

    def _may_link(self, user: User, claim: str) -> None:
        """Whether a first sign-in may take over the local user of the same name. A name at
        the provider is often chosen by its holder (``preferred_username`` in Keycloak, Entra
        ID, Auth0): linking by it would hand anyone who picks "root-admin" that account. So
        only with ``link_by_name``, and never an admin or a break-glass admin."""
        settings = self.settings
        if not settings.link_by_name:
            raise SsoNameTaken(
                f"{user.name!r} is a local jit-ssh user, not linked to a single sign-on identity: "
                "an admin may allow linking local users at their first sign-in "
                "([sso] link_by_name = true), or rename the local user",
                field=claim,
            )
        if user.name in settings.break_glass_admins or user.has_role(Role.ADMIN):
            raise SsoNameTaken(
                f"{user.name!r} is a local admin: admins are never linked to a single sign-on "
                "identity by name; sign in as another user, or ask another admin",
                field=claim,
            )

    def _create(self, s: Session, identity: SsoIdentity, subject: str, now: datetime) -> User:
        user = User(
            name=identity.name,
            disabled=False,
            password_hash=None,
            failed_logins=0,
            created_at=now,
            groups_source=GroupsSource.LOCAL,
            email=_verified_email(identity),
            sso_subject=subject,
        )
        user.groups = []
        # As `jit-ssh admin user add` gives by default; approver comes from approver_groups.
        user.roles = [UserRole(role=Role.REQUESTER.value)]
        s.add(user)
        try:
            with s.begin_nested():
                s.flush()
        except IntegrityError:
            # A concurrent first sign-in of the same name or identity won the insert.
            raise SsoBadClaim(
                f"the user {identity.name!r} was created at this moment by another sign-in; "
                "sign in again",
                field=self.settings.username_claim,
            ) from None
        self._record(
            s,
            "user.created",
            now,
            actor=None,
            data={
                "user": user.name,
                "source": "sso",
                "issuer": identity.issuer,
                "roles": [Role.REQUESTER.value],
            },
        )
        return user

    def _set_groups(self, s: Session, user: User, identity: SsoIdentity, now: datetime) -> None:
        """The user's groups become the claim's (REPLACED, not merged)."""
        before = list(user.group_names)
        after = sorted(set(identity.groups))
        was = user.groups_source
        if before == after and was == GroupsSource.SSO:
            return
        keep = {g.name for g in user.groups} & set(after)
        user.groups = [g for g in user.groups if g.name in keep] + [
            UserGroup(name=g) for g in after if g not in keep
        ]
        user.groups_source = GroupsSource.SSO
        data: dict[str, object] = {
            "user": user.name,
            "before": before,
            "after": after,
            "source": "sso",
            "issuer": identity.issuer,
        }
        if was != GroupsSource.SSO:
            data["before_source"] = str(was)
        self._record(s, "user.groups_changed", now, actor=user.name, data=data)

    def _set_approver_role(
        self, s: Session, user: User, identity: SsoIdentity, now: datetime
    ) -> None:
        """With ``approver_groups`` set, the approver role follows the provider's groups: given
        at a sign-in in one of them, taken away at a sign-in in none. Admin is never touched."""
        before = list(user.role_names)
        want = bool(set(user.group_names) & set(self.settings.approver_groups))
        has = Role.APPROVER.value in before
        if want == has:
            return
        if want:
            user.roles = [*user.roles, UserRole(role=Role.APPROVER.value)]
        else:
            user.roles = [r for r in user.roles if r.role != Role.APPROVER.value]
        self._record(
            s,
            "user.roles_changed",
            now,
            actor=user.name,
            data={
                "user": user.name,
                "before": before,
                "after": sorted(r.role for r in user.roles),
                "source": "sso",
                "issuer": identity.issuer,
            },
        )

    def _enrol(self, s: Session, user: User, flow: SsoFlow, now: datetime) -> Enrolment:
        """Enrol the flow's key for ``user`` until now + the enrolment lifetime."""
        assert flow.public_key is not None and flow.key_fingerprint is not None
        key = parse_public_key(flow.public_key, field="public_key")
        groups = user.group_names
        existing = s.execute(
            select(SshKey).where(SshKey.fingerprint == key.fingerprint).with_for_update()
        ).scalar_one_or_none()
        if existing is not None and existing.removed_at is not None:
            # Removed by an admin (or its enrolment revoked: a stolen laptop) since the
            # start: a sign-in never brings a removed key back. Nothing is written.
            raise _key_revoked(key.fingerprint)
        if existing is not None and existing.user_id != user.id:
            raise InvalidState(
                f"key {key.fingerprint} is enrolled for another user; sign in with a new key",
                field="public_key",
            )
        if existing is not None and existing.source == KeySource.ADMIN:
            # An admin enrolled this very key for this user: it stays theirs, without end.
            return Enrolment(
                user=user.name,
                groups=groups,
                groups_source=str(user.groups_source),
                fingerprint=key.fingerprint,
                expires_at=None,
            )
        expires_at = now + self.settings.enrolment_lifetime
        groups_json = json.dumps(list(groups))
        if existing is None:
            s.add(
                SshKey(
                    user_id=user.id,
                    fingerprint=key.fingerprint,
                    key_type=key.key_type,
                    public_key=key.openssh,
                    comment=key.comment[:255],
                    created_at=now,
                    source=KeySource.SSO,
                    expires_at=expires_at,
                    groups=groups_json,
                )
            )
        else:
            # Signing in again with the same key renews its enrolment (ended, not removed).
            existing.created_at = now
            existing.expires_at = expires_at
            existing.groups = groups_json
        self._record(
            s,
            "key.enrolled",
            now,
            actor=user.name,
            data={
                "user": user.name,
                "fingerprint": key.fingerprint,
                "source": "sso",
                "expires_at": _iso(expires_at),
                "groups": list(groups),
            },
        )
        return Enrolment(
            user=user.name,
            groups=groups,
            groups_source=str(user.groups_source),
            fingerprint=key.fingerprint,
            expires_at=expires_at,
        )


# ---------------------------------------------------------------------------- admin: enrolments


def _key_state(k: SshKey, now: datetime) -> str:
    if k.removed_at is not None:
        return "revoked"
    if k.expires_at is not None and k.expires_at <= now:
        return "expired"
    return "active"


def _groups_of(k: SshKey) -> tuple[str, ...]:
    try:
        value = json.loads(k.groups) if k.groups else []
    except ValueError:
        return ()
    return tuple(str(g) for g in value) if isinstance(value, list) else ()


def _info(k: SshKey, now: datetime) -> EnrolmentInfo:
    return EnrolmentInfo(
        fingerprint=k.fingerprint,
        key_type=k.key_type,
        comment=k.comment,
        source=str(k.source),
        created_at=k.created_at,
        expires_at=k.expires_at,
        groups=_groups_of(k),
        state=_key_state(k, now),
    )


def list_enrolments(service: Service, name: object) -> list[EnrolmentInfo]:
    """Every API key of user ``name`` (admin and single sign-on), oldest first."""
    now = service.now()
    with transaction(service.sessions) as s:
        user = (
            s.execute(select(User).where(User.name == name)).scalar_one_or_none()
            if isinstance(name, str)
            else None
        )
        if user is None:
            raise NotFound(f"no user {name!r}", field="name")
        rows = s.execute(
            select(SshKey).where(SshKey.user_id == user.id).order_by(SshKey.created_at, SshKey.id)
        ).scalars()
        return [_info(k, now) for k in rows]


def revoke_enrolments(
    service: Service,
    name: object,
    fingerprints: Sequence[str] | None,
    *,
    actor: str,
) -> list[EnrolmentInfo]:
    """End user ``name``'s single sign-on enrolments: those with ``fingerprints``, or every
    active one (``None``). Each is a ``key.removed`` event; with no usable key left the
    user's access ends as when their last key is removed (same transaction)."""
    now = service.now()
    with transaction(service.sessions) as s:
        user = service._lock_user(s, name)
        q = select(SshKey).where(
            SshKey.user_id == user.id,
            SshKey.source == KeySource.SSO,
            SshKey.removed_at.is_(None),
        )
        if fingerprints is not None:
            q = q.where(SshKey.fingerprint.in_(list(fingerprints)))
        rows = list(s.execute(q.order_by(SshKey.id).with_for_update()).scalars())
        if fingerprints is not None:
            missing = sorted(set(fingerprints) - {k.fingerprint for k in rows})
            if missing:
                raise NotFound(
                    f"user {user.name!r} has no single sign-on enrolment {missing[0]} to revoke",
                    field="fingerprint",
                )
        for k in rows:
            k.removed_at = now
            service._record(
                s,
                "key.removed",
                now,
                actor=actor,
                data={"user": user.name, "fingerprint": k.fingerprint, "source": "sso"},
            )
        s.flush()
        usable = s.scalar(
            select(func.count())
            .select_from(SshKey)
            .where(
                SshKey.user_id == user.id,
                SshKey.removed_at.is_(None),
                (SshKey.expires_at.is_(None)) | (SshKey.expires_at > now),
            )
        )
        if rows and not usable:
            service._end_access(s, user, now, actor=actor, why="single sign-on enrolment revoked")
        return [_info(k, now) for k in rows]


def _verified_email(identity: SsoIdentity) -> str | None:
    """The identity's email if the provider verified it (``email_verified``), else None."""
    return identity.email if identity.email_verified else None
