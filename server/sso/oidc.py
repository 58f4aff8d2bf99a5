"""jit-ssh as an OpenID Connect relying party: discovery, JWKS, the authorization URL, the code
exchange, the device authorization grant (RFC 8628) and ID-token validation.

Libraries do the protocol: Authlib builds the authorization URL and the token requests (and
the PKCE S256 challenge); joserfc checks the ID token's signature and its registered claims.
This module decides what to trust. Everything the provider sends is hostile until checked, one
function per kind of answer (:func:`_check_metadata`, :func:`_check_jwks`,
:func:`_check_token_answer`, :func:`_check_device_answer`); a refusal is a
:class:`~server.errors.SsoProviderError` (502) whose ``field`` names the part at fault.
A token refused is a :class:`~server.errors.SsoTokenInvalid` (401) whose ``field`` names the
claim or header at fault (iss, aud, azp, exp, iat, nbf, nonce, sub, alg, kid, signature, token).

Fetching: httpx, with the configured timeout, at most :data:`MAX_DOCUMENT_BYTES` per answer,
redirects followed only within the same origin. Discovery and the JWKS are cached for
:data:`CACHE_SECONDS`; an ID token naming a ``kid`` the cached JWKS lacks refetches it once, and
at most once per :data:`JWKS_REFETCH_SECONDS` (a stream of tokens with made-up kids must not
turn jit-ssh into a load generator against the provider).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExceededSizeError,
    ExpiredTokenError,
    InvalidKeyCurveError,
    InvalidKeyIdError,
    InvalidKeyTypeError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
    UnsupportedKeyAlgorithmError,
    UnsupportedKeyUseError,
)
from joserfc.jwk import ECKey, JWKRegistry, Key, KeySet, OKPKey, RSAKey
from joserfc.jws import JWSRegistry, extract_compact

from server.errors import SsoFlowExpired, SsoProviderError, SsoTokenInvalid

from .settings import SsoSettings, is_loopback_http

__all__ = [
    "OidcProvider",
    "ProviderMetadata",
    "TokenSet",
    "DeviceGrant",
    "DevicePending",
    "IdTokenClaims",
    "ALLOWED_ALGORITHMS",
    "new_code_verifier",
    "code_challenge",
    "new_nonce",
    "MAX_DOCUMENT_BYTES",
    "MAX_ID_TOKEN_BYTES",
    "MAX_ID_TOKEN_AGE",
    "CACHE_SECONDS",
    "JWKS_REFETCH_SECONDS",
]

#: Asymmetric signatures only: never "none", never HS* (an HMAC "secret" an attacker can read
#: off the JWKS, the classic RS256/HS256 confusion).
ALLOWED_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_KEY_TYPE = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_ID_TOKEN_BYTES = 64 * 1024
#: An ID token is for signing in now: one issued longer ago than this is refused.
MAX_ID_TOKEN_AGE = timedelta(minutes=10)
CACHE_SECONDS = 3600
JWKS_REFETCH_SECONDS = 60
_MAX_REDIRECTS = 3
_MAX_LIST = 200
_MAX_KEYS = 100
_MIN_RSA_BITS = 2048
_MAX_TEXT = 4096
_VERIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def new_code_verifier() -> str:
    """A fresh PKCE code verifier (RFC 7636 section 4.1): 64 URL-safe characters."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier``."""
    if not 43 <= len(verifier) <= 128 or not set(verifier) <= _VERIFIER_CHARS:
        raise ValueError("code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~")
    return str(create_s256_code_challenge(verifier))


def new_nonce() -> str:
    """A fresh OpenID Connect nonce: 32 URL-safe characters."""
    return secrets.token_urlsafe(24)


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of the provider's discovery document jit-ssh uses, each checked."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    device_authorization_endpoint: str | None
    response_types_supported: tuple[str, ...]
    #: Empty when the document does not say (the provider may still support S256).
    code_challenge_methods_supported: tuple[str, ...]
    #: RFC 8414's default when absent: client_secret_basic.
    token_endpoint_auth_methods_supported: tuple[str, ...]
    id_token_signing_alg_values_supported: tuple[str, ...]
    grant_types_supported: tuple[str, ...]


