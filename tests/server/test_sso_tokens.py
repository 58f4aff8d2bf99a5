"""ID-token validation and the provider's answers (server.sso.oidc), against a fake provider.

The provider is an ``httpx.MockTransport`` serving a discovery document and a JWKS made of keys
generated at run time; tokens are signed at run time with joserfc. Each refusal test starts from
the good token and changes exactly one thing, then checks the refusal names that thing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from server.errors import SsoFlowExpired, SsoProviderError, SsoTokenInvalid, http_status
from server.sso.oidc import (
    JWKS_REFETCH_SECONDS,
    MAX_DOCUMENT_BYTES,
    DeviceGrant,
    DevicePending,
    OidcProvider,
    code_challenge,
    new_code_verifier,
    new_nonce,
)
from server.sso.settings import SsoSettings

ISSUER = "https://login.example.test/"
CLIENT_ID = "jit-ssh"
NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
NONCE = "n-0S6_WzA2Mj-the-nonce"
REDIRECT = "https://jit.example.test/sso/callback"

_KEYS: dict[str, Key] = {}


def keys() -> dict[str, Key]:
    """Keys made once per test run (RSA generation is slow): never stored anywhere."""
    if not _KEYS:
        _KEYS["rsa"] = RSAKey.generate_key(2048, {"kid": "rsa-1", "use": "sig"})
        _KEYS["rsa2"] = RSAKey.generate_key(2048, {"kid": "rsa-2", "use": "sig"})
        _KEYS["other"] = RSAKey.generate_key(2048, {"kid": "rsa-1"})
        _KEYS["ec"] = ECKey.generate_key("P-256", {"kid": "ec-1"})
        _KEYS["ed"] = OKPKey.generate_key("Ed25519", {"kid": "ed-1"})
    return _KEYS


def public(key: Key) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class FakeProvider:
    """A provider at ISSUER: discovery, JWKS, token and device endpoints, answers editable."""

    def __init__(self, issuer: str = ISSUER) -> None:
        k = keys()
        self.issuer = issuer
        base = issuer.rstrip("/")
        self.discovery: dict[str, Any] = {
            "issuer": issuer,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "device_authorization_endpoint": f"{base}/device",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            "grant_types_supported": [
                "authorization_code",
                "urn:ietf:params:oauth:grant-type:device_code",
            ],
        }
        self.jwks: dict[str, Any] = {"keys": [public(k["rsa"]), public(k["ec"]), public(k["ed"])]}
        self.token_answer: tuple[int, Any] = (200, {})
        self.device_answer: tuple[int, Any] = (
            200,
            {
                "device_code": "dev-code-1",
                "user_code": "ABCD-EFGH",
                "verification_uri": f"{base}/device/verify",
                "verification_uri_complete": f"{base}/device/verify?user_code=ABCD-EFGH",
                "expires_in": 600,
                "interval": 5,
            },
        )
        self.fetches: dict[str, int] = {}
        self.requests: list[httpx.Request] = []
        self.override: dict[str, Callable[[httpx.Request], httpx.Response]] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        self.fetches[path] = self.fetches.get(path, 0) + 1
        if path in self.override:
            return self.override[path](request)
        base_path = urlsplit(self.issuer).path.rstrip("/")
        if path == base_path + "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.discovery)
        if path == base_path + "/jwks":
            return httpx.Response(200, json=self.jwks)
        if path == base_path + "/token":
            status, doc = self.token_answer
            return httpx.Response(status, json=doc)
        if path == base_path + "/device":
            status, doc = self.device_answer
            return httpx.Response(status, json=doc)
        return httpx.Response(404)

    def http(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))

    @property
    def jwks_fetches(self) -> int:
        return self.fetches.get(urlsplit(self.issuer).path.rstrip("/") + "/jwks", 0)


def good_claims(**changes: Any) -> dict[str, Any]:
    now = int(NOW.timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "00u1abcd",
        "aud": CLIENT_ID,
        "iat": now - 5,
        "exp": now + 300,
        "nonce": NONCE,
        "email": "alice@example.com",
        "email_verified": True,
        "preferred_username": "alice",
        "groups": ["okta-sre"],
    }
    for k, v in changes.items():
        if v is _DROP:
            claims.pop(k, None)
        else:
            claims[k] = v
    return claims


_DROP = object()


def sign(claims: dict[str, Any], key: str = "rsa", **header: Any) -> str:
    k = keys()[key]
    alg = header.pop("alg", {"rsa": "RS256", "rsa2": "RS256", "other": "RS256"}.get(key))
    alg = alg or {"ec": "ES256", "ed": "EdDSA"}[key]
    h = {"alg": alg, "kid": k.kid, **header}
    if h["kid"] is None:
        del h["kid"]
    return jwt.encode(h, claims, k, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def settings(**changes: Any) -> SsoSettings:
    return SsoSettings(issuer=ISSUER, client_id=CLIENT_ID, **changes)


@pytest.fixture
def provider(fake: FakeProvider, clock: Clock) -> OidcProvider:
    return OidcProvider(settings(), fake.http(), clock=clock)


def refused(provider: OidcProvider, token: str, nonce: str | None = NONCE) -> SsoTokenInvalid:
    with pytest.raises(SsoTokenInvalid) as e:
        provider.validate_id_token(token, nonce=nonce, now=NOW)
    assert http_status(e.value) == 401
    return e.value


# -- a good token -----------------------------------------------------------------------------


def test_a_good_token_passes_with_its_claims(provider: OidcProvider) -> None:
    claims = provider.validate_id_token(sign(good_claims()), nonce=NONCE, now=NOW)
    assert claims.issuer == ISSUER and claims.subject == "00u1abcd"
    assert claims.audience == (CLIENT_ID,)
    assert claims.nonce == NONCE
    assert claims.issued_at == NOW - timedelta(seconds=5)
    assert claims.expires_at == NOW + timedelta(seconds=300)
    assert claims.claims["preferred_username"] == "alice"
    assert claims.claims["groups"] == ["okta-sre"]
    with pytest.raises(TypeError):
        claims.claims["sub"] = "x"  # type: ignore[index]


@pytest.mark.parametrize("key", ["ec", "ed", "rsa"])
def test_each_kind_of_key_verifies(provider: OidcProvider, key: str) -> None:
    assert provider.validate_id_token(sign(good_claims(), key), nonce=NONCE, now=NOW).subject


def test_ps256_with_an_rsa_key(provider: OidcProvider) -> None:
    token = sign(good_claims(), "rsa", alg="PS256")
    assert provider.validate_id_token(token, nonce=NONCE, now=NOW).subject == "00u1abcd"


def test_several_audiences_with_azp(provider: OidcProvider) -> None:
    token = sign(good_claims(aud=[CLIENT_ID, "other"], azp=CLIENT_ID))
    assert provider.validate_id_token(token, nonce=NONCE, now=NOW).audience == (CLIENT_ID, "other")


def test_times_within_the_skew_pass(provider: OidcProvider) -> None:
    now = int(NOW.timestamp())
    token = sign(good_claims(exp=now - 30, iat=now + 30, nbf=now + 30))
    assert provider.validate_id_token(token, nonce=NONCE, now=NOW)


def test_no_nonce_asked_none_needed(provider: OidcProvider) -> None:
    token = sign(good_claims(nonce=_DROP))
    assert provider.validate_id_token(token, nonce=None, now=NOW).nonce is None


def test_the_jwks_is_fetched_once_for_many_tokens(
    provider: OidcProvider, fake: FakeProvider
) -> None:
    for _ in range(5):
        provider.validate_id_token(sign(good_claims()), nonce=NONCE, now=NOW)
    assert fake.jwks_fetches == 1
    assert fake.fetches["/.well-known/openid-configuration"] == 1


# -- each refusal: one change from the good token ---------------------------------------------


def test_wrong_issuer(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(iss="https://evil.example.test/"))).field == "iss"


def test_issuer_without_its_trailing_slash(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(iss=ISSUER.rstrip("/")))).field == "iss"


def test_wrong_audience(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(aud="someone-else"))).field == "aud"


def test_audience_of_the_wrong_type(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(aud={"a": CLIENT_ID}))).field == "aud"


def test_azp_mismatch(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(azp="someone-else"))).field == "azp"


def test_several_audiences_without_azp(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(aud=[CLIENT_ID, "other"]))).field == "azp"


def test_nonce_mismatch(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(nonce="another-sign-in-s-nonce"))).field == "nonce"


def test_nonce_missing_when_expected(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(nonce=_DROP))).field == "nonce"


def test_nonce_as_a_list_holding_it(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(nonce=["x", NONCE]))).field == "nonce"


def test_expired(provider: OidcProvider) -> None:
    now = int(NOW.timestamp())
    assert refused(provider, sign(good_claims(exp=now - 61))).field == "exp"


@pytest.mark.parametrize("exp", [1e300, 10**20, 253402300800])
def test_an_exp_no_date_can_hold_is_refused_not_a_crash(provider: OidcProvider, exp: Any) -> None:
    """A hostile provider's far-future exp passes the library's check; turning it into a date
    must refuse the token, not raise OverflowError (a 500 at the callback)."""
    assert refused(provider, sign(good_claims(exp=exp))).field == "exp"


def test_exp_missing(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(exp=_DROP))).field == "exp"


def test_iat_in_the_future_beyond_the_skew(provider: OidcProvider) -> None:
    now = int(NOW.timestamp())
    assert refused(provider, sign(good_claims(iat=now + 61))).field == "iat"


def test_iat_too_old(provider: OidcProvider) -> None:
    now = int(NOW.timestamp())
    # Still unexpired: only its age is wrong.
    assert refused(provider, sign(good_claims(iat=now - 11 * 60 - 60))).field == "iat"


def test_nbf_in_the_future(provider: OidcProvider) -> None:
    now = int(NOW.timestamp())
    assert refused(provider, sign(good_claims(nbf=now + 61))).field == "nbf"


def test_sub_missing(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(sub=_DROP))).field == "sub"


def test_sub_too_long(provider: OidcProvider) -> None:
    assert refused(provider, sign(good_claims(sub="x" * 256))).field == "sub"


def test_alg_none(provider: OidcProvider) -> None:
    header = b64(json.dumps({"alg": "none", "kid": "rsa-1", "typ": "JWT"}).encode())
    payload = b64(json.dumps(good_claims()).encode())
    assert refused(provider, f"{header}.{payload}.").field == "alg"


def test_hs256_keyed_with_the_rsa_public_key_pem(provider: OidcProvider) -> None:
    pem = keys()["rsa"].as_pem(private=False)
    header = b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    payload = b64(json.dumps(good_claims()).encode())
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert refused(provider, f"{header}.{payload}.{b64(mac)}").field == "alg"


def test_signed_with_a_wrong_key(provider: OidcProvider) -> None:
    # Another RSA key claiming the published key's kid.
    assert refused(provider, sign(good_claims(), "other")).field == "signature"


def test_a_payload_changed_after_signing(provider: OidcProvider) -> None:
    header, _, sig = sign(good_claims()).split(".")
    payload = b64(json.dumps(good_claims(preferred_username="root")).encode())
    assert refused(provider, f"{header}.{payload}.{sig}").field == "signature"


def test_header_alg_outside_the_allow_list(provider: OidcProvider) -> None:
    header = b64(json.dumps({"alg": "RS1", "kid": "rsa-1"}).encode())
    good = sign(good_claims()).split(".")
    assert refused(provider, f"{header}.{good[1]}.{good[2]}").field == "alg"


def test_header_alg_for_another_key_type(provider: OidcProvider) -> None:
    # An allowed algorithm, but the kid names an RSA key and the header says ES256.
    token = sign(good_claims(), "ec", kid="rsa-1")
    assert refused(provider, token).field == "alg"


def test_a_key_that_names_its_own_alg(provider: OidcProvider, fake: FakeProvider) -> None:
    fake.jwks["keys"][0]["alg"] = "RS256"
    token = sign(good_claims(), "rsa", alg="PS256")
    assert refused(provider, token).field == "alg"


def test_an_unknown_kid_the_refetched_jwks_knows(
    provider: OidcProvider, fake: FakeProvider, clock: Clock
) -> None:
    provider.validate_id_token(sign(good_claims()), nonce=NONCE, now=NOW)
    assert fake.jwks_fetches == 1
    # The provider rotates: a new key is published, then used.
    fake.jwks["keys"].append(public(keys()["rsa2"]))
    clock.now += timedelta(seconds=JWKS_REFETCH_SECONDS + 1)
    claims = provider.validate_id_token(sign(good_claims(), "rsa2"), nonce=NONCE, now=NOW)
    assert claims.subject == "00u1abcd"
    assert fake.jwks_fetches == 2


def test_an_unknown_kid_still_unknown_refetches_once(
    provider: OidcProvider, fake: FakeProvider, clock: Clock
) -> None:
    provider.validate_id_token(sign(good_claims()), nonce=NONCE, now=NOW)
    clock.now += timedelta(seconds=JWKS_REFETCH_SECONDS + 1)
    assert refused(provider, sign(good_claims(), "rsa2")).field == "kid"
    assert fake.jwks_fetches == 2
    # Within the rate limit, another unknown kid does not fetch again.
    clock.now += timedelta(seconds=5)
    assert refused(provider, sign(good_claims(), "rsa2", kid="made-up")).field == "kid"
    assert fake.jwks_fetches == 2
    # Past it, one more.
    clock.now += timedelta(seconds=JWKS_REFETCH_SECONDS)
    assert refused(provider, sign(good_claims(), "rsa2", kid="made-up-2")).field == "kid"
    assert fake.jwks_fetches == 3


def test_a_failing_refetch_is_rate_limited_too(
    provider: OidcProvider, fake: FakeProvider, clock: Clock
) -> None:
    provider.validate_id_token(sign(good_claims()), nonce=NONCE, now=NOW)
    clock.now += timedelta(seconds=JWKS_REFETCH_SECONDS + 1)
    fake.override["/jwks"] = lambda r: httpx.Response(503)
    with pytest.raises(SsoProviderError):
        provider.validate_id_token(sign(good_claims(), "rsa2"), nonce=NONCE, now=NOW)
    assert fake.jwks_fetches == 2
    clock.now += timedelta(seconds=5)
    assert refused(provider, sign(good_claims(), "rsa2")).field == "kid"
    assert fake.jwks_fetches == 2
    # The cached keys still verify meanwhile.
    assert provider.validate_id_token(sign(good_claims()), nonce=NONCE, now=NOW)


def test_now_must_be_aware(provider: OidcProvider) -> None:
    with pytest.raises(ValueError, match="timezone"):
        provider.validate_id_token(sign(good_claims()), nonce=NONCE, now=NOW.replace(tzinfo=None))


def test_no_kid_and_several_keys(provider: OidcProvider, fake: FakeProvider) -> None:
    fake.jwks["keys"].append(public(keys()["rsa2"]))
    assert refused(provider, sign(good_claims(), "rsa", kid=None)).field == "kid"


def test_no_kid_and_one_key_for_the_alg(provider: OidcProvider) -> None:
    assert provider.validate_id_token(sign(good_claims(), "ec", kid=None), nonce=NONCE, now=NOW)


def test_kid_not_a_string(provider: OidcProvider) -> None:
    header = b64(json.dumps({"alg": "RS256", "kid": 5}).encode())
    good = sign(good_claims()).split(".")
    assert refused(provider, f"{header}.{good[1]}.{good[2]}").field in ("kid", "token")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "...",
        "éé.éé.éé",
        "!!!.@@@.###",
        b64(b"[1,2]") + "." + b64(b"{}") + ".",
        b64(b'{"alg":"RS256"') + "." + b64(b"{}") + ".AAAA",
        b64(json.dumps({"alg": "RS256", "kid": "rsa-1"}).encode()) + "." + b64(b"[1]") + ".AAAA",
    ],
)
def test_malformed_token_strings(provider: OidcProvider, raw: str) -> None:
    assert refused(provider, raw).field in ("token", "alg", "signature")


def test_a_payload_that_is_not_an_object(provider: OidcProvider) -> None:
    # Properly signed, but the payload is a JSON list.
    signed = jws.serialize_compact(
        {"alg": "RS256", "kid": "rsa-1"}, b"[1,2,3]", keys()["rsa"], algorithms=["RS256"]
    )
    assert refused(provider, signed).field == "token"


def test_a_huge_token(provider: OidcProvider) -> None:
    token = sign(good_claims(padding="x" * 70_000))
    assert refused(provider, token).field == "token"


def test_not_a_string(provider: OidcProvider) -> None:
    assert refused(provider, None).field == "token"  # type: ignore[arg-type]


# -- the discovery document -------------------------------------------------------------------


def provider_error(fake: FakeProvider, call: Callable[[OidcProvider], object]) -> SsoProviderError:
    p = OidcProvider(settings(), fake.http(), clock=Clock())
    with pytest.raises(SsoProviderError) as e:
        call(p)
    assert http_status(e.value) == 502
    return e.value


def test_the_discovery_document_is_read_and_cached(fake: FakeProvider) -> None:
    clock = Clock()
    p = OidcProvider(settings(), fake.http(), clock=clock)
    m = p.metadata()
    assert m.issuer == ISSUER and m.jwks_uri == "https://login.example.test/jwks"
    assert m.device_authorization_endpoint == "https://login.example.test/device"
    p.metadata()
    assert fake.fetches["/.well-known/openid-configuration"] == 1
    clock.now += timedelta(hours=2)
    p.metadata()
    assert fake.fetches["/.well-known/openid-configuration"] == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"issuer": "https://login.example.test"}, "issuer"),
        ({"issuer": "https://evil.example.test/"}, "issuer"),
        ({"issuer": None}, "issuer"),
        ({"issuer": 5}, "issuer"),
        ({"jwks_uri": None}, "jwks_uri"),
        ({"jwks_uri": "http://login.example.test/jwks"}, "jwks_uri"),
        ({"jwks_uri": ["https://x"]}, "jwks_uri"),
        ({"authorization_endpoint": "http://login.example.test/a"}, "authorization_endpoint"),
        ({"authorization_endpoint": None}, "authorization_endpoint"),
        ({"authorization_endpoint": "javascript:alert(1)"}, "authorization_endpoint"),
        ({"token_endpoint": "http://login.example.test/t"}, "token_endpoint"),
        ({"token_endpoint": "https://login.example.test/t x"}, "token_endpoint"),
        ({"device_authorization_endpoint": "ftp://x/"}, "device_authorization_endpoint"),
        ({"code_challenge_methods_supported": ["plain"]}, "code_challenge_methods_supported"),
        ({"code_challenge_methods_supported": "S256"}, "code_challenge_methods_supported"),
        ({"response_types_supported": [1]}, "response_types_supported"),
        (
            {"token_endpoint_auth_methods_supported": {"a": 1}},
            "token_endpoint_auth_methods_supported",
        ),
        (
            {"id_token_signing_alg_values_supported": ["x"] * 1000},
            "id_token_signing_alg_values_supported",
        ),
    ],
)
def test_each_discovery_refusal_names_its_field(
    fake: FakeProvider, change: dict[str, Any], field: str
) -> None:
    for k, v in change.items():
        if v is None:
            del fake.discovery[k]
        else:
            fake.discovery[k] = v
    assert provider_error(fake, lambda p: p.metadata()).field == field


def test_a_discovery_document_that_is_not_an_object(fake: FakeProvider) -> None:
    fake.override["/.well-known/openid-configuration"] = lambda r: httpx.Response(200, json=[1])
    assert provider_error(fake, lambda p: p.metadata()).field == "discovery document"


def test_a_discovery_document_that_is_not_json(fake: FakeProvider) -> None:
    fake.override["/.well-known/openid-configuration"] = lambda r: httpx.Response(
        200, text="<html>"
    )
    assert provider_error(fake, lambda p: p.metadata()).field == "discovery document"


def test_a_discovery_document_too_large(fake: FakeProvider) -> None:
    big = b'{"x": "' + b"a" * MAX_DOCUMENT_BYTES + b'"}'
    fake.override["/.well-known/openid-configuration"] = lambda r: httpx.Response(200, content=big)
    e = provider_error(fake, lambda p: p.metadata())
    assert e.field == "discovery document" and "more than" in str(e)


def test_discovery_answering_500(fake: FakeProvider) -> None:
    fake.override["/.well-known/openid-configuration"] = lambda r: httpx.Response(500)
    e = provider_error(fake, lambda p: p.metadata())
    assert "HTTP 500" in str(e) and not e.unreachable


def test_a_redirect_to_another_host_is_refused(fake: FakeProvider) -> None:
    fake.override["/.well-known/openid-configuration"] = lambda r: httpx.Response(
        302, headers={"location": "https://evil.example.test/.well-known/openid-configuration"}
    )
    assert "another host" in str(provider_error(fake, lambda p: p.metadata()))


def test_a_redirect_within_the_host_is_followed(fake: FakeProvider) -> None:
    doc = fake.discovery
    fake.override["/.well-known/openid-configuration"] = lambda r: httpx.Response(
        301, headers={"location": "/moved/openid-configuration"}
    )
    fake.override["/moved/openid-configuration"] = lambda r: httpx.Response(200, json=doc)
    assert OidcProvider(settings(), fake.http()).metadata().issuer == ISSUER


def test_an_unreachable_provider() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    p = OidcProvider(settings(), httpx.Client(transport=httpx.MockTransport(down)))
    with pytest.raises(SsoProviderError) as e:
        p.metadata()
    assert e.value.unreachable and "cannot reach" in str(e.value)


# -- the JWKS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jwks", "why"),
    [
        ([], "no JSON object"),
        ({"keys": "x"}, "no JSON object"),
        ({"keys": []}, "no key usable"),
        ({"keys": [1]}, "not a JSON object"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}, "no key usable"),
        ({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "x"}]}, "does not load"),
        ({"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}, "does not load"),
        ({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}, "does not load"),
        ({"keys": [{"kty": "RSA", "kid": 7}]}, "kid is not a string"),
        ({"keys": [{}] * 101}, "at most 100"),
    ],
)
def test_each_jwks_refusal(fake: FakeProvider, jwks: Any, why: str) -> None:
    fake.jwks = jwks
    e = provider_error(fake, lambda p: p.jwks())
    assert e.field == "jwks_uri" and why in str(e)


def test_a_weak_rsa_key_is_skipped(fake: FakeProvider) -> None:
    weak = RSAKey.generate_key(1024, {"kid": "weak"}, auto_kid=False)
    fake.jwks = {"keys": [public(weak)]}
    assert "no key usable" in str(provider_error(fake, lambda p: p.jwks()))


def test_a_jwks_with_private_key_material(fake: FakeProvider) -> None:
    fake.jwks = {"keys": [dict(keys()["ec"].as_dict(private=True))]}
    assert "private key material" in str(provider_error(fake, lambda p: p.jwks()))


def test_encryption_and_foreign_keys_are_skipped(fake: FakeProvider, clock: Clock) -> None:
    enc = dict(public(keys()["rsa2"]), use="enc")
    fake.jwks = {"keys": [enc, {"kty": "XYZ"}, {"kty": "oct", "k": "AA"}, public(keys()["ec"])]}
    p = OidcProvider(settings(), fake.http(), clock=clock)
    assert [k.kid for k in p.jwks()] == ["ec-1"]
    assert refused(p, sign(good_claims(), "rsa2")).field == "kid"


# -- authorization URL and PKCE ---------------------------------------------------------------


def test_the_authorization_url(provider: OidcProvider) -> None:
    verifier = new_code_verifier()
    url = provider.authorization_url("s" * 32, NONCE, code_challenge(verifier), REDIRECT)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://login.example.test/authorize"
    q = parse_qs(parts.query)
    assert q["response_type"] == ["code"]
    assert q["client_id"] == [CLIENT_ID]
    assert q["redirect_uri"] == [REDIRECT]
    assert q["scope"] == ["openid email profile"]
    assert q["state"] == ["s" * 32]
    assert q["nonce"] == [NONCE]
    assert q["code_challenge_method"] == ["S256"]
    digest = hashlib.sha256(verifier.encode()).digest()
    assert q["code_challenge"] == [b64(digest)]


def test_pkce_values() -> None:
    v = new_code_verifier()
    assert 43 <= len(v) <= 128 and new_code_verifier() != v
    assert len(code_challenge(v)) == 43
    assert len(new_nonce()) >= 32
    with pytest.raises(ValueError):
        code_challenge("short")


def test_the_authorization_url_takes_only_an_s256_challenge(provider: OidcProvider) -> None:
    with pytest.raises(ValueError, match="S256"):
        provider.authorization_url("s" * 32, NONCE, "plain-verifier", REDIRECT)
    with pytest.raises(ValueError, match="state"):
        provider.authorization_url("", NONCE, code_challenge(new_code_verifier()), REDIRECT)


# -- the token endpoint -----------------------------------------------------------------------


def token_doc(**changes: Any) -> dict[str, Any]:
    doc = {
        "access_token": "at-1",
        "token_type": "Bearer",
        "id_token": sign(good_claims()),
        "expires_in": 3600,
        "scope": "openid email profile",
    }
    for k, v in changes.items():
        if v is _DROP:
            doc.pop(k)
        else:
            doc[k] = v
    return doc


def with_secret(tmp_path: Any, **changes: Any) -> SsoSettings:
    secret = tmp_path / "secret"
    secret.write_text("s3cret:%x\n")
    return settings(client_secret_file=secret, **changes)


def test_exchange_code_with_client_secret_basic(fake: FakeProvider, tmp_path: Any) -> None:
    fake.token_answer = (200, token_doc())
    p = OidcProvider(with_secret(tmp_path), fake.http())
    verifier = new_code_verifier()
    tokens = p.exchange_code("the-code", verifier, REDIRECT)
    assert tokens.id_token == fake.token_answer[1]["id_token"]
    assert tokens.access_token == "at-1" and tokens.expires_in == 3600
    assert "at-1" not in repr(tokens) and tokens.id_token not in repr(tokens)
    request = fake.requests[-1]
    assert request.method == "POST" and request.url.path == "/token"
    form = parse_qs(request.content.decode())
    assert form["grant_type"] == ["authorization_code"]
    assert form["code"] == ["the-code"]
    assert form["code_verifier"] == [verifier]
    assert form["redirect_uri"] == [REDIRECT]
    assert "client_secret" not in form
    basic = base64.b64decode(request.headers["authorization"].split()[1]).decode()
    # RFC 6749 2.3.1: each part form-urlencoded.
    assert basic == "jit-ssh:s3cret%3A%25x"


def test_exchange_code_with_client_secret_post(fake: FakeProvider, tmp_path: Any) -> None:
    fake.discovery["token_endpoint_auth_methods_supported"] = ["client_secret_post"]
    fake.token_answer = (200, token_doc())
    OidcProvider(with_secret(tmp_path), fake.http()).exchange_code(
        "c", new_code_verifier(), REDIRECT
    )
    request = fake.requests[-1]
    form = parse_qs(request.content.decode())
    assert form["client_id"] == [CLIENT_ID] and form["client_secret"] == ["s3cret:%x"]
    assert "authorization" not in request.headers


def test_exchange_code_as_a_public_client(fake: FakeProvider) -> None:
    fake.token_answer = (200, token_doc())
    OidcProvider(settings(), fake.http()).exchange_code("c", new_code_verifier(), REDIRECT)
    request = fake.requests[-1]
    assert parse_qs(request.content.decode())["client_id"] == [CLIENT_ID]
    assert "authorization" not in request.headers


def test_a_client_registered_for_client_secret_post(fake: FakeProvider, tmp_path: Any) -> None:
    """The provider supports both methods; the client was registered for post only."""
    tried: list[str] = []

    def token(request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        if "authorization" in request.headers:
            tried.append("basic")
            return httpx.Response(401, json={"error": "invalid_client"})
        tried.append("post")
        assert form["client_secret"] == ["s3cret:%x"]
        return httpx.Response(200, json=token_doc())

    fake.override["/token"] = token
    p = OidcProvider(with_secret(tmp_path), fake.http())
    assert p.exchange_code("c", new_code_verifier(), REDIRECT).access_token == "at-1"
    assert tried == ["basic", "post"]
    # The method that worked is kept.
    p.exchange_code("c", new_code_verifier(), REDIRECT)
    assert tried == ["basic", "post", "post"]


def test_a_wrong_secret_is_invalid_client_with_both_methods(
    fake: FakeProvider, tmp_path: Any
) -> None:
    fake.token_answer = (401, {"error": "invalid_client"})
    e = provider_error(
        fake,
        lambda p: OidcProvider(with_secret(tmp_path), fake.http()).exchange_code(
            "c", new_code_verifier(), REDIRECT
        ),
    )
    assert "invalid_client" in str(e)
    assert [r.url.path for r in fake.requests].count("/token") == 2


def test_no_auth_method_in_common(fake: FakeProvider, tmp_path: Any) -> None:
    fake.discovery["token_endpoint_auth_methods_supported"] = ["private_key_jwt"]
    p = OidcProvider(with_secret(tmp_path), fake.http())
    with pytest.raises(SsoProviderError) as e:
        p.exchange_code("c", new_code_verifier(), REDIRECT)
    assert e.value.field == "token_endpoint_auth_methods_supported"


def test_a_refused_code(fake: FakeProvider) -> None:
    fake.token_answer = (400, {"error": "invalid_grant", "error_description": "used\x1b[31m"})
    with pytest.raises(SsoTokenInvalid) as e:
        OidcProvider(settings(), fake.http()).exchange_code("c", new_code_verifier(), REDIRECT)
    assert e.value.field == "code" and "\x1b" not in str(e.value)


def test_a_token_endpoint_error(fake: FakeProvider) -> None:
    fake.token_answer = (401, {"error": "invalid_client"})
    e = provider_error(fake, lambda p: p.exchange_code("c", new_code_verifier(), REDIRECT))
    assert e.field == "token_endpoint" and "invalid_client" in str(e)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (token_doc(token_type="mac"), "token_type"),
        (token_doc(token_type=_DROP), "token_type"),
        (token_doc(token_type=1), "token_type"),
        (token_doc(id_token=_DROP), "id_token"),
        (token_doc(id_token=5), "id_token"),
        (token_doc(id_token="x" * 70_000), "id_token"),
        (token_doc(id_token="a b"), "id_token"),
        (token_doc(access_token=_DROP), "access_token"),
        (token_doc(expires_in="3600"), "expires_in"),
        (token_doc(expires_in=-1), "expires_in"),
        (token_doc(scope=["openid"]), "scope"),
        ([1, 2], "token answer"),
    ],
)
def test_each_token_answer_refusal(fake: FakeProvider, doc: Any, field: str) -> None:
    fake.token_answer = (200, doc)
    e = provider_error(fake, lambda p: p.exchange_code("c", new_code_verifier(), REDIRECT))
    assert e.field == field


# -- the device grant -------------------------------------------------------------------------


def test_device_authorization(fake: FakeProvider) -> None:
    grant = OidcProvider(settings(), fake.http()).device_authorization()
    assert grant == DeviceGrant(
        "dev-code-1",
        "ABCD-EFGH",
        "https://login.example.test/device/verify",
        "https://login.example.test/device/verify?user_code=ABCD-EFGH",
        600,
        5,
    )
    assert "dev-code-1" not in repr(grant)
    form = parse_qs(fake.requests[-1].content.decode())
    assert form["client_id"] == [CLIENT_ID] and form["scope"] == ["openid email profile"]


def test_google_s_verification_url(fake: FakeProvider) -> None:
    doc = dict(fake.device_answer[1])
    doc["verification_url"] = doc.pop("verification_uri")
    del doc["verification_uri_complete"]
    del doc["interval"]
    fake.device_answer = (200, doc)
    grant = OidcProvider(settings(), fake.http()).device_authorization()
    assert grant.verification_uri.endswith("/device/verify") and grant.interval == 5
    assert grant.verification_uri_complete is None


def test_no_device_endpoint(fake: FakeProvider) -> None:
    del fake.discovery["device_authorization_endpoint"]
    e = provider_error(fake, lambda p: p.device_authorization())
    assert e.field == "device_authorization_endpoint"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"device_code": None}, "device_code"),
        ({"device_code": 5}, "device_code"),
        ({"device_code": "x" * 5000}, "device_code"),
        ({"user_code": None}, "user_code"),
        ({"user_code": "A\x1b[2J"}, "user_code"),
        ({"user_code": "A" * 65}, "user_code"),
        ({"verification_uri": None}, "verification_url"),
        ({"verification_uri": "http://evil.example.test/"}, "verification_uri"),
        ({"verification_uri": "javascript:alert(1)"}, "verification_uri"),
        ({"verification_uri_complete": "ftp://x/"}, "verification_uri_complete"),
        ({"expires_in": None}, "expires_in"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 1e9}, "expires_in"),
        ({"interval": 0}, "interval"),
        ({"interval": True}, "interval"),
        ({"interval": 3600}, "interval"),
    ],
)
def test_each_device_answer_refusal(fake: FakeProvider, change: dict[str, Any], field: str) -> None:
    doc = dict(fake.device_answer[1])
    for k, v in change.items():
        if v is None:
            del doc[k]
        else:
            doc[k] = v
    fake.device_answer = (200, doc)
    assert provider_error(fake, lambda p: p.device_authorization()).field == field


def test_device_endpoint_error(fake: FakeProvider) -> None:
    fake.device_answer = (400, {"error": "unauthorized_client"})
    e = provider_error(fake, lambda p: p.device_authorization())
    assert "unauthorized_client" in str(e)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ((400, {"error": "authorization_pending"}), DevicePending(slow_down=False)),
        ((400, {"error": "slow_down"}), DevicePending(slow_down=True)),
    ],
)
def test_polling_pending(fake: FakeProvider, answer: Any, expected: DevicePending) -> None:
    fake.token_answer = answer
    assert OidcProvider(settings(), fake.http()).poll_device_token("dev-code-1") == expected
    form = parse_qs(fake.requests[-1].content.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:device_code"]
    assert form["device_code"] == ["dev-code-1"]


def test_polling_done(fake: FakeProvider) -> None:
    fake.token_answer = (200, token_doc())
    tokens = OidcProvider(settings(), fake.http()).poll_device_token("dev-code-1")
    assert not isinstance(tokens, DevicePending) and tokens.access_token == "at-1"


def test_polling_expired_and_denied(fake: FakeProvider) -> None:
    p = OidcProvider(settings(), fake.http())
    fake.token_answer = (400, {"error": "expired_token"})
    with pytest.raises(SsoFlowExpired):
        p.poll_device_token("dev-code-1")
    fake.token_answer = (400, {"error": "access_denied"})
    with pytest.raises(SsoTokenInvalid):
        p.poll_device_token("dev-code-1")
    fake.token_answer = (500, None)
    with pytest.raises(SsoProviderError):
        p.poll_device_token("dev-code-1")
