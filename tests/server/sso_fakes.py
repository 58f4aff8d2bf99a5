"""A stand-in for the OpenID provider, for the fast (not integration) tests of the single
sign-on flows, and the app and callers around it.

Only the provider is faked (``server.sso.oidc.OidcProvider``'s shape): the database, the
audit log, the signatures and the whole service are the real ones. The fake plays its part
strictly: an authorization code is redeemed once, only with the redirect URI and the PKCE
verifier of its authorization request, and its ID token carries that request's nonce; a
device code is pending until the test approves it. The real provider's part is tested
against oidc-provider in tests/integration/.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import public_key_from_crypto
from server.errors import SsoFlowExpired, SsoProviderError, SsoTokenInvalid
from server.sso.oidc import DeviceGrant, DevicePending, IdTokenClaims, TokenSet, code_challenge
from server.sso.settings import SsoSettings
from tests.server.conftest import Clock, build_app
from tests.support import signed_headers

ISSUER = "https://idp.example.test"
BASE_URL = "https://jit.example.test"
REDIRECT_URI = f"{BASE_URL}/sso/callback"


def settings(**overrides: Any) -> SsoSettings:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": "jit-ssh",
        "display_name": "Okta",
        "enrolment_lifetime": timedelta(hours=12),
        # Most tests make local users first and sign them in: they opt in to linking, as an
        # admin would. The default (off) and its refusals have tests of their own.
        "link_by_name": True,
    }
    values.update(overrides)
    return SsoSettings(**values)


def claims_for(name: str, groups: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sub": f"sub-{name}",
        "preferred_username": name,
        "email": f"{name}@example.com",
        "email_verified": True,
        "groups": groups if groups is not None else [],
    }
    out.update(extra)
    return out


@dataclass
class _Authorization:
    state: str
    nonce: str
    challenge: str
    redirect_uri: str


@dataclass
class FakeProvider:
    """The provider's side of the flows, held to the rules a real one enforces."""

    clock: Clock
    authorizations: dict[str, _Authorization] = field(default_factory=dict)
    #: code -> (authorization, claims); a redeemed code is removed.
    codes: dict[str, tuple[_Authorization, dict[str, Any]]] = field(default_factory=dict)
    #: id token -> (claims, nonce)
    tokens: dict[str, tuple[dict[str, Any], str | None]] = field(default_factory=dict)
    #: device code -> claims once approved (None: pending); "denied" / "expired" strings too
    devices: dict[str, Any] = field(default_factory=dict)
    device_answers: list[str] = field(default_factory=list)
    exchanged: list[tuple[str, str]] = field(default_factory=list)
    polls: int = 0
    down: bool = False
    issuer: str = ISSUER

    # -- the provider's API, as OidcProvider has it

    def authorization_url(
        self, state: str, nonce: str, code_challenge: str, redirect_uri: str
    ) -> str:
        self.authorizations[state] = _Authorization(state, nonce, code_challenge, redirect_uri)
        return f"{ISSUER}/authorize?" + urlencode(
            {
                "response_type": "code",
                "client_id": "jit-ssh",
                "redirect_uri": redirect_uri,
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )

    def exchange_code(self, code: str, code_verifier: str, redirect_uri: str) -> TokenSet:
        if self.down:
            raise SsoProviderError("the provider is unreachable", field="token_endpoint")
        self.exchanged.append((code, redirect_uri))
        entry = self.codes.pop(code, None)
        if entry is None:
            raise SsoTokenInvalid("the provider refused the authorization code", field="code")
        auth, claims = entry
        if redirect_uri != auth.redirect_uri or code_challenge(code_verifier) != auth.challenge:
            raise SsoTokenInvalid("the provider refused the authorization code", field="code")
        token = self._token(claims, auth.nonce)
        return TokenSet(token, "at", "Bearer", 300, None)

    def device_authorization(self) -> DeviceGrant:
        if self.down:
            raise SsoProviderError("the provider is unreachable", field="device")
        device_code = secrets.token_urlsafe(16)
        self.devices[device_code] = None
        return DeviceGrant(
            device_code, "ABCD-EFGH", f"{ISSUER}/device", f"{ISSUER}/device?u=ABCD-EFGH", 600, 5
        )

    def poll_device_token(self, device_code: str) -> TokenSet | DevicePending:
        self.polls += 1
        if self.down:
            raise SsoProviderError("the provider is unreachable", field="token_endpoint")
        if self.device_answers:
            answer = self.device_answers.pop(0)
            if answer == "slow_down":
                return DevicePending(slow_down=True)
        state = self.devices[device_code]
        if state is None:
            return DevicePending(slow_down=False)
        if state == "denied":
            raise SsoTokenInvalid("the sign-in was denied at the provider", field="device_code")
        if state == "expired":
            raise SsoFlowExpired("the device code expired before the sign-in finished")
        if state == "used":
            raise SsoTokenInvalid("the device code was used", field="device_code")
        self.devices[device_code] = "used"
        return TokenSet(self._token(state, None), "at", "Bearer", 300, None)

    def validate_id_token(self, raw: str, *, nonce: str | None, now: datetime) -> IdTokenClaims:
        if raw not in self.tokens:
            raise SsoTokenInvalid("the ID token's signature does not verify", field="signature")
        claims, sent_nonce = self.tokens[raw]
        if nonce is not None and claims.get("nonce", sent_nonce) != nonce:
            raise SsoTokenInvalid("the ID token's nonce is not this sign-in's", field="nonce")
        return IdTokenClaims(
            issuer=self.issuer,
            subject=str(claims["sub"]),
            audience=("jit-ssh",),
            issued_at=now,
            expires_at=now + timedelta(minutes=5),
            nonce=nonce,
            claims=claims,
        )

    # -- the person at the provider

    def _token(self, claims: dict[str, Any], nonce: str | None) -> str:
        token = "tok-" + secrets.token_urlsafe(16)
        self.tokens[token] = (dict(claims), nonce)
        return token

    def sign_in(self, authorize_url: str, claims: dict[str, Any]) -> dict[str, str]:
        """The person signs in at ``authorize_url``: the query of the redirect back."""
        q = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        auth = self.authorizations[q["state"]]
        code = "code-" + secrets.token_urlsafe(16)
        self.codes[code] = (auth, claims)
        return {"code": code, "state": auth.state, "iss": ISSUER}

    def approve_device(self, claims: dict[str, Any] | str) -> None:
        (device_code,) = [c for c, v in self.devices.items() if v is None]
        self.devices[device_code] = claims


_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def cli_token(authorize_url: str) -> str:
    """The token of a loopback start's ``authorize_url``: this server's confirmation page
    ``{base_url}/sso/cli/<token>``, never the provider's URL."""
    parts = urlsplit(authorize_url)
    assert parts.path.startswith("/sso/cli/") and not parts.query, authorize_url
    return parts.path.rsplit("/", 1)[1]


def open_cli(sso: Any, started: Any) -> Any:
    """In the service: "Continue" on a cli flow's confirmation page (an ``OpenedCli``: the
    state the browser holds from then on, and the provider's URL)."""
    return sso.open_cli(cli_token(started.authorize_url))


def continue_cli(client: Any, authorize_url: str) -> str:
    """The person opens the CLI's ``authorize_url`` in browser ``client`` (a test client)
    and presses "Continue": the provider's authorization URL the browser is sent to.
    Only this browser can complete the flow's callback."""
    path = urlsplit(authorize_url).path
    page = client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)
    m = _CSRF.search(page.get_data(as_text=True))
    assert m, "no CSRF token on the confirmation page"
    r = client.post(path, data={"csrf_token": m.group(1)})
    assert r.status_code == 303, r.get_data(as_text=True)
    location: str = r.headers["Location"]
    assert location.startswith(f"{ISSUER}/authorize?"), location
    return location