@dataclass(frozen=True)
class TokenSet:
    """The token endpoint's answer (checked): the ID token still has to pass
    :meth:`OidcProvider.validate_id_token`."""

    id_token: str
    access_token: str
    token_type: str
    expires_in: int | None
    scope: str | None

    def __repr__(self) -> str:
        # Tokens are credentials: never in a log line or a traceback.
        return f"TokenSet(token_type={self.token_type!r}, expires_in={self.expires_in!r})"


@dataclass(frozen=True)
class DeviceGrant:
    """The device authorization endpoint's answer (RFC 8628 section 3.2), checked."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    #: Seconds.
    expires_in: int
    #: Seconds between polls.
    interval: int

    def __repr__(self) -> str:
        return (
            f"DeviceGrant(user_code={self.user_code!r}, verification_uri="
            f"{self.verification_uri!r}, expires_in={self.expires_in}, interval={self.interval})"
        )


@dataclass(frozen=True)
class DevicePending:
    """The user has not finished at the provider yet; ``slow_down``: poll 5 s less often."""

    slow_down: bool = False


@dataclass(frozen=True)
class IdTokenClaims:
    """A validated ID token: the registered claims jit-ssh checked, and all of them read-only."""

    issuer: str
    subject: str
    audience: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    nonce: str | None
    claims: Mapping[str, Any]


# -- checks of what the provider says -----------------------------------------------------------


def _refuse(field: str, message: str) -> SsoProviderError:
    return SsoProviderError(f"the OpenID provider's {field} {message}", field=field)


def _show(value: object) -> str:
    text = repr(value)
    return text[:80] + ("..." if len(text) > 80 else "")


def _endpoint(doc: Mapping[str, Any], field: str, *, required: bool = True) -> str | None:
    value = doc.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _refuse(field, "is missing" if value is None else f"is not a URL: {_show(value)}")
    return _check_url(field, value)


def _check_url(field: str, value: str) -> str:
    if len(value) > 2048 or any(c.isspace() or ord(c) < 0x20 for c in value):
        raise _refuse(field, f"is not a URL: {_show(value)}")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _refuse(field, f"is not a URL: {_show(value)}") from None
    if not host or parts.fragment or parts.username is not None:
        raise _refuse(field, f"is not a usable URL: {_show(value)}")
    if parts.scheme != "https" and not is_loopback_http(value):
        raise _refuse(field, f"must be https: {_show(value)}")
    return value


#: The latest instant a token may name (exp, iat): 9999-12-31, a datetime's own limit.
_MAX_INSTANT = 253402300799


def _instant(value: Any, field: str) -> datetime:
    """A NumericDate claim as a UTC datetime; one a datetime cannot hold (``exp: 1e300``) is a
    refused token, not an OverflowError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SsoTokenInvalid(f"the ID token's {field} is not a number", field=field)
    if not 0 <= value <= _MAX_INSTANT:
        raise SsoTokenInvalid(f"the ID token's {field} is not a plausible time", field=field)
    return datetime.fromtimestamp(value, UTC)


def _strings(doc: Mapping[str, Any], field: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    value = doc.get(field)
    if value is None:
        return default
    if (
        not isinstance(value, list)
        or len(value) > _MAX_LIST
        or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in value)
    ):
        raise _refuse(field, f"must be a list of strings, not {_show(value)}")
    return tuple(value)


def _check_metadata(doc: object, settings: SsoSettings) -> ProviderMetadata:
    """The discovery document (OpenID Connect Discovery 1.0 section 3), checked field by field."""
    if not isinstance(doc, dict):
        raise _refuse("discovery document", "is not a JSON object")
    issuer = doc.get("issuer")
    if not isinstance(issuer, str):
        raise _refuse("issuer", f"is missing from the discovery document ({_show(issuer)})")
    if issuer != settings.issuer:
        # Discovery section 4.3: exactly the configured issuer, or an ID token's "iss" could
        # name someone else's tenant at the same provider.
        raise _refuse(
            "issuer",
            f"is {_show(issuer)}, not the configured {settings.issuer!r} (they must match "
            "exactly, trailing '/' included)",
        )
    authorization = _endpoint(doc, "authorization_endpoint")
    token = _endpoint(doc, "token_endpoint")
    jwks = _endpoint(doc, "jwks_uri")
    device = _endpoint(doc, "device_authorization_endpoint", required=False)
    assert authorization is not None and token is not None and jwks is not None
    challenge = _strings(doc, "code_challenge_methods_supported")
    if challenge and "S256" not in challenge:
        raise _refuse(
            "code_challenge_methods_supported", f"lacks S256 (it says {_show(list(challenge))})"
        )
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=authorization,
        token_endpoint=token,
        jwks_uri=jwks,
        device_authorization_endpoint=device,
        response_types_supported=_strings(doc, "response_types_supported"),
        code_challenge_methods_supported=challenge,
        token_endpoint_auth_methods_supported=_strings(
            doc, "token_endpoint_auth_methods_supported", ("client_secret_basic",)
        ),
        id_token_signing_alg_values_supported=_strings(
            doc, "id_token_signing_alg_values_supported"
        ),
        grant_types_supported=_strings(
            doc, "grant_types_supported", ("authorization_code", "implicit")
        ),
    )


def _usable_key(data: object) -> Key | None:
    """One JWKS entry as a verification key, or None when jit-ssh would never verify with it
    (an encryption key, a symmetric key, a weak RSA key, a kind joserfc does not know)."""
    if not isinstance(data, dict):
        raise _refuse("jwks_uri", "serves a key that is not a JSON object")
    if data.get("kty") not in ("RSA", "EC", "OKP"):
        # "oct" above all: a symmetric key from a public document is no key at all.
        return None
    if "d" in data or "p" in data or "k" in data:
        raise _refuse("jwks_uri", f"publishes private key material (kid {_show(data.get('kid'))})")
    if data.get("use", "sig") != "sig":
        return None
    kid = data.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= 256):
        raise _refuse("jwks_uri", f"serves a key whose kid is not a string: {_show(kid)}")
    alg = data.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise _refuse("jwks_uri", f"serves a key whose alg is not a string: {_show(alg)}")
    if alg is not None and alg not in ALLOWED_ALGORITHMS:
        return None
    try:
        key = JWKRegistry.import_key(data)
    except (JoseError, ValueError, TypeError, KeyError):
        raise _refuse("jwks_uri", f"serves a key that does not load (kid {_show(kid)})") from None
    if key.is_private:
        raise _refuse("jwks_uri", f"publishes private key material (kid {_show(kid)})")
    if isinstance(key, RSAKey) and key.get_op_key("verify").key_size < _MIN_RSA_BITS:
        return None
    if isinstance(key, OKPKey) and key.curve_name not in ("Ed25519", "Ed448"):
        return None
    return key