def make_app(
    tmp_path: Path, database_url: str, clock: Clock, **sso: Any
) -> tuple[Any, FakeProvider]:
    base = sso.pop("base_url", BASE_URL)
    app = build_app(tmp_path, database_url, clock, base_url=base, sso=settings(**sso))
    fake = FakeProvider(clock)
    app.extensions["jit_ssh"].sso_holder.provider = fake
    return app, fake


@pytest.fixture
def sso_app(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[tuple[Any, FakeProvider]]:
    """The real app with an [sso] table, its provider this module's strict fake (import the
    fixtures ``sso_app``, ``app`` and ``fake`` into a test module to use them)."""
    app, fake = make_app(tmp_path, database_url, clock)
    yield app, fake
    app.extensions["jit_ssh.engine"].dispose()


@pytest.fixture
def app(sso_app: tuple[Any, FakeProvider]) -> Any:
    return sso_app[0]


@pytest.fixture
def fake(sso_app: tuple[Any, FakeProvider]) -> FakeProvider:
    return sso_app[1]


class KeyHolder:
    """Someone with a fresh key that is not enrolled (yet): signs with the user header ``-``."""

    def __init__(self, client: Any, clock: Clock) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.client = client
        self.clock = clock

    @property
    def public_openssh(self) -> str:
        return public_key_from_crypto(self.key.public_key(), "laptop").openssh

    @property
    def fingerprint(self) -> str:
        return public_key_from_crypto(self.key.public_key()).fingerprint

    def post(
        self, path: str, body: Any, *, user: str = "-", key: Any = None, nonce: str | None = None
    ) -> Any:
        data = json.dumps(body).encode()
        h = signed_headers(
            key or self.key,
            user,
            "POST",
            path,
            data,
            ts=int(self.clock().timestamp()),
            nonce=nonce,
        )
        return self.client.post(path, data=data, headers=h)

    def get(self, path: str, *, user: str) -> Any:
        h = signed_headers(self.key, user, "GET", path, b"", ts=int(self.clock().timestamp()))
        return self.client.get(path, headers=h)

    def start_loopback(self, port: int = 53682) -> Any:
        return self.post(
            "/v1/sso/start",
            {"public_key": self.public_openssh, "mode": "loopback", "loopback_port": port},
        )

    def start_device(self) -> Any:
        return self.post("/v1/sso/start", {"public_key": self.public_openssh, "mode": "device"})


def events(app: Any, type_: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from server.db import transaction
    from server.models import AuditEvent

    with transaction(app.extensions["jit_ssh"].service.sessions) as s:
        rows = s.execute(
            select(AuditEvent).where(AuditEvent.type == type_).order_by(AuditEvent.id)
        ).scalars()
        return [{"actor": r.actor, **json.loads(r.data)} for r in rows]


def loopback_query(location: str) -> dict[str, str]:
    parts = urlsplit(location)
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1", location
    assert parts.path == "/callback", location
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


def utc(t: str) -> datetime:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(UTC)