def _check_jwks(doc: object) -> KeySet:
    """The JWKS (RFC 7517 section 5): the signing keys jit-ssh may verify with."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise _refuse("jwks_uri", 'serves no JSON object with a "keys" list')
    entries = doc["keys"]
    if len(entries) > _MAX_KEYS:
        raise _refuse("jwks_uri", f"serves {len(entries)} keys (at most {_MAX_KEYS})")
    keys = [k for k in (_usable_key(e) for e in entries) if k is not None]
    if not keys:
        raise _refuse("jwks_uri", "serves no key usable for an allowed signature algorithm")
    return KeySet(keys)


def _text(doc: Mapping[str, Any], field: str, limit: int = _MAX_TEXT) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value:
        raise _refuse(field, "is missing" if value is None else f"is not a string: {_show(value)}")
    if len(value) > limit or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise _refuse(field, f"is longer than {limit} characters or holds spaces or control ones")
    return value


def _seconds(
    doc: Mapping[str, Any], field: str, low: int, high: int, default: int | None = None
) -> int | None:
    value = doc.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(field, f"is not a whole number of seconds: {_show(value)}")
    if not low <= value <= high:
        raise _refuse(field, f"is {value} seconds (expected {low} to {high})")
    return value


def _check_token_answer(doc: object) -> TokenSet:
    """A successful token endpoint answer (RFC 6749 section 5.1, OpenID Connect Core 3.1.3.3)."""
    if not isinstance(doc, dict):
        raise _refuse("token answer", "is not a JSON object")
    token_type = doc.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise _refuse("token_type", f"is {_show(token_type)}, not Bearer")
    id_token = doc.get("id_token")
    if id_token is None:
        raise _refuse("id_token", "is missing from the token answer (is 'openid' a scope?)")
    id_token = _text(doc, "id_token", MAX_ID_TOKEN_BYTES)
    access_token = _text(doc, "access_token", MAX_ID_TOKEN_BYTES)
    scope = doc.get("scope")
    if scope is not None and (not isinstance(scope, str) or len(scope) > _MAX_TEXT):
        raise _refuse("scope", f"is not a string: {_show(scope)}")
    expires_in = _seconds(doc, "expires_in", 0, 10 * 365 * 86400)
    return TokenSet(id_token, access_token, token_type, expires_in, scope)


def _check_device_answer(doc: object) -> DeviceGrant:
    """The device authorization answer (RFC 8628 section 3.2)."""
    if not isinstance(doc, dict):
        raise _refuse("device authorization answer", "is not a JSON object")
    device_code = _text(doc, "device_code")
    user_code = doc.get("user_code")
    if (
        not isinstance(user_code, str)
        or not 0 < len(user_code) <= 64
        or any(not c.isprintable() for c in user_code)
    ):
        raise _refuse("user_code", f"is not a short printable code: {_show(user_code)}")
    # Google's endpoint says verification_url, the name of an earlier draft of RFC 8628.
    field = "verification_uri" if "verification_uri" in doc else "verification_url"
    verification = _endpoint(doc, field)
    assert verification is not None
    complete = _endpoint(doc, "verification_uri_complete", required=False)
    expires_in = _seconds(doc, "expires_in", 1, 3600)
    if expires_in is None:
        raise _refuse("expires_in", "is missing from the device authorization answer")
    interval = _seconds(doc, "interval", 1, 60, default=5)
    assert interval is not None
    return DeviceGrant(device_code, user_code, verification, complete, expires_in, interval)


def _oauth_error(doc: object) -> tuple[str, str]:
    """An error answer's (error, description), both cut short and printable."""
    if not isinstance(doc, dict):
        return "", ""
    error, description = doc.get("error"), doc.get("error_description")
    error = error if isinstance(error, str) else ""
    description = description if isinstance(description, str) else ""

    def clean(s: str, n: int) -> str:
        return "".join(c for c in s[:n] if c.isprintable())

    return clean(error, 64), clean(description, 200)


# -- the provider --------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    return p.scheme, (p.hostname or ""), p.port


class OidcProvider:
    """The configured OpenID provider, as jit-ssh talks to it.

    ``http``: the client to use (tests pass one with an ``httpx.MockTransport``); by default one
    of its own. ``clock``: the time for the caches and the JWKS refetch limit (token claims are
    checked against the ``now`` given to :meth:`validate_id_token`). Safe to share between
    threads: the caches are behind a lock.
    """

    def __init__(
        self,
        settings: SsoSettings,
        http: httpx.Client | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self._http = http if http is not None else httpx.Client()
        self._clock = clock
        self._lock = threading.Lock()
        self._metadata: ProviderMetadata | None = None
        self._metadata_at: datetime | None = None
        self._jwks: KeySet | None = None
        self._jwks_at: datetime | None = None
        self._jwks_tried_at: datetime | None = None
        #: The client authentication method the token endpoint accepted (see _token_call).
        self._auth_method: str | None = None
        self._timeout = httpx.Timeout(settings.http_timeout)
        registry = JWSRegistry(algorithms=list(ALLOWED_ALGORITHMS), strict_check_header=False)
        # Some providers put x5c chains or long kids in the header; the whole token is
        # bounded by MAX_ID_TOKEN_BYTES before joserfc sees it.
        registry.max_header_length = 8192
        registry.max_payload_length = MAX_ID_TOKEN_BYTES
        self._registry = registry

    # -- HTTP --

    def _request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        form: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, object]:
        """(status, parsed JSON or None) of one call, redirects followed within the origin."""
        sent = {"Accept": "application/json", **(headers or {})}
        if form is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                with self._http.stream(
                    method,
                    url,
                    content=form.encode() if form is not None else None,
                    headers=sent,
                    timeout=self._timeout,
                    follow_redirects=False,
                ) as r:
                    if r.is_redirect and method == "GET":
                        target = str(r.url.join(r.headers.get("location", "")))
                        if _origin(target) != _origin(url):
                            raise _refuse(what, f"redirects to another host ({_show(target)})")
                        url = target
                        continue
                    body = b""
                    for chunk in r.iter_bytes():
                        body += chunk
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise _refuse(what, f"answers more than {MAX_DOCUMENT_BYTES} bytes")
                    status = r.status_code
            except httpx.HTTPError as e:
                raise SsoProviderError(
                    f"cannot reach the OpenID provider's {what} {url} ({type(e).__name__}: {e})",
                    field=what,
                    unreachable=True,
                ) from None
            try:
                parsed: object = json.loads(body) if body else None
            except (ValueError, RecursionError):
                parsed = None
                if status == 200:
                    raise _refuse(what, f"answers HTTP 200 but not JSON ({url})") from None
            return status, parsed
        raise _refuse(what, f"redirects more than {_MAX_REDIRECTS} times")

    def _get_json(self, url: str, what: str) -> object:
        status, doc = self._request("GET", url, what)
        if status != 200:
            raise _refuse(what, f"answers HTTP {status} ({url})")
        return doc

    # -- discovery and keys --

    def _fresh(self, at: datetime | None, seconds: int) -> bool:
        return at is not None and timedelta(0) <= self._clock() - at < timedelta(seconds=seconds)

    def metadata(self) -> ProviderMetadata:
        """The provider's discovery document, checked and cached for :data:`CACHE_SECONDS`."""
        with self._lock:
            if self._metadata is not None and self._fresh(self._metadata_at, CACHE_SECONDS):
                return self._metadata
        doc = self._get_json(self.settings.discovery_url, "discovery document")
        metadata = _check_metadata(doc, self.settings)
        with self._lock:
            self._metadata, self._metadata_at = metadata, self._clock()
        return metadata

    def jwks(self, *, refresh: bool = False) -> KeySet:
        """The provider's signing keys, checked and cached for :data:`CACHE_SECONDS`.

        ``refresh``: fetch again now unless fetched within :data:`JWKS_REFETCH_SECONDS`."""
        with self._lock:
            if self._jwks is not None:
                if refresh:
                    # Counted from the last attempt, so a provider that fails is not asked
                    # again on every token either.
                    if self._fresh(self._jwks_at, JWKS_REFETCH_SECONDS) or self._fresh(
                        self._jwks_tried_at, JWKS_REFETCH_SECONDS
                    ):
                        return self._jwks
                elif self._fresh(self._jwks_at, CACHE_SECONDS):
                    return self._jwks
            self._jwks_tried_at = self._clock()
        keys = _check_jwks(self._get_json(self.metadata().jwks_uri, "jwks_uri"))
        with self._lock:
            self._jwks, self._jwks_at = keys, self._clock()
        return keys

    # -- the authorization code flow --

    def authorization_url(
        self, state: str, nonce: str, code_challenge: str, redirect_uri: str
    ) -> str:
        """Where to send the browser: the code flow with PKCE S256, ``state`` and ``nonce``."""
        for name, value in (("state", state), ("nonce", nonce)):
            if not isinstance(value, str) or not 16 <= len(value) <= 256:
                raise ValueError(f"{name} must be 16-256 characters")
        if len(code_challenge) != 43 or not set(code_challenge) <= _VERIFIER_CHARS:
            raise ValueError("code_challenge must be an S256 challenge (43 base64url characters)")
        return str(
            prepare_grant_uri(
                self.metadata().authorization_endpoint,
                self.settings.client_id,
                "code",
                redirect_uri=redirect_uri,
                scope=list(self.settings.scopes),
                state=state,
                nonce=nonce,
                code_challenge=code_challenge,
                code_challenge_method="S256",
            )
        )

    def _auth_methods(self, metadata: ProviderMetadata) -> list[str]:
        """The client authentication methods to try at the token endpoint, best first."""
        if self.settings.client_secret_file is None:
            return ["none"]
        if self._auth_method is not None:
            return [self._auth_method]
        supported = metadata.token_endpoint_auth_methods_supported
        methods: list[str] = [
            m for m in ("client_secret_basic", "client_secret_post") if m in supported
        ]
        if not methods:
            raise _refuse(
                "token_endpoint_auth_methods_supported",
                f"offers neither client_secret_basic nor client_secret_post "
                f"({_show(list(supported))})",
            )
        return methods

    def _token_call(self, url: str, what: str, form: str) -> tuple[int, object]:
        """POST ``form`` to ``url`` with the client's authentication.

        The discovery document lists the methods the provider supports, not the one this
        client was registered with: when it offers both and client_secret_basic is refused
        as invalid_client, client_secret_post is tried once, and the method that worked is
        kept. (The provider authenticates the client before it looks at a code, so the code
        is not used up by the first try.)"""
        methods = self._auth_methods(self.metadata())
        secret = self.settings.client_secret()
        status: int = 0
        doc: object = None
        for i, method in enumerate(methods):
            client_id, method_secret = self.settings.client_id, secret
            if method == "client_secret_basic":
                # RFC 6749 section 2.3.1: both are form-urlencoded before they are joined.
                client_id = quote(client_id, safe="")
                method_secret = quote(secret or "", safe="")
            _, headers, body = ClientAuth(client_id, method_secret, method).prepare(
                "POST", url, {}, form
            )
            status, doc = self._request("POST", url, what, form=body, headers=headers)
            if _oauth_error(doc)[0] == "invalid_client" and i + 1 < len(methods):
                continue
            if _oauth_error(doc)[0] != "invalid_client" and method != "none":
                self._auth_method = method
            break
        return status, doc

    def exchange_code(self, code: str, code_verifier: str, redirect_uri: str) -> TokenSet:
        """The tokens for an authorization ``code`` (the ID token is not validated yet)."""
        if not isinstance(code, str) or not 0 < len(code) <= _MAX_TEXT:
            raise SsoTokenInvalid("the authorization code is missing or too long", field="code")
        code_challenge(code_verifier)  # refuses a verifier that is not one
        url = self.metadata().token_endpoint
        form = prepare_token_request(
            "authorization_code", redirect_uri=redirect_uri, code=code, code_verifier=code_verifier
        )
        status, doc = self._token_call(url, "token_endpoint", form)
        if status != 200:
            error, description = _oauth_error(doc)
            if status == 400 and error == "invalid_grant":
                # Used before, expired, or issued for another redirect URI or verifier.
                raise SsoTokenInvalid(
                    f"the provider refused the authorization code ({description or error})",
                    field="code",
                )
            raise _refuse(
                "token_endpoint",
                f"answers HTTP {status} {error or ''} {description}".rstrip(),
            )
        return _check_token_answer(doc)

    # -- the device authorization grant (RFC 8628) --

    def device_authorization(self) -> DeviceGrant:
        """A device code and the user code to show; :class:`SsoProviderError` when the
        provider has no device endpoint."""
        metadata = self.metadata()
        url = metadata.device_authorization_endpoint
        if url is None:
            raise _refuse(
                "device_authorization_endpoint",
                "is missing: this provider offers no device sign-in (use the browser)",
            )
        form = urlencode({"scope": " ".join(self.settings.scopes)})
        status, doc = self._token_call(url, "device_authorization_endpoint", form)
        if status != 200:
            error, description = _oauth_error(doc)
            raise _refuse(
                "device_authorization_endpoint",
                f"answers HTTP {status} {error} {description}".rstrip(),
            )
        return _check_device_answer(doc)

    def poll_device_token(self, device_code: str) -> TokenSet | DevicePending:
        """One poll of the token endpoint for ``device_code`` (RFC 8628 section 3.4)."""
        if not isinstance(device_code, str) or not 0 < len(device_code) <= _MAX_TEXT:
            raise ValueError("device_code must be a string of at most 4096 characters")
        form = prepare_token_request(
            "urn:ietf:params:oauth:grant-type:device_code", device_code=device_code
        )
        status, doc = self._token_call(self.metadata().token_endpoint, "token_endpoint", form)
        if status == 200:
            return _check_token_answer(doc)
        error, description = _oauth_error(doc)
        if error == "authorization_pending":
            return DevicePending(slow_down=False)
        if error == "slow_down":
            return DevicePending(slow_down=True)
        if error == "expired_token":
            raise SsoFlowExpired("the device code expired before the sign-in finished")
        if error == "access_denied":
            raise SsoTokenInvalid("the sign-in was denied at the provider", field="device_code")
        raise _refuse("token_endpoint", f"answers HTTP {status} {error} {description}".rstrip())

    # -- the ID token --

    def validate_id_token(self, raw: str, *, nonce: str | None, now: datetime) -> IdTokenClaims:
        """The claims of ``raw`` once its signature, algorithm, issuer, audience, times and
        nonce have passed; else :class:`SsoTokenInvalid` naming what failed.

        ``nonce``: the one sent with the authorization request (then the token must carry it);
        None for a token that was not asked for with one (the device grant)."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if not isinstance(raw, str) or not raw:
            raise SsoTokenInvalid("the ID token is missing", field="token")
        if len(raw) > MAX_ID_TOKEN_BYTES:
            raise SsoTokenInvalid(
                f"the ID token is longer than {MAX_ID_TOKEN_BYTES} bytes", field="token"
            )
        header = self._header(raw)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise SsoTokenInvalid(
                f"the ID token is signed with {_show(alg)}, not one of "
                f"{', '.join(ALLOWED_ALGORITHMS)}",
                field="alg",
            )
        key = self._key_for(header.get("kid"), alg)
        try:
            token = jwt.decode(
                raw, key, algorithms=list(ALLOWED_ALGORITHMS), registry=self._registry
            )
        except BadSignatureError:
            raise SsoTokenInvalid(
                "the ID token's signature does not verify", field="signature"
            ) from None
        except (
            UnsupportedAlgorithmError,
            InvalidKeyTypeError,
            InvalidKeyCurveError,
            UnsupportedKeyAlgorithmError,
            UnsupportedKeyUseError,
            InvalidKeyIdError,
        ) as e:
            raise SsoTokenInvalid(
                f"the ID token's key cannot be used with {alg} ({e})", field="alg"
            ) from None
        except ExceededSizeError:
            raise SsoTokenInvalid("the ID token is too large", field="token") from None
        except (JoseError, ValueError, TypeError):
            raise SsoTokenInvalid("the ID token is not a well-formed JWT", field="token") from None
        return self._check_claims(token.claims, nonce=nonce, now=now)

    @staticmethod
    def _header(raw: str) -> Mapping[str, Any]:
        try:
            obj = extract_compact(raw.encode("ascii"))
            header = obj.headers()
        except (JoseError, ValueError, TypeError, UnicodeError, RecursionError):
            raise SsoTokenInvalid("the ID token is not a well-formed JWT", field="token") from None
        if not isinstance(header, dict):
            raise SsoTokenInvalid("the ID token's header is not a JSON object", field="token")
        return header

    def _key_for(self, kid: object, alg: str) -> Key:
        """The JWKS key for a token's ``kid`` (refetching the JWKS once for one it lacks)."""
        if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= 256):
            raise SsoTokenInvalid(f"the ID token's kid is not a key id: {_show(kid)}", field="kid")
        keys = self.jwks()
        if kid is not None:
            found = [k for k in keys if k.kid == kid]
            if not found:
                # A provider rotating its keys publishes the new one before it signs with it;
                # a cached JWKS from before the rotation lacks it. Once, rate-limited.
                keys = self.jwks(refresh=True)
                found = [k for k in keys if k.kid == kid]
            if not found:
                raise SsoTokenInvalid(
                    f"the ID token names key {_show(kid)}, which the provider's JWKS lacks",
                    field="kid",
                )
            fitting = [k for k in found if _fits(k, alg)]
            if not fitting:
                raise SsoTokenInvalid(
                    f"the ID token says {alg}, but key {_show(kid)} is not a key for it",
                    field="alg",
                )
            return fitting[0]
        fitting = [k for k in keys if _fits(k, alg)]
        if len(fitting) != 1:
            raise SsoTokenInvalid(
                "the ID token names no key (kid) and the provider's JWKS holds "
                f"{len(fitting)} keys for {alg}",
                field="kid",
            )
        return fitting[0]

    def _check_claims(
        self, claims: dict[str, Any], *, nonce: str | None, now: datetime
    ) -> IdTokenClaims:
        s = self.settings
        skew = s.clock_skew
        stamp = int(now.timestamp())
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": s.issuer},
            "aud": {"essential": True, "value": s.client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }
        registry = jwt.JWTClaimsRegistry(now=stamp, leeway=skew, **options)
        try:
            registry.validate(claims)
        except MissingClaimError as e:
            first = e.claim.split(",")[0]
            raise SsoTokenInvalid(f"the ID token has no {first!r} claim", field=first) from None
        except ExpiredTokenError:
            raise SsoTokenInvalid("the ID token has expired", field="exp") from None
        except ClaimError as e:
            raise SsoTokenInvalid(
                f"the ID token's {e.claim!r} claim is wrong ({e.description})", field=e.claim
            ) from None
        iat = claims["iat"]
        if stamp - iat > MAX_ID_TOKEN_AGE.total_seconds() + skew:
            raise SsoTokenInvalid(
                f"the ID token was issued {int(stamp - iat)} seconds ago (at most "
                f"{int(MAX_ID_TOKEN_AGE.total_seconds())})",
                field="iat",
            )
        aud = claims["aud"]
        audience = (aud,) if isinstance(aud, str) else tuple(aud)
        azp = claims.get("azp")
        if azp is not None or len(audience) > 1:
            # OpenID Connect Core 3.1.3.7 items 4 and 5.
            if azp != s.client_id:
                raise SsoTokenInvalid(
                    f"the ID token's azp is {_show(azp)}, not this client's id", field="azp"
                )
        got = claims.get("nonce")
        if got is not None and not isinstance(got, str):
            raise SsoTokenInvalid("the ID token's nonce is not a string", field="nonce")
        if nonce is not None and got is None:
            raise SsoTokenInvalid("the ID token carries no nonce", field="nonce")
        if nonce is not None and not secrets.compare_digest(got or "", nonce):
            # Not the nonce of this sign-in: a token replayed from another one.
            raise SsoTokenInvalid("the ID token's nonce is not this sign-in's", field="nonce")
        sub = claims["sub"]
        if not 0 < len(sub) <= 255:
            raise SsoTokenInvalid("the ID token's sub is empty or too long", field="sub")
        return IdTokenClaims(
            issuer=claims["iss"],
            subject=sub,
            audience=audience,
            issued_at=_instant(iat, "iat"),
            expires_at=_instant(claims["exp"], "exp"),
            nonce=claims.get("nonce"),
            claims=MappingProxyType(dict(claims)),
        )

    def close(self) -> None:
        self._http.close()


def _fits(key: Key, alg: str) -> bool:
    """Whether ``key`` may verify ``alg`` (its type, curve and own ``alg``, if it names one)."""
    if key.alg is not None and key.alg != alg:
        return False
    if key.key_type != _KEY_TYPE[alg[:2]]:
        return False
    if isinstance(key, ECKey):
        return {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg] == key.curve_name
    return True
